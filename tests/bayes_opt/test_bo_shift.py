"""Must-show: on a shifted synthetic workload, the optimizer's best objective beats the
default policy within 8 trials (real simulator, real scheduling policies, TPE seed 0).

The workload shifts from calm traffic (80/20 short/long, Poisson, load 0.7) to an
overloaded bursty mix (60/40 with longer requests, Gamma arrivals CV 2, load 1.3). The
partition was learned on the calm part and the champion is the default tailwise policy.
``benchmarks/tuner_shift.py`` runs the same scenario over 10 seeds and prints the figures.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from bo_fakes import make_trace

from tailwise.bayes_opt.objective import ObjectiveConfig, evaluate
from tailwise.bayes_opt.replay import ReplayEvaluator, metrics_config
from tailwise.bayes_opt.space import refine_partition
from tailwise.bayes_opt.tuner import Tuner, TunerConfig
from tailwise.bayes_opt.window import (
    MAX_STRESS_RATE,
    WindowError,
    cap_window,
    fingerprint,
    reshuffled,
    stressed,
)
from tailwise.scorer.policy import EwsjfParams, Mode, Policy, QueueSpec
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import EngineConfig
from tailwise.simulator.traces import Trace
from tailwise.simulator.workload import (
    LengthClass,
    concat,
    generate,
    offered_load,
    rate_scale_for_load,
)

N = 1000
CALM = (LengthClass("short", 0.8, 256, 64), LengthClass("long", 0.2, 3072, 512))
SHIFTED = (LengthClass("short", 0.6, 256, 64), LengthClass("long", 0.4, 4096, 768))


def workload() -> tuple[Trace, Trace]:
    eng = EngineConfig()
    calm = generate(N, 10.0, classes=CALM, seed=1)
    calm = calm.scaled(rate_scale_for_load(calm, 0.7, eng, H100_LLAMA3_8B))
    hot = generate(N, 10.0, classes=SHIFTED, arrival="gamma", cv=2.0, seed=2)
    hot = hot.scaled(rate_scale_for_load(hot, 1.3, eng, H100_LLAMA3_8B))
    return calm, concat(calm, hot)


def partition_of(trace: Trace) -> tuple[QueueSpec, ...]:
    part: tuple[QueueSpec, ...] = ()
    for _ in range(4):
        part = refine_partition(part, EwsjfParams(), trace.prompt_tokens)
    return part


def test_best_objective_beats_the_default_policy_within_8_trials() -> None:
    calm, both = workload()
    part = partition_of(calm)
    assert len(part) >= 2
    default = Policy(mode=Mode.TAILWISE, queues=part)
    ev = ReplayEvaluator(EngineConfig(), metrics_config(Policy()))
    tuner = Tuner(TunerConfig(storage="memory", max_window_requests=N, stress_load=0), Policy(), evaluator=ev)

    before = tuner.tune(calm, default, part, n_trials=2)  # the sidecar's previous round
    res = tuner.tune(both, default, part, n_trials=8)  # replay window: the latest N requests

    assert before.drift is None and res.drift is not None and res.drift > 0.15  # shift seen
    assert len(res.trials) == 8 and res.trials[0].role == "champion"
    champ = res.champion_value
    assert champ is not None and res.best_value is not None
    assert res.best_value > champ  # improved over the default policy within 8 trials
    better = [t.number for t in res.trials if t.value is not None and t.value > champ]
    assert better and better[0] - res.trials[0].number + 1 <= 8
    # the improvement is real: replaying the best candidate again gives the same value
    best = next(t for t in tuner.study.trials if t.number == res.best_trial)
    again = Policy.from_dict(best.user_attrs["policy"])
    window = cap_window(both, N)
    value, _ = evaluate(ev.run(window, again), ev.baseline(window), ObjectiveConfig())
    assert value == pytest.approx(res.best_value)
    # the gate promotes it exactly when the improvement clears the margin
    assert res.improvement is not None and res.improvement > 0
    if res.improvement > tuner.cfg.margin:
        assert res.promoted is not None and res.promoted.boost == again.boost
        assert res.promoted.safety == again.safety
    else:
        assert res.promoted is None


def test_cap_window_keeps_count_of_the_carried_in_rows_it_keeps() -> None:
    """A telemetry window's first ``carried_in`` rows are backlog, not traffic (the
    continuation replay repeats only the traffic): capping keeps that count right."""
    w = Trace("w", np.arange(10.0), np.full(10, 5, np.int64), np.full(10, 3, np.int64),
              meta={"carried_in": 4})
    assert cap_window(w, 8).meta["carried_in"] == 2  # tail: rows 2..9
    assert cap_window(w, 5, "thin").meta["carried_in"] == 2  # rows 0, 2, 4, 6, 8
    assert cap_window(w, 3, "tail").meta["carried_in"] == 0
    plain = Trace("p", np.arange(5.0), np.full(5, 5, np.int64), np.full(5, 3, np.int64))
    assert "carried_in" not in cap_window(plain, 3).meta


def test_a_stressed_window_offers_the_load_asked_for_and_keeps_its_backlog_in_place() -> None:
    engine, model = EngineConfig(), H100_LLAMA3_8B
    w = dataclasses.replace(make_trace(300, rate=2.0), meta={"carried_in": 3})
    traffic = w.select(np.arange(3, len(w)))
    have = offered_load(traffic, engine, model)
    got = stressed(w, 2 * have, engine, model)
    assert got is not None
    s, k = got
    assert k == pytest.approx(2.0)
    assert offered_load(s.select(np.arange(3, len(s))), engine, model) == pytest.approx(2 * have)
    np.testing.assert_array_equal(s.arrival_s[:3], w.arrival_s[:3])  # the backlog stays put
    assert s.arrival_s[3] == w.arrival_s[3]  # the traffic starts where it started
    np.testing.assert_array_equal(s.prompt_tokens, w.prompt_tokens)
    np.testing.assert_array_equal(s.output_tokens, w.output_tokens)
    assert s.meta["carried_in"] == 3 and s.meta["stress_rate"] == pytest.approx(2.0)
    assert fingerprint(s) != fingerprint(w)  # its own FCFS baseline, not the window's
    # a window already that loaded, or one without a load, is not stressed
    assert stressed(w, have, engine, model) is None
    assert stressed(w.select(np.arange(4)), 1.0, engine, model) is None
    with pytest.raises(WindowError, match="load"):
        stressed(w, 0.0, engine, model)
    # a nearly idle window is raised at most MAX_STRESS_RATE-fold, not into one burst
    capped = stressed(w, 100 * have, engine, model)
    assert capped is not None and capped[1] == MAX_STRESS_RATE
    # with a minimum rate factor a window that offers the load already is stressed too,
    # and a lightly loaded one is raised by the larger of the two factors
    over = stressed(w, have, engine, model, min_rate=1.25)
    assert over is not None and over[1] == pytest.approx(1.25)
    assert stressed(w, 1.1 * have, engine, model, min_rate=1.25)[1] == pytest.approx(1.25)  # type: ignore[index]
    assert stressed(w, 2 * have, engine, model, min_rate=1.25)[1] == pytest.approx(2.0)  # type: ignore[index]
    assert stressed(w, have, engine, model, min_rate=5.0)[1] == MAX_STRESS_RATE  # type: ignore[index]
    for bad in (0.5, float("nan")):
        with pytest.raises(WindowError, match="min_rate"):
            stressed(w, have, engine, model, min_rate=bad)


def test_a_reshuffled_window_deals_the_same_requests_to_the_same_instants() -> None:
    """Another sample path of the window: arrival instants and the backlog rows kept,
    the traffic's requests (each with its lengths, prefixes and classes) permuted, by
    seed; a baseline cache tells it from the window."""
    n = 40
    w = Trace("w", np.sort(np.random.default_rng(0).uniform(0, 10, n)),
              np.arange(100, 100 + n, dtype=np.int64), np.arange(1, 1 + n, dtype=np.int64),
              hash_ids=[(i,) for i in range(n)], classes=[f"c{i}" for i in range(n)],
              slo_classes=[f"s{i}" for i in range(n)], meta={"carried_in": 5})
    r = reshuffled(w, 3)
    np.testing.assert_array_equal(r.arrival_s, w.arrival_s)
    np.testing.assert_array_equal(r.prompt_tokens[:5], w.prompt_tokens[:5])  # backlog stays
    assert sorted(r.prompt_tokens.tolist()) == w.prompt_tokens.tolist()
    assert not np.array_equal(r.prompt_tokens, w.prompt_tokens)
    # every field moved with its request
    i = r.prompt_tokens - 100
    np.testing.assert_array_equal(r.output_tokens, i + 1)
    assert r.hash_ids == [(int(k),) for k in i] and r.classes == [f"c{k}" for k in i]
    assert r.slo_classes == [f"s{k}" for k in i]
    assert r.meta["carried_in"] == 5 and r.meta["reshuffle_seed"] == 3
    assert fingerprint(r) != fingerprint(w)
    np.testing.assert_array_equal(reshuffled(w, 3).prompt_tokens, r.prompt_tokens)
    assert not np.array_equal(reshuffled(w, 4).prompt_tokens, r.prompt_tokens)


def test_the_replay_reports_the_envelope_a_policy_measured_on_the_window() -> None:
    """``ReplayEvaluator.envelope``: the waiting envelope the policy's scheduler has in
    force after the window (tailwise: measured, so it follows ``aging_factor``); None for
    a scheduler without one."""
    w = make_trace(300, rate=4.0)
    tw = Policy(mode=Mode.TAILWISE)
    ev = ReplayEvaluator(EngineConfig(), metrics_config(tw), H100_LLAMA3_8B)
    e1 = ev.envelope(w, tw)
    wide = tw.replace(regime=dataclasses.replace(tw.regime, aging_factor=8.0,
                                                 queue_floor=False))
    e2 = ev.envelope(w, wide)
    assert e1 is not None and e2 is not None and e2 > e1 > 0
    assert ev.envelope(w, Policy(mode=Mode.FCFS)) is None

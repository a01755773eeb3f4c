"""Tuner rounds on a fake evaluator: gate, NaN handling, drift, resume, live mode."""

from __future__ import annotations

import builtins
import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bo_fakes import FakeEvaluator, make_trace, summary

from tailwise.bayes_opt.freeze import select_policy
from tailwise.bayes_opt.objective import ObjectiveConfig, ObjectiveKind, evaluate
from tailwise.bayes_opt.replay import ReplayEvaluator, metrics_config
from tailwise.bayes_opt.space import SpaceConfig
from tailwise.bayes_opt.tuner import (
    Tuner,
    TunerConfig,
    TunerConfigError,
    TunerError,
    switch_departures,
)
from tailwise.records.trace import Trace
from tailwise.scorer.policy import (
    BoostParams,
    EwsjfParams,
    Mode,
    Policy,
    PolicyError,
    QueueSpec,
    neutral_policy,
)
from tailwise.scorer.registry import default_policy
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import EngineConfig

CURRENT = Policy(mode=Mode.TAILWISE)  # γ = 0.1, off the fake's optimum γ = 0.3
PARTITION = (QueueSpec(1, 1024, 200, 0.001), QueueSpec(1024, 20000, 3000, 0.00001))


def tuner(tmp_path: Path | None = None, evaluator: Any = None, **cfg: Any) -> Tuner:
    storage = str(tmp_path / "study.journal") if tmp_path is not None else "memory"
    return Tuner(TunerConfig(storage=storage, **cfg), Policy(),
                 evaluator=evaluator if evaluator is not None else FakeEvaluator())


def test_a_challenger_that_beats_the_champion_by_the_margin_is_promoted() -> None:
    fake = FakeEvaluator()
    tu = tuner(evaluator=fake)
    res = tu.tune(make_trace(), CURRENT, PARTITION, n_trials=10)
    assert fake.policies[0] is CURRENT  # the champion is measured as it is
    assert res.trials[0].role == "champion" and len(res.trials) == 10
    assert {t.role for t in res.trials[1:]} == {"challenger"}
    champ = evaluate(summary(fake.latency(CURRENT)), summary(4.0), ObjectiveConfig())[0]
    assert res.champion_value == pytest.approx(champ)
    assert res.promoted is not None and res.improvement is not None
    assert res.improvement > tu.cfg.margin
    assert res.best_value is not None and res.best_value > champ * (1 + tu.cfg.margin)
    p = res.promoted
    p.validate()
    assert fake.latency(p) < fake.latency(CURRENT)
    assert p.mode is Mode.TAILWISE and "round=1" in p.note
    assert 1 <= len(p.queues) <= p.ewsjf.max_queues  # its own refined partition


def test_a_champion_at_the_optimum_is_never_replaced() -> None:
    best = CURRENT.replace(boost=BoostParams(gamma=FakeEvaluator.OPTIMUM))
    res = tuner().tune(make_trace(), best, PARTITION, n_trials=12)
    assert res.promoted is None
    assert res.champion_value is not None and "margin" in res.reason
    assert res.improvement is not None and res.improvement <= 0.02


def test_the_margin_gates_small_improvements() -> None:
    res = tuner(margin=10.0).tune(make_trace(), CURRENT, PARTITION, n_trials=8)
    assert res.promoted is None and res.improvement is not None and 0 < res.improvement < 10


def test_nan_objective_fails_the_trial_and_is_never_promoted() -> None:
    # the good region (γ > 0.15) replays to NaN: those trials FAIL and cannot be promoted
    fake = FakeEvaluator(nan_if=lambda p: p.boost.gamma > 0.15)
    tu = tuner(evaluator=fake)
    res = tu.tune(make_trace(), CURRENT, PARTITION, n_trials=16)
    by_number = {t.number: t for t in tu.study.trials}
    failed = [t for t in res.trials if t.state == "FAIL"]
    assert failed, "the sampler should have tried γ > 1"
    for t in res.trials:
        gamma = by_number[t.number].params["boost.gamma"]
        assert (t.state == "FAIL") == (gamma > 0.15)
        if t.state == "FAIL":
            assert t.value is None and t.error == "objective is not finite"
    if res.promoted is not None:
        assert res.promoted.boost.gamma <= 0.15


def test_all_challengers_nan_means_no_promotion() -> None:
    fake = FakeEvaluator(nan_if=lambda p: p is not CURRENT)
    res = tuner(evaluator=fake).tune(make_trace(), CURRENT, PARTITION, n_trials=6)
    assert [t.state for t in res.trials] == ["COMPLETE"] + ["FAIL"] * 5
    assert res.promoted is None and res.reason == "no challenger completed"


def test_a_champion_without_a_finite_value_blocks_promotion() -> None:
    fake = FakeEvaluator(nan_if=lambda p: p is CURRENT)
    res = tuner(evaluator=fake).tune(make_trace(), CURRENT, PARTITION, n_trials=6)
    assert res.trials[0].state == "FAIL" and res.champion_value is None
    assert any(t.state == "COMPLETE" for t in res.trials[1:])
    assert res.promoted is None and "champion" in res.reason


def test_invalid_candidates_fail_cleanly() -> None:
    # without partition search, the learner's 2 queues exceed max_queues = 1 of the base
    tu = Tuner(TunerConfig(storage="memory", space=SpaceConfig(search_partition=False)),
               Policy(ewsjf=EwsjfParams(max_queues=1)), evaluator=FakeEvaluator())
    res = tu.tune(make_trace(), CURRENT, PARTITION, n_trials=4)
    assert res.trials[0].state == "COMPLETE"  # the champion is what runs, valid
    assert all(t.state == "FAIL" and t.error and "queues" in t.error for t in res.trials[1:])
    assert res.promoted is None


def test_replay_window_is_capped_deterministically() -> None:
    fake = FakeEvaluator()
    tu = tuner(evaluator=fake, max_window_requests=50, narrow_envelope=False)
    res = tu.tune(make_trace(300), CURRENT, PARTITION, n_trials=3)
    # each trial replays the capped window and its stressed copy (``stress_load``; the
    # envelope check's extra replay of a promoted policy is counted in its own test)
    assert fake.windows == [50] * 6 and res.window_requests == 50
    assert all(t.user_attrs["window_requests"] == 50 for t in tu.study.trials)


def test_too_small_window_is_not_tuned_on() -> None:
    fake = FakeEvaluator()
    res = tuner(evaluator=fake, min_window_requests=100).tune(
        make_trace(40), CURRENT, PARTITION, n_trials=3)
    assert res.trials == [] and res.promoted is None and "min_window_requests" in res.reason
    assert fake.windows == []


def test_trials_carry_dashboard_attributes() -> None:
    tu = tuner()
    tu.tune(make_trace(), CURRENT, PARTITION, n_trials=3)
    for t in tu.study.trials:
        a = t.user_attrs
        assert a["round"] == 1 and len(a["window_id"]) == 16 and a["drift"] is None
        assert {"C", "L", "S", "U", "ttlt_p99", "role", "policy"} <= set(a)
        Policy.from_dict(a["policy"]).validate()
    assert tu.study.user_attrs["tailwise:objective"] == "operator"
    assert tu.study.user_attrs["tailwise:last_round"]["round"] == 1


def test_drift_is_tracked_between_windows_and_survives_restart(tmp_path: Path) -> None:
    w = make_trace(400, seed=1)
    r1 = tuner(tmp_path).tune(w, CURRENT, PARTITION, n_trials=2)
    assert r1.drift is None  # nothing to compare with yet
    r2 = tuner(tmp_path).tune(make_trace(400, seed=2), CURRENT, PARTITION, n_trials=2)
    assert r2.drift == 0.0  # same workload, other sample: ADWIN detects no drift
    shifted = make_trace(400, seed=3, long_share=0.8)
    r3 = tuner(tmp_path).tune(shifted, CURRENT, PARTITION, n_trials=2)
    assert r3.drift is not None and r3.drift > 0.4
    assert r3.drift > 3 * r2.drift
    last = [t for t in tuner(tmp_path).study.trials if t.user_attrs["round"] == 3]
    assert all(t.user_attrs["drift"] == pytest.approx(r3.drift) for t in last)
    assert all(t.user_attrs["drift_detected"] is True for t in last)
    assert all(t.user_attrs["drift_detected"] is False for t in tuner(tmp_path).study.trials
               if t.user_attrs["round"] == 2)


def test_restart_resumes_the_study(tmp_path: Path) -> None:
    t1 = tuner(tmp_path)
    r1 = t1.tune(make_trace(), CURRENT, PARTITION, n_trials=4)
    done = [(t.number, t.value) for t in t1.study.trials]
    t1.close()
    t2 = tuner(tmp_path)
    assert [(t.number, t.value) for t in t2.study.trials] == done
    r2 = t2.tune(make_trace(seed=5), CURRENT, PARTITION, n_trials=3)
    assert (r1.round, r2.round) == (1, 2)
    assert len(t2.study.trials) == 7
    # the restarted sampler does not replay the random draws of the first process
    p1 = [t.params["boost.gamma"] for t in t2.study.trials[1:4]]
    p2 = [t.params["boost.gamma"] for t in t2.study.trials[5:7]]
    assert not set(p1) & set(p2)


def test_a_study_of_another_objective_is_refused(tmp_path: Path) -> None:
    tuner(tmp_path).close()
    with pytest.raises(TunerError, match="minimize"):
        tuner(tmp_path, objective=ObjectiveConfig(kind=ObjectiveKind.P99_TTLT))
    with pytest.raises(TunerError, match="goodput"):
        tuner(tmp_path, objective=ObjectiveConfig(kind=ObjectiveKind.GOODPUT))


def test_p99_objective_minimises() -> None:
    tu = tuner(objective=ObjectiveConfig(kind=ObjectiveKind.P99_TTLT))
    res = tu.tune(make_trace(), CURRENT, PARTITION, n_trials=8)
    assert res.promoted is not None and res.best_value is not None
    assert res.champion_value is not None and res.best_value < res.champion_value


def test_gp_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    tu = tuner(sampler="gp", n_startup_trials=2)
    res = tu.tune(make_trace(), CURRENT, PARTITION, n_trials=5)
    assert type(tu.study.sampler).__name__ == "GPSampler"
    assert sum(t.state == "COMPLETE" for t in res.trials) == 5

    real_import = builtins.__import__

    def no_torch(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "torch":
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(TunerConfigError, match="pip install torch"):
        tuner(sampler="gp")


@pytest.mark.parametrize("kwargs, field", [
    ({"sampler": "cmaes"}, "sampler"), ({"margin": -0.1}, "margin"),
    ({"max_window_requests": 0}, "max_window_requests"), ({"window_cap": "head"}, "window_cap"),
    ({"heartbeat_interval": 0}, "heartbeat_interval"), ({"seed": -1}, "seed"),
])
def test_config_errors_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(TunerConfigError, match=field):
        TunerConfig(**kwargs)
    with pytest.raises(TunerConfigError, match="n_trials"):
        tuner().tune(make_trace(), CURRENT, PARTITION, n_trials=0)


# -- live reward ----------------------------------------------------------------------------
def test_live_ask_tell_scores_from_engine_metrics(tmp_path: Path) -> None:
    tu = tuner(tmp_path)
    n, policy = tu.ask_live(CURRENT, PARTITION)
    policy.validate()
    assert policy.mode is Mode.TAILWISE
    running = tu.study.trials[n]
    assert running.state.name == "RUNNING" and "tailwise:heartbeat" in running.system_attrs
    got = tu.tell_live(n, summary(2.0), baseline=summary(4.0))
    want = evaluate(summary(2.0), summary(4.0), ObjectiveConfig())[0]
    assert got.state == "COMPLETE" and got.value == pytest.approx(want) and got.role == "live"
    # NaN metrics ⇒ FAILED; the remembered baseline is used
    n2, _ = tu.ask_live()
    bad = tu.tell_live(n2, summary(None))
    assert bad.state == "FAIL" and bad.value is None
    with pytest.raises(TunerError, match="not RUNNING"):
        tu.tell_live(n2, summary(2.0))
    with pytest.raises(TunerError, match="does not exist"):
        tu.tell_live(99, summary(2.0))


def test_live_trial_can_be_told_after_a_restart(tmp_path: Path) -> None:
    t1 = tuner(tmp_path)
    n, _ = t1.ask_live(CURRENT, PARTITION)
    t1.close(fail_pending=False)
    t2 = tuner(tmp_path)
    res = t2.tell_live(n, summary(2.0), baseline=summary(4.0))
    assert res.state == "COMPLETE"


def test_close_fails_pending_live_trials() -> None:
    tu = tuner()
    n, _ = tu.ask_live(CURRENT, PARTITION)
    tu.close()
    assert tu.study.trials[n].state.name == "FAIL"


# -- the real replay evaluator -----------------------------------------------------------------
def test_replay_evaluator_caches_the_fcfs_baseline() -> None:
    ev = ReplayEvaluator(EngineConfig(), metrics_config(Policy()))
    w = make_trace(150)
    b1 = ev.baseline(w)
    b2 = ev.baseline(make_trace(150))  # equal arrays ⇒ same fingerprint
    assert ev.baseline_runs == 1 and b1 is b2
    # differential: the neutral policy replays exactly like the baseline
    run = ev.run(w, neutral_policy())
    assert run["overall"]["ttlt"] == b1["overall"]["ttlt"]
    assert math.isfinite(run["overall"]["ttlt"]["p99"])
    ev.baseline(make_trace(150, seed=9))
    assert ev.baseline_runs == 2
    assert np.isfinite(evaluate(run, b1, ObjectiveConfig())[0])


def test_replay_continuation_charges_what_a_drain_hides() -> None:
    """A window replayed alone ends in a drain; with ``continuation`` its traffic goes on
    after it, only the window's requests are scored, and a policy that lets later short
    arrivals overtake long requests pays for it in their TTLT (FCFS hardly moves)."""
    rng = np.random.default_rng(0)
    n = 300
    arrival = np.sort(rng.uniform(0, 20, n))
    prompt = np.where(rng.random(n) < 0.8, rng.integers(100, 400, n), rng.integers(4000, 8000, n))
    output = np.where(rng.random(n) < 0.8, rng.integers(20, 100, n), rng.integers(300, 800, n))
    w = Trace("overload", arrival, prompt.astype(np.int64), output.astype(np.int64))
    eng = EngineConfig(num_gpu_blocks=2000, max_num_seqs=16)
    p99 = {}
    for c in (0, 1):
        ev = ReplayEvaluator(eng, metrics_config(Policy()), continuation=c)
        base, run = ev.baseline(w), ev.run(w, default_policy("uniboost", H100_LLAMA3_8B))
        assert base["overall"]["requests"] == run["overall"]["requests"] == n
        p99[c] = (run["overall"]["ttlt"]["p99"], base["overall"]["ttlt"]["p99"])
    assert p99[1][1] < 1.2 * p99[0][1]  # FCFS: the window's requests are not overtaken
    assert p99[1][0] > 1.5 * p99[0][0]  # overtaken by the traffic after the window
    with pytest.raises(ValueError, match="continuation"):
        ReplayEvaluator(eng, metrics_config(Policy()), continuation=-1)
    with pytest.raises(TunerConfigError, match=r"tuner\.continuation"):
        TunerConfig(continuation=True)


def test_config_from_plain_tables_as_a_config_file_gives_them() -> None:
    cfg = TunerConfig(
        storage="memory", objective={"kind": "p99_ttlt", "lambdas": {"starvation": 1.0},
                                     "latency_stats": ["p99"]},
        space={"mode": "boost", "gamma": [0.05, 0.5], "around_base": None},
        engine={"num_gpu_blocks": 1000}, model=H100_LLAMA3_8B.to_dict(),
    )
    assert cfg.objective.kind is ObjectiveKind.P99_TTLT
    assert cfg.objective.lambdas.starvation == 1.0 and cfg.objective.latency_stats == ("p99",)
    assert cfg.space.mode is Mode.BOOST and cfg.space.gamma == (0.05, 0.5)
    assert cfg.engine.num_gpu_blocks == 1000 and cfg.model == H100_LLAMA3_8B
    with pytest.raises(TunerConfigError, match=r"tuner\.space"):
        TunerConfig(space={"nope": 1})
    with pytest.raises(TunerConfigError, match=r"tuner\.engine"):
        TunerConfig(engine={"block_size": 0})
    with pytest.raises(PolicyError, match=r"space\.gamma"):
        TunerConfig(space={"gamma": [1.0]})


class SwitchEvaluator(FakeEvaluator):
    """The fake's γ landscape; with ``tail_off_wins`` tail protection switched off also
    cuts latency by a third. No other switch changes anything."""

    def __init__(self, tail_off_wins: bool) -> None:
        super().__init__()
        self.tail_off_wins = tail_off_wins

    def latency(self, p: Policy) -> float:
        base = super().latency(p)
        return base * (2 / 3 if self.tail_off_wins and not p.regime.tail_protect else 1.0)


@pytest.mark.parametrize("tail_off_wins", [False, True])
@pytest.mark.parametrize("simplify", [True, False])
def test_switches_the_window_cannot_tell_apart_go_back_to_the_base_policy(
        tail_off_wins: bool, simplify: bool) -> None:
    """With every switch searched, the promoted draw flips switches at random; the ones
    the window does not exercise go back to the base policy's values (one replay each),
    the one that wins on the window stays flipped."""
    fake = SwitchEvaluator(tail_off_wins)
    base = Policy(mode=Mode.TAILWISE)
    tu = Tuner(TunerConfig(storage="memory", simplify=simplify,
                           space=SpaceConfig(search_switches=True)), base, evaluator=fake)
    res = tu.tune(make_trace(), CURRENT, PARTITION, n_trials=16)
    assert res.promoted is not None
    left = switch_departures(res.promoted, base)
    if simplify:
        assert left == (["regime.tail_protect"] if tail_off_wins else [])
        assert "back to the base policy's value" in res.reason
        assert "simplified" in res.promoted.note
    else:
        assert len(left) > 1  # the draw's coin flips, published as they are
    # the promoted policy still beats the champion by the margin on the window
    won = evaluate(summary(fake.latency(res.promoted)), summary(4.0), ObjectiveConfig())[0]
    assert res.champion_value is not None and won - res.champion_value > tu.cfg.margin


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"simplify": 1}, "simplify"), ({"simplify_tol": -0.1}, "simplify_tol"),
    ({"simplify_tol": float("nan")}, "simplify_tol"),
])
def test_bad_simplify_settings_are_refused_by_name(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(TunerConfigError, match=rf"^tuner\.{field}"):
        TunerConfig(storage="memory", **kwargs)


class EnvelopeEvaluator(FakeEvaluator):
    """The fake's γ landscape; a waiting envelope wider than the default's
    (``regime.aging_factor`` above 2) also cuts latency by a third with ``wide_wins`` (a
    window in which the envelope binds), else by 0.5%, within the tolerance (a calm
    window rewarding it by chance)."""

    def __init__(self, wide_wins: bool) -> None:
        super().__init__()
        self.wide_wins = wide_wins

    def latency(self, p: Policy) -> float:
        base = super().latency(p)
        if p.regime.aging_factor <= 2.0:
            return base
        return base * (2 / 3 if self.wide_wins else 0.995)


def _promoted_draw(tu: Tuner, number: int | None) -> Policy:
    t = next(t for t in tu.study.get_trials(deepcopy=False) if t.number == number)
    return Policy.from_dict(t.user_attrs["policy"])


@pytest.mark.parametrize("wide_wins", [False, True])
@pytest.mark.parametrize("narrow", [True, False])
def test_a_wider_envelope_the_window_cannot_tell_apart_goes_back_to_the_base(
        wide_wins: bool, narrow: bool) -> None:
    """The promoted draw widens the waiting envelope (aging factor 2 -> more); where the
    window cannot tell (the envelope never binds) the base policy's envelope is
    published instead, one replay more; where the wider one wins, it is kept."""
    base = Policy(mode=Mode.TAILWISE)
    for seed in range(10):  # the first sampler seed whose promoted draw widens the envelope
        fake = EnvelopeEvaluator(wide_wins)
        tu = Tuner(TunerConfig(storage="memory", narrow_envelope=narrow, stress_load=0,
                               seed=seed), base, evaluator=fake)
        res = tu.tune(make_trace(), CURRENT, PARTITION, n_trials=12)
        assert res.promoted is not None
        drawn = _promoted_draw(tu, res.best_trial)
        if drawn.regime.aging_factor > base.regime.aging_factor:
            break
    else:
        pytest.fail("no seed in 0-9 promoted a draw with a wider envelope")
    if narrow and not wide_wins:
        assert res.promoted.regime.aging_factor == base.regime.aging_factor
        assert res.promoted.regime.queue_floor_factor == min(
            drawn.regime.queue_floor_factor, base.regime.queue_floor_factor)
        assert res.promoted.note.endswith("envelope narrowed")
        assert "waiting envelope kept" in res.reason and "regime.aging_factor" in res.reason
        # everything else is the draw's
        assert res.promoted.boost.gamma == drawn.boost.gamma
        assert res.promoted.regime.horizon_factor == drawn.regime.horizon_factor
    else:
        assert res.promoted.regime.aging_factor == drawn.regime.aging_factor
        assert "envelope narrowed" not in res.promoted.note
    won = evaluate(summary(fake.latency(res.promoted)), summary(4.0), ObjectiveConfig())[0]
    assert res.champion_value is not None and won - res.champion_value > tu.cfg.margin
    # the round's value is the published policy's (the learner stamps it on the policy)
    assert res.best_value == pytest.approx(won)
    assert res.improvement == pytest.approx(won - res.champion_value)
    # freezing the round's best trial exports the policy as promoted, not the raw draw
    frozen, where = select_policy(tu.study, "best")
    assert frozen.regime == res.promoted.regime and "as promoted" in where


class MeasuredEnvelope(EnvelopeEvaluator):
    """A wider envelope wins the window (``wide_wins``), and the replay reports each
    policy's envelope: ``seconds`` per unit of ``regime.aging_factor``. Without
    ``narrow_wins`` every policy with the default envelope is worth the champion's."""

    def __init__(self, seconds: float, narrow_wins: bool = True) -> None:
        super().__init__(wide_wins=True)
        self.seconds, self.narrow_wins = seconds, narrow_wins
        self.measured: list[float] = []

    def latency(self, p: Policy) -> float:
        if not self.narrow_wins and p.regime.aging_factor <= 2.0:
            return FakeEvaluator.latency(self, CURRENT)
        return super().latency(p)

    def envelope(self, window: Trace, policy: Policy) -> float | None:
        self.measured.append(policy.regime.aging_factor)
        return self.seconds * policy.regime.aging_factor


@pytest.mark.parametrize(("seconds", "narrow_wins"), [(1.0, True), (100.0, True),
                                                    (100.0, False)])
def test_an_envelope_longer_than_the_window_is_never_published(seconds: float,
                                                               narrow_wins: bool) -> None:
    """``window_bounds_envelope``: the window (200 requests at 10/s: ~20 s) cannot show
    what an envelope longer than itself costs. The promoted draw's wider envelope wins the
    window; measured at 100 s per aging unit it is longer than the window, so the base's
    envelope is published, or nothing where that no longer beats the champion; at 1 s
    per unit the window could have shown it, and it is kept as without the switch."""
    base = Policy(mode=Mode.TAILWISE)
    window = make_trace()
    for seed in range(10):  # the first sampler seed whose promoted draw widens the envelope
        fake = MeasuredEnvelope(seconds, narrow_wins)
        tu = Tuner(TunerConfig(storage="memory", stress_load=0, seed=seed,
                               window_bounds_envelope=True), base, evaluator=fake)
        res = tu.tune(window, CURRENT, PARTITION, n_trials=12)
        best = res.best_trial
        if best is not None and _promoted_draw(tu, best).regime.aging_factor > 2.0:
            break
    else:
        pytest.fail("no seed in 0-9 promoted a draw with a wider envelope")
    drawn = _promoted_draw(tu, best)
    assert fake.measured == [drawn.regime.aging_factor]  # the promoted policy, once
    if seconds == 1.0:
        assert res.promoted is not None
        assert res.promoted.regime.aging_factor == drawn.regime.aging_factor
        return
    assert seconds * drawn.regime.aging_factor > window.duration_s
    assert "is longer than what the window" in res.reason
    if not narrow_wins:
        assert res.promoted is None and "not published" in res.reason
        return
    assert res.promoted is not None
    assert res.promoted.regime.aging_factor == base.regime.aging_factor
    assert res.promoted.note.endswith("envelope narrowed")
    assert res.improvement is not None and res.improvement > tu.cfg.margin


def test_narrowing_the_envelope_is_refused_by_name_when_not_a_bool() -> None:
    with pytest.raises(TunerConfigError, match=r"^tuner\.narrow_envelope"):
        TunerConfig(storage="memory", narrow_envelope=1)  # type: ignore[arg-type]


class StressEvaluator(SwitchEvaluator):
    """Tail protection off cuts latency by a third on the calm window and triples it on
    the window's traffic compressed to overload (its FCFS baseline is the same there)."""

    def __init__(self) -> None:
        super().__init__(tail_off_wins=True)
        self.stressed_runs = 0

    def run(self, window: Trace, policy: Policy) -> dict[str, Any]:
        if "stress_rate" not in window.meta:
            return dict(super().run(window, policy))
        self.stressed_runs += 1
        lat = FakeEvaluator.latency(self, policy)
        return summary(lat * (3.0 if not policy.regime.tail_protect else 1.0))


@pytest.mark.parametrize("stress", [False, True])
def test_stress_scoring_keeps_what_holds_up_under_congestion_the_window_does_not_show(
        stress: bool) -> None:
    fake = StressEvaluator()
    cfg = TunerConfig(storage="memory", space=SpaceConfig(search_switches=True),
                      stress_load=1.5 if stress else 0)
    tu = Tuner(cfg, Policy(mode=Mode.TAILWISE), evaluator=fake)
    window = make_trace(rate=1.0)  # far below 1.5x capacity: stressed
    res = tu.tune(window, CURRENT, PARTITION, n_trials=16)
    assert res.promoted is not None  # γ alone is worth promoting either way
    # the window alone rewards switching tail protection off; with stress it stays on
    assert res.promoted.regime.tail_protect is stress
    assert (fake.stressed_runs > 0) is stress
    trials = tu.study.get_trials(deepcopy=False)
    champ = next(t for t in trials if t.user_attrs.get("role") == "champion")
    if stress:  # each trial's value is the blend, both parts recorded
        w, s = champ.user_attrs["value_window"], champ.user_attrs["value_stress"]
        assert champ.values[0] == pytest.approx(0.5 * w + 0.5 * s)
        assert champ.user_attrs["stress_rate"] > 1
    else:
        assert "value_stress" not in champ.user_attrs and champ.user_attrs["stress_rate"] is None


@pytest.mark.parametrize("case", ["loaded", "absolute objective", "weight 0"])
def test_no_stress_replay_where_it_does_not_apply(case: str) -> None:
    """A window that offers the stress load already, an objective of absolute figures
    (not comparable between the window and its stressed copy) and a zero weight all score
    the window alone; the same round with a low load and the operator objective does not."""
    kw: dict[str, Any] = {"stress_load": 1.5}
    if case == "loaded":
        kw["stress_load"] = 0.01
    elif case == "absolute objective":
        kw["objective"] = ObjectiveConfig(kind=ObjectiveKind.P99_TTLT)
    else:
        kw["stress_weight"] = 0.0
    for off in (True, False):
        fake = StressEvaluator()
        tu = Tuner(TunerConfig(storage="memory", **(kw if off else {"stress_load": 1.5})),
                   Policy(mode=Mode.TAILWISE), evaluator=fake)
        tu.tune(make_trace(rate=1.0), CURRENT, PARTITION, n_trials=4)
        champ = next(t for t in tu.study.get_trials(deepcopy=False)
                     if t.user_attrs.get("role") == "champion")
        assert (fake.stressed_runs == 0) is off
        assert (champ.user_attrs["stress_rate"] is None) is off


def test_stress_rate_min_stresses_a_window_that_offers_the_load_already() -> None:
    """``stress_rate_min`` reaches the round: a window already above ``stress_load`` gets a
    stressed copy at that rate factor (none with the default 1)."""
    for rate_min, want in ((1.0, None), (1.25, 1.25)):
        fake = StressEvaluator()
        tu = Tuner(TunerConfig(storage="memory", stress_load=0.01, stress_rate_min=rate_min),
                   Policy(mode=Mode.TAILWISE), evaluator=fake)
        tu.tune(make_trace(rate=1.0), CURRENT, PARTITION, n_trials=2)
        champ = next(t for t in tu.study.get_trials(deepcopy=False)
                     if t.user_attrs.get("role") == "champion")
        assert champ.user_attrs["stress_rate"] == (None if want is None else pytest.approx(want))
        assert (fake.stressed_runs > 0) is (want is not None)


def test_the_gate_checks_score_a_policy_as_the_round_does() -> None:
    """The confirmation and parsimony replays go through ``_value`` with the window's
    ``_stress``: the same blend."""
    fake = StressEvaluator()
    tu = Tuner(TunerConfig(storage="memory", stress_load=1.5, stress_weight=0.25),
               Policy(mode=Mode.TAILWISE), evaluator=fake)
    window = make_trace(rate=1.0)
    off = CURRENT.replace(regime=dataclasses.replace(CURRENT.regime, tail_protect=False))
    obj = ObjectiveConfig()
    for pol, stress_factor in ((CURRENT, 1.0), (off, 3.0)):
        lat = FakeEvaluator.latency(fake, pol)
        w = evaluate(summary(fake.latency(pol)), summary(4.0), obj)[0]
        st = evaluate(summary(lat * stress_factor), summary(4.0), obj)[0]
        assert tu._value(window, pol, tu._stress(window)) == pytest.approx(0.75 * w + 0.25 * st)
        assert (st < w) is (pol is off)  # the stressed replay is in it


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"stress_load": -1.0}, "stress_load"), ({"stress_load": float("inf")}, "stress_load"),
    ({"stress_load": True}, "stress_load"), ({"stress_weight": 1.5}, "stress_weight"),
    ({"stress_weight": float("nan")}, "stress_weight"),
    ({"stress_rate_min": 0.9}, "stress_rate_min"), ({"stress_rate_min": 4.5}, "stress_rate_min"),
    ({"stress_rate_min": True}, "stress_rate_min"),
])
def test_bad_stress_settings_are_refused_by_name(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(TunerConfigError, match=rf"^tuner\.{field}"):
        TunerConfig(storage="memory", **kwargs)


def test_the_envelope_bound_by_the_window_is_off_by_default_and_checked() -> None:
    """Off: no envelope replay, the wider envelope the window rewards is published (seed
    2 promotes a draw with a wider envelope, as the test above finds)."""
    fake = MeasuredEnvelope(100.0)
    tu = Tuner(TunerConfig(storage="memory", stress_load=0, seed=2), Policy(mode=Mode.TAILWISE),
               evaluator=fake)
    res = tu.tune(make_trace(), CURRENT, PARTITION, n_trials=12)
    assert res.promoted is not None and res.promoted.regime.aging_factor > 2.0
    assert fake.measured == []
    with pytest.raises(TunerConfigError, match=r"^tuner\.window_bounds_envelope"):
        TunerConfig(storage="memory", window_bounds_envelope=1)  # type: ignore[arg-type]
    with pytest.raises(TunerConfigError, match=r"^tuner\.window_bounds_envelope.*narrow_envelope"):
        TunerConfig(storage="memory", window_bounds_envelope=True, narrow_envelope=False)


class BrokenEnvelope(MeasuredEnvelope):
    def envelope(self, window: Trace, policy: Policy) -> float | None:
        raise RuntimeError("simulator crashed")


@pytest.mark.parametrize("fake", [BrokenEnvelope(1.0), EnvelopeEvaluator(wide_wins=True)],
                         ids=["replay-fails", "no-envelope-method"])
def test_an_envelope_that_cannot_be_measured_is_not_published(fake: EnvelopeEvaluator) -> None:
    """The bound fails closed: when the promoted policy's envelope cannot be measured
    (the replay fails, or the evaluator has no ``envelope``), the wider envelope is not
    published (the base's is, where it still wins)."""
    base = Policy(mode=Mode.TAILWISE)
    tu = Tuner(TunerConfig(storage="memory", stress_load=0, seed=2,
                           window_bounds_envelope=True), base, evaluator=fake)
    res = tu.tune(make_trace(), CURRENT, PARTITION, n_trials=12)
    assert _promoted_draw(tu, res.best_trial).regime.aging_factor > 2.0
    assert "measured" in res.reason
    assert res.promoted is None or res.promoted.regime.aging_factor == base.regime.aging_factor


def test_a_round_leaves_nothing_queued_for_another_sidecar_to_take(tmp_path: Path) -> None:
    """Two sidecars tuning one shared study: the champion and the anchors are scored by
    the round itself and added as finished trials, never enqueued, so another sidecar's
    ``optimize`` cannot pop them (it took a round's champion before, and that round then
    had no champion value)."""
    import optuna

    path = tmp_path / "shared.journal"
    a = Tuner(TunerConfig(storage=str(path), study_name="fleet", anchors=("kairos",)),
              Policy(), evaluator=FakeEvaluator())
    b = Tuner(TunerConfig(storage=str(path), study_name="fleet"), Policy(),
              evaluator=FakeEvaluator())
    seen: list[int] = []

    def no_queue(*_: Any, **__: Any) -> None:
        raise AssertionError("a round enqueued a trial in the shared study")

    for tu in (a, b):
        tu.study.enqueue_trial = no_queue  # type: ignore[method-assign]
        original = tu.study.optimize

        def watched(*args: Any, _orig: Any = original, _tu: Tuner = tu, **kw: Any) -> None:
            waiting = _tu.study.get_trials(states=(optuna.trial.TrialState.WAITING,))
            seen.append(len(waiting))
            _orig(*args, **kw)

        tu.study.optimize = watched  # type: ignore[method-assign]
    ra = a.tune(make_trace(), CURRENT, PARTITION, n_trials=4)
    rb = b.tune(make_trace(), CURRENT, PARTITION, n_trials=4)
    assert seen == [0, 0]
    for res, anchors in ((ra, 1), (rb, 0)):
        assert res.champion_value is not None and res.trials[0].role == "champion"
        assert [t.role for t in res.trials].count("anchor") == anchors
        assert len(res.trials) == 4 + anchors
    # the champion's trial carries its parameters, so the sampler knows where it sits
    study = optuna.load_study(study_name="fleet", storage=a.study._storage)
    champs = [t for t in study.get_trials() if t.user_attrs.get("role") == "champion"]
    assert len(champs) == 2 and all(t.params and t.state.name == "COMPLETE" for t in champs)
    assert all(t.datetime_start is not None and t.datetime_complete is not None
               and t.datetime_start <= t.datetime_complete for t in champs)


def test_a_champion_that_fails_is_a_failed_trial_and_nothing_is_promoted() -> None:
    class Broken(FakeEvaluator):
        def run(self, trace: Trace, policy: Policy) -> dict[str, Any]:
            if policy is CURRENT:
                raise RuntimeError("replay failed")
            return super().run(trace, policy)

    res = tuner(evaluator=Broken()).tune(make_trace(), CURRENT, PARTITION, n_trials=5)
    assert res.promoted is None and res.champion_value is None
    assert "champion has no finite value" in res.reason
    assert res.trials[0].role == "champion" and res.trials[0].state == "FAIL"


def test_the_round_timeout_bounds_the_champion_anchors_and_challengers_together() -> None:
    """A trial starts only while the round has time left (the champion's always), as
    Optuna's timeout bounds a study: with every replay slower than the whole budget the
    round is its champion alone."""
    import time as _time

    class Slow(FakeEvaluator):
        def run(self, trace: Trace, policy: Policy) -> dict[str, Any]:
            _time.sleep(0.05)
            return super().run(trace, policy)

    res = tuner(evaluator=Slow(), anchors=("kairos", "ewsjf"), round_timeout_s=0.01,
                stress_load=0).tune(make_trace(), CURRENT, PARTITION, n_trials=6)
    assert [t.role for t in res.trials] == ["champion"]
    res = tuner(evaluator=Slow(), anchors=("kairos", "ewsjf"),
                stress_load=0).tune(make_trace(), CURRENT, PARTITION, n_trials=3)
    assert [t.role for t in res.trials] == ["champion", "anchor", "anchor", "challenger",
                                            "challenger"]

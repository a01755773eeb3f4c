"""The learning loop: engine-time schedule, gated publishing, partitioner, persistence."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from learner_helpers import FakePartitioner, FakeResult, FakeTuner, events_batch

from tailwise.learner.config import LoopConfig, WindowConfig
from tailwise.learner.loop import LearningLoop
from tailwise.learner.metrics import SidecarMetrics
from tailwise.learner.publisher import PolicyStore
from tailwise.learner.state import StateFile
from tailwise.learner.window import TelemetryWindow
from tailwise.scorer.policy import Mode, Policy, Source, neutral_policy
from tailwise.wire.v1 import policy_pb2 as pb


class Rig:
    def __init__(self, tmp: Path, tuner: Any = None, partitioner: Any = None,
                 window_s: float = 600.0, min_requests: int = 5, every: float | None = None,
                 eager: bool = True, span_factor: int = 1, impute: bool = False,
                 settle: float = WindowConfig().settle_quantile) -> None:
        self.metrics = SidecarMetrics()
        self.state = StateFile(tmp)
        self.store = PolicyStore(self.state, self.metrics,
                                 neutral_policy().replace(mode=Mode.BOOST))
        self.window = TelemetryWindow(step_counts=impute)
        self.tuner = tuner
        self.loop = LearningLoop(
            self.window, self.store, self.state, self.metrics,
            loop_cfg=LoopConfig(round_every_s=every, n_trials=3, tune_on_partition_change=eager),
            window_cfg=WindowConfig(trial_window_s=window_s, min_requests=min_requests,
                                    max_span_factor=span_factor, impute_unfinished=impute,
                                    settle_quantile=settle),
            tuner_factory=(lambda base: tuner) if tuner is not None else None,
            partitioner_factory=partitioner)

    def feed(self, n: int, t0: float, dt_s: float = 1.0, start: int = 0,
             prompt: int = 100) -> None:
        self.window.apply(events_batch(n, t0=t0, dt_s=dt_s, start=start, prompt=prompt))

    def value(self, name: str, **labels: str) -> float:
        v = self.metrics.registry.get_sample_value(name, labels or None)
        return 0.0 if v is None else v


def test_rounds_follow_engine_time_not_wall_time(tmp_path: Path) -> None:
    """An hour of engine time, fed in one-minute batches as fast as Python runs, gives
    exactly one round per 600 engine seconds."""
    tuner = FakeTuner()
    rig = Rig(tmp_path, tuner)
    rounds_at: list[float] = []
    for minute in range(60):
        rig.feed(30, t0=minute * 60.0, dt_s=2.0, start=minute * 30)
        out = rig.loop.step()
        if out.round_run:
            assert out.engine_now is not None
            rounds_at.append(out.engine_now)
    # engine time runs 0 .. 3599 (+1 s finish): rounds when 600 s have passed since the last
    assert len(rounds_at) == 5
    assert all(b - a >= 600.0 for a, b in zip([0.0, *rounds_at], rounds_at, strict=False))
    assert len(tuner.calls) == 5
    window, current, partition, n_trials = tuner.calls[-1]
    assert n_trials == 3
    # the replayed window spans trial_window_s of engine time
    assert window.arrival_s[-1] - window.arrival_s[0] <= 600.0
    assert len(window) >= 280
    assert current.mode is Mode.BOOST and partition == current.queues


def test_promotion_is_versioned_and_reported_to_the_tuner(tmp_path: Path) -> None:
    tuner = FakeTuner([(True, 0.8)])
    rig = Rig(tmp_path, tuner, window_s=60.0)
    rig.feed(100, t0=0.0)
    out = rig.loop.step()
    assert out.outcome == "promoted" and out.published_version == 2
    pub = rig.store.current()
    assert pub.version == 2 and pub.policy is not None
    assert pub.policy.source is Source.LEARNED
    assert pub.policy.boost.gamma == 2 * tuner.calls[0][1].boost.gamma  # the fake doubles γ
    assert dict(pub.policy.extra)["engine_time"] == "100.000"
    assert tuner.champions == [pub.policy]
    assert rig.value("tailwise_best_objective") == 0.8
    assert rig.value("tailwise_trials", state="complete") == 3
    assert rig.value("tailwise_policy_version") == 2


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, None])
def test_non_finite_objective_is_never_pushed(tmp_path: Path, value: float | None) -> None:
    rig = Rig(tmp_path, FakeTuner([(True, value)]), window_s=60.0)
    rig.feed(100, t0=0.0)
    out = rig.loop.step()
    assert out.outcome == "rejected_nonfinite"
    assert rig.store.current().version == 1
    assert rig.value("tailwise_policies_rejected_total") == 1


def test_invalid_promoted_policy_is_never_pushed(tmp_path: Path) -> None:
    import dataclasses

    from tailwise.scorer.policy import SafetyParams

    class BadTuner(FakeTuner):
        def tune(self, window: Any, current: Policy, partition: Any, n_trials: int) -> FakeResult:
            bad = dataclasses.replace(current, safety=SafetyParams(max_boost_s=99, aging_s=1))
            return FakeResult(bad, 0.5)

    rig = Rig(tmp_path, BadTuner(), window_s=60.0)
    rig.feed(100, t0=0.0)
    assert rig.loop.step().outcome == "rejected_invalid"
    assert rig.store.current().version == 1


def test_kill_switch_pauses_promotion(tmp_path: Path) -> None:
    rig = Rig(tmp_path, FakeTuner([(True, 0.5), (True, 0.5)]), window_s=60.0)
    killed = rig.store.kill("test")
    rig.feed(100, t0=0.0)
    assert rig.loop.step().outcome == "paused"
    assert rig.store.current().version == killed.version
    rig.store.set_paused(False)
    rig.feed(100, t0=100.0, start=100)
    assert rig.loop.step().outcome == "promoted"


def test_too_few_requests_skip_the_round(tmp_path: Path) -> None:
    tuner = FakeTuner()
    rig = Rig(tmp_path, tuner, window_s=60.0, min_requests=500)
    rig.feed(100, t0=0.0)
    assert rig.loop.step().outcome == "too_few_requests"
    assert tuner.calls == []
    assert rig.value("tailwise_tuning_rounds_total", outcome="too_few_requests") == 1


@pytest.mark.parametrize("impute", [False, True])
def test_imputation_replays_the_unfinished_requests_of_the_window(
        tmp_path: Path, impute: bool) -> None:
    """30 finished requests and 40 still in the engine (the latest span, not a settled
    one): with ``impute_unfinished`` the round runs on all 70, the unfinished ones with
    imputed lengths; without, the window holds 30 finished requests, fewer than 50."""
    tuner = FakeTuner()
    rig = Rig(tmp_path, tuner, window_s=100.0, min_requests=50, every=50.0, impute=impute,
              settle=0.0)
    rig.feed(30, t0=0.0)
    b = pb.EngineEvent(engine_id="e")
    for i in range(40):
        b.requests.add(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id=f"u{i}",
                       time=31.0 + i, arrival_time=31.0 + i, prompt_tokens=100)
    rig.window.apply(b)
    out = rig.loop.step()
    if not impute:
        assert out.outcome == "too_few_requests" and tuner.calls == []
        assert "30 finished requests" in rig.loop.history[-1].reason
        return
    assert out.round_run and len(tuner.calls) == 1
    window = tuner.calls[0][0]
    assert len(window) == 70 and window.meta["imputed"] == 40
    assert set(window.output_tokens.tolist()) == {20}  # every finished request had 20


@pytest.mark.parametrize("factor", [1, 2, 3])
def test_light_traffic_grows_the_window_instead_of_skipping_the_round(
        tmp_path: Path, factor: int) -> None:
    """100 requests, one a second: a 40-s window holds ~40 < 70; grown to 80 s (factor 2)
    or 120 s (factor 3) it holds enough, never more than factor × 40 s of arrivals."""
    tuner = FakeTuner()
    rig = Rig(tmp_path, tuner, window_s=40.0, min_requests=70, span_factor=factor)
    rig.feed(100, t0=0.0)
    out = rig.loop.step()
    if factor == 1:
        assert out.outcome == "too_few_requests" and tuner.calls == []
        return
    assert out.round_run and len(tuner.calls) == 1
    window = tuner.calls[0][0]
    assert len(window) >= 70
    assert window.arrival_s[-1] - window.arrival_s[0] <= factor * 40.0


@pytest.mark.parametrize(("later_prompt", "stale"), [(100, False), (5000, True)])
def test_a_policy_tuned_on_traffic_that_has_since_moved_on_is_not_published(
        tmp_path: Path, later_prompt: int, stale: bool) -> None:
    """The settled window holds short prompts; 200 later arrivals are still in the engine.
    Long ones (a shift the window has not seen yet) hold the promotion back; more of the
    same do not."""
    from tailwise.wire.v1 import policy_pb2 as pb

    rig = Rig(tmp_path, FakeTuner([(True, 0.5)]), window_s=60.0, eager=False)
    rig.feed(150, t0=0.0)
    b = pb.EngineEvent(engine_id="e")
    for i in range(200):
        t = 150.0 + 0.25 * i
        b.requests.add(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id=f"late{i}", time=t,
                       arrival_time=t, prompt_tokens=later_prompt + i % 7,
                       slo_class="interactive")
    rig.window.apply(b)
    out = rig.loop.step()
    assert out.round_run
    window = rig.tuner.calls[0][0]
    assert window.prompt_tokens.max() < 1000  # the settled span is before the later ones
    assert (out.outcome == "stale_window") is stale
    assert (rig.store.current().version == 1) is stale


def test_tuner_errors_are_counted_and_the_loop_continues(tmp_path: Path) -> None:
    class Boom(FakeTuner):
        def tune(self, *a: Any, **k: Any) -> FakeResult:
            raise RuntimeError("simulator exploded")

    rig = Rig(tmp_path, Boom(), window_s=60.0)
    rig.feed(100, t0=0.0)
    assert rig.loop.step().outcome == "error"
    assert rig.value("tailwise_loop_errors_total", stage="tune") == 1
    rig.feed(100, t0=100.0, start=100)
    assert rig.loop.step().outcome == "error"  # tried again at the next period


def test_partition_refresh_feeds_the_tuner_and_is_persisted(tmp_path: Path) -> None:
    tuner = FakeTuner([(True, 0.7)])
    rig = Rig(tmp_path, tuner, partitioner=lambda params: FakePartitioner(params, every=50),
              window_s=3600.0)
    rig.feed(60, t0=0.0)  # 60 arrivals: one refresh; eager round although 3600 s not passed
    out = rig.loop.step()
    assert out.partition_changed and out.round_run and out.outcome == "promoted"
    part = tuner.calls[0][2]
    assert len(part) == 1 and part[0].hi == 107.0  # prompts 100..106
    pub = rig.store.current()
    assert pub.policy is not None and pub.policy.queues == part
    assert rig.state.state.partition is not None
    # restart: the partitioner comes back from the persisted state
    rig2 = Rig(tmp_path, FakeTuner(), partitioner=lambda params: FakePartitioner(params))
    assert isinstance(rig2.loop.partitioner, FakePartitioner)
    assert len(rig2.loop.partitioner.values) == 60
    assert rig2.loop.partitioner.refreshes == [0.0]
    assert rig2.store.current().version == pub.version


def test_round_clock_resumes_after_restart_and_restarts_with_a_new_engine_run(
        tmp_path: Path) -> None:
    tuner = FakeTuner()
    rig = Rig(tmp_path, tuner, window_s=100.0)
    rig.feed(150, t0=0.0)
    assert rig.loop.step().round_run  # t=150
    # restart mid-period: the next round is due 100 engine s after the persisted round
    rig2 = Rig(tmp_path, tuner, window_s=100.0)
    rig2.feed(40, t0=160.0, start=1000)  # up to t=200
    assert not rig2.loop.step().round_run
    rig2.feed(20, t0=240.0, start=2000)  # t=260 >= 150 + 100
    assert rig2.loop.step().round_run
    # a new engine run whose clock starts at 0 again: the period restarts from it
    rig3 = Rig(tmp_path, tuner, window_s=100.0)
    rig3.feed(50, t0=0.0, start=3000)
    out = rig3.loop.step()
    assert not out.round_run
    assert rig3.state.state.last_round_engine_time == 0.0


def test_loop_thread_reacts_to_telemetry_progress(tmp_path: Path) -> None:
    """The background thread wakes on ingest (a condition), not on a wall-clock period."""
    tuner = FakeTuner([(True, 0.9)])
    rig = Rig(tmp_path, tuner, window_s=30.0)
    rig.loop.start()
    try:
        rig.feed(50, t0=0.0)
        pub = rig.store.wait_newer(1, timeout=10.0)
        assert pub.version == 2
    finally:
        rig.loop.stop()


def test_with_the_real_tuner_if_available(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    tuner_mod = pytest.importorskip("tailwise.bayes_opt.tuner")
    from tailwise.learner.config import SidecarConfig
    from tailwise.learner.server import default_tuner_factory

    cfg = SidecarConfig(state_dir=tmp_path, study="t",
                        tuner={"min_window_requests": 5, "seed": 1})
    make = default_tuner_factory(cfg)
    rig = Rig(tmp_path, None, window_s=60.0)
    rig.loop._tuner_factory = make
    rig.feed(80, t0=0.0, dt_s=1.0)
    out = rig.loop.step()
    assert out.round_run and out.outcome in ("kept_champion", "promoted")
    tuner = rig.loop._tuner
    assert isinstance(tuner, tuner_mod.Tuner)
    assert len(tuner.study.get_trials(deepcopy=False)) == 3
    assert (tmp_path / "study.journal").exists()
    rig.loop.stop()


def test_shifted_workload_through_telemetry_improves_within_8_trials(tmp_path: Path) -> None:
    """Issue 5's must-show, end to end on the wire: a short→long-heavy shifted workload is
    replayed as engine telemetry (TelemetryEmitter → gRPC → sidecar window), and one round
    of 8 trials finds a policy that beats the default on the replay, which is published."""
    pytest.importorskip("tailwise.bayes_opt.tuner")
    import optuna

    from tailwise.engine_adapter.telemetry import TelemetryEmitter
    from tailwise.learner.config import SidecarConfig
    from tailwise.learner.server import Sidecar
    from tailwise.scorer.request import ReqInfo
    from tailwise.scorer.step_time import H100_LLAMA3_8B
    from tailwise.simulator.engine import EngineConfig
    from tailwise.simulator.workload import LengthClass, concat, generate, rate_scale_for_load

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pre = generate(600, 5.0, seed=1)
    post = generate(600, 5.0, classes=(LengthClass("short", 0.5, 128, 32),
                                       LengthClass("long", 0.5, 6000, 800)),
                    arrival="gamma", seed=2)
    trace = concat(pre, post)
    trace = trace.scaled(rate_scale_for_load(trace, 1.0, EngineConfig(), H100_LLAMA3_8B))
    cfg = SidecarConfig(listen="127.0.0.1:0", metrics_port=-1, state_dir=tmp_path,
                        initial_policy="fcfs",  # the champion to beat: stock vLLM order
                        loop=LoopConfig(enabled=False, n_trials=8,
                                        round_every_s=trace.duration_s / 2),
                        window=WindowConfig(trial_window_s=trace.duration_s + 1, min_requests=50),
                        tuner={"seed": 0})
    sc = Sidecar(cfg).start()
    try:
        with TelemetryEmitter(sc.address, engine_id="sim", max_queue=10_000) as em:
            for i in range(len(trace)):
                t = float(trace.arrival_s[i])
                r = ReqInfo(str(i), t, int(trace.prompt_tokens[i]),
                            num_output_tokens=int(trace.output_tokens[i]))
                em.on_arrival(r, t)
                em.on_finish(r, t + 0.001)
            assert em.flush(30) and em.counters.dropped == 0
        sc.ingest.drain(30)
        assert len(sc.window) == len(trace)
        out = sc.loop.step()
        res = sc.loop.last_result
        assert res is not None and len(res.trials) == 8
        assert res.best_value is not None and res.champion_value is not None
        assert res.best_value > res.champion_value  # maximised reward
        assert out.outcome == "promoted" and out.published_version == 2
        print(f"champion {res.champion_value:.4f} -> best {res.best_value:.4f} "
              f"(improvement {res.improvement:.3f}) in {len(res.trials)} trials")
    finally:
        sc.stop(0.5)


@pytest.mark.parametrize(("later_prompt", "falls_back"), [(100, False), (5000, True)])
def test_a_tuned_policy_gives_way_to_the_base_policy_when_the_traffic_drifts(
        tmp_path: Path, later_prompt: int, falls_back: bool) -> None:
    """Round 1 publishes a policy tuned on short prompts. Before round 2 the arrivals
    since that window are long prompts (another regime): round 2 tunes from the tuner's
    base policy and, finding no winner over it, publishes it. More of the same traffic
    keeps the tuned policy."""
    tuner = FakeTuner([(True, 0.5), (False, 1.0)])
    base = Policy(mode=Mode.TAILWISE, note="the shipped default")
    tuner.base = base  # type: ignore[attr-defined]
    rig = Rig(tmp_path, tuner, window_s=60.0, eager=False)
    rig.feed(150, t0=0.0)
    assert rig.loop.step().outcome == "promoted"
    tuned = rig.store.current()
    rig.feed(150, t0=150.0, prompt=later_prompt, start=150)
    out = rig.loop.step()
    assert out.round_run and len(tuner.calls) == 2
    now = rig.store.current().policy
    assert now is not None
    if falls_back:
        assert now.version == tuned.version + 1 and "fallback to the base policy" in now.note
        assert now.boost == base.boost and now.mode is base.mode
        assert tuner.calls[1][1].boost == base.boost  # round 2 tunes from the base
        assert tuner.champions[-1] is now
        assert [r.outcome for r in rig.loop.history][-2:] == ["kept_champion", "fallback"]
    else:
        assert now.version == tuned.version and "fallback" not in now.note
    # switched off, the tuned policy stays whatever the traffic does
    off = Rig(tmp_path / "off", FakeTuner([(True, 0.5), (False, 1.0)]), window_s=60.0,
              eager=False)
    off.loop.cfg = LoopConfig(round_every_s=None, n_trials=3, tune_on_partition_change=False,
                              fallback_on_drift=False)
    off.tuner.base = base
    off.feed(150, t0=0.0)
    off.loop.step()
    v = off.store.current().version
    off.feed(150, t0=150.0, prompt=later_prompt, start=150)
    off.loop.step()
    assert off.store.current().version == v


def tuned_rig(tmp: Path, script: list[tuple[bool, float | None]]) -> tuple[Rig, Policy, int]:
    """A loop whose tuner (base: the shipped tailwise default) promoted a policy on a
    window of short prompts: (rig, base, the tuned version)."""
    tuner = FakeTuner(script)
    base = Policy(mode=Mode.TAILWISE)
    tuner.base = base  # type: ignore[attr-defined]
    rig = Rig(tmp, tuner, window_s=60.0, eager=False)
    rig.feed(150, t0=0.0)
    rig.loop.step()
    return rig, base, rig.store.current().version


def test_a_winner_over_the_base_policy_is_published_instead_of_the_fallback(
        tmp_path: Path) -> None:
    """After the drift, round 2 tunes from the base policy and promotes a winner over it:
    that winner is the one version published (the engine never sees the base in between)."""
    rig, base, tuned = tuned_rig(tmp_path, [(True, 0.5), (True, 0.5)])
    rig.feed(150, t0=150.0, prompt=5000, start=150)
    assert rig.loop.step().outcome == "promoted"
    now = rig.store.current().policy
    assert now is not None and now.version == tuned + 1 and now.note == "fake challenger"
    assert now.boost.gamma == 2 * base.boost.gamma  # the winner over the base, not over v2
    assert "fallback" not in [r.outcome for r in rig.loop.history]


def test_a_fallback_held_back_while_paused_comes_once_promotion_resumes(
        tmp_path: Path) -> None:
    rig, _, tuned = tuned_rig(tmp_path, [(True, 0.5), (False, 1.0), (False, 1.0)])
    rig.store.set_paused(True)
    rig.feed(150, t0=150.0, prompt=5000, start=150)
    assert rig.loop.step().round_run
    assert rig.store.current().version == tuned  # paused: nothing automatic
    assert rig.tuner.calls[1][1].version == tuned  # and the round tuned from what is in force
    rig.store.set_paused(False)
    rig.feed(150, t0=300.0, prompt=5000, start=300)
    rig.loop.step()
    now = rig.store.current().policy
    assert now is not None and now.version == tuned + 1 and "fallback" in now.note


@pytest.mark.parametrize(("features", "falls_back"), [(("prompt",), False),
                                                      (("prompt", "gap"), True)])
def test_with_gap_in_drift_features_a_rate_shift_alone_puts_the_base_back(
        tmp_path: Path, features: tuple[str, ...], falls_back: bool) -> None:
    """The same prompts arriving twenty times as fast: only ``gap`` (milliseconds between
    arrivals) sees the load shift."""
    tuner = FakeTuner([(True, 0.5)])
    tuner.base = Policy(mode=Mode.TAILWISE)  # type: ignore[attr-defined]
    rig = Rig(tmp_path, tuner, window_s=60.0, eager=False)
    rig.loop.cfg = LoopConfig(round_every_s=None, n_trials=3, tune_on_partition_change=False,
                              drift_features=features)
    rig.feed(150, t0=0.0)
    assert rig.loop.step().outcome == "promoted"
    tuned = rig.store.current().version
    rig.feed(1200, t0=151.0, dt_s=0.05, start=150)
    assert rig.loop.step().round_run
    assert (rig.store.current().version == tuned + 1) is falls_back


@pytest.mark.parametrize("bad", [(), ("rate",), ("prompt", "prompt"), "prompt", None])
def test_bad_drift_features_are_refused_with_the_field_named(bad: Any) -> None:
    from tailwise.learner.config import ConfigError, config_from_mapping

    with pytest.raises(ConfigError, match=r"loop\.drift_features"):
        LoopConfig(drift_features=bad)
    cfg = config_from_mapping({"loop": {"drift_features": ["gap", "prompt"]}})
    assert cfg.loop.drift_features == ("gap", "prompt")


def test_a_shift_inside_the_tuning_window_is_not_a_drift_from_it(tmp_path: Path) -> None:
    """The window a policy was tuned on already holds the shift to long prompts; more long
    prompts after it are the traffic it was tuned on (ADWIN's firing on the window's own
    arrivals does not count), so the tuned policy stays."""
    tuner = FakeTuner([(True, 0.5)])
    tuner.base = Policy(mode=Mode.TAILWISE)  # type: ignore[attr-defined]
    rig = Rig(tmp_path, tuner, window_s=120.0, eager=False)
    rig.feed(240, t0=0.0, dt_s=0.25, prompt=100)
    rig.feed(240, t0=60.0, dt_s=0.25, prompt=5000, start=240)
    assert rig.loop.step().outcome == "promoted"
    tuned = rig.store.current().version
    assert rig.loop._watch is not None and not rig.loop._watch.fired
    rig.feed(480, t0=122.0, dt_s=0.25, prompt=5000, start=480)
    assert rig.loop.step().round_run
    assert rig.store.current().version == tuned


def test_the_watch_learns_across_iterations_and_the_next_round_acts(tmp_path: Path) -> None:
    """Long prompts reported in small batches between rounds are each learned once; the
    round after them falls back (the watch fired between rounds, nothing acted then)."""
    rig, base, tuned = tuned_rig(tmp_path, [(True, 0.5)])
    for k in range(5):
        rig.feed(10, t0=151.0 + 10 * k, prompt=5000, start=150 + 10 * k)
        out = rig.loop.step()
        assert not out.round_run and rig.store.current().version == tuned
    w = rig.loop._watch
    assert w is not None and w.fired
    rig.feed(10, t0=201.0, prompt=5000, start=200)
    assert rig.loop.step().round_run
    now = rig.store.current().policy
    assert now is not None and now.version == tuned + 1 and "fallback" in now.note
    assert now.boost == base.boost and rig.loop._watch is None

"""Live-reward mode of the learning loop: trials scored from the engine's measured metrics.

The loop is driven through ``LearningLoop.step()`` with telemetry injected in engine time
and a real ``bayes_opt`` Tuner on a journal file in ``tmp_path``. Requests arrive once per
engine second; a round is due every ``WINDOW_S`` engine seconds. Expected summaries and
objective values are computed here from the injected latencies (numpy percentiles and the
reward formula written out), not by the code under test.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from tailwise.bayes_opt.tuner import TrialSummary, Tuner, TunerConfig
from tailwise.learner.config import ConfigError, LoopConfig, WindowConfig, config_from_mapping
from tailwise.learner.live import EXTRA_TRIAL
from tailwise.learner.loop import LearningLoop
from tailwise.learner.metrics import SidecarMetrics
from tailwise.learner.publisher import PolicyStore
from tailwise.learner.state import StateFile
from tailwise.learner.window import TelemetryWindow
from tailwise.scorer.policy import Mode, Policy, Source, neutral_policy
from tailwise.wire.v1 import policy_pb2 as pb

pytestmark = pytest.mark.timeout(120)
optuna.logging.set_verbosity(optuna.logging.WARNING)

WINDOW_S = 100.0
MARGIN = 0.05
OUTPUT = 21  # TPOT = (TTLT − TTFT) / 20
TTFT = 0.1
#: the champion's TTLTs: 0.91 .. 1.00 s (TPOT <= 0.045 s: every request meets its SLO)
CHAMP_TTLT = [1.0 - 0.01 * (i % 10) for i in range(100)]
BASE = neutral_policy().replace(mode=Mode.BOOST)


class RecordingTuner(Tuner):
    """The real tuner, recording what ``tell_live`` receives."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.told: list[tuple[int, dict[str, Any], Mapping[str, Any] | None]] = []

    def tell_live(self, trial_number: int, summary: Mapping[str, Any],
                  baseline: Mapping[str, Any] | None = None) -> TrialSummary:
        self.told.append((trial_number, dict(summary), baseline))
        return super().tell_live(trial_number, summary, baseline)


class LiveRig:
    def __init__(self, tmp: Path, *, min_requests: int = 20, max_lag_s: float = 600.0) -> None:
        self.metrics = SidecarMetrics()
        self.state = StateFile(tmp)
        self.store = PolicyStore(self.state, self.metrics, BASE)
        self.window = TelemetryWindow()
        self.journal = tmp / "study.journal"
        self.tuners: list[RecordingTuner] = []
        self.loop = LearningLoop(
            self.window, self.store, self.state, self.metrics,
            loop_cfg=LoopConfig(mode="live"),
            window_cfg=WindowConfig(trial_window_s=WINDOW_S, min_requests=min_requests,
                                    max_settle_lag_s=max_lag_s),
            tuner_factory=self._make_tuner)

    def _make_tuner(self, base: Policy) -> RecordingTuner:
        t = RecordingTuner(TunerConfig(storage=str(self.journal), study_name="live", seed=0,
                                       margin=MARGIN, objective={"kind": "reward"}), base)
        self.tuners.append(t)
        return t

    @property
    def tuner(self) -> RecordingTuner:
        return self.tuners[-1]

    def serve(self, t0: float, ttlt: Sequence[float], *, first_token: bool = True,
              prompt: int = 200) -> None:
        """One request per engine second from ``t0``: ARRIVAL, then FINISHED after
        ``ttlt[i]`` seconds with its first token ``TTFT`` seconds after arrival; then the
        engine clock moves on to at least ``t0 + len(ttlt)`` (the next round boundary)."""
        b = pb.EngineEvent(engine_id="e")
        for i, lat in enumerate(ttlt):
            t = t0 + i
            rid = f"r{t:.0f}"
            b.requests.add(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id=rid, time=t,
                           arrival_time=t, prompt_tokens=prompt)
            b.requests.add(kind=pb.REQUEST_EVENT_KIND_FINISHED, request_id=rid, time=t + lat,
                           arrival_time=t, prompt_tokens=prompt, output_tokens=OUTPUT,
                           first_token_time=t + TTFT if first_token else 0.0)
        assert self.window.apply(b) == 2 * len(ttlt)
        self.tick(t0 + len(ttlt))

    def tick(self, t: float) -> None:
        """Move the engine clock with a step event only (no request)."""
        b = pb.EngineEvent(engine_id="e")
        b.steps.add(time=t, step_time_s=0.01, kv_usage=0.1)
        self.window.apply(b)

    def study_trials(self) -> list[optuna.trial.FrozenTrial]:
        return self.tuner.study.get_trials(deepcopy=False)

    def value(self, name: str, **labels: str) -> float:
        v = self.metrics.registry.get_sample_value(name, labels or None)
        return 0.0 if v is None else v


# -- oracles --------------------------------------------------------------------------------
def p99(x: Sequence[float]) -> float:
    return float(np.percentile(np.asarray(x), 99))


def slo_share(ttlt: Sequence[float]) -> float:
    """Share meeting TTFT <= 8 s and TPOT <= 0.05 s (BASE's SLO)."""
    return sum(TTFT <= 8.0 and (x - TTFT) / (OUTPUT - 1) <= 0.05 + 1e-12 for x in ttlt) / len(ttlt)


def reward(ttlt: Sequence[float], base: Sequence[float]) -> float:
    """λ·(C, L, S, U) = (1, 1, 0.5, 0.1) written out: L over TTLT mean and P99, S = P99
    queueing delay (measured to the first token) / 60 s, U = 0 (one length class)."""
    lat = 1.0 - (np.mean(ttlt) / np.mean(base) + p99(ttlt) / p99(base)) / 2
    return slo_share(ttlt) + float(lat) - 0.5 * TTFT / 60.0


def start_trial(rig: LiveRig) -> int:
    """Phase A (engine 0..100): the champion is measured, trial 0 goes live as version 2."""
    rig.serve(0.0, CHAMP_TTLT)
    out = rig.loop.step()
    assert out.outcome == "live_candidate" and out.round_run
    assert out.published_version == 2
    return 2


# -- tests ----------------------------------------------------------------------------------
def test_live_round_publishes_a_candidate_version(tmp_path: Path) -> None:
    rig = LiveRig(tmp_path)
    start_trial(rig)
    pub = rig.store.current()
    assert pub.version == 2 and pub.policy is not None
    assert pub.policy.source is Source.LEARNED
    extra = dict(pub.policy.extra)
    assert extra[EXTRA_TRIAL] == "0" and extra["engine_time"] == "100.000"
    assert rig.state.state.version == 2
    # the trial is RUNNING in the study, and persisted with its version and start
    (trial,) = rig.study_trials()
    assert trial.state is TrialState.RUNNING and trial.user_attrs["role"] == "live"
    assert rig.state.state.live_trial == {"number": 0, "version": 2, "start_engine_time": 100.0}
    champ = rig.state.state.live_champion
    assert champ is not None and champ["requests"] == 100
    assert Policy.from_dict(champ["policy"]).version == 1
    # the champion's summary is the engine's measured one, not a replay
    ov = champ["summary"]["overall"]
    assert ov["requests"] == ov["completed"] == 100
    assert ov["ttlt"]["mean"] == pytest.approx(float(np.mean(CHAMP_TTLT)))
    assert ov["ttlt"]["p99"] == pytest.approx(p99(CHAMP_TTLT))
    assert ov["slo_attainment"] == 1.0
    # nothing more happens before the trial window has passed
    rig.serve(100.0, [1.0] * 10)
    out = rig.loop.step()
    assert not out.round_run and out.outcome == ""
    assert rig.store.current().version == 2


@pytest.mark.parametrize(("ttlt_base", "kept"), [
    (5.0, False),   # clearly worse: 5x the latency, no request meets its TPOT SLO
    (0.98, False),  # 2% better: within the tuner's margin (5%), so the champion returns
    (0.5, True),    # clearly better: half the latency
])
def test_trial_is_scored_from_measured_telemetry_and_gated_by_the_margin(
        tmp_path: Path, ttlt_base: float, kept: bool) -> None:
    rig = LiveRig(tmp_path)
    start_trial(rig)
    candidate = rig.store.current().policy
    assert candidate is not None
    cand_ttlt = [ttlt_base + 0.01 * (i % 10) for i in range(100)]
    rig.serve(100.0, cand_ttlt)
    out = rig.loop.step()

    # what the tuner was told: the candidate's measured window (arrivals 100..199)
    ((number, summary, baseline),) = rig.tuner.told
    assert number == 0
    ov = summary["overall"]
    assert ov["requests"] == ov["completed"] == 100
    assert ov["ttlt"]["mean"] == pytest.approx(float(np.mean(cand_ttlt)))
    assert ov["ttlt"]["p99"] == pytest.approx(p99(cand_ttlt))
    assert ov["ttft"]["mean"] == pytest.approx(TTFT)
    assert ov["tpot"]["mean"] == pytest.approx(float(np.mean(cand_ttlt) - TTFT) / 20)
    assert ov["queue_delay"]["p99"] == pytest.approx(TTFT)
    assert ov["slo_attainment"] == pytest.approx(slo_share(cand_ttlt))
    makespan = 199.0 + cand_ttlt[99] - 100.0
    assert ov["throughput_rps"] == pytest.approx(100 / makespan)
    assert summary["engine"]["makespan_s"] == pytest.approx(makespan)
    assert set(summary["classes"]) == {"short"}
    # ... with the champion's measured summary (arrivals 0..99) as the baseline
    assert baseline is not None
    assert baseline["overall"]["ttlt"]["mean"] == pytest.approx(float(np.mean(CHAMP_TTLT)))
    # the trial's value is the reward of those figures
    (trial, *_) = rig.study_trials()
    assert trial.state is TrialState.COMPLETE
    expected = reward(cand_ttlt, CHAMP_TTLT)
    assert trial.value == pytest.approx(expected, rel=1e-9)
    assert trial.user_attrs["ttlt_p99"] == pytest.approx(p99(cand_ttlt))
    champion_value = reward(CHAMP_TTLT, CHAMP_TTLT)
    improvement = (expected - champion_value) / abs(champion_value)
    assert (improvement > MARGIN) is kept  # the oracle agrees with the case's label
    rec = rig.loop.history[-1]
    assert rec.best_value == pytest.approx(expected)
    assert rec.champion_value == pytest.approx(champion_value)
    assert rec.window_start == 100.0 and rec.window_requests == 100
    # the round says why (what the status answer and the online report show)
    assert ("beats the champion by" if kept else "not more than the margin") in rec.reason

    # gate: kept → the candidate stays in force and is the champion, the next candidate is
    # version 3; reverted → the champion is published again (version 3), then the next
    # candidate (version 4)
    pub = rig.store.current()
    assert pub.policy is not None and dict(pub.policy.extra)[EXTRA_TRIAL] == "1"
    live = rig.state.state.live_trial
    assert live is not None and live["number"] == 1 and live["version"] == pub.version
    champ = rig.state.state.live_champion
    assert champ is not None
    champion = Policy.from_dict(champ["policy"])
    if kept:
        assert out.outcome == "live_kept" and pub.version == 3
        assert champion == candidate
        assert champ["summary"] == summary
        assert rig.tuner.study.user_attrs["tailwise:champion"] == candidate.to_dict()
    else:
        assert out.outcome == "live_reverted" and pub.version == 4
        assert champion.version == 1 and champ["summary"] == baseline
        assert rig.value("tailwise_policies_published_total", source="baseline") == 2
    assert out.published_version == pub.version
    assert rig.value("tailwise_tuning_rounds_total", outcome=out.outcome) == 1


def test_nan_metrics_fail_the_trial_and_nothing_new_is_published(tmp_path: Path) -> None:
    """FINISHED events without first-token times: TTFT and queueing delay are undefined,
    the objective is NaN, the trial FAILs, the champion comes back and no candidate is
    asked until the champion has been measured again."""
    rig = LiveRig(tmp_path)
    start_trial(rig)
    rig.serve(100.0, [0.5] * 100, first_token=False)  # would be a clear win if it counted
    out = rig.loop.step()
    assert out.outcome == "live_failed"
    (trial,) = rig.study_trials()
    assert trial.state is TrialState.FAIL and trial.user_attrs["error"] == "objective is not finite"
    pub = rig.store.current()
    assert pub.version == 3 and out.published_version == 3
    assert pub.policy is not None and EXTRA_TRIAL not in dict(pub.policy.extra)
    assert pub.policy.mode is BASE.mode and pub.policy.boost == BASE.boost
    assert rig.state.state.live_trial is None
    assert rig.value("tailwise_tuning_rounds_total", outcome="live_failed") == 1
    # the next round measures the champion again (from its re-publication) and only then
    # asks for a new candidate
    rig.serve(200.0, CHAMP_TTLT)
    out = rig.loop.step()
    assert out.outcome == "live_candidate" and out.published_version == 4
    assert len(rig.study_trials()) == 2


def test_empty_trial_window_waits_then_fails(tmp_path: Path) -> None:
    rig = LiveRig(tmp_path, max_lag_s=50.0)
    start_trial(rig)
    rig.tick(205.0)  # a round is due, nothing arrived under the candidate: keep waiting
    out = rig.loop.step()
    assert out.outcome == "live_waiting" and not out.round_run
    assert rig.loop.history[-1].reason.startswith("0 of window.min_requests=")
    assert rig.store.current().version == 2 and rig.tuner.told == []
    rig.tick(306.0)  # past trial_window_s + max_settle_lag_s: measured, empty, FAILED
    out = rig.loop.step()
    assert out.outcome == "live_failed"
    ((_, summary, _),) = rig.tuner.told
    assert summary["overall"]["requests"] == 0 and summary["overall"]["ttlt"]["mean"] is None
    (trial,) = rig.study_trials()
    assert trial.state is TrialState.FAIL
    assert rig.store.current().version == 3  # the champion, no new candidate


def test_kill_switch_pauses_live_candidates(tmp_path: Path) -> None:
    rig = LiveRig(tmp_path)
    start_trial(rig)
    killed = rig.store.kill("pager")
    assert killed.version == 3
    rig.serve(100.0, [0.5] * 100)
    out = rig.loop.step()
    # the trial was cut short by the operator: FAILED, nothing published over the kill
    assert out.outcome == "paused" and out.published_version is None
    (trial,) = rig.study_trials()
    assert trial.state is TrialState.FAIL
    assert rig.tuner.told == [(0, {}, None)]  # failed, not scored on a cut window
    assert rig.store.current().version == 3 and rig.state.state.live_trial is None
    # still paused: no candidate is asked or published
    rig.serve(200.0, CHAMP_TTLT)
    assert rig.loop.step().outcome == "paused"
    assert rig.store.current().version == 3 and len(rig.study_trials()) == 1
    # resumed: the policy in force (FCFS) is measured, then a candidate goes live
    rig.store.set_paused(False)
    rig.serve(300.0, CHAMP_TTLT)
    out = rig.loop.step()
    assert out.outcome == "live_candidate" and out.published_version == 4
    champ = rig.state.state.live_champion
    assert champ is not None and Policy.from_dict(champ["policy"]).mode is Mode.FCFS


def test_restart_tells_the_trial_in_flight_by_number(tmp_path: Path) -> None:
    rig = LiveRig(tmp_path)
    start_trial(rig)
    baseline = rig.state.state.live_champion
    assert baseline is not None
    rig.loop.stop()  # a graceful stop keeps the trial RUNNING for the next sidecar
    (trial,) = rig.study_trials()
    assert trial.state is TrialState.RUNNING

    rig2 = LiveRig(tmp_path)  # new process: empty window, state and study reloaded
    assert rig2.store.current().version == 2
    rig2.serve(100.0, [0.5 + 0.01 * (i % 10) for i in range(100)])
    out = rig2.loop.step()
    assert out.outcome == "live_kept"
    ((number, _, told_baseline),) = rig2.tuner.told
    assert number == 0 and told_baseline == baseline["summary"]
    (trial, *_) = rig2.study_trials()
    assert trial.state is TrialState.COMPLETE and trial.value is not None
    assert rig2.store.current().version == 3  # the next candidate


def test_restart_abandons_a_trial_the_study_no_longer_runs(tmp_path: Path) -> None:
    """Killed sidecar whose trial went stale meanwhile: abandoned, champion back."""
    rig = LiveRig(tmp_path)
    start_trial(rig)
    rig.tuner.study.tell(0, state=TrialState.FAIL)  # what fail_stale_trials does
    rig2 = LiveRig(tmp_path)
    rig2.serve(100.0, CHAMP_TTLT)
    out = rig2.loop.step()
    assert out.outcome == "live_abandoned" and out.published_version == 3
    pub = rig2.store.current()
    assert pub.policy is not None and EXTRA_TRIAL not in dict(pub.policy.extra)
    assert rig2.state.state.live_trial is None
    assert rig2.tuner.told[0][0] == 0  # it tried to tell by number


def test_restart_after_a_kill_switch_abandons_without_publishing(tmp_path: Path) -> None:
    rig = LiveRig(tmp_path)
    start_trial(rig)
    rig.store.kill("while down")  # as if an admin killed it just before the crash
    rig2 = LiveRig(tmp_path)
    rig2.serve(100.0, CHAMP_TTLT)
    assert rig2.loop.step().outcome == "paused"
    assert rig2.store.current().version == 3
    (trial,) = rig2.study_trials()
    assert trial.state is TrialState.FAIL and rig2.state.state.live_trial is None


def test_a_crash_between_recording_and_publishing_abandons_the_trial(tmp_path: Path) -> None:
    """The trial is recorded before its policy is published; if the publish never
    happened, the restarted loop finds that version not in force and fails the trial."""
    rig = LiveRig(tmp_path)
    tuner = rig.loop._get_tuner()
    assert isinstance(tuner, Tuner)
    number, _ = tuner.ask_live(BASE, BASE.queues)
    rig.state.update(live_trial={"number": number, "version": 2, "start_engine_time": 100.0})
    rig2 = LiveRig(tmp_path)  # the crash: version 2 was never published
    assert rig2.store.current().version == 1
    rig2.serve(100.0, CHAMP_TTLT)
    out = rig2.loop.step()
    assert out.outcome == "live_abandoned" and out.published_version is None
    assert rig2.store.current().version == 1 and rig2.state.state.live_trial is None
    (trial,) = rig2.study_trials()
    assert trial.state is TrialState.FAIL


def test_replay_mode_is_the_default_and_mode_is_validated(tmp_path: Path) -> None:
    assert LoopConfig().mode == "replay"
    with pytest.raises(ConfigError, match=r"loop\.mode: must be one of \['replay', 'live'\], "
                                          r"got 'online'"):
        LoopConfig(mode="online")
    with pytest.raises(ConfigError, match=r"loop\.mode"):
        config_from_mapping({"loop": {"mode": "bogus"}})
    assert config_from_mapping({"loop": {"mode": "live"}}).loop.mode == "live"

    import typer

    import tailwise.learner.server
    from tailwise import cmd_sidecar

    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """test app"""

    cmd_sidecar.register(app)
    seen: list[Any] = []

    def run_sidecar(cfg: Any) -> int:
        seen.append(cfg)
        return 0

    mp = pytest.MonkeyPatch()
    mp.setattr(tailwise.learner.server, "run_sidecar", run_sidecar)
    try:
        runner = CliRunner()
        res = runner.invoke(app, ["sidecar", "--mode", "live", "--state-dir", str(tmp_path)])
        assert res.exit_code == 0, res.output
        assert seen[0].loop.mode == "live"
        conf = tmp_path / "c.toml"
        conf.write_text('[loop]\nmode = "live"\n')
        res = runner.invoke(app, ["sidecar", "--config", str(conf), "--state-dir", str(tmp_path)])
        assert res.exit_code == 0 and seen[1].loop.mode == "live"
        res = runner.invoke(app, ["sidecar", "--mode", "sometimes", "--state-dir",
                                  str(tmp_path)])
        assert res.exit_code == 2 and "loop.mode" in res.output
    finally:
        mp.undo()


def test_live_round_without_enough_champion_requests_waits(tmp_path: Path) -> None:
    rig = LiveRig(tmp_path, min_requests=500)
    rig.serve(0.0, CHAMP_TTLT)
    out = rig.loop.step()
    assert out.outcome == "too_few_requests" and not out.round_run
    assert rig.store.current().version == 1 and rig.tuners[-1].study.get_trials() == []
    assert math.isfinite(rig.state.state.last_round_engine_time or math.nan)

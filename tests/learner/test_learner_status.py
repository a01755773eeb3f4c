"""GetStatus (engine-time progress, pacing) and the settled replay window."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import pytest
from learner_helpers import FakeTuner, events_batch

from tailwise.learner.admin import AdminClient
from tailwise.learner.config import ConfigError, LoopConfig, SidecarConfig, WindowConfig, config_from_mapping
from tailwise.learner.loop import LearningLoop
from tailwise.learner.metrics import SidecarMetrics
from tailwise.learner.policy_service import PolicyServicer
from tailwise.learner.publisher import PolicyStore
from tailwise.learner.server import Sidecar
from tailwise.learner.state import StateFile
from tailwise.learner.window import TelemetryWindow
from tailwise.scorer.policy import Mode, neutral_policy
from tailwise.wire.errors import Unimplemented
from tailwise.wire.v1 import policy_pb2 as pb

pytestmark = pytest.mark.timeout(60)


def arrivals(times: list[float], finish: dict[int, float], start: int = 0) -> pb.EngineEvent:
    """ARRIVAL for every time; FINISHED at ``finish[i]`` for the requests listed there."""
    b = pb.EngineEvent(engine_id="e")
    for i, t in enumerate(times, start):
        b.requests.add(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id=f"r{i}", time=t,
                       arrival_time=t, prompt_tokens=100 + i)
    for i, f in finish.items():
        b.requests.add(kind=pb.REQUEST_EVENT_KIND_FINISHED, request_id=f"r{i}", time=f,
                       output_tokens=10)
    return b


# -- settled window -------------------------------------------------------------------------
def test_settled_end_excludes_the_censored_tail() -> None:
    w = TelemetryWindow()
    times = [float(t) for t in range(100)]  # one arrival per engine second
    # everything up to t=59 finished; 60..99 still running (the censored tail) except 70
    w.apply(arrivals(times, {i: 100.0 for i in [*range(60), 70]}))
    assert w.settled_end(100.0, 50.0, 0.99) == 60.0
    # a 10% tolerance admits 5 pending (60..64) among the 50 arrivals of [15, 65)
    assert w.settled_end(100.0, 50.0, 0.9) == 65.0
    assert w.count_since(10.0, 60.0) == 50
    tr = w.trace(10.0, until=60.0)
    assert tr is not None and len(tr) == 50 and tr.meta["engine_until"] == 60.0


def test_settled_end_is_now_when_nothing_is_pending_and_bounded_by_max_lag() -> None:
    w = TelemetryWindow()
    w.apply(arrivals([1.0, 2.0, 3.0], {0: 4.0, 1: 4.0, 2: 4.0}))
    assert w.settled_end(4.0, 10.0, 0.99) == 4.0
    stuck = TelemetryWindow()  # arrivals whose FINISHED never comes
    stuck.apply(arrivals([float(t) for t in range(1000)], {}))
    assert stuck.settled_end(1000.0, 100.0, 0.99, max_lag_s=300.0) == 700.0


def test_settle_config_is_validated() -> None:
    for bad in (1.0, -0.1, math.nan):
        with pytest.raises(ConfigError, match="settle_quantile"):
            config_from_mapping({"window": {"settle_quantile": bad}})
    with pytest.raises(ConfigError, match="max_settle_lag_s"):
        config_from_mapping({"window": {"max_settle_lag_s": 0}})


def _loop(tmp: Path, tuner: Any, settle: float) -> tuple[LearningLoop, TelemetryWindow]:
    metrics, state = SidecarMetrics(), StateFile(tmp)
    store = PolicyStore(state, metrics, neutral_policy().replace(mode=Mode.BOOST))
    window = TelemetryWindow()
    loop = LearningLoop(window, store, state, metrics,
                        loop_cfg=LoopConfig(round_every_s=50.0, n_trials=2),
                        window_cfg=WindowConfig(trial_window_s=40.0, min_requests=5,
                                                settle_quantile=settle),
                        tuner_factory=lambda base: tuner)
    return loop, window


@pytest.mark.parametrize("settle", [0.99, 0.0])
def test_round_replays_the_settled_span(tmp_path: Path, settle: float) -> None:
    tuner = FakeTuner()
    loop, window = _loop(tmp_path, tuner, settle)
    window.apply(arrivals([0.0], {0: 0.5}))
    loop.step()
    times = [float(t) for t in range(1, 100)]
    window.apply(arrivals(times, {i: 99.5 for i in range(1, 80)}, start=1))  # 80..99 running
    out = loop.step()
    assert out.round_run
    trace = tuner.calls[-1][0]
    rec = loop.history[-1]
    if settle:
        # the replay ends where arrivals stop having finished: no censored tail
        assert (rec.window_start, rec.window_end) == (40.0, 80.0)
        # + the backlog at the window's start (1..39 ran until 99.5), replayed from 40
        assert len(trace) == 40 + 39 and trace.meta["carried_in"] == 39
    else:
        # the latest span, censored: only the requests that happened to finish
        assert (rec.window_start, rec.window_end) == (59.5, math.inf)
        assert len(trace) == 20 + 59 and trace.meta["carried_in"] == 59


# -- loop progress and GetStatus --------------------------------------------------------------
def test_wait_for_iteration_follows_engine_time(tmp_path: Path) -> None:
    loop, window = _loop(tmp_path, FakeTuner(), 0.99)
    assert not loop.wait_for_iteration(1.0, timeout=0.0)  # not running: at once
    loop.start()
    try:
        window.apply(events_batch(10, t0=0.0))
        assert loop.wait_for_iteration(10.0, timeout=30)
        assert loop.loop_engine_time == 10.0 and not loop.busy
        assert loop.next_round_engine_time() == 50.0
        assert not loop.wait_for_iteration(500.0, timeout=0.05)  # no telemetry that far
    finally:
        loop.stop()
    assert not loop.running


def test_get_status_long_polls_in_engine_time(tmp_path: Path) -> None:
    tuner = FakeTuner([(True, 0.5)])
    cfg = SidecarConfig(listen="127.0.0.1:0", metrics_port=-1, state_dir=tmp_path,
                        window=WindowConfig(trial_window_s=30.0, min_requests=5),
                        loop=LoopConfig(round_every_s=20.0, n_trials=3))
    sc = Sidecar(cfg, tuner_factory=lambda base: tuner, use_default_learners=False).start()
    try:
        with AdminClient(sc.address) as admin:
            st = admin.status()
            assert not st.HasField("engine_time") and st.loop_enabled
            assert (st.round_every_s, st.trial_window_s, st.policy_version) == (20.0, 30.0, 1)
            # answered at the timeout: nothing has reached engine time 25 yet
            st = admin.status(wait_loop_engine_time=25.0, wait_timeout_s=0.1)
            assert not st.waited_ok
            sc.ingest.offer(events_batch(30, t0=0.0))  # arrivals 0..29, finishes up to 30
            st = admin.status(wait_loop_engine_time=30.0, wait_timeout_s=30.0, max_rounds=10)
            assert st.waited_ok and st.loop_engine_time >= 30.0 and st.engine_time == 30.0
            assert st.rounds == 1 and st.policy_version == 2  # the round promoted
            assert st.next_round_engine_time == st.last_round_engine_time + 20.0
            (rnd,) = st.recent_rounds
            assert rnd.outcome == "promoted" and rnd.published_version == 2
            assert rnd.best_value == 0.5 and rnd.HasField("window_end")
            assert rnd.reason == "fake promotes"
            assert st.events_rejected == 0 and st.events_accepted == 60
    finally:
        sc.stop(0.5)


def test_get_status_without_a_provider_is_unimplemented(tmp_path: Path) -> None:
    metrics = SidecarMetrics()
    svc = PolicyServicer(PolicyStore(StateFile(tmp_path), metrics), metrics)

    class Ctx:
        def abort(self, code: Any, detail: str) -> None:
            raise Unimplemented(detail)

    with pytest.raises(Unimplemented):
        svc.GetStatus(pb.GetStatusRequest(), Ctx())
    assert threading.active_count() >= 1

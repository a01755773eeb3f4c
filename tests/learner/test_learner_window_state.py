"""Telemetry window (engine-time, trace reconstruction, counted rejects) and persistence."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from learner_helpers import events_batch

from tailwise.learner.metrics import SidecarMetrics
from tailwise.learner.publisher import PolicyStore, PromotionPaused
from tailwise.learner.state import StateError, StateFile
from tailwise.learner.window import TelemetryWindow
from tailwise.scorer.policy import Mode, PolicyError, Source, neutral_policy
from tailwise.wire.v1 import policy_pb2 as pb


def test_trace_is_rebuilt_from_arrival_and_finish_events() -> None:
    w = TelemetryWindow()
    b = pb.EngineEvent(engine_id="e")
    # r1 arrives at 10 (prompt 300, 100 cached), r2 at 11.5; finishes out of order
    b.requests.add(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id="r1", time=10.0,
                   arrival_time=10.0, prompt_tokens=300, cached_tokens=100, slo_class="batch")
    b.requests.add(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id="r2", time=11.5,
                   arrival_time=11.5, prompt_tokens=50)
    b.requests.add(kind=pb.REQUEST_EVENT_KIND_FIRST_TOKEN, request_id="r2", time=12.0)
    b.requests.add(kind=pb.REQUEST_EVENT_KIND_FINISHED, request_id="r2", time=13.0,
                   output_tokens=7)
    b.requests.add(kind=pb.REQUEST_EVENT_KIND_FINISHED, request_id="r1", time=20.0,
                   output_tokens=90)
    assert w.apply(b) == 5
    assert w.engine_now() == 20.0 and w.engine_start() == 10.0
    tr = w.trace(since=0.0)
    assert tr is not None
    assert list(tr.arrival_s) == [0.0, 1.5]
    assert list(tr.prompt_tokens) == [300, 50]
    assert list(tr.output_tokens) == [90, 7]
    assert tr.slo_classes == ["batch", ""]
    assert tr.meta["cached_tokens"] == [100, 0]
    assert tr.meta["engine_t0"] == 10.0
    # only arrivals inside the window
    tr2 = w.trace(since=11.0)
    assert tr2 is not None and list(tr2.prompt_tokens) == [50]
    # routing features: uncached prompt tokens, in arrival order
    assert w.take_unlearned() == [200.0, 50.0]
    assert w.take_unlearned() == []


def test_finish_without_seen_arrival_still_counts_when_it_carries_the_fields() -> None:
    w = TelemetryWindow()
    b = pb.EngineEvent(engine_id="e")
    b.requests.add(kind=pb.REQUEST_EVENT_KIND_FINISHED, request_id="lost-arrival", time=5.0,
                   arrival_time=2.0, prompt_tokens=40, output_tokens=3)
    b.requests.add(kind=pb.REQUEST_EVENT_KIND_FINISHED, request_id="unknown", time=6.0,
                   output_tokens=3)  # no arrival anywhere: cannot be replayed
    rejected: list[str] = []
    w._on_reject = lambda reason, n: rejected.append(reason)
    assert w.apply(b) == 1
    assert rejected == ["incomplete_finish"]
    assert w.take_unlearned() == [40.0]
    times, prompts = w.take_arrivals()  # the drift watch sees it too, at its arrival
    assert times.tolist() == [2.0] and prompts.tolist() == [40.0]


def test_arrivals_are_taken_once_in_arrival_order() -> None:
    """The loop's drift watch takes each arrival once (still-running requests included),
    sorted by arrival time; ``arrivals(since, until)`` scans the window without taking."""
    w = TelemetryWindow()
    b = pb.EngineEvent(engine_id="e")
    for rid, t, p in (("b", 3.0, 30), ("a", 1.0, 10), ("c", 2.0, 20)):
        b.requests.add(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id=rid, time=t,
                       arrival_time=t, prompt_tokens=p)
    b.requests.add(kind=pb.REQUEST_EVENT_KIND_FINISHED, request_id="a", time=4.0,
                   arrival_time=1.0, prompt_tokens=10, output_tokens=2)
    w.apply(b)
    times, prompts = w.take_arrivals()
    assert times.tolist() == [1.0, 2.0, 3.0] and prompts.tolist() == [10.0, 20.0, 30.0]
    assert w.take_arrivals()[0].size == 0
    times, prompts = w.arrivals(1.5, 3.5)
    assert times.tolist() == [2.0, 3.0] and prompts.tolist() == [20.0, 30.0]
    # a repeated ARRIVAL is one arrival; a late report (another engine) comes when it comes
    late = pb.EngineEvent(engine_id="other")
    late.requests.add(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id="b", time=2.5,
                      arrival_time=2.5, prompt_tokens=25)
    again = pb.EngineEvent(engine_id="e")
    again.requests.add(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id="b", time=3.0,
                       arrival_time=3.0, prompt_tokens=30)
    w.apply(late)
    w.apply(again)
    assert w.take_arrivals()[0].tolist() == [2.5]
    # arrivals_from scans and restarts take_arrivals in one step: each arrival once
    d = pb.EngineEvent(engine_id="e")
    d.requests.add(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id="d", time=5.0,
                   arrival_time=5.0, prompt_tokens=50)
    w.apply(d)
    assert w.arrivals_from(2.2)[0].tolist() == [2.5, 3.0, 5.0]
    assert w.take_arrivals()[0].size == 0


def test_untaken_arrivals_are_capped_and_counted() -> None:
    evicted: list[str] = []
    w = TelemetryWindow(max_requests=3, on_evict=lambda what, n: evicted.append(what))
    w.apply(events_batch(5, t0=0.0))
    assert w.take_arrivals()[0].tolist() == [2.0, 3.0, 4.0]
    assert evicted.count("arrived") == 2


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda e: setattr(e, "time", math.nan), "bad_time"),
    (lambda e: setattr(e, "time", -1.0), "bad_time"),
    (lambda e: setattr(e, "time", 1e300), "bad_time"),
    (lambda e: setattr(e, "request_id", ""), "bad_request_id"),
    (lambda e: setattr(e, "request_id", "x" * 10_000), "bad_request_id"),
    (lambda e: setattr(e, "prompt_tokens", -5), "negative_count"),
    (lambda e: setattr(e, "prompt_tokens", 0), "bad_prompt_tokens"),
    (lambda e: setattr(e, "kind", 0), "unknown_kind"),
    (lambda e: setattr(e, "kind", 42), "unknown_kind"),
])
def test_malformed_events_are_counted_not_raised(mutate: object, reason: str) -> None:
    seen: list[str] = []
    w = TelemetryWindow(on_reject=lambda r, n: seen.append(r))
    b = pb.EngineEvent(engine_id="e")
    ev = b.requests.add(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id="r", time=1.0,
                        arrival_time=1.0, prompt_tokens=10)
    mutate(ev)  # type: ignore[operator]
    assert w.apply(b) == 0
    assert seen == [reason]
    assert w.engine_now() is None  # a rejected stamp never moves the engine clock


def test_malformed_steps_are_counted() -> None:
    seen: list[str] = []
    w = TelemetryWindow(on_reject=lambda r, n: seen.append(r))
    b = pb.EngineEvent(engine_id="e")
    b.steps.add(time=1.0, step_time_s=math.inf)
    b.steps.add(time=1.0, step_time_s=0.01, kv_usage=7.0)
    b.steps.add(time=1.0, step_time_s=0.01, waiting=-3)
    b.steps.add(time=2.0, step_time_s=0.01, kv_usage=0.5, running=3)
    assert w.apply(b) == 1
    assert seen == ["bad_step_time", "bad_kv_usage", "negative_count"]
    assert [s.running for s in w.recent_steps()] == [3]


def test_window_bounds_evict_and_count() -> None:
    evicted: list[str] = []
    w = TelemetryWindow(max_requests=10, max_pending=5,
                        on_evict=lambda what, n: evicted.append(what))
    w.apply(events_batch(25))
    assert len(w) == 10
    assert evicted.count("finished") == 15
    b = pb.EngineEvent(engine_id="e")
    for i in range(8):
        b.requests.add(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id=f"p{i}", time=100.0 + i,
                       prompt_tokens=5)
    w.apply(b)
    assert evicted.count("pending") == 3


def test_engines_do_not_mix_request_ids() -> None:
    w = TelemetryWindow()
    a = pb.EngineEvent(engine_id="A")
    a.requests.add(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id="r", time=1.0, prompt_tokens=10)
    b = pb.EngineEvent(engine_id="B")
    b.requests.add(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id="r", time=2.0, prompt_tokens=99)
    b.requests.add(kind=pb.REQUEST_EVENT_KIND_FINISHED, request_id="r", time=3.0, output_tokens=1)
    w.apply(a)
    w.apply(b)
    tr = w.trace(0.0)
    assert tr is not None and list(tr.prompt_tokens) == [99]


# -- persistence -----------------------------------------------------------------------------
def test_version_counter_and_policy_survive_a_restart(tmp_path: Path) -> None:
    st = StateFile(tmp_path)
    store = PolicyStore(st, SidecarMetrics())
    assert store.current().version == 1
    pub = store.publish(neutral_policy().replace(mode=Mode.BOOST), source=Source.LEARNED)
    assert pub.version == 2 and pub.policy is not None and pub.policy.source is Source.LEARNED
    # reopen: the same version and policy are in force, the counter continues
    store2 = PolicyStore(StateFile(tmp_path), SidecarMetrics())
    assert store2.current().version == 2
    assert store2.last_good() == pub.policy
    assert store2.publish(neutral_policy(), source=Source.BASELINE).version == 3


def test_invalid_publish_burns_no_version(tmp_path: Path) -> None:
    import dataclasses

    from tailwise.scorer.policy import SafetyParams

    store = PolicyStore(StateFile(tmp_path), SidecarMetrics())
    bad = dataclasses.replace(neutral_policy(), safety=SafetyParams(max_boost_s=10, aging_s=5))
    with pytest.raises(PolicyError, match=r"safety\.max_boost_s"):
        store.publish(bad, source=Source.LEARNED)
    assert store.current().version == 1
    assert StateFile(tmp_path).state.version == 1


def test_unchecked_publish_keeps_last_good_and_advances_the_counter(tmp_path: Path) -> None:
    from tailwise.wire import codec

    store = PolicyStore(StateFile(tmp_path), SidecarMetrics())
    msg = codec.policy_to_proto(neutral_policy())
    msg.boost.gamma = math.nan
    pub = store.publish_unchecked(msg)
    assert pub.version == 2 and pub.policy is None and math.isnan(pub.msg.boost.gamma)
    assert store.last_good().version == 1
    # restart: the unchecked version is never re-issued and never restored
    store2 = PolicyStore(StateFile(tmp_path), SidecarMetrics())
    assert store2.current().version == 1
    assert store2.publish(neutral_policy(), source=Source.BASELINE).version == 3


def test_kill_switch_pauses_promotion_and_persists(tmp_path: Path) -> None:
    store = PolicyStore(StateFile(tmp_path), SidecarMetrics())
    store.publish(neutral_policy().replace(mode=Mode.BOOST), source=Source.LEARNED)
    pub = store.kill("incident 42")
    assert pub.policy is not None and pub.policy.mode is Mode.FCFS
    assert "incident 42" in pub.policy.note
    with pytest.raises(PromotionPaused):
        store.publish(neutral_policy(), source=Source.LEARNED, automatic=True)
    store2 = PolicyStore(StateFile(tmp_path), SidecarMetrics())
    assert store2.paused
    store2.set_paused(False)
    assert store2.publish(neutral_policy().replace(mode=Mode.BOOST), source=Source.LEARNED,
                          automatic=True).version == 4


def test_corrupt_state_is_refused_not_reset(tmp_path: Path) -> None:
    StateFile(tmp_path).update(version=41)
    path = tmp_path / "sidecar_state.json"
    doc = json.loads(path.read_text())
    assert doc["state"]["version"] == 41
    path.write_text(path.read_text()[:20])
    with pytest.raises(StateError, match="refusing to start"):
        StateFile(tmp_path)


def test_state_writes_are_atomic_files(tmp_path: Path) -> None:
    st = StateFile(tmp_path)
    for v in range(1, 30):
        assert st.issue_version() == v
    assert [p.name for p in tmp_path.iterdir()] == ["sidecar_state.json"]


def test_trace_carry_in_replays_the_backlog_from_the_window_start() -> None:
    """Requests in the engine at ``since`` are replayed from ``since``: a waiting one
    whole, a decoding one with the share of its output still to come."""
    from tailwise.learner.window import TelemetryWindow
    from tailwise.wire.v1 import policy_pb2 as pb

    w = TelemetryWindow()
    b = pb.EngineEvent()
    # (id, arrival, first token, finish, prompt, output)
    for rid, arr, ftt, fin, p, o in (("dec", 0.5, 1.0, 11.0, 500, 100),
                                     ("wait", 2.0, 6.0, 8.0, 300, 40),
                                     ("done", 1.0, 2.0, 3.0, 50, 5),
                                     ("new", 6.0, 6.5, 7.0, 70, 9)):
        b.requests.add(kind=pb.REQUEST_EVENT_KIND_FINISHED, request_id=rid, time=fin,
                       arrival_time=arr, first_token_time=ftt, prompt_tokens=p,
                       output_tokens=o)
    assert w.apply(b) == 4
    plain = w.trace(5.0)
    assert plain is not None and plain.prompt_tokens.tolist() == [70]
    tr = w.trace(5.0, carry_in=True)
    assert tr is not None and tr.meta["carried_in"] == 2
    # "done" finished before the window: not replayed; "dec" had 6 of its 10 s of
    # decoding left (60 of 100 tokens); "wait" had not started: whole
    assert tr.arrival_s.tolist() == [0.0, 0.0, 1.0]
    assert tr.prompt_tokens.tolist() == [500, 300, 70]
    assert tr.output_tokens.tolist() == [60, 40, 9]


def _finished_pool(w: TelemetryWindow, n: int, *, slo: str = "", t0: float = 0.0) -> None:
    """``n`` finished requests: request i produced 10·(i+1) tokens over i+1 s of decoding."""
    b = pb.EngineEvent()
    for i in range(n):
        b.requests.add(kind=pb.REQUEST_EVENT_KIND_FINISHED, request_id=f"f{slo}{i}",
                       time=t0 + 2.0 + i, arrival_time=t0 + 0.5, first_token_time=t0 + 1.0,
                       prompt_tokens=20, output_tokens=10 * (i + 1), slo_class=slo)
    assert w.apply(b) == n


def test_trace_impute_replays_unfinished_requests_with_lengths_they_can_still_reach() -> None:
    """Unfinished requests are replayed (not dropped) with an output length drawn from the
    finished requests that outlived them (more tokens than they produced); one still
    waiting draws from every finished request."""
    w = TelemetryWindow()
    _finished_pool(w, 10)  # 10..100 tokens over 1..10 s of decoding; clock at 11
    b = pb.EngineEvent()
    b.requests.add(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id="wait", time=1.0,
                   prompt_tokens=30)
    b.requests.add(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id="dec", time=1.0,
                   prompt_tokens=40)
    b.requests.add(kind=pb.REQUEST_EVENT_KIND_FIRST_TOKEN, request_id="dec", time=3.0)
    # it was preempted having produced 55 tokens: only 60..100 can still be its length
    b.requests.add(kind=pb.REQUEST_EVENT_KIND_PREEMPTED, request_id="dec", time=4.0,
                   output_tokens=55)
    assert w.apply(b) == 4
    assert w.count_since(0.0) == 10 and w.count_since(0.0, pending=True) == 12
    plain = w.trace(0.0)
    assert plain is not None and len(plain) == 10 and plain.meta["imputed"] == 0
    tr = w.trace(0.0, impute=True)
    assert tr is not None and len(tr) == 12 and tr.meta["imputed"] == 2
    by_prompt = dict(zip(tr.prompt_tokens.tolist(), tr.output_tokens.tolist(), strict=True))
    # "dec" had produced 55 tokens when it was preempted: only 60..100 can be its length
    assert by_prompt[40] in (60, 70, 80, 90, 100)
    assert by_prompt[30] in range(10, 101, 10)
    again = w.trace(0.0, impute=True)  # deterministic for one window
    assert again is not None and again.output_tokens.tolist() == tr.output_tokens.tolist()


def test_trace_impute_past_every_finished_request_doubles_what_it_has_produced() -> None:
    w = TelemetryWindow()
    _finished_pool(w, 5)  # at most 50 tokens
    b = pb.EngineEvent()
    b.requests.add(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id="long", time=1.0,
                   prompt_tokens=30)
    b.requests.add(kind=pb.REQUEST_EVENT_KIND_FIRST_TOKEN, request_id="long", time=1.0)
    b.requests.add(kind=pb.REQUEST_EVENT_KIND_TOKENS, request_id="long", time=21.0,
                   output_tokens=150)
    assert w.apply(b) == 3
    tr = w.trace(0.0, impute=True)
    assert tr is not None
    # 150 tokens produced, no finished request had that many: twice that
    assert tr.output_tokens[tr.prompt_tokens.tolist().index(30)] == 300


def test_trace_impute_carries_unfinished_backlog_and_leaves_out_lost_requests() -> None:
    """An unfinished request that arrived before the window is part of the backlog at its
    start; one older than ``max_pending_age_s`` (its FINISHED event lost) is not; nothing
    is imputed without finished requests to draw from, or per class from too few."""
    w = TelemetryWindow()
    b = pb.EngineEvent()
    b.requests.add(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id="lone", time=1.0,
                   prompt_tokens=30)
    assert w.apply(b) == 1
    assert w.trace(0.0, impute=True) is None
    assert w.count_since(0.0, pending=True) == 0
    _finished_pool(w, 30, slo="chat", t0=100.0)  # clock at 131
    _finished_pool(w, 3, slo="batch", t0=100.0)
    b = pb.EngineEvent()
    b.requests.add(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id="old", time=110.0,
                   prompt_tokens=11, slo_class="chat")
    b.requests.add(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id="b", time=125.0,
                   prompt_tokens=12, slo_class="batch")
    assert w.apply(b) == 2
    # nothing finished arrived in [120, ...): without imputation there is no window
    assert w.trace(120.0, carry_in=True) is None
    tr = w.trace(120.0, carry_in=True, impute=True, max_pending_age_s=60.0)
    # the backlog at 120: chat requests 19..29 (finished at 121..131) and "old"
    assert tr is not None and tr.meta["imputed"] == 2 and tr.meta["carried_in"] == 12
    prompts = tr.prompt_tokens.tolist()
    # "old" (chat) waits in the backlog at the window's start, "b" arrives 5 s in; "lone"
    # is 130 s old
    assert tr.arrival_s[prompts.index(11)] == 0.0 and tr.arrival_s[prompts.index(12)] == 5.0
    assert 30 not in prompts
    # "old" is imputed from chat's 30 finished requests (multiples of 10), "b" from the
    # whole pool (batch has 3, below IMPUTE_MIN_CLASS)
    assert tr.output_tokens[prompts.index(11)] in range(10, 301, 10)
    fresh = w.trace(120.0, carry_in=True, impute=True, max_pending_age_s=15.0)
    assert fresh is not None and fresh.meta["imputed"] == 1
    assert 11 not in fresh.prompt_tokens.tolist()


def test_a_progress_event_with_a_bad_first_token_time_is_accepted_and_the_time_ignored(
        ) -> None:
    """Progress events only moved the engine clock before they fed the imputation: a
    first-token time that is not a valid engine time is ignored, not refused."""
    w = TelemetryWindow()
    b = pb.EngineEvent()
    b.requests.add(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id="r", time=1.0,
                   prompt_tokens=30)
    for bad in (math.inf, math.nan, -3.0, 1e12, 50.0):  # 50: later than the event
        b.requests.add(kind=pb.REQUEST_EVENT_KIND_PREEMPTED, request_id="r", time=2.0,
                       first_token_time=bad)
    b.requests.add(kind=pb.REQUEST_EVENT_KIND_PREEMPTED, request_id="x", time=2.0,
                   first_token_time=math.nan)  # an unknown request: the clock moves
    assert w.apply(b) == 7 and w.rejected == 0 and w.engine_now() == 2.0
    assert w._pending[("", "r")].first_token_time is None


def _steps(w: TelemetryWindow, engine: str) -> tuple[np.ndarray, np.ndarray]:
    return w._step_times[engine].counts()


def test_produced_tokens_count_the_engines_iterations_until_a_preemption() -> None:
    """A decoding request produced one token at its first and one per iteration of its own
    engine since (a step record can cover several); once preempted after its first token,
    what it had then (a lower bound), and before that at most that. A preemption before
    its first token (during prefill) does not stop the count."""
    from tailwise.learner.window import produced_by

    w = TelemetryWindow(step_counts=True)
    b = pb.EngineEvent(engine_id="e1")
    for rid in ("run", "pre", "early"):
        b.requests.add(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id=rid, time=0.0,
                       prompt_tokens=10)
    b.requests.add(kind=pb.REQUEST_EVENT_KIND_PREEMPTED, request_id="early", time=0.5)
    for rid in ("run", "pre", "early"):
        b.requests.add(kind=pb.REQUEST_EVENT_KIND_FIRST_TOKEN, request_id=rid, time=1.0)
    for k in range(1, 11):  # steps at 1.5, 2.5, ..., 10.5; the one at 10.5 covers 5
        b.steps.add(time=k + 0.5, step_time_s=0.01, steps=5 if k == 10 else 0)
    b.requests.add(kind=pb.REQUEST_EVENT_KIND_PREEMPTED, request_id="pre", time=6.0,
                   output_tokens=4)
    other = pb.EngineEvent(engine_id="e2")  # another engine's steps do not count
    for k in range(100):
        other.steps.add(time=1.0 + k * 0.01, step_time_s=0.01)
    assert w.apply(b) == 18 and w.apply(other) == 100
    run, pre, early = (w._pending[("e1", r)] for r in ("run", "pre", "early"))
    steps = _steps(w, "e1")
    assert produced_by(run, steps, 11.0) == 1 + 9 + 5 and produced_by(run, steps, 3.0) == 3
    assert produced_by(run, steps, 0.5) == 0  # before its first token
    assert produced_by(early, steps, 11.0) == 15  # preempted in prefill only
    assert produced_by(pre, steps, 11.0) == 4  # after its preemption: what it had then
    assert produced_by(pre, steps, 3.0) == 3 and produced_by(pre, steps, 5.9) == 4


def test_the_step_log_keeps_counting_past_its_size() -> None:
    from tailwise.learner.window import _StepLog

    log_ = _StepLog(4)
    for t in range(10):
        log_.add(float(t), 2)
    log_.add(3.0, 7)  # late: dropped
    times, done = log_.counts()
    assert times.tolist() == [-math.inf, 6.0, 7.0, 8.0, 9.0]
    assert done.tolist() == [12.0, 14.0, 16.0, 18.0, 20.0]


def test_a_tokens_report_counts_from_when_it_was_made() -> None:
    """A TOKENS event says what a request had produced at its time: it raises the count
    from then on, not before (the backlog at an earlier window start is not shortened by
    it), and a request that reports tokens has had its first token."""
    from tailwise.learner.window import produced_by

    w = TelemetryWindow()
    b = pb.EngineEvent(engine_id="e")
    b.requests.add(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id="r", time=0.0,
                   prompt_tokens=10)
    b.requests.add(kind=pb.REQUEST_EVENT_KIND_TOKENS, request_id="r", time=4.0,
                   output_tokens=300)
    assert w.apply(b) == 2
    r = w._pending[("e", "r")]
    assert r.first_token_time == 4.0
    none = (np.array([-math.inf]), np.array([0.0]))
    assert produced_by(r, none, 5.0) == 300 and produced_by(r, none, 3.9) == 0


def test_impute_draws_from_the_requests_own_slo_class_once_it_has_enough() -> None:
    from tailwise.learner.window import IMPUTE_MIN_CLASS

    w = TelemetryWindow()
    _finished_pool(w, 30, slo="chat")  # 10, 20, ..., 300 tokens
    b = pb.EngineEvent()
    for slo, n, out in (("batch", IMPUTE_MIN_CLASS, 7), ("rare", 3, 5)):
        for i in range(n):
            b.requests.add(kind=pb.REQUEST_EVENT_KIND_FINISHED, request_id=f"{slo}{i}",
                           time=40.0, arrival_time=0.5, first_token_time=1.0,
                           prompt_tokens=20, output_tokens=out, slo_class=slo)
    for slo, prompt in (("batch", 31), ("rare", 32), ("chat", 33)):
        b.requests.add(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id=f"u{slo}", time=41.0,
                       prompt_tokens=prompt, slo_class=slo)
    assert w.apply(b) == IMPUTE_MIN_CLASS + 6
    tr = w.trace(41.0, impute=True)
    assert tr is not None and tr.meta["imputed"] == 3
    got = dict(zip(tr.prompt_tokens.tolist(), tr.output_tokens.tolist(), strict=True))
    assert got[31] == 7  # batch: its own 20 finished requests
    assert got[33] in range(10, 301, 10)  # chat: its own
    # rare has 3: the whole pool (58 requests), drawn with the same seed each time
    assert got[32] in {5, 7, *range(10, 301, 10)}


def test_a_step_record_must_say_a_sane_number_of_iterations() -> None:
    from tailwise.wire.codec import MAX_STEPS_PER_RECORD

    w = TelemetryWindow(step_counts=True)
    b = pb.EngineEvent(engine_id="e")
    b.steps.add(time=1.0, steps=-1)
    b.steps.add(time=2.0, steps=MAX_STEPS_PER_RECORD + 1)
    b.steps.add(time=3.0, steps=MAX_STEPS_PER_RECORD)
    assert w.apply(b) == 1 and w.rejected == 2
    assert w._step_times["e"].counts()[1].tolist() == [0.0, MAX_STEPS_PER_RECORD]


def test_the_round_count_of_unfinished_requests_leaves_out_the_lost_ones() -> None:
    """``count_since(pending=True)`` counts what ``trace(impute=True)`` replays: an
    unfinished request older than ``max_pending_age_s`` (its FINISHED event lost) is not."""
    w = TelemetryWindow()
    _finished_pool(w, 1, t0=200.0)  # clock at 202
    b = pb.EngineEvent()
    for i, t in enumerate((10.0, 195.0, 201.0)):
        b.requests.add(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id=f"u{i}", time=t,
                       prompt_tokens=10)
    assert w.apply(b) == 3
    assert w.count_since(0.0, pending=True) == 4
    assert w.count_since(0.0, pending=True, max_pending_age_s=60.0) == 3
    tr = w.trace(0.0, impute=True, max_pending_age_s=60.0)
    assert tr is not None and len(tr) == 3


def test_step_counts_are_kept_only_when_asked_for() -> None:
    """The ingest path keeps per-engine step counts only for the imputation
    (``step_counts``, the sidecar's ``window.impute_unfinished``)."""
    b = pb.EngineEvent(engine_id="e")
    b.steps.add(time=1.0, steps=3)
    off, on = TelemetryWindow(), TelemetryWindow(step_counts=True)
    assert off.apply(b) == on.apply(b) == 1
    assert not off._step_times and on._step_times["e"].counts()[1].tolist() == [0.0, 3.0]

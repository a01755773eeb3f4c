"""Active policies inside the real vLLM scheduler: reordering, victims, caps, swaps, faults.

Test-only SchedulingPolicies make the expected schedule obvious (shortest prompt first,
a chosen victim); the real ``tailwise`` and ``kairos`` modes from ``tailwise.scorer.registry`` are
exercised end to end. Every run also checks vLLM's invariants at the end (all requests
done with their exact token counts, every KV block back in the pool).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (pip install 'tailwise[vllm]')")

from vllm.v1.core.sched.request_queue import FCFSRequestQueue
from vllm.v1.request import RequestStatus

from tailwise.engine_adapter.policy_queue import PolicyRequestQueue
from tailwise.scorer.interface import KeyedQueue
from tailwise.scorer.policy import Mode, Policy, SafetyParams, SloParams
from tailwise.scorer.registry import build_scheduler
from tailwise.scorer.request import ReqInfo
from tailwise.wire.policy_file import save as save_frozen

pytestmark = pytest.mark.vllm


class ShortestPromptFirst(KeyedQueue):
    """Waiting: fewest uncached prompt tokens first; optional aging."""

    name = "spf"

    def __init__(self, aging_s: float | None = None) -> None:
        super().__init__(aging_s=aging_s)
        self.calls: list[tuple[str, str]] = []

    def waiting_key(self, req: ReqInfo, now: float) -> float:
        return float(req.uncached_prompt_tokens)

    def on_admit(self, req: ReqInfo, now: float) -> None:
        self.calls.append(("admit", req.request_id))

    def on_preempt(self, req: ReqInfo, now: float) -> None:
        self.calls.append(("preempt", req.request_id))

    def on_first_token(self, req: ReqInfo, now: float) -> None:
        self.calls.append(("first_token", req.request_id))

    def on_finish(self, req: ReqInfo, now: float) -> None:
        self.calls.append(("finish", req.request_id))


class ChosenVictim(KeyedQueue):
    """Waiting in arrival order; running ranked with ``victim`` always last."""

    name = "chosen-victim"

    def __init__(self, victim: str) -> None:
        super().__init__()
        self.victim = victim
        self.orders: list[list[str]] = []

    def waiting_key(self, req: ReqInfo, now: float) -> float:
        return req.arrival_time

    def order_running(self, running: Sequence[ReqInfo], now: float) -> list[ReqInfo]:
        ranked = sorted(running, key=lambda r: (r.request_id == self.victim, r.arrival_time))
        self.orders.append([r.request_id for r in ranked])
        return ranked


class DecodeCap(ShortestPromptFirst):
    name = "decode-cap"
    caps_decode = True

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap

    def decode_cap(self, running: Sequence[ReqInfo], now: float) -> int | None:
        return self.cap


class Exploding(ShortestPromptFirst):
    """Raises from ``peek`` after a number of calls."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.left = after

    def peek(self, now: float) -> ReqInfo | None:
        self.left -= 1
        if self.left < 0:
            raise RuntimeError("boom")
        return super().peek(now)


def admissions(recs: list[Any]) -> list[str]:
    return [rid for r in recs for rid, _ in r.new]


def assert_drained(s: Any, reqs: Sequence[Any]) -> None:
    """vLLM's invariants after a run: everything finished, every block returned."""
    assert not s.has_unfinished_requests()
    assert all(r.is_finished() for r in reqs)
    assert all(
        r.num_output_tokens == r.max_tokens
        for r in reqs
        if r.sampling_params.ignore_eos and r.status != RequestStatus.FINISHED_ABORTED
    )
    pool = s.kv_cache_manager.block_pool
    assert pool.get_num_free_blocks() == pool.num_gpu_blocks - 1  # all but the null block
    assert s.kv_cache_manager.usage == 0.0
    assert not s.running and len(s.waiting) == 0 and not s.requests


def requests(vh: Any, spec: list[tuple[str, int, int]], **kw: Any) -> list[Any]:
    """(id, prompt tokens, output tokens), arrivals 0, 1, 2, ... ; exact output lengths."""
    return [
        vh.make_request(rid, p, max_tokens=o, arrival_time=float(i), ignore_eos=True, **kw)
        for i, (rid, p, o) in enumerate(spec)
    ]


# -- ordering ---------------------------------------------------------------------------
def test_short_requests_overtake_long_ones(make_scheduler: Any, vh: Any) -> None:
    spec = [("long", 1000, 4), ("s1", 10, 4), ("s2", 20, 4), ("long2", 900, 4)]
    stock = make_scheduler("stock", max_num_seqs=1)
    vh.add_all(stock, requests(vh, spec))
    assert admissions(vh.run_until_idle(stock)) == ["long", "s1", "s2", "long2"]

    source = vh.MutableSource(Policy(mode=Mode.BOOST))
    policy = ShortestPromptFirst()
    ours = make_scheduler(
        "tailwise", max_num_seqs=1, policy_source=source, builder=lambda p: policy
    )
    assert ours.tailwise_active and isinstance(ours.waiting, PolicyRequestQueue)
    reqs = requests(vh, spec)
    vh.add_all(ours, reqs)
    assert admissions(vh.run_until_idle(ours)) == ["s1", "s2", "long2", "long"]
    assert_drained(ours, reqs)
    # the policy's hooks saw the lifecycle in order
    assert [c for c in policy.calls if c[1] == "s1"] == [
        ("admit", "s1"), ("first_token", "s1"), ("finish", "s1")
    ]


class AdmitProgress(ChosenVictim):
    """Records the work a request has attained when ``on_admit`` sees it."""

    def __init__(self, victim: str) -> None:
        super().__init__(victim)
        self.at_admit: list[tuple[str, int, int]] = []

    def on_admit(self, req: ReqInfo, now: float) -> None:
        self.at_admit.append((req.request_id, req.num_preemptions, req.prefill_tokens_done))


def test_on_admit_sees_the_request_before_its_admission_chunk(make_scheduler: Any, vh: Any) -> None:
    """As in the simulator, ``on_admit`` runs before the admission step's prefill chunk is
    credited (anti-thrash protection is set from the work attained before the restore)."""
    spec = [(f"r{i}", 32, 40) for i in range(3)]
    policy = AdmitProgress("r0")
    ours = make_scheduler("tailwise", scheduling_policy=policy, num_blocks=9,
                          max_num_batched_tokens=128)
    reqs = requests(vh, spec)
    vh.add_all(ours, reqs)
    vh.run_until_idle(ours)
    assert_drained(ours, reqs)
    fresh = [a for a in policy.at_admit if a[1] == 0]
    resumed = [a for a in policy.at_admit if a[1] > 0]
    assert [a[2] for a in fresh] == [0, 0, 0]
    assert resumed and all(a[2] == 32 for a in resumed)  # its first prefill, not the recompute


def test_chosen_victim_is_preempted(make_scheduler: Any, vh: Any) -> None:
    spec = [(f"r{i}", 32, 40) for i in range(3)]
    cfg = {"num_blocks": 9, "max_num_batched_tokens": 128}

    stock = make_scheduler("stock", **cfg)
    vh.add_all(stock, requests(vh, spec))
    stock_recs = vh.run_until_idle(stock)
    assert next(r for r in stock_recs if r.preempted).preempted == ("r2",)

    policy = ChosenVictim("r0")
    ours = make_scheduler("tailwise", scheduling_policy=policy, **cfg)
    reqs = requests(vh, spec)
    vh.add_all(ours, reqs)
    recs = []
    for _ in range(1000):
        if not ours.has_unfinished_requests():
            break
        n_orders = len(policy.orders)
        out, rec = vh.step(ours)
        recs.append(rec)
        if rec.preempted:
            ranked = policy.orders[n_orders]
            # victims come from the tail of the policy's ranking, never from above a
            # request that was served in the same step
            assert list(rec.preempted) == sorted(ranked[len(ranked) - len(rec.preempted):])
            served = [rid for rid in out.num_scheduled_tokens if rid in ranked]
            assert all(ranked.index(s) < ranked.index(v) for s in served for v in rec.preempted)
    assert next(r for r in recs if r.preempted).preempted == ("r0",)
    assert reqs[0].num_preemptions >= 1
    assert_drained(ours, reqs)


def test_policy_decides_victim_under_vllm_priority_scheduling(make_scheduler: Any, vh: Any) -> None:
    spec = [(f"r{i}", 32, 40) for i in range(3)]
    cfg = {"num_blocks": 9, "max_num_batched_tokens": 128, "policy": "priority"}

    def reqs_() -> list[Any]:
        # r0 is the most important to vLLM (priority 0): its rule would evict r2 first
        return [
            vh.make_request(rid, p, max_tokens=o, arrival_time=float(i), ignore_eos=True,
                            priority=i)
            for i, (rid, p, o) in enumerate(spec)
        ]

    stock = make_scheduler("stock", **cfg)
    vh.add_all(stock, reqs_())
    assert next(r for r in vh.run_until_idle(stock) if r.preempted).preempted == ("r2",)

    ours = make_scheduler("tailwise", scheduling_policy=ChosenVictim("r0"), **cfg)
    reqs = reqs_()
    vh.add_all(ours, reqs)
    recs = vh.run_until_idle(ours)
    assert next(r for r in recs if r.preempted).preempted == ("r0",)
    assert ours.policy.value == "priority"  # vLLM's setting is restored after each step
    assert_drained(ours, reqs)


def test_decode_cap_limits_decodes_per_step(make_scheduler: Any, vh: Any) -> None:
    ours = make_scheduler("tailwise", scheduling_policy=DecodeCap(2))
    reqs = requests(vh, [(f"r{i}", 16, 6) for i in range(5)])
    vh.add_all(ours, reqs)
    recs = vh.run_until_idle(ours)
    for rec in recs[1:]:
        decodes = [rid for rid, n in rec.tokens if n == 1]
        assert len(decodes) <= 2
        assert len(rec.running) + rec.waiting <= 5
    assert max(len(r.running) for r in recs) == 5  # capped requests stay running
    assert ours.tailwise_counters["decode_capped"] > 0
    assert ours.max_num_active_reqs == ours.max_num_running_reqs
    assert_drained(ours, reqs)


# -- safety envelope --------------------------------------------------------------------
def _starvation_run(make_scheduler: Any, vh: Any, sched_kwargs: dict[str, Any]) -> float | None:
    """A long request at t=0 and a short one arriving every second; one slot; 1 s steps.
    Returns how long the long request waited (None if it never ran in 40 s)."""
    clock = vh.FakeClock(0.0)
    s = make_scheduler("tailwise", max_num_seqs=1, clock=clock, **sched_kwargs)
    s.add_request(vh.make_request("long", 600, max_tokens=2, arrival_time=0.0, ignore_eos=True))
    for t in range(40):
        clock.t = float(t)
        s.add_request(
            vh.make_request(f"s{t}", 8, max_tokens=1, arrival_time=clock.t + 0.5, ignore_eos=True)
        )
        clock.t = t + 0.5
        out, _ = vh.step(s)
        if any(n.req_id == "long" for n in out.scheduled_new_reqs):
            return clock.t
    return None


def test_no_starvation_beyond_aging(make_scheduler: Any, vh: Any) -> None:
    assert _starvation_run(make_scheduler, vh, {"scheduling_policy": ShortestPromptFirst()}) is None
    waited = _starvation_run(
        make_scheduler, vh, {"scheduling_policy": ShortestPromptFirst(aging_s=5.0)}
    )
    assert waited is not None and waited <= 5.0 + 1.0  # aging_s plus one step


def test_no_starvation_with_real_tailwise_mode(make_scheduler: Any, vh: Any) -> None:
    policy = Policy(mode=Mode.TAILWISE, safety=SafetyParams(max_boost_s=4.0, aging_s=5.0))
    waited = _starvation_run(make_scheduler, vh, {"scheduling_policy": build_scheduler(policy)})
    assert waited is not None and waited <= 5.0 + 1.0


# -- swaps and faults -------------------------------------------------------------------
def test_policy_swap_mid_run_takes_effect_next_step(make_scheduler: Any, vh: Any) -> None:
    v0 = Policy(mode=Mode.FCFS)
    v1 = Policy(mode=Mode.BOOST, version=1)
    v2 = Policy(mode=Mode.FCFS, version=2)
    source = vh.MutableSource(v0)
    s = make_scheduler("tailwise", max_num_seqs=1, policy_source=source,
                       builder=lambda p: ShortestPromptFirst())
    # one output token each: one request per step through the single slot
    spec = [("a", 300, 1), ("b", 200, 1), ("c", 100, 1), ("d", 50, 1), ("e", 400, 1), ("f", 10, 1)]
    reqs = requests(vh, spec)
    vh.add_all(s, reqs)
    recs = [vh.step(s)[1] for _ in range(2)]
    assert admissions(recs) == ["a", "b"] and not s.tailwise_active
    source.policy = v1  # swapped by the "client thread" between steps
    recs += [vh.step(s)[1] for _ in range(2)]
    assert s.tailwise_active and s.tailwise_policy is v1
    assert admissions(recs) == ["a", "b", "f", "d"]  # shortest first from the next step on
    source.policy = v2
    out, rec = vh.step(s)
    assert not s.tailwise_active and isinstance(s.waiting, FCFSRequestQueue)
    assert [n.req_id for n in out.scheduled_new_reqs] == ["c"]  # FCFS again, at once
    assert [r.request_id for r in s.waiting] == ["e"]
    recs += [rec, *vh.run_until_idle(s)]
    assert admissions(recs) == ["a", "b", "f", "d", "c", "e"]  # FCFS again
    assert s.tailwise_counters["policy_swaps"] == 2
    assert_drained(s, reqs)


def test_unbuildable_policy_keeps_the_old_one_and_logs_once(
    make_scheduler: Any, vh: Any, caplog: pytest.LogCaptureFixture
) -> None:
    good = Policy(mode=Mode.BOOST, version=1)
    bad = Policy(mode=Mode.BOOST, version=2, note="bad")

    def builder(p: Policy) -> Any:
        if p.note == "bad":
            raise ValueError("cannot build")
        return ShortestPromptFirst()

    source = vh.MutableSource(good)
    s = make_scheduler("tailwise", max_num_seqs=1, policy_source=source, builder=builder)
    reqs = requests(vh, [("a", 300, 2), ("b", 10, 2), ("c", 20, 2)])
    vh.add_all(s, reqs)
    vh.step(s)
    source.policy = bad
    with caplog.at_level(logging.WARNING, logger="tailwise.engine_adapter.vllm"):
        recs = vh.run_until_idle(s)
    assert s.tailwise_active and s.tailwise_policy is good
    assert s.tailwise_counters["swap_failures"] == 1
    assert len([r for r in caplog.records if "failed to build" in r.getMessage()]) == 1
    assert admissions(recs) == ["c", "a"]
    assert_drained(s, reqs)


def test_policy_that_raises_falls_back_to_stock(make_scheduler: Any, vh: Any) -> None:
    s = make_scheduler("tailwise", max_num_seqs=2, scheduling_policy=Exploding(after=3))
    reqs = requests(vh, [(f"r{i}", 20 + i, 3) for i in range(6)])
    vh.add_all(s, reqs)
    vh.run_until_idle(s)
    assert not s.tailwise_active
    assert s.tailwise_counters["policy_errors"] >= 1
    assert_drained(s, reqs)


def test_bad_running_order_is_ignored(make_scheduler: Any, vh: Any) -> None:
    class Dropper(ShortestPromptFirst):
        def order_running(self, running: Sequence[ReqInfo], now: float) -> list[ReqInfo]:
            return list(running)[1:]  # not a permutation

    # KV pressure, so the running order matters and the policy is asked for it
    s = make_scheduler("tailwise", scheduling_policy=Dropper(), num_blocks=9,
                       max_num_batched_tokens=128)
    reqs = requests(vh, [(f"r{i}", 32, 40) for i in range(3)])
    vh.add_all(s, reqs)
    vh.run_until_idle(s)
    assert s.tailwise_counters["order_running_invalid"] > 0
    assert_drained(s, reqs)


# -- bookkeeping and telemetry ----------------------------------------------------------
def test_progress_tracking_and_telemetry(make_scheduler: Any, vh: Any) -> None:
    clock = vh.FakeClock(100.0)
    sink = vh.RecordingSink()
    policy = ShortestPromptFirst()
    s = make_scheduler("tailwise", clock=clock, telemetry_sink=sink, scheduling_policy=policy,
                       max_num_batched_tokens=64)
    shared = [9 + (i % 11) for i in range(48)]
    a = vh.make_request("a", [*shared, 1, 2], max_tokens=3, ignore_eos=True, arrival_time=100.0)
    s.add_request(a)
    while s.has_unfinished_requests():
        clock.t += 1.0
        vh.step(s)
    b = vh.make_request("b", [*shared, 3, 4, 5], max_tokens=3, ignore_eos=True, arrival_time=clock.t)
    s.add_request(b)
    info = s.tailwise_info("b")
    assert info is not None and info.cached_tokens == 48  # estimated at enqueue
    clock.t += 1.0
    _out, _ = vh.step(s)
    assert info.cached_tokens == 48 and info.last_admit_time == clock.t
    assert info.prefill_tokens_done == 51 - 48
    assert info.first_token_time == clock.t
    while s.has_unfinished_requests():
        clock.t += 1.0
        vh.step(s)
    assert info.num_output_tokens == 3
    assert sink.of("arrival") == ["a", "b"]
    assert sink.of("first_token") == ["a", "b"] and sink.of("finish") == ["a", "b"]
    # per-step stats mirror the SchedulerOutputs: a's 50-token prompt in 64-token chunks
    assert [st.prefill_tokens for st in sink.steps[:2]] == [50, 0]
    assert sink.steps[1].decode_requests == 1 and sink.steps[1].decode_context == 51
    assert all(st.step_time_s == 0.0 for st in sink.steps)  # the fake clock stood still


def test_telemetry_counts_preemptions(make_scheduler: Any, vh: Any) -> None:
    sink = vh.RecordingSink()
    s = make_scheduler("tailwise", telemetry_sink=sink, scheduling_policy=ChosenVictim("r1"),
                       num_blocks=9, max_num_batched_tokens=128)
    reqs = requests(vh, [(f"r{i}", 32, 40) for i in range(3)])
    vh.add_all(s, reqs)
    recs = vh.run_until_idle(s)
    preempted = [p for r in recs for p in r.preempted]
    assert preempted and sink.of("preempt") == preempted
    assert sum(st.preempted for st in sink.steps) == len(preempted)
    assert sum(r.num_preemptions for r in reqs) == len(preempted)
    assert_drained(s, reqs)


def test_a_preemption_reports_what_the_victim_had_produced(make_scheduler: Any,
                                                          vh: Any) -> None:
    """The PREEMPTED event carries the victim's output tokens at its preemption (the
    sidecar's imputation counts from it), also when no policy refreshed them: with the
    engine's own policy the second victim here had decoded 33 tokens and was reported
    with 1."""
    sink = vh.RecordingSink()
    s = make_scheduler("tailwise", telemetry_sink=sink, num_blocks=9, max_num_batched_tokens=128)
    reqs = requests(vh, [(f"r{i}", 32, 40) for i in range(3)])
    vh.add_all(s, reqs)
    vh.run_until_idle(s)
    assert len(sink.of("preempt")) >= 2
    assert all(n >= 1 for n in sink.preempted_tokens) and max(sink.preempted_tokens) > 1
    assert_drained(s, reqs)


def test_abort_waiting_and_running_under_active_policy(make_scheduler: Any, vh: Any) -> None:
    policy = ShortestPromptFirst()
    s = make_scheduler("tailwise", max_num_seqs=2, scheduling_policy=policy)
    reqs = requests(vh, [(f"r{i}", 40 - i, 5) for i in range(6)])
    vh.add_all(s, reqs)
    vh.step(s)
    running = [r.request_id for r in s.running]
    waiting = sorted(r.request_id for r in s.waiting)
    s.finish_requests([running[0], waiting[0]], RequestStatus.FINISHED_ABORTED)
    assert len(s.waiting) == len(policy) == 3
    vh.run_until_idle(s)
    assert ("finish", running[0]) in policy.calls and ("finish", waiting[0]) not in policy.calls
    assert_drained(s, reqs)


# -- the real modes ---------------------------------------------------------------------
def _mixed(vh: Any) -> list[Any]:
    spec = []
    for i in range(24):
        spec.append((f"long{i}", 700, 12) if i % 4 == 0 else (f"short{i}", 24, 6))
    return requests(vh, spec)


def _mean_finish_step(recs: list[Any], prefix: str) -> float:
    steps = [i for i, r in enumerate(recs) for f in r.finished if f.startswith(prefix)]
    return sum(steps) / len(steps)


@pytest.mark.parametrize("mode", ["tailwise", "boost", "ewsjf", "kairos"])
def test_registry_modes_run_inside_vllm(make_scheduler: Any, vh: Any, mode: str, tmp_path: Any) -> None:
    policy = Policy(mode=Mode(mode))
    if mode == "kairos":
        policy = replace(policy, slo=replace(SloParams(), decode_cap=True))
    path = save_frozen(policy, tmp_path / "policy.json")
    cfg = {"max_num_seqs": 4, "num_blocks": 120, "max_num_batched_tokens": 512}
    # arrivals are 0..23 s: the policy's clock must be the same (aging would kick in)
    s = make_scheduler("tailwise", additional_config={"tailwise": {"policy_file": str(path)}},
                       clock=vh.FakeClock(24.0), **cfg)
    assert s.tailwise_active and s.tailwise_policy is not None
    assert s.tailwise_policy.mode.value == mode
    reqs = _mixed(vh)
    vh.add_all(s, reqs)
    recs = vh.run_until_idle(s)
    assert_drained(s, reqs)
    assert s.tailwise_counters["policy_errors"] == 0
    if mode == "tailwise":
        stock = make_scheduler("stock", **cfg)
        vh.add_all(stock, _mixed(vh))
        stock_recs = vh.run_until_idle(stock)
        # short requests finish earlier than under FCFS; long ones are not starved
        assert _mean_finish_step(recs, "short") < _mean_finish_step(stock_recs, "short")
        assert max(i for i, r in enumerate(recs) if r.finished) <= 1.5 * len(stock_recs)


@pytest.mark.parametrize("async_scheduling", [False, True])
def test_skipping_the_ranking_when_everyone_fits_changes_nothing(
    make_scheduler: Any, vh: Any, async_scheduling: bool
) -> None:
    """The fast path (no order_running call when all running requests fit in the token
    budget and KV) must give exactly the schedule of always ranking."""
    spec = [(f"r{i}", 40 + (37 * i) % 200, 30 + (13 * i) % 40) for i in range(16)]
    runs = []
    for fast in (True, False):
        s = make_scheduler("tailwise", clock=vh.FakeClock(24.0), num_blocks=40,
                           max_num_batched_tokens=256, async_scheduling=async_scheduling,
                           scheduling_policy=build_scheduler(Policy(mode=Mode.TAILWISE)))
        s._tw_fast_ok = fast
        vh.add_all(s, requests(vh, spec))
        recs = vh.run_async(s) if async_scheduling else vh.run_until_idle(s)
        assert (s.tailwise_counters["rank_skipped"] > 0) == fast
        # the order of running requests inside one SchedulerOutput is not a decision
        runs.append([replace(r, cached=tuple(sorted(r.cached)), tokens=tuple(sorted(r.tokens)))
                     for r in recs])
    assert runs[0] == runs[1]
    assert any(r.preempted for r in runs[0])  # both paths were exercised


def test_async_scheduler_with_active_policy(make_scheduler: Any, vh: Any) -> None:
    s = make_scheduler("tailwise", async_scheduling=True, num_blocks=100, clock=vh.FakeClock(24.0),
                       scheduling_policy=build_scheduler(Policy(mode=Mode.TAILWISE)))
    reqs = _mixed(vh)[:12]
    vh.add_all(s, reqs)
    vh.run_async(s)
    assert s.tailwise_active
    assert_drained(s, reqs)


# -- admission pacing ---------------------------------------------------------------------
class HoldWhileDecoding(ShortestPromptFirst):
    """Admission pacing at its extreme: nothing is admitted while anything decodes."""

    name = "hold-while-decoding"

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[int, int, int, int]] = []

    def admission_allowed(self, free_blocks: int, head_tokens: int, decoding: int,
                          block_size: int) -> bool:
        self.asked.append((free_blocks, head_tokens, decoding, block_size))
        return decoding == 0


def test_admission_pacing_holds_the_waiting_queue(make_scheduler: Any, vh: Any) -> None:
    """While "a" decodes the policy refuses admissions: "b" and "c" start only once "a"
    finished (stock vLLM would start them in the very next step)."""
    policy = HoldWhileDecoding()
    source = vh.MutableSource(Policy(mode=Mode.BOOST))
    ours = make_scheduler("tailwise", num_blocks=200, policy_source=source,
                          builder=lambda p: policy)
    first = requests(vh, [("a", 40, 6)])
    vh.add_all(ours, first)
    _, rec = vh.step(ours)
    assert [rid for rid, _ in rec.new] == ["a"]
    later = [vh.make_request(rid, p, max_tokens=3, arrival_time=1.0, ignore_eos=True)
             for rid, p in (("b", 30), ("c", 20))]
    vh.add_all(ours, later)
    recs = vh.run_until_idle(ours)
    started = [(i, rid) for i, r in enumerate(recs) for rid, _ in r.new]
    a_done = next(i for i, r in enumerate(recs) if "a" in r.finished)
    assert [rid for _, rid in started] == ["c", "b"]
    assert all(i >= a_done for i, _ in started), (started, a_done)  # a reported finished
    assert ours.tailwise_counters["paced_admissions"] > 0
    # asked with vLLM's numbers: its block size, free blocks, the decoding count ("a")
    assert all(bs == 16 and 0 <= free <= 200 for free, _, _, bs in policy.asked)
    assert (1, 20) in {(dec, head) for _, head, dec, _ in policy.asked}
    assert_drained(ours, first + later)


def test_requests_finishing_in_one_step_reach_the_policy_in_vllm_free_order(
        make_scheduler: Any, vh: Any) -> None:
    """vLLM frees a step's finished requests in its scheduling order (admission order here)
    and lists them in a set; the policy hears of them in the freeing order, the order the
    simulator uses too, not in the set's (which changes from run to run)."""
    spec = [(f"r{i}", 10 * (6 - i), 4) for i in range(6)]  # arrival order = longest first
    source = vh.MutableSource(Policy(mode=Mode.BOOST))
    policy = ShortestPromptFirst()
    s = make_scheduler("tailwise", policy_source=source, builder=lambda p: policy)
    vh.add_all(s, requests(vh, spec))
    vh.run_until_idle(s)
    admitted = [rid for kind, rid in policy.calls if kind == "admit"]
    finished = [rid for kind, rid in policy.calls if kind == "finish"]
    assert admitted == [f"r{i}" for i in reversed(range(6))]  # shortest prompt first
    assert finished == admitted  # all finish in one step, freed in admission order

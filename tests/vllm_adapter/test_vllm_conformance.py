"""Conformance: with the neutral policy, TailwiseScheduler behaves exactly as stock vLLM.

Each scenario follows an area vLLM's own tests/v1/core/test_scheduler.py covers (our own
code, none of theirs): it is run on stock ``Scheduler``/``AsyncScheduler`` and on our
subclass, asserts vLLM's documented behaviour on both, and then asserts that both
produced identical step records (scheduled ids and token counts, admissions with their
prefix-cache hits, preemptions, finishes, running order, free KV blocks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (pip install 'tailwise[vllm]')")

from vllm.v1.request import RequestStatus

pytestmark = pytest.mark.vllm

Scenario = Callable[[Any, Any], list[Any]]


def both(make_scheduler: Any, vh: Any, scenario: Scenario, **cfg: Any) -> list[Any]:
    """Run ``scenario(scheduler, vh)`` on stock vLLM and on the neutral subclass."""
    results = []
    for kind in ("stock", "tailwise"):
        sched = make_scheduler(kind, **cfg)
        if kind == "tailwise":
            assert not sched.tailwise_active
        results.append(scenario(sched, vh))
    stock, ours = results
    assert ours == stock
    return stock


def test_add_and_abort_waiting(make_scheduler: Any, vh: Any) -> None:
    def scenario(s: Any, vh: Any) -> list[Any]:
        reqs = [vh.make_request(str(i), 10, arrival_time=i) for i in range(10)]
        for i, r in enumerate(reqs):
            s.add_request(r)
            assert r.request_id in s.requests
            assert len(s.waiting) == i + 1
        trace = []
        for r in reqs[::2]:
            s.finish_requests(r.request_id, RequestStatus.FINISHED_ABORTED)
            assert r.request_id not in s.requests
            assert r.status == RequestStatus.FINISHED_ABORTED
            trace.append((len(s.waiting), s.get_num_unfinished_requests()))
        assert len(s.waiting) == 5
        out = s.schedule()
        assert [n.req_id for n in out.scheduled_new_reqs] == ["1", "3", "5", "7", "9"]
        assert out.finished_req_ids == {"0", "2", "4", "6", "8"}
        trace.append(vh.record(s, out))
        return trace

    both(make_scheduler, vh, scenario)


def test_schedule_admits_in_arrival_order(make_scheduler: Any, vh: Any) -> None:
    def scenario(s: Any, vh: Any) -> list[Any]:
        reqs = [vh.make_request(str(i), 10 + i, arrival_time=i) for i in range(10)]
        vh.add_all(s, reqs)
        out = s.schedule()
        assert [n.req_id for n in out.scheduled_new_reqs] == [r.request_id for r in reqs]
        assert out.scheduled_cached_reqs.num_reqs == 0
        assert all(out.num_scheduled_tokens[r.request_id] == r.num_prompt_tokens for r in reqs)
        assert len(s.waiting) == 0
        assert s.running == reqs
        return [vh.record(s, out)]

    both(make_scheduler, vh, scenario)


def test_max_num_seqs_bounds_running(make_scheduler: Any, vh: Any) -> None:
    def scenario(s: Any, vh: Any) -> list[Any]:
        vh.add_all(s, [vh.make_request(str(i), 20, max_tokens=3 + i, arrival_time=i) for i in range(6)])
        recs = vh.run_until_idle(s)
        assert [n for n, _ in recs[0].new] == ["0", "1", "2"]
        assert max(len(r.running) for r in recs) == 3
        # a slot frees when "0" finishes (3 tokens), and the next in FCFS order takes it
        admitted = [n for r in recs for n, _ in r.new]
        assert admitted == ["0", "1", "2", "3", "4", "5"]
        return recs

    both(make_scheduler, vh, scenario, max_num_seqs=3)


@pytest.mark.parametrize("prefix_caching", [True, False])
def test_chunked_prefill_with_long_prefill_threshold(
    make_scheduler: Any, vh: Any, prefix_caching: bool
) -> None:
    def scenario(s: Any, vh: Any) -> list[Any]:
        reqs = [vh.make_request(str(i), 800, arrival_time=i) for i in range(3)]
        vh.add_all(s, reqs)
        out, rec1 = vh.step(s)
        assert [out.num_scheduled_tokens[r.request_id] for r in reqs] == [400, 400, 224]
        out, rec2 = vh.step(s)
        assert [out.num_scheduled_tokens[r.request_id] for r in reqs] == [400, 400, 224]
        out, rec3 = vh.step(s)
        # the first two are decoding now; the third finishes its prompt (800 - 448)
        assert [out.num_scheduled_tokens[r.request_id] for r in reqs] == [1, 1, 352]
        return [rec1, rec2, rec3, *vh.run_until_idle(s)]

    both(
        make_scheduler,
        vh,
        scenario,
        max_num_batched_tokens=1024,
        long_prefill_token_threshold=400,
        enable_prefix_caching=prefix_caching,
    )


def test_preemption_evicts_last_admitted_and_resumes(make_scheduler: Any, vh: Any) -> None:
    def scenario(s: Any, vh: Any) -> list[Any]:
        reqs = [vh.make_request(f"r{i}", 32, max_tokens=40, arrival_time=i) for i in range(3)]
        vh.add_all(s, reqs)
        recs = vh.run_until_idle(s)
        preempted = [p for r in recs for p in r.preempted]
        assert preempted, "the KV budget is meant to force a preemption"
        first = next(r for r in recs if r.preempted)
        # FCFS victim: the most recently admitted running request
        before = recs[recs.index(first) - 1].running
        assert first.preempted == (before[-1],)
        # preempted requests come back as resumed (not new) requests and all finish
        resumed = {rid for r in recs for rid in r.resumed}
        assert set(preempted) <= resumed
        assert all(r.status == RequestStatus.FINISHED_LENGTH_CAPPED for r in reqs)
        assert sum(r.num_preemptions for r in reqs) == len(preempted)
        return recs

    # 1 null block + 8 usable: three requests of 32 + 40 tokens (5 blocks each) can't fit
    both(make_scheduler, vh, scenario, num_blocks=9, max_num_batched_tokens=128)


@pytest.mark.parametrize("prefix_caching", [True, False])
def test_prefix_cache_hits_at_admission(make_scheduler: Any, vh: Any, prefix_caching: bool) -> None:
    shared = [7 + (i % 13) for i in range(64)]

    def scenario(s: Any, vh: Any) -> list[Any]:
        s.add_request(vh.make_request("a", [*shared, 1, 2, 3], max_tokens=2, arrival_time=0))
        recs = vh.run_until_idle(s)
        s.add_request(vh.make_request("b", [*shared, 4, 5, 6, 7], max_tokens=2, arrival_time=1))
        out, rec = vh.step(s)
        hit = out.scheduled_new_reqs[0].num_computed_tokens
        assert hit == (64 if prefix_caching else 0)
        assert out.num_scheduled_tokens["b"] == 68 - hit
        return [*recs, rec, *vh.run_until_idle(s)]

    both(make_scheduler, vh, scenario, enable_prefix_caching=prefix_caching)


def test_priority_policy_order_and_victim(make_scheduler: Any, vh: Any) -> None:
    def scenario(s: Any, vh: Any) -> list[Any]:
        prios = [2, 1, 1, 0]
        arrivals = [1.0, 3.0, 2.0, 4.0]
        for i, (p, a) in enumerate(zip(prios, arrivals, strict=True)):
            s.add_request(vh.make_request(str(i), 16, max_tokens=60, priority=p, arrival_time=a))
        recs = vh.run_until_idle(s)
        assert [n for n, _ in recs[0].new] == ["3", "2", "1", "0"]
        first = next(r for r in recs if r.preempted)
        # victim: the largest (priority, arrival) among running -> "0" (priority 2)
        assert first.preempted == ("0",)
        return recs

    both(make_scheduler, vh, scenario, policy="priority", num_blocks=13)


def test_stop_conditions(make_scheduler: Any, vh: Any) -> None:
    def token_fn(req: Any) -> list[int]:
        n = req.num_output_tokens
        if req.request_id == "eos" and n == 2:
            return [vh.EOS]
        if req.request_id == "stop" and n == 3:
            return [42]
        return [100 + n]

    def scenario(s: Any, vh: Any) -> list[Any]:
        eos = vh.make_request("eos", 10, max_tokens=50)
        stop = vh.make_request("stop", 10, max_tokens=50, stop_token_ids=[42])
        length = vh.make_request("length", 10, max_tokens=5)
        ignore = vh.make_request("ignore", 10, max_tokens=6, ignore_eos=True)
        vh.add_all(s, [eos, stop, length, ignore])
        recs = vh.run_until_idle(s, token_fn)
        assert eos.status == RequestStatus.FINISHED_STOPPED and eos.num_output_tokens == 3
        assert stop.status == RequestStatus.FINISHED_STOPPED and stop.stop_reason == 42
        assert length.status == RequestStatus.FINISHED_LENGTH_CAPPED
        assert length.num_output_tokens == 5
        assert ignore.num_output_tokens == 6
        # finished ids are reported in the SchedulerOutput of the following step
        out = s.schedule()
        finished = {f for r in recs for f in r.finished} | out.finished_req_ids
        assert finished == {"eos", "stop", "length", "ignore"}
        assert s.kv_cache_manager.usage == 0.0
        return [*recs, vh.record(s, out)]

    both(make_scheduler, vh, scenario)


def test_abort_running_frees_blocks(make_scheduler: Any, vh: Any) -> None:
    def scenario(s: Any, vh: Any) -> list[Any]:
        vh.add_all(s, [vh.make_request(str(i), 40, max_tokens=30, arrival_time=i) for i in range(4)])
        recs = [vh.step(s)[1] for _ in range(3)]
        used = s.kv_cache_manager.usage
        aborted = s.finish_requests(["1", "3"], RequestStatus.FINISHED_ABORTED)
        assert sorted(r.request_id for r in aborted) == ["1", "3"]
        assert [r.request_id for r in s.running] == ["0", "2"]
        assert s.kv_cache_manager.usage < used
        out, rec = vh.step(s)
        assert out.finished_req_ids == {"1", "3"}
        return [*recs, rec, *vh.run_until_idle(s)]

    both(make_scheduler, vh, scenario)


def test_reset_prefix_cache_preempts_running(make_scheduler: Any, vh: Any) -> None:
    def scenario(s: Any, vh: Any) -> list[Any]:
        vh.add_all(s, [vh.make_request(str(i), 40, max_tokens=10, arrival_time=i) for i in range(3)])
        recs = [vh.step(s)[1] for _ in range(2)]
        assert s.reset_prefix_cache(reset_running_requests=True)
        assert not s.running and len(s.waiting) == 3
        out, rec = vh.step(s)
        assert out.preempted_req_ids == {"0", "1", "2"}
        # preempted in reverse, so they come back in their original order
        assert [r.request_id for r in s.running] == ["0", "1", "2"]
        return [*recs, rec, *vh.run_until_idle(s)]

    both(make_scheduler, vh, scenario)


def test_async_scheduling_runs_ahead(make_scheduler: Any, vh: Any) -> None:
    def scenario(s: Any, vh: Any) -> list[Any]:
        r = vh.make_request("a", 8, max_tokens=4)
        s.add_request(r)
        out1 = s.schedule()
        assert r.num_output_placeholders == 1
        # before any output arrives the request is scheduled again (one token ahead)
        out2 = s.schedule()
        assert out2.num_scheduled_tokens == {"a": 1}
        assert r.num_output_placeholders == 2
        s.update_from_output(out1, vh.fake_output(s, out1))
        assert r.num_output_tokens == 1 and r.num_output_placeholders == 1
        return [vh.record(s, out1), vh.record(s, out2)]

    both(make_scheduler, vh, scenario, async_scheduling=True)


def test_async_scheduling_with_preemption_and_stops(make_scheduler: Any, vh: Any) -> None:
    def token_fn(req: Any) -> list[int]:
        return [vh.EOS] if req.request_id == "r1" and req.num_output_tokens == 5 else [50]

    def scenario(s: Any, vh: Any) -> list[Any]:
        reqs = [vh.make_request(f"r{i}", 30, max_tokens=35, arrival_time=i) for i in range(4)]
        vh.add_all(s, reqs)
        recs = vh.run_async(s, token_fn)
        assert any(r.preempted for r in recs)
        assert reqs[1].status == RequestStatus.FINISHED_STOPPED
        assert all(r.is_finished() for r in reqs)
        assert s.kv_cache_manager.usage == 0.0
        return recs

    both(make_scheduler, vh, scenario, async_scheduling=True, num_blocks=11)

"""The stronger baselines: SGLang HRRN / LPM, LAS, vLLM priority — properties that fail
when the policy deviates from its source."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tailwise.scorer.baselines import (
    SGLANG_SORT_LIMIT,
    LeastAttainedService,
    SglangHRRN,
    SglangLPM,
    VllmPriority,
)
from tailwise.scorer.registry import POLICY_NAMES, make_named
from tailwise.scorer.request import ReqInfo
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import EngineConfig, Simulator
from tailwise.simulator.traces import Trace


def req(i: int, prompt: int = 100, arrival: float | None = None, priority: int = 0) -> ReqInfo:
    return ReqInfo(str(i), float(i) if arrival is None else arrival, prompt, priority=priority)


def hits_probe(hits: dict[str, int]) -> Callable[[ReqInfo], int]:
    return lambda r: hits[r.request_id]


def head(pol: SglangHRRN | SglangLPM, now: float) -> str:
    r = pol.peek(now)
    assert r is not None
    return r.request_id


def drain(pol: SglangHRRN | SglangLPM | VllmPriority | LeastAttainedService, now: float
          ) -> list[str]:
    out = []
    while len(pol):
        head = pol.peek(now)
        got = pol.pop(now)
        assert got is head  # peek/pop agree
        out.append(got.request_id)
    return out


def test_registered_under_their_cli_names() -> None:
    for name, cls in (("hrrn", SglangHRRN), ("lpm", SglangLPM), ("las", LeastAttainedService),
                      ("vllm-priority", VllmPriority)):
        assert name in POLICY_NAMES
        assert isinstance(make_named(name), cls)


# -- HRRN ---------------------------------------------------------------------------------
def test_hrrn_prefers_short_prompts_at_equal_wait() -> None:
    pol = SglangHRRN()
    for i, p in enumerate([4000, 100, 800]):
        pol.add(req(i, p), 0.0)
    big = req(9, 5000)
    pol.add(big, 0.0)
    pol.remove(big)
    pol.on_admit(big, 0.0)  # 5,000 prefill tokens processed: everyone waited the same
    assert drain(pol, 1.0) == ["1", "2", "0"]


def test_hrrn_aging_lets_a_long_waiter_overtake_a_newcomer() -> None:
    pol = SglangHRRN()
    old = req(0, 1000)
    pol.add(old, 0.0)
    pol.on_admit(req(8, 3000), 0.0)  # old waited 3,000 tokens: ratio 1 + 3000/1000 = 4
    new = req(1, 100)
    pol.add(new, 1.0)  # ratio 1
    assert pol.response_ratio(old) == 4.0 and pol.response_ratio(new) == 1.0
    assert drain(pol, 2.0) == ["0", "1"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5000), st.integers(0, 4000)), min_size=2,
                max_size=40))
def test_hrrn_serves_in_descending_response_ratio(spec: list[tuple[int, int]]) -> None:
    """Oracle: (wait + service)/service with wait in processed prefill tokens."""
    pol = SglangHRRN()
    entered = {}
    clock = 0
    for i, (prompt, admitted_between) in enumerate(spec):
        r = req(i, prompt)
        pol.add(r, 0.0)
        entered[r.request_id] = (clock, prompt, r.arrival_time)
        pol.on_admit(ReqInfo("x", 0.0, admitted_between), 0.0)
        clock += admitted_between
    expect = sorted(entered, key=lambda k: (-(1 + (clock - entered[k][0]) / entered[k][1]),
                                            entered[k][2]))
    assert drain(pol, 1.0) == expect


def test_hrrn_and_lpm_fall_back_to_fcfs_above_128_waiting() -> None:
    for cls in (SglangHRRN, SglangLPM):
        pol = cls()
        hits = {}
        for i in range(SGLANG_SORT_LIMIT + 1):
            r = req(i, 5000 - i)  # later = shorter (HRRN) and longer cache hit (LPM)
            hits[r.request_id] = i * 16
            pol.add(r, 0.0)
        pol.set_prefix_probe(hits_probe(hits))
        pol.on_admit(ReqInfo("x", 0.0, 1000), 0.0)
        assert head(pol, 1.0) == "0"  # 129 waiting: no sort, FCFS head
        assert pol.counters["fcfs_fallback_rounds"] == 1
        pol.pop(1.0)
        # 128 waiting: the next round sorts; the shortest / longest-hit request wins
        assert head(pol, 2.0) == str(SGLANG_SORT_LIMIT)


# -- LPM ----------------------------------------------------------------------------------
def test_lpm_longest_prefix_first_ties_in_queue_order() -> None:
    pol = SglangLPM()
    hits = {"0": 0, "1": 512, "2": 2048, "3": 512, "4": 0}
    for i in range(5):
        pol.add(req(i, 4096), 0.0)
    pol.set_prefix_probe(lambda r: hits[r.request_id])
    assert drain(pol, 1.0) == ["2", "1", "3", "0", "4"]


def test_lpm_without_probe_uses_recorded_cache_hits() -> None:
    pol = SglangLPM()
    a, b = req(0, 4096), req(1, 4096)
    b.cached_tokens = 1024
    pol.add(a, 0.0)
    pol.add(b, 0.0)
    assert pol.peek(1.0) is b
    assert pol.cached_now(b) == 1024


def test_lpm_resorts_each_round_as_the_cache_changes() -> None:
    pol = SglangLPM()
    hits = {"0": 0, "1": 512, "2": 0}
    for i in range(3):
        pol.add(req(i, 4096), 0.0)
    pol.set_prefix_probe(lambda r: hits[r.request_id])
    assert pol.pop(1.0).request_id == "1"
    hits["2"] = 1024  # a finished request left request 2's prefix in the cache
    assert head(pol, 1.0) == "0"  # same round: order kept
    assert head(pol, 2.0) == "2"  # next round: re-sorted


# -- LAS ----------------------------------------------------------------------------------
def test_las_serves_least_attained_first_and_keeps_service_after_preemption() -> None:
    pol = LeastAttainedService()
    served = req(0, 1000)
    served.prefill_tokens_done = 1000
    served.num_output_tokens = 50  # then preempted: progress kept
    pol.requeue(served, 5.0)
    fresh = [req(i, p) for i, p in ((1, 3000), (2, 10))]
    for r in fresh:
        pol.add(r, 6.0)
    assert drain(pol, 7.0) == ["1", "2", "0"]  # new ones (0 attained) in arrival order


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 3000)), min_size=1,
                max_size=30))
def test_las_running_order_evicts_the_most_served(spec: list[tuple[int, int]]) -> None:
    pol = LeastAttainedService(H100_LLAMA3_8B)
    running = []
    for i, (pre, out) in enumerate(spec):
        r = req(i, max(pre, 1))
        r.prefill_tokens_done, r.num_output_tokens = pre, out
        running.append(r)
    order = pol.order_running(running, 0.0)
    att = [pol.attained(r) for r in order]
    assert att == sorted(att)
    assert pol.attained(order[-1]) == max(map(pol.attained, running))
    ties = [r for r in running if pol.attained(r) == att[-1]]
    assert order[-1] is ties[-1]  # among equals, the latest admitted (vLLM's victim)


# -- vLLM priority ------------------------------------------------------------------------
@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(-2, 2), st.integers(0, 5)), min_size=1, max_size=25))
def test_vllm_priority_victim_is_vllms_max_priority_arrival(spec: list[tuple[int, int]]
                                                            ) -> None:
    """vLLM 0.32: ``max(self.running, key=lambda r: (r.priority, r.arrival_time))``."""
    running = [req(i, arrival=float(a), priority=p) for i, (p, a) in enumerate(spec)]
    order = VllmPriority().order_running(running, 0.0)
    assert sorted(map(id, order)) == sorted(map(id, running))
    rest = list(running)
    for _ in range(len(running)):  # repeated evictions take vLLM's victims in turn
        victim = max(rest, key=lambda r: (r.priority, r.arrival_time))
        assert order.pop() is victim
        rest.remove(victim)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(-2, 2), st.integers(0, 5)), min_size=1, max_size=25))
def test_vllm_priority_waiting_is_requests_lt_order(spec: list[tuple[int, int]]) -> None:
    """``Request.__lt__``: priority, then arrival, then request id; requeue = push."""
    pol = VllmPriority()
    reqs = [req(i, arrival=float(a), priority=p) for i, (p, a) in enumerate(spec)]
    for r in reqs[1:]:
        pol.add(r, 0.0)
    pol.requeue(reqs[0], 0.0)
    expect = sorted(reqs, key=lambda r: (r.priority, r.arrival_time, r.request_id))
    assert drain(pol, 0.0) == [r.request_id for r in expect]


# -- in the engine ------------------------------------------------------------------------
def test_baselines_run_in_the_simulator_with_invariants() -> None:
    n = 80
    rng = np.random.default_rng(1)
    trace = Trace(name="shared", arrival_s=np.sort(rng.uniform(0, 4, n)),
                  prompt_tokens=rng.integers(600, 3000, n).astype(np.int64),
                  output_tokens=rng.integers(5, 400, n).astype(np.int64),
                  hash_ids=[tuple([1, 2][: int(rng.integers(0, 3))]) for _ in range(n)])
    cfg = EngineConfig(num_gpu_blocks=400, hash_block_tokens=512)
    for name in ("hrrn", "lpm", "las", "vllm-priority"):
        pol = make_named(name)
        sim = Simulator(trace, pol, cfg, H100_LLAMA3_8B, debug=True)
        assert (pol.prefix_probe is not None) == pol.uses_prefix_probe
        res = sim.run()
        assert np.isfinite(res.records.finish).all(), name
        assert res.counters["preemptions"] > 0, name  # the KV pressure was real

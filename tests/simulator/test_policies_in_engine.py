"""Policies inside the engine: the safety envelope holds in randomized overload runs."""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.oracles import aging_violations

from tailwise.learner.local import LocalLearner
from tailwise.scorer.policy import Mode, Policy, SafetyParams
from tailwise.scorer.registry import build_scheduler, default_policy
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import EngineConfig, simulate
from tailwise.simulator.traces import Trace


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(5, 60), seed=st.integers(0, 10**6), aging=st.floats(0.05, 2.0),
       blocks=st.integers(40, 400), mode=st.sampled_from(["tailwise", "uniboost", "ewsjf"]))
def test_no_request_waits_beyond_aging_behind_later_arrivals(
        n: int, seed: int, aging: float, blocks: int, mode: str) -> None:
    rng = np.random.default_rng(seed)
    # overload: bursts of mixed short/long requests far above capacity
    arrival = np.sort(rng.uniform(0, 0.5, n))
    prompt = np.where(rng.random(n) < 0.7, rng.integers(1, 200, n), rng.integers(500, 3000, n))
    output = rng.integers(1, 200, n)
    tr = Trace("overload", arrival - arrival[0], prompt.astype(np.int64), output.astype(np.int64))
    base = default_policy(mode)
    assert base is not None
    p = dataclasses.replace(base, safety=SafetyParams(max_boost_s=aging / 2, aging_s=aging))
    learner = LocalLearner(p)
    cfg = EngineConfig(num_gpu_blocks=blocks, block_size=16, max_num_batched_tokens=512,
                       max_num_seqs=8)
    res = simulate(tr, build_scheduler(p), cfg, H100_LLAMA3_8B, source=learner, sink=learner,
                   debug=True)
    r = res.records
    ok = ~r.rejected
    assert aging_violations(r.arrival[ok], r.first_scheduled[ok], aging) == 0


def test_aging_check_detects_a_violation() -> None:
    # the oracle above must be able to fail: request 0 waits 5 s while 1 (later) goes first
    arrival = np.array([0.0, 1.0])
    first = np.array([5.0, 2.0])
    assert aging_violations(arrival, first, 1.5) == 1
    assert aging_violations(arrival, first, 10.0) == 0


def test_policy_swap_mid_run_moves_waiting_requests() -> None:
    n = 200
    rng = np.random.default_rng(1)
    tr = Trace("swap", np.sort(rng.uniform(0, 5, n)), rng.integers(1, 2000, n).astype(np.int64),
               rng.integers(1, 100, n).astype(np.int64))

    class Flip:
        def __init__(self) -> None:
            self.calls = 0
            self.a = Policy(mode=Mode.FCFS)
            self.b = Policy(mode=Mode.TAILWISE, version=2)

        def current(self) -> Policy:
            self.calls += 1
            return self.a if self.calls < 50 else self.b

    src = Flip()
    res = simulate(tr, build_scheduler(src.a), EngineConfig(num_gpu_blocks=500), H100_LLAMA3_8B,
                   source=src, debug=True)
    assert res.counters["policy_swaps"] == 1
    assert [v for _, v in res.policy_changes] == [0, 2]
    assert not np.isnan(res.records.finish).any()

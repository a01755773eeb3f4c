"""A schedule small enough to work out by hand, recomputed exactly by the simulator."""

from __future__ import annotations

import numpy as np
import pytest

from tailwise.scorer.baselines import Fcfs, OracleSJF
from tailwise.scorer.interface import FcfsQueue
from tailwise.scorer.step_time import H100_LLAMA3_8B, StepTimeModel
from tailwise.simulator.engine import EngineConfig, SimRequest, Simulator, simulate
from tailwise.simulator.traces import Trace

# prefill ms = 1 + 0.1·N ; decode ms = 2 + 0.5·B (no context term); mixed = 1 + 0.1·N + 0.5·B
TOY = StepTimeModel(name="toy", prefill_fixed_ms=1.0, prefill_per_token_ms=0.1,
                    prefill_quad_ms=0.0, decode_fixed_ms=2.0, decode_per_req_ms=0.5,
                    decode_per_ctx_ms=0.0)
CFG = EngineConfig(num_gpu_blocks=100, block_size=4, max_num_seqs=4, max_num_batched_tokens=10)


def trace(rows: list[tuple[float, int, int]]) -> Trace:
    t, p, o = zip(*rows, strict=True)
    return Trace("hand", np.array(t, float), np.array(p, np.int64), np.array(o, np.int64))


def test_fcfs_chunked_prefill_schedule_by_hand() -> None:
    # A: t=0 p=12 o=3 · B: t=0 p=4 o=2 · C: t=5ms p=3 o=1
    # step 1 @0.0ms:   admit A chunk 10 (budget 10 used)      N=10       -> 2.0 ms
    # step 2 @2.0ms:   A rest 2, admit B 4                    N=6        -> 1.6 ms
    #                  A and B finish prefill: first tokens @3.6ms
    # step 3 @3.6ms:   decode A, B                            B=2        -> 3.0 ms; B done @6.6
    # step 4 @6.6ms:   C arrived @5ms: admit C 3, decode A    N=3, B=1   -> 1.8 ms
    #                  A done (3rd token) @8.4, C first+last token @8.4
    res = simulate(trace([(0.0, 12, 3), (0.0, 4, 2), (0.005, 3, 1)]), Fcfs(), CFG, TOY,
                   debug=True)
    r = res.records
    assert r.first_token * 1000 == pytest.approx([3.6, 3.6, 8.4], abs=1e-9)
    assert r.finish * 1000 == pytest.approx([8.4, 6.6, 8.4], abs=1e-9)
    assert r.first_scheduled * 1000 == pytest.approx([0.0, 2.0, 6.6], abs=1e-9)
    assert res.counters["steps"] == 4
    assert res.end_time * 1000 == pytest.approx(8.4, abs=1e-9)


def test_sjf_reorders_the_waiting_queue_by_hand() -> None:
    # budget 10, one long (p=9,o=1) and one short (p=2,o=1) arrive together behind a
    # running request X that takes the whole first step.
    # X: t=0 p=10 o=1. L: t=0.0001 p=9 o=1. S: t=0.0001 p=2 o=1.
    # step 1 @0: admit X 10 -> 2.0 ms; X done @2.0
    # FCFS step 2 @2.0: admit L 9, S 1 (budget) -> 1+1.0=2.0ms; L done @4.0, S 1/2 done
    #      step 3 @4.0: S rest 1 -> 1.1 ms; S done @5.1
    # SJF  step 2 @2.0: admit S 2, L 8 -> 2.0 ms; S done @4.0; step 3: L 1 -> 1.1; L @5.1
    rows = [(0.0, 10, 1), (0.0001, 9, 1), (0.0001, 2, 1)]
    fcfs = simulate(trace(rows), Fcfs(), CFG, TOY, debug=True).records.finish * 1000
    sjf = simulate(trace(rows), OracleSJF(TOY), CFG, TOY, debug=True).records.finish * 1000
    assert fcfs == pytest.approx([2.0, 4.0, 5.1], abs=1e-9)
    assert sjf == pytest.approx([2.0, 5.1, 4.0], abs=1e-9)


def test_preemption_by_hand() -> None:
    # 4 blocks of 4 tokens = 16 tokens of KV. A: p=7 o=6, B: p=6 o=3, both at t=0.
    # step 1: admit A (2 blocks; full seq 7 tokens fits), admit B (needs 2 blocks: 6 tokens)
    #         N=13 > budget 10: A 7, B 3 (B's full 6 tokens must fit: 2 blocks, ok)
    #         -> 1+1.0 = 2.0 ms. A first token @2.0 (A has 8 tokens now, 7 computed)
    # step 2: running order [A, B]: A decode needs slot 8 (block 2 holds 5..8: no new block),
    #         B rest 3 (tokens 4..6 -> 2 blocks, already held). N=3,B=1 -> 1+0.3+0.5=1.8
    #         @3.8: A out=2, B first token.
    # step 3: A decode slot 9 -> needs a 3rd block (free: 4-2-2=0) -> preempt tail B
    #         (B frees 2 blocks; its 1 full block stays cached), A gets block, decode A
    #         -> 2.5 ms @6.3; no admission in a step with preemption.
    cfg = EngineConfig(num_gpu_blocks=4, block_size=4, max_num_seqs=4, max_num_batched_tokens=10)
    res = simulate(trace([(0.0, 7, 6), (0.0, 6, 3)]), Fcfs(), cfg, TOY, debug=True)
    r = res.records
    assert r.first_token[0] * 1000 == pytest.approx(2.0)
    assert r.first_token[1] * 1000 == pytest.approx(3.8)
    assert r.preemptions.tolist() == [0, 1]
    assert res.counters["preemptions"] == 1
    # B had computed 6 tokens; its one full block (4 tokens) stays cached, so re-admission
    # recomputes 2 of the 6 -> 2 wasted
    assert r.wasted_tokens.tolist() == [0, 2]
    assert not np.isnan(r.finish).any()


def test_released_blocks_follow_vllm_free_order_partial_reused_first_hashed_kept() -> None:
    """vLLM's ``BlockPool.free_blocks``: a freed request's unhashed (partial) block goes to
    the front of the free queue and is reused first; its full, hashed blocks go to the LRU
    tail. So an allocation right after a finish reuses the finished request's partial
    block instead of evicting a preempted request's cached blocks (the simulator used to
    put the partial block behind them: one block of a victim's own cache lost per such
    finish, found by benchmarks/regime_fidelity.py)."""
    tr = Trace("t", np.zeros(1), np.array([10], np.int64), np.array([1], np.int64))
    sim = Simulator(tr, FcfsQueue(), EngineConfig(num_gpu_blocks=10), H100_LLAMA3_8B)
    kv = sim.kv
    victim = SimRequest(0, "v", 0.0, 32, 10, (), "")
    done = SimRequest(1, "d", 0.0, 40, 10, (), "")
    kv.take(6)
    victim.blocks, victim.num_computed_tokens = 2, 32     # two full blocks
    done.blocks, done.num_computed_tokens = 3, 40         # two full + one partial
    sim._release(victim, cache_own=True)                  # preempted: its cache is kept
    sim._release(done, cache_own=False)                   # finished
    assert kv.free == 4 + 1 and kv.evictable[("r", 0)] == 2
    kv.take(5)  # the 4 never-used blocks and the finished request's partial block
    assert kv.evictable[("r", 0)] == 2  # the victim's cache is untouched
    kv.take(1)  # only now does LRU eviction start, at the victim's (older) blocks
    assert kv.evictable[("r", 0)] == 1


def test_requests_finishing_in_one_step_are_freed_in_scheduling_order() -> None:
    """vLLM frees a step's finished requests in its scheduling order (the running list,
    admission order when the policy did not rank it), each tail block first, and that
    order in the LRU queue decides whose cached prefix is evicted first. X (no prefix)
    takes step 1; L (two segments) and S (one segment) arrive together behind it, SJF
    admits S before L, both decode in lockstep and finish in the same step. S is freed
    first, so its segment is older in the LRU queue than L's (the simulator used to free
    by request index, L first: long-context-chat's logs parted from vLLM's at eventful
    step 340 of 410, found by benchmarks/regime_fidelity.py)."""
    cfg = EngineConfig(num_gpu_blocks=100, block_size=4, hash_block_tokens=8, max_num_seqs=4,
                       max_num_batched_tokens=40)
    tr = Trace("t", np.array([0.0, 0.0001, 0.0001]), np.array([10, 16, 8], np.int64),
               np.array([1, 3, 3], np.int64), hash_ids=[(), (1, 2), (3,)])
    sim = Simulator(tr, OracleSJF(TOY), cfg, TOY, debug=True)
    res = sim.run()
    r = res.records
    assert r.first_scheduled[2] <= r.first_scheduled[1]  # S admitted first
    assert r.finish[1] == r.finish[2]                      # same step
    segments = [k for k in sim.kv.evictable if isinstance(k, int)]
    assert segments == [3, 2, 1]  # S's segment, then L's (tail segment first)

"""Prefix-cache details where the simulator must do what vLLM 0.32's KV cache manager
does (found with benchmarks/regime_fidelity.py on long-context-chat; the same traces
run through vLLM's real scheduler in tests/vllm_adapter/test_vllm_harness.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tailwise.scorer.interface import FcfsQueue
from tailwise.scorer.request import ReqInfo
from tailwise.scorer.step_time import StepTimeModel
from tailwise.simulator.engine import EngineConfig, SimRequest, Simulator, simulate
from tailwise.simulator.traces import Trace

TOY = StepTimeModel(name="toy", prefill_fixed_ms=1.0, prefill_per_token_ms=0.1,
                    prefill_quad_ms=0.0, decode_fixed_ms=2.0, decode_per_req_ms=0.5,
                    decode_per_ctx_ms=0.0)

#: the traces below, shared with the vLLM cross-check
PARTLY_EVICTED = Trace(  # A caches segments 7, 8; B's allocation evicts 3 of 8's 4 blocks
    "partly-evicted", np.array([0.0, 1.0, 2.0]), np.array([160, 225, 300], np.int64),
    np.array([1, 1, 1], np.int64), hash_ids=[(7, 8), (), (7, 8, 9, 10)])
PARTLY_EVICTED_CFG = EngineConfig(num_gpu_blocks=20, block_size=16, hash_block_tokens=64)
SAME_STEP = Trace(  # two requests with one 64-token prefix admitted in the same step
    "same-step", np.zeros(2), np.array([100, 100], np.int64), np.array([2, 2], np.int64),
    hash_ids=[(7, 8), (7, 8)])
SAME_STEP_CFG = EngineConfig(num_gpu_blocks=200, block_size=16, hash_block_tokens=32)


def test_partly_evicted_segment_still_hits_its_leading_blocks() -> None:
    """vLLM's ``find_longest_cache_hit`` walks chained *block* hashes: LRU eviction
    takes a freed segment's blocks tail first, so its leading blocks still hit (the
    simulator used to drop the whole segment, and every one after it, as soon as one
    block of it was evicted)."""
    tr = Trace("t", np.zeros(1), np.array([10], np.int64), np.array([1], np.int64))
    sim = Simulator(tr, FcfsQueue(), PARTLY_EVICTED_CFG, TOY)
    sim.kv.take(20)
    sim.kv.cache(7, 4)
    sim.kv.cache(8, 1)  # three tail blocks of segment 8 evicted
    r = SimRequest(5, "5", 0.0, 300, 1, (7, 8, 9, 10), "")
    assert sim._cached_estimate(r) == (4 + 1) * 16
    # end to end: C hits segment 7 and the one block B's allocation left of segment 8
    res = simulate(PARTLY_EVICTED, FcfsQueue(), PARTLY_EVICTED_CFG, TOY, debug=True)
    assert res.records.cached_tokens.tolist() == [0, 0, 80]


def test_completing_a_partly_hit_segment_makes_it_whole_again() -> None:
    """The blocks a request computes for the evicted rest of a segment are hashed into
    the cache (``BlockPool.cache_full_blocks``): the next request hits the whole
    segment and the ones after it."""
    trace = Trace(
        "complete", np.array([0.0, 1.0, 2.0, 3.0]), np.array([160, 225, 300, 300], np.int64),
        np.array([1, 1, 1, 1], np.int64), hash_ids=[(7, 8), (), (7, 8, 9, 10), (7, 8, 9, 10)])
    res = simulate(trace, FcfsQueue(), PARTLY_EVICTED_CFG, TOY, debug=True)
    assert res.records.cached_tokens.tolist() == [0, 0, 80, 256]


def test_segments_of_a_scheduled_chunk_hit_later_in_the_same_step() -> None:
    """vLLM's ``KVCacheManager.allocate_slots`` caches the blocks of the tokens it
    allocates for at scheduling time, so a request admitted later in the same step hits
    them (the simulator registered segments only after the step ran)."""
    res = simulate(SAME_STEP, FcfsQueue(), SAME_STEP_CFG, TOY, debug=True)
    assert res.counters["steps"] > 0
    assert not np.isnan(res.records.first_scheduled).any()
    assert res.records.first_scheduled[0] == res.records.first_scheduled[1]
    assert res.records.cached_tokens.tolist() == [0, 64]


class ProbingFcfs(FcfsQueue):
    """FCFS that reads the prefix probe (like tailwise's live re-keying): it notes every
    scheduling round in which it is asked for its head."""

    uses_prefix_probe = True

    def __init__(self) -> None:
        super().__init__()
        self.rounds: set[float] = set()

    def peek(self, now: float) -> ReqInfo | None:
        if len(self):
            self.rounds.add(now)
        return super().peek(now)


def test_no_decode_jump_while_a_prefix_probing_policy_has_waiting_requests() -> None:
    """vLLM asks the waiting queue for its head every step, and a policy that re-probes
    the prefix cache when asked (tailwise re-keys ``prefix_rekey_k`` requests round-robin
    each round) may change its head in any of them: the simulator must not skip those
    rounds in a pure-decode jump (the jump is exact, and kept, for other policies)."""
    # A decodes 20 tokens; B (9 blocks) cannot fit until A finishes: pure-decode steps
    cfg = EngineConfig(num_gpu_blocks=10, block_size=4, max_num_batched_tokens=64)
    tr = Trace("t", np.zeros(2), np.array([8, 33], np.int64), np.array([20, 1], np.int64))
    plain = simulate(tr, FcfsQueue(), cfg, TOY, debug=True)
    assert plain.counters["skipped_steps"] > 0  # the scenario does jump
    pol = ProbingFcfs()
    probing = simulate(tr, pol, cfg, TOY, debug=True)
    assert probing.counters["skipped_steps"] == 0
    # one round per step while B waited (A's 20 steps and B's admission step)
    assert len(pol.rounds) == 21
    assert probing.records.finish == pytest.approx(plain.records.finish, abs=1e-12)

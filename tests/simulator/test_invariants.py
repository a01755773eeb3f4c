"""Property tests: KV accounting balances after every step, no request is lost, every
request generates exactly its output length, for every baseline and engine setting."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tailwise.scorer.registry import POLICY_NAMES, make_named
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import EngineConfig, Simulator
from tailwise.simulator.traces import Trace


@st.composite
def workloads(draw: st.DrawFn) -> tuple[Trace, EngineConfig]:
    n = draw(st.integers(1, 40))
    gaps = draw(st.lists(st.floats(0.0, 0.2), min_size=n, max_size=n))
    prompts = draw(st.lists(st.integers(1, 300), min_size=n, max_size=n))
    outputs = draw(st.lists(st.integers(1, 120), min_size=n, max_size=n))
    use_hash = draw(st.booleans())
    hashes = None
    if use_hash:  # a few shared prefixes of 32-token segments
        pool = draw(st.lists(st.integers(0, 5), min_size=8, max_size=8))
        hashes = [tuple(pool[: draw(st.integers(0, 8))]) for _ in range(n)]
    cfg = EngineConfig(
        num_gpu_blocks=draw(st.integers(30, 200)),
        block_size=draw(st.sampled_from([4, 16])),
        max_num_seqs=draw(st.integers(1, 16)),
        max_num_batched_tokens=draw(st.integers(16, 512)),
        enable_prefix_caching=draw(st.booleans()),
        preemption_mode=draw(st.sampled_from(["recompute", "swap"])),
        hash_block_tokens=32,
        watermark=draw(st.sampled_from([0.0, 0.05])),
    )
    t = np.cumsum(np.array(gaps))
    tr = Trace("prop", t - t[0], np.array(prompts, np.int64), np.array(outputs, np.int64),
               hash_ids=hashes)
    return tr, cfg


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), st.sampled_from(POLICY_NAMES))
def test_simulator_invariants(wl: tuple[Trace, EngineConfig], policy: str) -> None:
    tr, cfg = wl
    sim = Simulator(tr, make_named(policy, H100_LLAMA3_8B), cfg, H100_LLAMA3_8B, debug=True)
    res = sim.run()
    r = res.records
    served = ~r.rejected
    # rejected only when the full sequence can never fit
    need = -(-(r.prompt + r.output) // cfg.block_size)
    assert (r.rejected == (need > cfg.num_gpu_blocks)).all()
    # no request lost: every admissible request finished, after it arrived and got a token
    assert not np.isnan(r.finish[served]).any()
    assert (r.first_token[served] >= r.arrival[served]).all()
    assert (r.finish[served] >= r.first_token[served]).all()
    assert (r.first_scheduled[served] <= r.first_token[served]).all()
    # nothing still held: all KV returned (free + evictable cache == total)
    assert sim.kv.free + sim.kv.evictable_total == sim.kv.total
    assert not sim.running and len(sim.policy) == 0
    assert sim.finished == len(tr)
    # wasted recompute only after preemption
    assert (r.wasted_tokens[r.preemptions == 0] == 0).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads())
def test_tokens_generated_equal_output_length(wl: tuple[Trace, EngineConfig]) -> None:
    tr, cfg = wl

    class Count:
        def __init__(self) -> None:
            self.outputs: dict[str, int] = {}

        def on_arrival(self, req: object, now: float) -> None: ...
        def on_first_token(self, req: object, now: float) -> None: ...
        def on_preempt(self, req: object, now: float) -> None: ...
        def on_step(self, stats: object) -> None: ...

        def on_finish(self, req: object, now: float) -> None:
            from tailwise.scorer.request import ReqInfo
            assert isinstance(req, ReqInfo)
            self.outputs[req.request_id] = req.num_output_tokens

    sink = Count()
    res = Simulator(tr, make_named("fcfs"), cfg, H100_LLAMA3_8B, sink=sink).run()
    for i in np.flatnonzero(~res.records.rejected):
        assert sink.outputs[str(i)] == int(tr.output_tokens[i])


def test_prefix_cache_hits_are_counted() -> None:
    # 20 requests sharing a 2-segment (64-token) system prompt: all but the first hit it
    n = 20
    tr = Trace("shared", np.arange(n) * 0.5, np.full(n, 100, np.int64), np.full(n, 5, np.int64),
               hash_ids=[(7, 8)] * n)
    cfg = EngineConfig(num_gpu_blocks=200, block_size=16, hash_block_tokens=32)
    res = Simulator(tr, make_named("fcfs"), cfg, H100_LLAMA3_8B, debug=True).run()
    assert res.records.cached_tokens.tolist() == [0] + [64] * (n - 1)
    off = Simulator(tr, make_named("fcfs"), EngineConfig(num_gpu_blocks=200, block_size=16,
                    hash_block_tokens=32, enable_prefix_caching=False), H100_LLAMA3_8B).run()
    assert off.records.cached_tokens.sum() == 0
    assert res.end_time < off.end_time

"""The vLLM-in-the-loop harness: vLLM's real scheduler on a virtual clock, same report.

The built-in simulator is the independent oracle here: it models vLLM's scheduler, so on
workloads without KV pressure both engines must agree (they share the step-time model
and the policy code); under KV pressure they may differ slightly in prefix-cache
eviction, so only loose agreement is required there.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (pip install 'tailwise[vllm]')")

from tailwise.lab.experiment import Arm, Experiment, run_experiment
from tailwise.lab.vllm_harness import prompt_token_ids, run_vllm
from tailwise.scorer.hooks import StaticPolicySource
from tailwise.scorer.policy import Mode, Policy
from tailwise.scorer.registry import build_scheduler, make_named
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import EngineConfig, EngineConfigError, simulate
from tailwise.simulator.metrics import summarize
from tailwise.simulator.traces import Trace
from tailwise.simulator.workload import generate

pytestmark = pytest.mark.vllm
MODEL = H100_LLAMA3_8B


def small_trace(n: int = 120, rate: float = 40.0, seed: int = 3) -> Trace:
    return generate(n, rate, seed=seed)


def both(trace: Trace, name: str, cfg: EngineConfig) -> tuple[Any, Any]:
    sim = simulate(trace, make_named(name, MODEL), cfg, MODEL)
    vllm = run_vllm(trace, Arm(make_named(name, MODEL)), cfg, MODEL)
    return sim, vllm


@pytest.mark.parametrize("name", ["fcfs", "tailwise"])
def test_agrees_with_the_simulator_without_kv_pressure(name: str) -> None:
    trace = small_trace()
    sim, vllm = both(trace, name, EngineConfig())
    r = vllm.records
    assert np.isfinite(r.finish).all() and np.isfinite(r.first_token).all()
    assert (r.first_scheduled >= r.arrival).all() and (r.first_token > r.first_scheduled).all()
    assert (r.finish >= r.first_token).all()
    s, v = summarize(sim)["overall"], summarize(vllm)["overall"]
    assert v["completed"] == s["completed"] == len(trace)
    for metric in ("ttft", "ttlt", "queue_delay"):
        for q in ("mean", "p50", "p99"):
            assert v[metric][q] == pytest.approx(s[metric][q], rel=0.02, abs=1e-3), (metric, q)
    assert v["throughput_rps"] == pytest.approx(s["throughput_rps"], rel=0.02)
    assert vllm.counters["preemptions"] == sim.counters["preemptions"] == 0
    assert vllm.policy_name == name


def test_kv_pressure_preempts_and_recomputes() -> None:
    trace = small_trace(n=150, rate=80.0)
    cfg = EngineConfig(num_gpu_blocks=260)
    sim, vllm = both(trace, "fcfs", cfg)
    assert vllm.counters["preemptions"] > 0
    assert vllm.records.preemptions.sum() == vllm.counters["preemptions"]
    assert vllm.records.wasted_tokens.sum() > 0
    s, v = summarize(sim)["overall"], summarize(vllm)["overall"]
    assert v["completed"] + v["rejected"] == len(trace)
    assert (v["completed"], v["rejected"]) == (s["completed"], s["rejected"])
    assert v["ttlt"]["mean"] == pytest.approx(s["ttlt"]["mean"], rel=0.15)
    # KV usage stays within the cache and the series is sampled over the run
    assert 0.0 <= vllm.timeseries["kv_usage"].max() <= 1.0
    assert len(vllm.timeseries["t"]) > 1


def test_prefix_sharing_from_hash_ids() -> None:
    n = 30
    trace = Trace(
        name="shared",
        arrival_s=np.arange(n, dtype=np.float64) * 0.5,
        prompt_tokens=np.full(n, 1100, dtype=np.int64),
        output_tokens=np.full(n, 4, dtype=np.int64),
        hash_ids=[(1, 2, 100 + i) for i in range(n)],  # 1024 shared tokens, then own
    )
    cfg = EngineConfig()
    sim, vllm = both(trace, "fcfs", cfg)
    cached = vllm.records.cached_tokens
    assert cached[0] == 0
    assert (cached[1:] == 1024).all()
    assert (sim.records.cached_tokens == cached).all()
    off = run_vllm(trace, Arm(make_named("fcfs", MODEL)),
                   EngineConfig(enable_prefix_caching=False), MODEL)
    assert off.records.cached_tokens.sum() == 0


def test_prompt_tokens_share_exactly_the_hashed_segments() -> None:
    a = prompt_token_ids(0, 100, (5, 6), 32)
    b = prompt_token_ids(1, 100, (5, 7), 32)
    c = prompt_token_ids(2, 100, (), 32)
    assert len(a) == len(b) == len(c) == 100
    assert a[:32] == b[:32] and a[32:64] != b[32:64]
    assert a[:16] != c[:16]  # no hash ids: unique from the first block on
    assert prompt_token_ids(3, 10, (5, 6), 32) == a[:10]


def test_requests_that_never_fit_are_rejected() -> None:
    trace = Trace(
        name="big",
        arrival_s=np.array([0.0, 0.1, 0.2]),
        prompt_tokens=np.array([100, 5000, 100], dtype=np.int64),
        output_tokens=np.array([5, 5, 5], dtype=np.int64),
    )
    cfg = EngineConfig(num_gpu_blocks=100)  # 1,600 tokens
    res = run_vllm(trace, Arm(make_named("fcfs", MODEL)), cfg, MODEL)
    assert res.records.rejected.tolist() == [False, True, False]
    assert res.counters["rejected"] == 1
    assert np.isfinite(res.records.finish[[0, 2]]).all()


def test_swap_preemption_is_refused() -> None:
    with pytest.raises(EngineConfigError, match="preemption_mode"):
        run_vllm(small_trace(5), Arm(make_named("fcfs", MODEL)),
                 EngineConfig(preemption_mode="swap"), MODEL)


def test_policy_source_and_telemetry_arm() -> None:
    policy = Policy(mode=Mode.TAILWISE, version=5)
    events: list[str] = []

    class Sink:
        def on_arrival(self, req: Any, now: float) -> None:
            events.append("arrival")

        def on_first_token(self, req: Any, now: float) -> None:
            events.append("first")

        def on_preempt(self, req: Any, now: float) -> None:
            events.append("preempt")

        def on_finish(self, req: Any, now: float) -> None:
            events.append("finish")

        def on_step(self, stats: Any) -> None:
            assert stats.step_time_s > 0 and stats.policy_version == 5
            events.append("step")

    trace = small_trace(40)
    arm = Arm(build_scheduler(policy), source=StaticPolicySource(policy), sink=Sink())
    res = run_vllm(trace, arm, EngineConfig(), MODEL)
    assert res.policy_changes == [(0.0, 5)]
    assert events.count("arrival") == events.count("first") == events.count("finish") == 40
    assert events.count("step") == res.counters["steps"]


def test_runs_as_the_experiment_runner() -> None:
    trace = small_trace(30)
    exp = Experiment(trace=trace, policies=["fcfs", "sjf-oracle"],
                     factory=lambda name: Arm(make_named(name, MODEL)), model=MODEL,
                     runner=run_vllm, engine_name="vllm")
    results, context = run_experiment(exp)
    assert set(results) == {"fcfs", "sjf-oracle"}
    assert context["config"]["engine_impl"] == "vllm"
    # the oracle saw true output lengths through the harness's ReqInfo
    assert summarize(results["sjf-oracle"])["overall"]["completed"] == 30


def test_block_granular_and_same_step_prefix_hits_match_the_simulator() -> None:
    """vLLM's side of tests/simulator/test_prefix_cache_fidelity.py (same traces): a
    partly evicted segment hits its leading blocks, a recomputed rest makes it whole
    again, and a chunk's blocks are cached when it is scheduled (a request admitted
    later in the same step hits them)."""
    evicting = EngineConfig(num_gpu_blocks=20, block_size=16, hash_block_tokens=64)
    cases = [
        # A caches segments 7, 8; B's allocation evicts 3 of 8's 4 blocks; C, D hit
        (Trace("partly-evicted", np.arange(4, dtype=np.float64),
               np.array([160, 225, 300, 300], np.int64), np.ones(4, np.int64),
               hash_ids=[(7, 8), (), (7, 8, 9, 10), (7, 8, 9, 10)]),
         evicting, [0, 0, 80, 256]),
        (Trace("same-step", np.zeros(2), np.array([100, 100], np.int64),
               np.array([2, 2], np.int64), hash_ids=[(7, 8), (7, 8)]),
         EngineConfig(num_gpu_blocks=200, block_size=16, hash_block_tokens=32), [0, 64]),
    ]
    for trace, cfg, hits in cases:
        sim, vllm = both(trace, "fcfs", cfg)
        assert vllm.records.cached_tokens.tolist() == hits, trace.name
        assert sim.records.cached_tokens.tolist() == hits, trace.name

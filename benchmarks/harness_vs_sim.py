"""Built-in simulator vs vLLM-in-the-loop harness: same trace, same policy, same step model.

Runs the bundled ``azure-code`` trace (first N requests, arrivals scaled to a target
load) through :func:`tailwise.simulator.engine.simulate` and :func:`tailwise.lab.vllm_harness.run_vllm`
(vLLM's real scheduler + KV cache manager on a virtual clock) for FCFS and tailwise, and
prints each metric from both engines with the relative deviation of the harness from
the simulator. Two KV sizes: the H100 default, and a tight cache that forces preemption.

    VLLM_TARGET_DEVICE=cpu python benchmarks/harness_vs_sim.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from typing import Any

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tailwise.lab.experiment import Arm
from tailwise.lab.vllm_harness import run_vllm
from tailwise.scorer.registry import make_named
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import EngineConfig, SimResult, simulate
from tailwise.simulator.metrics import summarize
from tailwise.simulator.traces import load_trace
from tailwise.simulator.workload import rate_scale_for_load

METRICS: list[tuple[str, tuple[str, ...]]] = [
    ("TTFT mean", ("ttft", "mean")),
    ("TTFT p50", ("ttft", "p50")),
    ("TTFT p99", ("ttft", "p99")),
    ("TTLT mean", ("ttlt", "mean")),
    ("TTLT p50", ("ttlt", "p50")),
    ("TTLT p99", ("ttlt", "p99")),
    ("queue delay p99", ("queue_delay", "p99")),
    ("throughput req/s", ("throughput_rps",)),
    ("throughput tok/s", ("throughput_tps",)),
    ("preemptions", ("preemptions",)),
    ("wasted recompute tok", ("wasted_recompute_tokens",)),
]


def pick(summary: dict[str, Any], path: tuple[str, ...]) -> float:
    v: Any = summary["overall"]
    for k in path:
        v = v[k]
    return float(v) if v is not None else math.nan


def deviation(sim: float, vllm: float) -> str:
    if sim == vllm:
        return "0.0%"
    if sim == 0 or not math.isfinite(sim):
        return f"{vllm - sim:+.3g} abs"
    return f"{100.0 * (vllm - sim) / abs(sim):+.2f}%"


def run(trace: Any, policy: str, cfg: EngineConfig) -> tuple[SimResult, SimResult, float, float]:
    t0 = time.perf_counter()
    sim = simulate(trace, make_named(policy, H100_LLAMA3_8B), cfg, H100_LLAMA3_8B)
    t1 = time.perf_counter()
    vllm = run_vllm(trace, Arm(make_named(policy, H100_LLAMA3_8B)), cfg, H100_LLAMA3_8B)
    t2 = time.perf_counter()
    return sim, vllm, t1 - t0, t2 - t1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--target-load", type=float, default=0.9)
    ap.add_argument("--policies", default="fcfs,tailwise")
    ap.add_argument("--tight-blocks", type=int, default=1500,
                    help="KV blocks of the preemption-heavy configuration")
    args = ap.parse_args()

    base = load_trace("azure-code").head(args.requests)
    default = EngineConfig()
    scale = rate_scale_for_load(base, args.target_load, default, H100_LLAMA3_8B)
    trace = base.scaled(scale)
    print(f"trace azure-code, {len(trace)} requests, rate x{scale:.2f} "
          f"(target load {args.target_load}), step model {H100_LLAMA3_8B.name}")
    configs = [("default KV", default),
               ("tight KV", EngineConfig(num_gpu_blocks=args.tight_blocks))]
    run(trace.head(20), "fcfs", default)  # warm up vLLM imports
    for label, cfg in configs:
        for policy in args.policies.split(","):
            sim, vllm, t_sim, t_vllm = run(trace, policy, cfg)
            s, v = summarize(sim), summarize(vllm)
            print(f"\n== {policy} | {label} ({cfg.num_gpu_blocks} blocks) | "
                  f"wall: sim {t_sim:.2f}s, vLLM harness {t_vllm:.2f}s")
            print(f"{'metric':<22}{'simulator':>14}{'vLLM harness':>14}{'deviation':>12}")
            for name, path in METRICS:
                a, b = pick(s, path), pick(v, path)
                print(f"{name:<22}{a:>14.4g}{b:>14.4g}{deviation(a, b):>12}")
            print(f"{'steps':<22}{sim.counters['steps']:>14}{vllm.counters['steps']:>14}"
                  f"{deviation(sim.counters['steps'], vllm.counters['steps']):>12}")


if __name__ == "__main__":
    main()

"""Same code, same results: the regime issue's ratios in the built-in simulator and in
vLLM's real scheduler (the vLLM-in-the-loop harness), on a slice of bursty-reasoning.

Both engines run the same policy objects (tailwise's regime mechanisms included:
admission pacing is asked by both before each admission) on the same trace and step
model. Prints tailwise/FCFS ratios of mean TTFT, P99 TTLT, preemptions and wasted
recompute from each engine and their relative difference (target: within 5%).

    VLLM_TARGET_DEVICE=cpu python benchmarks/regime_same_code.py [--requests 2000]
        [--workload NAME] [--shape max_num_batched_tokens=2048,...]
"""

from __future__ import annotations

import argparse
import math
import os
import time

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tailwise.lab.experiment import Arm
from tailwise.lab.vllm_harness import run_vllm
from tailwise.scorer.registry import make_named
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import SimResult, simulate
from tailwise.simulator.metrics import summarize
from tailwise.simulator.suite import UnknownWorkloadError, build, parse_shape
from tailwise.simulator.traces import TraceError

METRICS = (("mean TTFT", ("ttft", "mean")), ("P99 TTLT", ("ttlt", "p99")),
           ("preemptions", ("preemptions",)), ("wasted recompute", ("wasted_recompute_tokens",)))


def value(res: SimResult, path: tuple[str, ...]) -> float:
    v = summarize(res)["overall"]
    for k in path:
        v = v[k]
    return float(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--workload", default="bursty-reasoning")
    ap.add_argument("--shape", default=None,
                    help="KNOB=V,... of the workload (simulator.suite.SHAPE_KNOBS), e.g. "
                         "max_num_batched_tokens=2048: another engine or shape")
    args = ap.parse_args()
    try:
        wl = build(args.workload, model=H100_LLAMA3_8B, **parse_shape(args.shape))
    except (TraceError, UnknownWorkloadError) as exc:
        raise SystemExit(str(exc)) from None
    trace = wl.trace.head(args.requests)
    runs: dict[tuple[str, str], SimResult] = {}
    for policy in ("fcfs", "tailwise"):
        t0 = time.perf_counter()
        runs["sim", policy] = simulate(trace, make_named(policy, H100_LLAMA3_8B), wl.engine,
                                       H100_LLAMA3_8B)
        t1 = time.perf_counter()
        runs["vllm", policy] = run_vllm(trace, Arm(make_named(policy, H100_LLAMA3_8B)),
                                        wl.engine, H100_LLAMA3_8B)
        print(f"{policy}: simulator {t1 - t0:.1f} s, vLLM harness {time.perf_counter() - t1:.1f} s",
              flush=True)
    print(f"\n{args.workload} ({wl.shape}), first {len(trace)} requests: tailwise / FCFS\n")
    print("| metric | simulator | vLLM | difference |")
    print("|---|---|---|---|")
    for name, path in METRICS:
        ratios = {}
        for engine in ("sim", "vllm"):
            base = value(runs[engine, "fcfs"], path)
            ratios[engine] = value(runs[engine, "tailwise"], path) / base if base else float("nan")
        sim, vll = ratios["sim"], ratios["vllm"]
        if math.isnan(sim) or math.isnan(vll):
            cell = "– (FCFS has none)"
        elif sim == vll:
            cell = "+0.0%"
        elif sim:
            cell = f"{100 * (vll - sim) / sim:+.1f}%"
        else:
            cell = "– (simulator ratio 0)"
        print(f"| {name} | {sim:.3f} | {vll:.3f} | {cell} |")


if __name__ == "__main__":
    main()

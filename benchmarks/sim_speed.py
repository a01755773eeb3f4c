"""Simulator speed: simulated requests per wall-clock second, and peak memory.

Runs FCFS (and optionally other policies) on the Azure conversation trace and on a
10,000-request synthetic trace, at 90% load, and prints requests/s of wall time.
Target from issue 3: 10,000 requests in <= 1.5 s on a 2-core machine.

    python benchmarks/sim_speed.py [--conv PATH] [--policies fcfs,tailwise] [--repeat 3]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from tailwise.lab.arms import make_arm
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import EngineConfig, simulate
from tailwise.simulator.traces import Trace, load_trace
from tailwise.simulator.workload import generate, rate_scale_for_load


def bench(trace: Trace, policy: str, repeat: int) -> tuple[float, int]:
    cfg = EngineConfig()
    x = rate_scale_for_load(trace, 0.9, cfg, H100_LLAMA3_8B)
    scaled = trace.scaled(x)
    best = float("inf")
    steps = 0
    for _ in range(repeat):
        arm = make_arm(policy, H100_LLAMA3_8B)
        t0 = time.perf_counter()
        res = simulate(scaled, arm.scheduler, cfg, H100_LLAMA3_8B, source=arm.source,
                       sink=arm.sink)
        best = min(best, time.perf_counter() - t0)
        steps = res.counters["steps"]
    return best, steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conv", default="/work/shared/traces/azure2023_conv.csv",
                    help="Azure conversation trace (falls back to the bundled sample)")
    ap.add_argument("--policies", default="fcfs,srpt-oracle,tailwise")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    conv = load_trace(args.conv) if Path(args.conv).exists() else load_trace("azure-conv")
    synth = generate(10_000, rate_rps=20.0, arrival="gamma", cv=2.0, seed=0)
    print(f"{'trace':<24}{'policy':<14}{'requests':>9}{'steps':>10}{'wall s':>9}{'req/s':>11}")
    for tr in (conv, synth):
        for pol in args.policies.split(","):
            wall, steps = bench(tr, pol, args.repeat)
            print(f"{tr.name:<24}{pol:<14}{len(tr):>9}{steps:>10}{wall:>9.3f}{len(tr) / wall:>11,.0f}")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {rss_mb:.0f} MiB")


if __name__ == "__main__":
    main()

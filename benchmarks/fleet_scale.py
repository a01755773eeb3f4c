"""Fleet simulator: scale figure and the router × policy tables.

``--scale``: 16 replicas × 50,000 requests (synthetic short/long mix, Poisson, each
replica at load 0.9) per router × policy, wall seconds, against the same requests run
as 16 independent single engines (round-robin split) in the same process — the ratio
is the cost of the shared clock and routing. Target (issue 15): <= 60 s on 2 cores.

``--tables``: fleet P99 TTLT and mean TTFT for 4 and 16 replicas × the four routers ×
{fcfs, tailwise} on the bundled azure-code and azure-conv traces (load 0.9 per replica).

    python benchmarks/fleet_scale.py --scale [--requests 50000 --replicas 16]
    python benchmarks/fleet_scale.py --tables [--out fleet_tables.md]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from tailwise.lab.fleet import FleetExperiment, fleet_table, run_fleet
from tailwise.lab.fleet_cli import replica_arm
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import EngineConfig, simulate
from tailwise.simulator.fleet import simulate_fleet
from tailwise.simulator.routers import ROUTER_NAMES, make_router
from tailwise.simulator.traces import load_trace
from tailwise.simulator.workload import generate, rate_scale_for_load

M = H100_LLAMA3_8B


def scale(requests: int, replicas: int, routers: list[str], policies: list[str]) -> None:
    cfg = EngineConfig()
    tr = generate(requests, rate_rps=20.0, seed=0)
    tr = tr.scaled(rate_scale_for_load(tr, 0.9 * replicas, cfg, M))
    print(f"{replicas} replicas × {requests} requests, load 0.9 per replica")
    print(f"{'router':<16}{'policy':<10}{'wall s':>8}{'req/s':>9}{'16 singles s':>14}"
          f"{'ratio':>7}{'P99 TTLT':>10}")
    for pol in policies:
        # baseline: the same requests as independent single engines (round-robin split)
        t0 = time.perf_counter()
        for k in range(replicas):
            sub = tr.select(np.arange(k, len(tr), replicas))
            arm = replica_arm(pol, M)
            simulate(sub, arm.scheduler, cfg, M, source=arm.source, sink=arm.sink)
        single = time.perf_counter() - t0
        for router in routers:
            arms = [replica_arm(pol, M) for _ in range(replicas)]
            t0 = time.perf_counter()
            res = simulate_fleet(tr, arms, make_router(router, replicas), cfg, M)
            wall = time.perf_counter() - t0
            r = res.merged().records
            p99 = float(np.nanpercentile(r.finish - r.arrival, 99))
            print(f"{router:<16}{pol:<10}{wall:>8.1f}{requests / wall:>9,.0f}{single:>14.1f}"
                  f"{wall / single:>7.2f}{p99:>10.2f}", flush=True)


def tables(out: Path | None) -> None:
    lines = []
    for trace in ("azure-code", "azure-conv"):
        for n in (4, 16):
            exp = FleetExperiment(trace=load_trace(trace), policies=["fcfs", "tailwise"],
                                  routers=list(ROUTER_NAMES), replicas=n,
                                  factory=lambda p: replica_arm(p, M), model=M, target_load=0.9)
            cells, ctx = run_fleet(exp)
            _, rows, _ = fleet_table(cells)
            lines += [f"### {trace}, {n} replicas (load {ctx['config']['offered_load_per_replica']}"
                      f" per replica, {ctx['trace']['requests']} requests)", "",
                      "| router | policy | fleet TTLT p99 (s) | fleet TTFT mean (s) | imbalance |",
                      "|---|---|---|---|---|"]
            lines += [f"| {r[0]} | {r[1]} | {r[2]} | {r[4]} | {r[7]} |" for r in rows]
            lines.append("")
            print("\n".join(lines[-(len(rows) + 5):]), flush=True)
    if out is not None:
        out.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", action="store_true")
    ap.add_argument("--tables", action="store_true")
    ap.add_argument("--requests", type=int, default=50_000)
    ap.add_argument("--replicas", type=int, default=16)
    ap.add_argument("--routers", default="round-robin,least-loaded,kv-aware")
    ap.add_argument("--policies", default="fcfs,tailwise")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if not (args.scale or args.tables):
        args.scale = True
    if args.scale:
        scale(args.requests, args.replicas, args.routers.split(","), args.policies.split(","))
    if args.tables:
        tables(args.out)


if __name__ == "__main__":
    main()

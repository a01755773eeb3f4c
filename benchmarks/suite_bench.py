"""Wall time and peak memory of the whole benchmark suite (``tailwise bench``).

Runs every registered policy on every suite workload in this process, as
``tailwise bench`` does, and prints per-workload simulator time, the total wall time and
the peak RSS (issue 12 budget: < 5 minutes on 2 cores, < 2 GiB).

    python benchmarks/suite_bench.py [--jobs 2] [--workload NAME,..] [--policy NAME,..]
                                     [--out DIR]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from tailwise.lab.bench import BenchOptions, parse_policies, run_bench, write_results
from tailwise.lab.bench_report import write_report
from tailwise.simulator.suite import parse_names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default=None)
    ap.add_argument("--policy", default=None)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--jobs", type=int, default=1, help="worker processes")
    ap.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = ap.parse_args()
    opts = BenchOptions(workloads=parse_names(args.workload),
                        policies=parse_policies(args.policy), scale=args.scale,
                        jobs=args.jobs)
    t0 = time.perf_counter()
    results = run_bench(opts)
    wall = time.perf_counter() - t0
    print(f"{'workload':<20}{'requests':>9}{'sim s':>9}  slowest policy")
    for w, per in results["workloads"].items():
        total = sum(m["sim_wall_s"] for m in per.values())
        slow = max(per, key=lambda p: per[p]["sim_wall_s"])
        print(f"{w:<20}{results['suite'][w]['trace']['requests']:>9}{total:>9.1f}  "
              f"{slow} ({per[slow]['sim_wall_s']:.1f} s)")
    if args.out is not None:
        write_results(args.out, results)
        write_report(args.out, results)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"{len(opts.policies)} policies × {len(opts.workloads)} workloads, {args.jobs} "
          f"process(es): wall {wall:.1f} s, peak RSS {rss:.0f} MiB"
          + (f" (+ largest worker {child:.0f} MiB)" if args.jobs > 1 else ""))


if __name__ == "__main__":
    main()

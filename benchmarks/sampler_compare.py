"""Optuna's TPE vs GP sampler on the tuner's replay objective: median trials to best.

Runs one tuning round per (workload, seed, sampler) on the same replay window and prints,
per workload, the median and worst number of trials until the best value so far is
within 5% of the best any sampler found for that seed (see
:mod:`tailwise.lab.sampler_compare`). The better sampler is ``TunerConfig.sampler``'s
default.

    python benchmarks/sampler_compare.py [--seeds 5] [--trials 12] [--n 600]
"""

from __future__ import annotations

import argparse

from tailwise.lab.sampler_compare import WORKLOADS, compare


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--samplers", default="tpe,gp")
    args = ap.parse_args()
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    runs, table = compare(samplers, list(WORKLOADS), range(args.seeds), args.trials, args.n)
    print(f"{args.trials} trials per round (trial 1 = champion), {args.n}-request windows, "
          f"seeds 0..{args.seeds - 1}")
    print("\n".join(table))
    for r in runs:
        vals = " ".join(f"{v:.4f}" for v in r.values)
        print(f"  {r.workload:16} {r.sampler:4} seed {r.seed}: {vals}")


if __name__ == "__main__":
    main()

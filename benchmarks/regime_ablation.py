"""The regime issue's scorecard and ablation, on every workload of the bench suite.

Runs the baselines (FCFS, oracle SRPT, SGLang HRRN, LAS), the default ``tailwise`` and
``tailwise`` with each regime mechanism (:class:`~tailwise.scorer.policy.RegimeParams`)
switched off in turn, then prints

1. the targets per workload: mean TTFT ≤ 2× oracle SRPT's; P99 TTLT ≤ min(FCFS, SRPT);
   wasted recompute ≤ FCFS's; P99 TTLT < HRRN's with mean TTFT ≤ 1.2× HRRN's;
2. the ablation: mean TTFT, P99 TTLT and wasted recompute of each variant.

    python benchmarks/regime_ablation.py [--jobs 2] [--json OUT] [--seed S]
        [--workload NAME,...] [--sweep FIELD=V1,V2,...]

``--seed`` draws the generated workloads from another seed (held-out checks; the two
Azure workloads are the bundled traces and do not change with it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from tailwise.lab.bench import TARGET_LIMITS as LIMITS
from tailwise.lab.bench import (
    BenchOptions,
    VariantError,
    run_bench,
    scorecard,
    tailwise_variants,
    target_met,
)
from tailwise.scorer.policy import REGIME_SWITCHES, Mode, Policy, RegimeParams
from tailwise.simulator.suite import SUITE

BASELINES = ["fcfs", "srpt-oracle", "hrrn", "las"]
SWITCHES = REGIME_SWITCHES


def ablations(sweep: str | None = None) -> dict[str, Policy]:
    """``tailwise`` with one mechanism off (as a static policy, like a frozen file): each
    regime switch and SLO urgency; and with ``sweep`` (``FIELD=V1,V2,...`` of
    RegimeParams) each value in turn."""
    base = Policy(mode=Mode.TAILWISE)
    out = {"tailwise-static": base, **tailwise_variants(sweep=sweep),
           **tailwise_variants(off=",".join(SWITCHES))}
    # SLO urgency is a tailwise default outside RegimeParams: ablated the same way
    out["no-slo_urgency"] = dataclasses.replace(
        base, slo=dataclasses.replace(base.slo, urgency=False))
    out["no-regime"] = dataclasses.replace(base, regime=RegimeParams(
        **{flag: False for flag in SWITCHES}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--workload", default=",".join(SUITE))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sweep", default=None,
                    help="also run FIELD=V1,V2,... of RegimeParams (e.g. horizon_factor=1,2,4)")
    args = ap.parse_args()
    try:
        files = ablations(args.sweep)
    except VariantError as exc:
        raise SystemExit(str(exc)) from None
    opts = BenchOptions(workloads=args.workload.split(","),
                        policies=[*BASELINES, "tailwise", *files], files=files, jobs=args.jobs,
                        seed=args.seed)
    res = run_bench(opts)
    print("## Targets (tailwise; ratio, limit, met)\n")
    print("| workload | " + " | ".join(LIMITS) + " |")
    print("|---|" + "---|" * len(LIMITS))
    cards = {}
    for w, per in res["workloads"].items():
        card = cards[w] = scorecard(per)
        cells = [f"{card[k]:.2f} {'✓' if target_met(k, card[k]) else '✗'}" for k in LIMITS]
        print(f"| {w} | " + " | ".join(cells) + " |")
    print("\n## Ablation: mean TTFT s / P99 TTLT s / wasted recompute tokens\n")
    names = ["fcfs", "srpt-oracle", "hrrn", "las", "tailwise", *files]
    print("| policy | " + " | ".join(res["workloads"]) + " |")
    print("|---|" + "---|" * len(res["workloads"]))
    for n in names:
        cells = []
        for per in res["workloads"].values():
            m = per[n]
            cells.append(f"{m['ttft_mean']:.2f} / {m['ttlt_p99']:.1f} / "
                         f"{m['wasted_recompute_tokens']:,}")
        print(f"| {n} | " + " | ".join(cells) + " |")
    if args.json is not None:
        args.json.write_text(json.dumps({"scorecard": cards, "results": res}, indent=1))


if __name__ == "__main__":
    main()

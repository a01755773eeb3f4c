"""Where a policy's mean TTFT comes from on one suite workload (issue 12, part 3).

For each policy, at the workload's KV cache size and at ``--kv-mult`` times it, prints

* mean TTFT and how much of it is queue delay (arrival to first scheduled);
* mean TTFT of requests with long outputs (>= 1,000 tokens) and of the others: an
  oracle (SRPT) tells them apart before they run, a prediction-free policy cannot;
* why admission stopped in steps that left requests waiting: ``kv`` (no room, or
  admission pacing said no), ``budget`` (token budget spent), ``seqs`` (max_num_seqs);
* P99 TTLT, preemptions and wasted recompute tokens.

If TTFT is queue delay, admission stops on ``kv`` and a larger KV cache removes the
queueing for every policy alike, then TTFT on this workload is set by how long running
requests hold KV, not by the order of the waiting queue. Variants of static tailwise
(as a frozen file) show what pacing and the victim rule contribute.

    python benchmarks/ttft_cause.py [--workload bursty-reasoning] [--kv-mult 2]
"""

from __future__ import annotations

import argparse
import dataclasses
from collections import Counter
from typing import Any

import numpy as np

from tailwise.lab.bench import _workload, install_prefix_probe, make_arm, measure
from tailwise.scorer.policy import Mode, Policy, PreemptionParams, RegimeParams
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import SimRequest, Simulator

POLICIES = ["fcfs", "srpt-oracle", "las", "tailwise", "tailwise-static", "no-pacing",
            "exact-key-victims"]
#: static tailwise (as a frozen file), without admission pacing, and with victims by exact
#: priority key (``priority_band_s = 0``) instead of by re-admission cost within 600 s bands
FILES = {
    "tailwise-static": Policy(mode=Mode.TAILWISE),
    "no-pacing": Policy(mode=Mode.TAILWISE, regime=dataclasses.replace(
        RegimeParams(), admission_pacing=False)),
    "exact-key-victims": Policy(mode=Mode.TAILWISE, preemption=dataclasses.replace(
        PreemptionParams(), priority_band_s=0.0)),
}


class CountingSimulator(Simulator):
    """The simulator, counting why admission stopped while requests were left waiting."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stops: Counter[str] = Counter()

    def _admit_waiting(self, budget: int,
                       chunks: list[tuple[SimRequest, int]]) -> tuple[str | None, int]:
        why, left = super()._admit_waiting(budget, chunks)
        if self.n_waiting and why is not None:
            self.stops[why] += 1
        return why, left


def run(workload: str, policy: str, kv_mult: float) -> dict[str, Any]:
    model = H100_LLAMA3_8B
    wl = _workload(workload, model, 0, 1.0)
    cfg = dataclasses.replace(wl.engine,
                              num_gpu_blocks=int(wl.engine.num_gpu_blocks * kv_mult))
    arm = make_arm(policy, model, FILES)
    sim = CountingSimulator(wl.trace, arm.scheduler, cfg, model, source=arm.source,
                            sink=arm.sink)
    install_prefix_probe(sim)
    res = sim.run()
    m = measure(res, wl, model)
    rec = res.records
    ttft = rec.first_token - rec.arrival
    queue = rec.first_scheduled - rec.arrival
    long_out = np.asarray(wl.trace.output_tokens) >= 1000
    stops = sum(sim.stops.values()) or 1
    return {
        "ttft": m["ttft_mean"], "queue_share": float(np.nanmean(queue) / np.nanmean(ttft)),
        "ttft_long": float(np.nanmean(ttft[long_out])),
        "ttft_other": float(np.nanmean(ttft[~long_out])),
        "stops": {k: v / stops for k, v in sim.stops.items()},
        "p99": m["ttlt_p99"], "preemptions": m["preemptions"],
        "wasted": m["wasted_recompute_tokens"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="bursty-reasoning")
    ap.add_argument("--kv-mult", type=float, default=2.0)
    ap.add_argument("--policy", default=",".join(POLICIES),
                    help=f"comma-separated, of the bench policies and {sorted(FILES)}")
    args = ap.parse_args()
    print(f"## {args.workload}: where mean TTFT comes from\n")
    print("| policy | KV | mean TTFT s | queue share | TTFT long out / other s | "
          "admission stopped on | P99 TTLT s | preemptions | wasted tokens |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kv in (1.0, args.kv_mult):
        for p in args.policy.split(","):
            r = run(args.workload, p, kv)
            stops = ", ".join(f"{k} {v:.0%}" for k, v in sorted(r["stops"].items())) or "-"
            print(f"| {p} | x{kv:g} | {r['ttft']:.2f} | {r['queue_share']:.0%} | "
                  f"{r['ttft_long']:.2f} / {r['ttft_other']:.2f} | {stops} | {r['p99']:.1f} | "
                  f"{r['preemptions']:,} | {r['wasted']:,} |")


if __name__ == "__main__":
    main()

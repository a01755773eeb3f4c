"""Who forms the P99 TTLT tail: FCFS vs static ``tailwise`` (optionally with regime
switches off) on one suite workload.

For the requests at or above each policy's P99 TTLT it prints their median prompt and
output length against the workload's, how long they queued, their TTFT, their decode
time (first to last token) and the share that was preempted — enough to tell a tail of
long prompts held back by the boost (queueing ≈ the envelope) from one of preemption
victims or long decodes.

    python benchmarks/tail_anatomy.py --workload azure-conv [--off queue_floor,prefix_rekey]
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from tailwise.records.requests import RequestRecords
from tailwise.scorer.policy import Mode, Policy, RegimeParams
from tailwise.scorer.registry import build_scheduler
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import Simulator
from tailwise.simulator.suite import build


def describe(name: str, r: RequestRecords) -> None:
    ttlt, ttft = r.finish - r.arrival, r.first_token - r.arrival
    queue, decode = r.first_scheduled - r.arrival, r.finish - r.first_token
    p99 = float(np.nanpercentile(ttlt, 99))
    tail = np.where(ttlt >= p99)[0]
    print(f"| {name} | {np.nanmean(ttft):.2f} | {p99:.1f} | {len(tail)} | "
          f"{np.median(r.prompt[tail]):,.0f} ({np.median(r.prompt):,.0f}) | "
          f"{np.median(r.output[tail]):,.0f} ({np.median(r.output):,.0f}) | "
          f"{np.nanmedian(queue[tail]):.1f} ({np.nanpercentile(queue, 99):.1f}) | "
          f"{np.nanmedian(decode[tail]):.1f} | {(r.preemptions[tail] > 0).mean():.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="azure-conv")
    ap.add_argument("--off", default="", help="regime switches to turn off, comma-separated")
    args = ap.parse_args()
    wl = build(args.workload, model=H100_LLAMA3_8B)
    off = [f for f in args.off.split(",") if f]
    arms = {"fcfs": Policy(), "tailwise": Policy(mode=Mode.TAILWISE)}
    if off:
        arms[f"tailwise, {'/'.join(off)} off"] = Policy(
            mode=Mode.TAILWISE,
            regime=dataclasses.replace(RegimeParams(), **dict.fromkeys(off, False)))
    print(f"{args.workload}: the P99 TTLT tail (medians; the whole workload's in brackets)\n")
    print("| policy | mean TTFT s | P99 TTLT s | tail n | prompt | output | queued s "
          "(all p99) | decode s | preempted |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, pol in arms.items():
        sim = Simulator(wl.trace, build_scheduler(pol), wl.engine, H100_LLAMA3_8B)
        describe(name, sim.run().records)


if __name__ == "__main__":
    main()

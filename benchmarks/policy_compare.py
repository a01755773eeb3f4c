"""The issue-4 comparison: every policy vs FCFS and oracle SRPT, same traces and loads.

Scenarios: the bundled Azure code and conversation traces at 70%, 90% and 110% offered
load with the default KV cache (28,600 blocks), and under KV pressure (3,000 blocks).
Prints, per scenario, P99 TTLT and short-request TTFT of each policy and their ratios to
FCFS and SRPT-oracle, plus wasted recompute tokens vs FCFS (vLLM's default victim).

    python benchmarks/policy_compare.py [--head N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json

from tailwise.lab.arms import make_arm
from tailwise.lab.experiment import Experiment, run_experiment
from tailwise.scorer.registry import POLICY_NAMES
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import EngineConfig
from tailwise.simulator.metrics import summarize
from tailwise.simulator.traces import load_trace

SCENARIOS = [(t, load, blocks) for t in ("azure-code", "azure-conv")
             for load, blocks in ((0.7, 28_600), (0.9, 28_600), (1.1, 28_600), (0.9, 3_000),
                                  (1.1, 3_000))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--head", type=int, default=None, help="first N requests of each trace")
    ap.add_argument("--policies", default=",".join(POLICY_NAMES))
    ap.add_argument("--json", default=None, help="also write all summaries here")
    args = ap.parse_args()
    names = args.policies.split(",")
    out = {}
    for trace_name, load, blocks in SCENARIOS:
        tr = load_trace(trace_name)
        if args.head:
            tr = tr.head(args.head)
        exp = Experiment(trace=tr, policies=names,
                         factory=lambda n: make_arm(n, H100_LLAMA3_8B),
                         engine=EngineConfig(num_gpu_blocks=blocks), model=H100_LLAMA3_8B,
                         target_load=load)
        results, _ = run_experiment(exp)
        sums = {n: summarize(r) for n, r in results.items()}
        key = f"{trace_name}@{load}/{blocks}"
        out[key] = sums
        f, s = sums["fcfs"]["overall"], sums.get("srpt-oracle", sums["fcfs"])["overall"]
        fs = sums["fcfs"]["classes"]["short"]["ttft"]["mean"]
        ss = sums.get("srpt-oracle", sums["fcfs"])["classes"]["short"]["ttft"]["mean"]
        print(f"\n== {trace_name} load {load} KV blocks {blocks}")
        print(f"{'policy':<14}{'P99 TTLT':>9}{'÷fcfs':>7}{'÷srpt':>7}{'short TTFT':>11}"
              f"{'fcfs÷':>7}{'srpt÷':>7}{'wasted tok':>11}{'÷fcfs':>7}")
        for n in names:
            o = sums[n]["overall"]
            p99 = o["ttlt"]["p99"]
            st = sums[n]["classes"]["short"]["ttft"]["mean"]
            w = o["wasted_recompute_tokens"]
            wf = f"{w / f['wasted_recompute_tokens']:.2f}" if f["wasted_recompute_tokens"] else "–"
            print(f"{n:<14}{p99:>9.2f}{p99 / f['ttlt']['p99']:>7.2f}{p99 / s['ttlt']['p99']:>7.2f}"
                  f"{st:>11.3f}{fs / st:>7.1f}{ss / st:>7.2f}{w:>11,}{wf:>7}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()

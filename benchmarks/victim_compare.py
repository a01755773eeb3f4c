"""Cache-aware victims vs vLLM's default victim rule, with the same waiting order.

Runs the tailwise policy twice per scenario under KV pressure — once with cache-aware
victim ranking (re-admission cost within a priority band), once with vLLM's default
(the most recently admitted is evicted first) — plus plain FCFS for reference, and
prints preemptions, wasted recompute tokens and P99 TTLT side by side.

    python benchmarks/victim_compare.py
"""

from __future__ import annotations

import dataclasses

from tailwise.scorer.registry import build_scheduler, default_policy
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import EngineConfig, simulate
from tailwise.simulator.metrics import summarize
from tailwise.simulator.traces import load_trace
from tailwise.simulator.workload import rate_scale_for_load

SCENARIOS = [("azure-conv", 0.9, 3000), ("azure-conv", 1.1, 3000), ("azure-code", 0.9, 3000),
             ("azure-conv", 0.9, 1500)]


def main() -> None:
    print(f"{'scenario':<26}{'victims':<23}{'preempt':>8}{'wasted tok':>12}{'P99 TTLT':>10}")
    for name, load, blocks in SCENARIOS:
        cfg = EngineConfig(num_gpu_blocks=blocks)
        tr = load_trace(name)
        tr = tr.scaled(rate_scale_for_load(tr, load, cfg, H100_LLAMA3_8B))
        base = default_policy("tailwise")
        assert base is not None
        arms = {
            "fcfs (vLLM)": default_policy("fcfs"),
            "tailwise, vLLM rule": dataclasses.replace(
                base, preemption=dataclasses.replace(base.preemption, cache_aware=False)),
            "tailwise, cache-aware": base,
        }
        for label, policy in arms.items():
            assert policy is not None
            res = simulate(tr, build_scheduler(policy), cfg, H100_LLAMA3_8B)
            o = summarize(res)["overall"]
            print(f"{f'{name}@{load}/{blocks}':<26}{label:<23}{o['preemptions']:>8}"
                  f"{o['wasted_recompute_tokens']:>12,}{o['ttlt']['p99']:>10.2f}")


if __name__ == "__main__":
    main()

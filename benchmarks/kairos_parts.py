"""Where Kairos's edge on the shift scenarios comes from: its decode cap or its prefill order?

Runs FCFS, Kairos at its defaults, Kairos with the slack-guided decode cap switched off
(``slo.decode_cap = false``: only its urgency-ordered prefill and slack-ordered victims
remain), static tailwise (SLO urgency, EDF on TTFT deadlines, on by default), tailwise
with the decode cap switched on, tailwise with SLO urgency switched off, and tailwise
with Kairos's demotion of requests that can no longer meet their TTFT target
(``slo.demote_late``), with and without urgency, and tailwise whose service scale ``T``
counts the waits after preemptions (``regime.scale_excludes_requeue = false``), on each
shift scenario of
``benchmarks/online_targets.py`` (same builder and engine), and prints per phase the
P99 TTLT and mean TTFT of the requests arriving from the second window on, and the
whole-run operator objective against FCFS (higher is better).

    python benchmarks/kairos_parts.py [--seeds 0,2] [--scenarios ...] [--phase-s 180]
        [--requests 800]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from online_targets import MODEL, OBJ, phase_metrics

from tailwise.bayes_opt.objective import evaluate
from tailwise.scorer.policy import Policy
from tailwise.scorer.registry import build_scheduler, default_policy
from tailwise.simulator.engine import simulate
from tailwise.simulator.metrics import summarize
from tailwise.simulator.scenarios import LEARNER_DEV_SCENARIOS, SHIFT_ENGINE, build_shift


def arms() -> dict[str, Policy]:
    def named(n: str) -> Policy:
        p = default_policy(n, MODEL)
        assert p is not None
        return p

    def cap(p: Policy, on: bool) -> Policy:
        return dataclasses.replace(p, slo=dataclasses.replace(p.slo, decode_cap=on))

    tw = named("tailwise")
    return {"fcfs": named("fcfs"), "kairos": named("kairos"),
            "kairos, no decode cap": cap(named("kairos"), False),
            "tailwise": tw, "tailwise + decode cap": cap(tw, True),
            "tailwise, no SLO urgency": dataclasses.replace(
                tw, slo=dataclasses.replace(tw.slo, urgency=False)),
            "tailwise + late demotion": dataclasses.replace(
                tw, slo=dataclasses.replace(tw.slo, urgency=True, demote_late=True)),
            "tailwise + late demotion, no SLO urgency": dataclasses.replace(
                tw, slo=dataclasses.replace(tw.slo, urgency=False, demote_late=True)),
            # the held-out memory-bound trade (README "Held-out shapes")
            "tailwise, T with re-queue waits": dataclasses.replace(
                tw, regime=dataclasses.replace(tw.regime, scale_excludes_requeue=False))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,2")
    ap.add_argument("--scenarios", default=",".join(LEARNER_DEV_SCENARIOS))
    ap.add_argument("--phase-s", type=float, default=180.0)
    ap.add_argument("--requests", type=int, default=800)
    ap.add_argument("--window-s", type=float, default=60.0,
                    help="phase metrics count arrivals from this long after each shift")
    a = ap.parse_args()
    for name in a.scenarios.split(","):
        for seed in (int(x) for x in a.seeds.split(",")):
            s = build_shift(name, MODEL, requests=a.requests, seed=seed, phase_s=a.phase_s)
            print(f"\n### {name} seed {seed}\n")
            print("| arm | " + " | ".join(f"{p.name}: P99 TTLT / mean TTFT (s)"
                                        for p in s.phases) + " | objective |")
            print("|---|" + "---|" * (len(s.phases) + 1))
            base = None
            for label, pol in arms().items():
                res = simulate(s.trace, build_scheduler(pol), s.engine or SHIFT_ENGINE, MODEL)
                sm = summarize(res, s.metrics)
                base = sm if base is None else base
                cells = [f"{p99:.1f} / {ttft:.2f}" for p99, ttft in phase_metrics(res, s, a.window_s)]
                print(f"| {label} | " + " | ".join(cells)
                      + f" | {evaluate(sm, base, OBJ)[0]:+.3f} |", flush=True)


if __name__ == "__main__":
    main()

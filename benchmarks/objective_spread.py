"""Does the objective tell candidates apart? Old (reward) vs new (operator) objective.

On each workload of the regimes suite (:mod:`tailwise.simulator.suite` when it is
installed; otherwise stand-ins with the same names built from the scenario generators of
:mod:`tailwise.simulator.scenarios`), ``--candidates`` random policies are drawn from the
tuner's search space (:mod:`tailwise.bayes_opt.space`, default tailwise mode, switches
searched; Optuna's RandomSampler) and replayed on the first ``--requests`` requests with
the replay evaluator the tuner uses (FCFS baseline on the same window). For each
workload it prints the spread of the objective values next to the spread of the
candidates' P99 TTLT and mean TTFT:

* ``range`` — max − min of the objective values (both objectives are "higher is better";
  the reward is ``C + L − 0.5·S − 0.1·U``, the operator value a weighted mean log-ratio,
  so a range of 0.10 is ≈ 10% between the best and the worst candidate);
* ``distinct`` — how many different values at 4 decimals (the issue: all 8 identical);
* ``ρ(P99)``, ``ρ(TTFT)`` — Spearman rank correlation of the objective with −P99 TTLT and
  −mean TTFT (1 = the objective orders candidates exactly as that metric does);
* ``P99 spread``, ``TTFT spread`` — max/min − 1 of the metric over the candidates.

    python benchmarks/objective_spread.py [--candidates 16] [--requests 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np
import optuna
from scipy import stats

from tailwise.bayes_opt.objective import ObjectiveConfig, evaluate
from tailwise.bayes_opt.replay import ReplayEvaluator
from tailwise.bayes_opt.space import SpaceConfig, suggest_policy
from tailwise.scorer.policy import Mode, Policy
from tailwise.scorer.registry import default_policy
from tailwise.scorer.step_time import H100_LLAMA3_8B, StepTimeModel
from tailwise.simulator.engine import EngineConfig
from tailwise.simulator.metrics import MetricsConfig
from tailwise.simulator.scenarios import (
    _at_load,
    longdoc_phase,
    reasoning_phase,
    slo_metrics,
    slo_phase,
)
from tailwise.simulator.traces import Trace, load_trace

NAMES = ("azure-code", "azure-conv", "bursty-reasoning", "long-context-chat", "slo-mix")


def workloads(model: StepTimeModel, n: int, seed: int
              ) -> list[tuple[str, Trace, EngineConfig, MetricsConfig, str]]:
    """(name, trace, engine, metrics, source) per suite workload."""
    try:
        from tailwise.simulator import suite  # type: ignore[attr-defined,unused-ignore]

        out = []
        for name in suite.SUITE:
            w = suite.build(name, model=model, seed=seed)
            tr = w.trace.select(np.arange(min(n, len(w.trace))))
            out.append((name, tr, w.engine, w.metrics, "suite"))
        return out
    except ImportError:
        pass
    rng = np.random.default_rng(seed)
    d, small = EngineConfig(), EngineConfig(num_gpu_blocks=3000)
    code = load_trace("azure-code").head(n)
    conv = load_trace("azure-conv").head(n)
    return [
        ("azure-code", _at_load(code, 0.9, d, model), d, MetricsConfig(), "stand-in"),
        ("azure-conv", _at_load(conv, 1.1, small, model), small, MetricsConfig(), "stand-in"),
        ("bursty-reasoning", _at_load(reasoning_phase(rng, n), 1.0, d, model), d,
         MetricsConfig(), "stand-in"),
        ("long-context-chat", _at_load(longdoc_phase(rng, n), 0.92, d, model), d,
         MetricsConfig(), "stand-in"),
        ("slo-mix", _at_load(slo_phase(rng, n, 0.7), 0.95, d, model), d, slo_metrics(),
         "stand-in"),
    ]


def candidates(k: int, seed: int, base: Policy, space: SpaceConfig, prompts: Any
               ) -> list[Policy]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out: list[Policy] = []
    while len(out) < k:
        trial = study.ask()
        try:
            out.append(suggest_policy(trial, base, (), space, prompts, seed))
            study.tell(trial, 0.0)
        except ValueError:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return out


def spread(values: list[float]) -> tuple[float, int]:
    v = [x for x in values if math.isfinite(x)]
    return (max(v) - min(v) if v else math.nan), len({round(x, 4) for x in v})


def rho(a: list[float], b: list[float]) -> float:
    if len(set(a)) < 2 or len(set(b)) < 2:
        return math.nan
    return float(stats.spearmanr(a, b).statistic)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--candidates", type=int, default=16)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-switches", action="store_true",
                    help="keep the base policy's booleans (SpaceConfig.search_switches=False)")
    a = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    model = H100_LLAMA3_8B
    base = default_policy("tailwise", model)
    assert base is not None
    space = SpaceConfig(mode=Mode.TAILWISE, search_switches=not a.no_switches)
    old, new = ObjectiveConfig(kind="reward"), ObjectiveConfig()  # type: ignore[arg-type]
    print(f"{a.candidates} random tailwise-mode candidates per workload (space: around_base="
          f"{space.around_base}, switches {'on' if space.search_switches else 'off'}), "
          f"{a.requests} requests, seed {a.seed}\n")
    head = ("| workload | objective | range | distinct | ρ(−P99 TTLT) | ρ(−mean TTFT) | "
            "P99 TTLT spread | mean TTFT spread |")
    print(head + "\n|" + "---|" * 8)
    t_all = time.monotonic()
    for name, trace, engine, metrics, src in workloads(model, a.requests, a.seed):
        ev = ReplayEvaluator(engine, metrics, model)
        b = ev.baseline(trace)
        pols = candidates(a.candidates, a.seed, base, space, trace.prompt_tokens)
        sums = [ev.run(trace, p) for p in pols]
        p99 = [float(s["overall"]["ttlt"]["p99"]) for s in sums]
        ttft = [float(s["overall"]["ttft"]["mean"]) for s in sums]
        p99_sp = max(p99) / min(p99) - 1
        ttft_sp = max(ttft) / min(ttft) - 1
        for label, cfg in (("old: reward", old), ("new: operator", new)):
            vals = [evaluate(s, b, cfg)[0] for s in sums]
            rng_, distinct = spread(vals)
            print(f"| {name} ({src}) | {label} | {rng_:.4f} | {distinct}/{len(vals)} | "
                  f"{rho(vals, [-x for x in p99]):+.2f} | {rho(vals, [-x for x in ttft]):+.2f} "
                  f"| {p99_sp:.1%} | {ttft_sp:.1%} |", flush=True)
    print(f"\n{time.monotonic() - t_all:.0f} s wall")


if __name__ == "__main__":
    main()

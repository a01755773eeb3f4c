"""Optuna's TPE vs GP sampler on the tuner's real replay objective: trials to (near) best.

For each workload and seed, one tuning round of ``trials`` trials (the champion — the
default ``tailwise`` policy on a partition learned from the window — is trial 1, then the
sampler's challengers) runs with each sampler on the same window, the same FCFS baseline
and the same evaluator. A run's *trials to best* is the first trial after which the best
value so far is within ``tolerance`` of the reference best — the best value any sampler
reached on that window and seed (a sampler that never gets close counts ``trials + 1``):

* *relative*: ``gain(reference, best so far) <= tolerance``
  (:func:`~tailwise.bayes_opt.objective.gain`, what the gate's margin is compared with),
  literally "within 5%";
* *of the spread*: the gap to the reference is at most ``tolerance`` × (reference − the
  champion's value), i.e. the run has found 95% of the improvement over the policy in
  force that was available. When the objective is flat, the relative criterion is met by
  the champion itself (trial 1) and says nothing about the sampler; this one still does.

Used by ``benchmarks/sampler_compare.py``; the winner is ``TunerConfig.sampler``'s default.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import optuna

from tailwise.bayes_opt.objective import ObjectiveConfig, gain
from tailwise.bayes_opt.replay import ReplayEvaluator, metrics_config
from tailwise.bayes_opt.space import refine_partition
from tailwise.bayes_opt.tuner import Tuner, TunerConfig
from tailwise.scorer.policy import EwsjfParams, Mode, Policy, QueueSpec
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import EngineConfig
from tailwise.simulator.traces import Trace
from tailwise.simulator.workload import LengthClass, generate, rate_scale_for_load

#: (name, length classes, arrival process, Gamma CV, offered load)
WORKLOADS: dict[str, tuple[tuple[LengthClass, ...], str, float, float]] = {
    "bursty-overload": ((LengthClass("short", 0.6, 256, 64), LengthClass("long", 0.4, 4096, 768)),
                        "gamma", 2.0, 1.3),
    "code-80/20": ((LengthClass("short", 0.8, 512, 128), LengthClass("long", 0.2, 6144, 256)),
                   "poisson", 1.0, 0.95),
}


@dataclass(frozen=True)
class Run:
    workload: str
    sampler: str
    seed: int
    values: tuple[float, ...]  # objective per trial in order, NaN where the trial failed
    wall_s: float

    def running_best(self) -> list[float]:
        out, best = [], -math.inf
        for v in self.values:
            best = max(best, v) if math.isfinite(v) else best
            out.append(best)
        return out

    def trials_to(self, target: float, tolerance: float) -> int:
        """Relative criterion (module docstring)."""
        for k, b in enumerate(self.running_best(), start=1):
            if math.isfinite(b) and gain(target, b, ObjectiveConfig()) <= tolerance:
                return k
        return len(self.values) + 1

    def trials_to_spread(self, target: float, tolerance: float) -> int:
        """Spread criterion (module docstring); the champion's value is ``values[0]``."""
        gap = target - self.values[0]
        for k, b in enumerate(self.running_best(), start=1):
            if math.isfinite(b) and target - b <= tolerance * max(gap, 0.0):
                return k
        return len(self.values) + 1


def window(name: str, n: int, seed: int = 0) -> Trace:
    classes, arrival, cv, load = WORKLOADS[name]
    t = generate(n, 10.0, classes=classes, arrival=arrival, cv=cv, seed=seed)
    return t.scaled(rate_scale_for_load(t, load, EngineConfig(), H100_LLAMA3_8B))


def partition_of(trace: Trace, passes: int = 4) -> tuple[QueueSpec, ...]:
    part: tuple[QueueSpec, ...] = ()
    for _ in range(passes):
        part = refine_partition(part, EwsjfParams(), trace.prompt_tokens)
    return part


def run_one(workload: str, sampler: str, seed: int, trials: int, n: int,
            evaluator: ReplayEvaluator) -> Run:
    w = window(workload, n)
    part = partition_of(w)
    champion = Policy(mode=Mode.TAILWISE, queues=part)
    # the samplers on the window alone: what is compared is their search, not the objective
    cfg = TunerConfig(storage="memory", sampler=sampler, seed=seed, max_window_requests=n,
                      stress_load=0)
    tuner = Tuner(cfg, Policy(), evaluator=evaluator)
    if tuner.study.directions[0] != optuna.study.StudyDirection.MAXIMIZE:
        raise RuntimeError("sampler comparison assumes a maximised objective")
    t0 = time.perf_counter()
    res = tuner.tune(w, champion, part, n_trials=trials)
    wall = time.perf_counter() - t0
    vals = tuple(math.nan if t.value is None else float(t.value) for t in res.trials)
    return Run(workload, sampler, seed, vals, wall)


def compare(samplers: Sequence[str], workloads: Sequence[str], seeds: Sequence[int],
            trials: int, n: int, tolerance: float = 0.05) -> tuple[list[Run], list[str]]:
    """All runs, and the markdown table of median/worst trials-to-best per workload."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    ev = ReplayEvaluator(EngineConfig(), metrics_config(Policy()))
    runs = [run_one(w, s, seed, trials, n, ev) for w in workloads for seed in seeds
            for s in samplers]
    lines = [f"| workload | sampler | trials to within {tolerance:.0%} of best: median (worst) "
             f"| to {1 - tolerance:.0%} of the available gain: median (worst) | runs reaching it "
             "| median gain over champion | median round s |",
             "|---|---|---|---|---|---|---|"]
    for w in workloads:
        ref = {seed: max((max(r.running_best()) for r in runs
                          if r.workload == w and r.seed == seed), default=math.nan)
               for seed in seeds}
        for s in samplers:
            mine = [r for r in runs if r.workload == w and r.sampler == s]
            k = [r.trials_to(ref[r.seed], tolerance) for r in mine]
            g = [r.trials_to_spread(ref[r.seed], tolerance) for r in mine]
            reached = sum(x <= trials for x in g)
            better = statistics.median(gain(max(r.running_best()), r.values[0], ObjectiveConfig())
                                       for r in mine)
            lines.append(f"| {w} | {s} | {statistics.median(k):g} ({max(k)}) | "
                         f"{statistics.median(g):g} ({max(g)}) | {reached}/{len(mine)} | "
                         f"{better:+.2%} | {statistics.median(r.wall_s for r in mine):.1f} |")
    return runs, lines

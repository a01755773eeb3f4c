"""Capacity planning: the smallest KV budget whose plan meets a target mean latency.

A geometric sweep of budgets between the smallest one that can run every request
(``max p_i + o_i``) and an upper bound, then bisection between the last failing and the
first passing sweep point. Mean latency is not guaranteed monotone in the budget for a
heuristic plan, so the answer is "the smallest budget found", checked by the evaluator,
and every evaluated point is returned for inspection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tailwise.planner.methods import run_method
from tailwise.planner.model import Instance, IntArray, TimeModel, evaluate


@dataclass(frozen=True)
class CapacityPoint:
    kv_budget: int
    mean: float
    meets: bool


@dataclass(frozen=True)
class CapacityResult:
    target_mean: float
    method: str
    time_unit: str
    points: list[CapacityPoint]
    smallest: int | None  # None: not met even at the upper bound

    @property
    def sweep(self) -> list[CapacityPoint]:
        return sorted(self.points, key=lambda pt: pt.kv_budget)


def capacity_sweep(prompts: IntArray, outputs: IntArray, target_mean: float,
                   upper: int, time_model: TimeModel, method: str = "sorted-f",
                   points: int = 10, tolerance: float = 0.01,
                   ls_budget_s: float = 1.0) -> CapacityResult:
    """Sweep budgets in ``[max footprint, upper]``; bisect to ``tolerance`` (relative)."""
    lower = int((prompts + outputs).max())
    upper = max(int(upper), lower)
    seen: dict[int, CapacityPoint] = {}

    def probe(m: int) -> CapacityPoint:
        if m not in seen:
            inst = Instance.from_lengths(prompts, outputs, m)
            sched = run_method(method, inst, time_model, ls_budget_s)
            mean = evaluate(inst, sched, time_model).mean
            seen[m] = CapacityPoint(m, mean, mean <= target_mean)
        return seen[m]

    grid = sorted({round(x) for x in np.geomspace(lower, upper, max(points, 2))})
    first_ok: int | None = None
    last_bad: int | None = None
    for m in grid:
        if probe(m).meets:
            first_ok = m
            break
        last_bad = m
    if first_ok is None:
        return CapacityResult(target_mean, method, time_model.time_unit,
                              list(seen.values()), None)
    if last_bad is not None:
        lo, hi = last_bad, first_ok
        while hi - lo > max(1, int(tolerance * hi)):
            mid = (lo + hi) // 2
            if probe(mid).meets:
                hi = mid
            else:
                lo = mid
        first_ok = hi
    return CapacityResult(target_mean, method, time_model.time_unit, list(seen.values()),
                          first_ok)

"""The planner's one interface: named methods that turn a backlog into a :class:`Schedule`.

Every method returns start steps that :func:`tailwise.planner.model.evaluate` checks and scores;
callers compare methods only through that evaluator. ``order_for_backlog`` exposes a
plan as a request order for engines that own their own batching (the simulator's
``--backlog`` mode, through :class:`tailwise.planner.policy.PlannedOrder`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy.typing as npt

from tailwise.planner.exact import solve_exact
from tailwise.planner.heuristics import fcfs, greedy_pack, shortest_output_first, shortest_prompt_first
from tailwise.planner.local_search import sorted_f_local_search
from tailwise.planner.model import UNIT, Evaluation, Instance, Schedule, TimeModel, evaluate
from tailwise.planner.sorted_f import sorted_f_schedule

#: largest backlog for which ``exact`` is offered by default in comparisons
EXACT_MAX_N = 10


@dataclass(frozen=True)
class MethodSpec:
    name: str
    help: str
    run: Callable[[Instance, TimeModel, float], Schedule]


def _sorted_f_with_local_search(inst: Instance, tm: TimeModel, budget: float) -> Schedule:
    return sorted_f_local_search(inst, tm, time_budget_s=budget)


METHODS: dict[str, MethodSpec] = {
    m.name: m
    for m in (
        MethodSpec("sorted-f", "Sorted-F batches run back to back (the paper's schedule)",
                   lambda i, t, b: sorted_f_schedule(i, "sequential", t)),
        MethodSpec("sorted-f-eager", "Sorted-F order, each request admitted as memory frees",
                   lambda i, t, b: sorted_f_schedule(i, "eager", t)),
        MethodSpec("sorted-f-ls", "Sorted-F improved by local search (Smith order + moves)",
                   _sorted_f_with_local_search),
        MethodSpec("fcfs", "first come first served (arrival order)",
                   lambda i, t, b: fcfs(i)),
        MethodSpec("shortest-prompt", "shortest prompt first",
                   lambda i, t, b: shortest_prompt_first(i)),
        MethodSpec("shortest-output", "shortest output first (oracle lengths)",
                   lambda i, t, b: shortest_output_first(i)),
        MethodSpec("greedy-pack", "admit as many as fit whenever memory frees (backfill)",
                   lambda i, t, b: greedy_pack(i)),
        MethodSpec("exact", "time-indexed MILP (HiGHS), optimal in unit time; small n only",
                   lambda i, t, b: solve_exact(i)),
    )
}


class UnknownMethodError(ValueError):
    """A method name that is not in :data:`METHODS`."""


def run_method(name: str, instance: Instance, time_model: TimeModel = UNIT,
               ls_budget_s: float = 2.0) -> Schedule:
    spec = METHODS.get(name)
    if spec is None:
        raise UnknownMethodError(f"unknown method {name!r} (choose from {', '.join(METHODS)})")
    t0 = time.perf_counter()
    sched = spec.run(instance, time_model, ls_budget_s)
    return replace(sched, method=name, runtime_s=time.perf_counter() - t0)


def default_methods(n: int) -> list[str]:
    """All methods; ``exact`` only when the backlog is small enough."""
    return [m for m in METHODS if m != "exact" or n <= EXACT_MAX_N]


def compare(instance: Instance, time_model: TimeModel = UNIT,
            methods: Sequence[str] | None = None,
            ls_budget_s: float = 2.0) -> dict[str, tuple[Schedule, Evaluation]]:
    """Run methods and score each with the evaluator (the single source of truth)."""
    names = list(methods) if methods is not None else default_methods(instance.n)
    out: dict[str, tuple[Schedule, Evaluation]] = {}
    for name in names:
        sched = run_method(name, instance, time_model, ls_budget_s)
        out[name] = (sched, evaluate(instance, sched, time_model))
    return out


@dataclass(frozen=True)
class BacklogPlan:
    """A plan as an admission order; ``batches`` are the planned groups, when any."""

    order: list[int]
    batches: list[list[int]] | None
    schedule: Schedule


def plan_backlog(prompts: Sequence[int] | npt.ArrayLike, outputs: Sequence[int] | npt.ArrayLike,
                 kv_budget: int, method: str = "sorted-f",
                 time_model: TimeModel = UNIT) -> BacklogPlan:
    """Plan a backlog; the order is the plan's admission order (by start step)."""
    inst = Instance.from_lengths(prompts, outputs, kv_budget)
    sched = run_method(method, inst, time_model)
    order = sched.admission_order().tolist()
    batches = None if sched.batches is None else [list(b) for b in sched.batches]
    return BacklogPlan(order=[int(i) for i in order], batches=batches, schedule=sched)


def order_for_backlog(prompts: Sequence[int] | npt.ArrayLike,
                      outputs: Sequence[int] | npt.ArrayLike,
                      kv_budget: int, method: str = "sorted-f", *,
                      time_model: TimeModel = UNIT) -> list[int]:
    """Request indices in the order the planner would admit them.

    For the simulator's backlog mode: feed this order to
    :class:`tailwise.planner.policy.PlannedOrder`; batch boundaries are in :func:`plan_backlog`.

    >>> order_for_backlog([8, 1, 1], [1, 4, 4], kv_budget=10, method="exact")
    [0, 1, 2]
    """
    return plan_backlog(prompts, outputs, kv_budget, method, time_model).order

"""Sorted-F offline batch planner for backlogs under a KV budget, exact solver, heuristics.

Entry points: :func:`compare` / :func:`run_method` (methods in :data:`METHODS`, scored
by :func:`evaluate`), :func:`order_for_backlog` (a plan as an admission order for the
simulator's backlog mode), :class:`tailwise.planner.policy.PlannedOrder` (that order as a waiting
queue policy) and :func:`capacity_sweep`. The model is documented in
:mod:`tailwise.planner.model`.
"""

from tailwise.planner.capacity import CapacityResult, capacity_sweep
from tailwise.planner.exact import ExactSolverError, solve_exact
from tailwise.planner.methods import (
    EXACT_MAX_N,
    METHODS,
    BacklogPlan,
    UnknownMethodError,
    compare,
    default_methods,
    order_for_backlog,
    plan_backlog,
    run_method,
)
from tailwise.planner.model import (
    UNIT,
    Evaluation,
    InfeasibleScheduleError,
    Instance,
    PlanInputError,
    Schedule,
    TimeModel,
    batch_peak,
    evaluate,
)
from tailwise.planner.sorted_f import sorted_f_batches, sorted_f_schedule

__all__ = [
    "EXACT_MAX_N",
    "METHODS",
    "UNIT",
    "BacklogPlan",
    "CapacityResult",
    "Evaluation",
    "ExactSolverError",
    "InfeasibleScheduleError",
    "Instance",
    "PlanInputError",
    "Schedule",
    "TimeModel",
    "UnknownMethodError",
    "batch_peak",
    "capacity_sweep",
    "compare",
    "default_methods",
    "evaluate",
    "order_for_backlog",
    "plan_backlog",
    "run_method",
    "solve_exact",
    "sorted_f_batches",
    "sorted_f_schedule",
]

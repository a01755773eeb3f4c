"""Exact solver for small backlogs (n ≤ ~12): a time-indexed MILP solved by HiGHS.

Why a MILP and not exhaustive search over orders: in this model a request's KV usage
grows while it runs, so starting a request *earlier* can block a later one — the
earliest-start ("active") schedules of all orders need not contain an optimum, and
enumerating start-step vectors instead is exponential in the horizon. A time-indexed
formulation is exact by construction, and HiGHS proves optimality in milliseconds on
the instance sizes used for validation.

Formulation (unit-time model, the paper's analysis): binary ``x[i,s] = 1`` iff request
``i`` starts at step ``s``::

    minimise   Σ_i Σ_s (s + o_i)·x[i,s]
    subject to Σ_s x[i,s] = 1                                   (each request starts once)
               Σ_i Σ_{s ≤ t < s+o_i} (p_i + t − s + 1)·x[i,s] ≤ M  for every step t
               Σ_i Σ_s s·x[i,s] ≤ U − Σ o_i                      (no worse than the incumbent)
               Σ_s s·x[i,s] ≤ Σ_s s·x[j,s]      for identical requests i < j (symmetry)

The horizon comes from an incumbent of value ``U`` (the best heuristic, local search
included, also passed to HiGHS as a MIP start): every start
satisfies ``a_i ≤ U − Σ_j o_j`` because the other completions are each at least
``o_j``, so ``s`` ranges over ``0 … U − Σ o``. The result is re-checked with
:func:`tailwise.planner.model.evaluate`. The optimum is exact in unit time; under a step-time
model the same schedule is evaluated but is not claimed optimal.
"""

from __future__ import annotations

import time
from typing import Any

import highspy
import numpy as np

from tailwise.planner.dispatch import eager, sequential
from tailwise.planner.local_search import sorted_f_local_search
from tailwise.planner.model import UNIT, Instance, Schedule, evaluate
from tailwise.planner.sorted_f import sorted_f_batches

#: refuse models with more binaries than this (the solver would not finish promptly)
MAX_VARIABLES = 60_000


class ExactSolverError(RuntimeError):
    """The instance is too large, or HiGHS stopped without proving optimality."""


def _new_highs() -> Any:
    """A silent HiGHS instance.

    ``highspy.Highs()`` enables callbacks in its constructor, which prints the licence
    banner before any option can be set; that would corrupt CLI output, so the core
    object is used when available.
    """
    core = getattr(getattr(highspy, "_core", None), "_Highs", None)
    h = core() if core is not None else highspy.Highs()  # type: ignore[no-untyped-call]
    h.setOptionValue("output_flag", False)
    return h


def _incumbent(instance: Instance) -> Schedule:
    """Best of a few fast schedules (unit time) — sets the MILP horizon."""
    o = instance.outputs
    cands = [
        eager(instance, np.argsort(o, kind="stable"), "incumbent"),
        eager(instance, np.argsort(instance.footprint, kind="stable"), "incumbent"),
    ]
    groups = [sorted(b.members, key=lambda i: (int(o[i]), i)) for b in sorted_f_batches(instance)]
    cands.append(sequential(instance, groups, "incumbent"))
    cands.append(eager(instance, [i for g in groups for i in g], "incumbent"))
    cands.append(sorted_f_local_search(instance, UNIT, time_budget_s=0.5))
    return min(cands, key=lambda s: evaluate(instance, s).total)


def solve_exact(instance: Instance, time_limit_s: float = 60.0, max_n: int = 14) -> Schedule:
    """Minimum total completion time (unit time), proven optimal by HiGHS."""
    t0 = time.perf_counter()
    n = instance.n
    if n == 0:
        return Schedule.from_starts("exact", [], dispatch="exact")
    if n > max_n:
        raise ExactSolverError(f"exact solver is for small backlogs (n <= {max_n}), got n = {n}")
    p = instance.prompts.astype(np.int64)
    o = instance.outputs.astype(np.int64)
    inc = _incumbent(instance)
    upper = round(evaluate(instance, inc).total)
    slack = upper - int(o.sum())
    if slack == 0:  # every request starts at step 0: nothing can beat Σ o
        return Schedule.from_starts("exact", inc.start, dispatch="exact",
                                    runtime_s=time.perf_counter() - t0)
    n_start = slack + 1
    n_var = n * n_start
    if n_var > MAX_VARIABLES:
        raise ExactSolverError(f"exact MILP would need {n_var} binaries (limit {MAX_VARIABLES})")
    horizon = slack + int(o.max())
    # symmetry: of two identical requests the lower index starts no later
    twins = [(i, j) for i in range(n) for j in range(i + 1, n)
             if p[i] == p[j] and o[i] == o[j]]
    n_rows = n + horizon + 1 + len(twins)
    cut_row = n + horizon
    twin_rows: dict[int, list[tuple[int, float]]] = {}
    for r, (i, j) in enumerate(twins):
        twin_rows.setdefault(i, []).append((cut_row + 1 + r, 1.0))
        twin_rows.setdefault(j, []).append((cut_row + 1 + r, -1.0))

    starts = [0]
    index: list[int] = []
    value: list[float] = []
    cost = np.zeros(n_var, dtype=np.float64)
    for i in range(n):
        for s in range(n_start):
            cost[i * n_start + s] = s
            index.append(i)
            value.append(1.0)
            steps = np.arange(s, s + int(o[i]))
            index.extend((n + steps).tolist())
            value.extend((p[i] + steps - s + 1).astype(np.float64).tolist())
            if s:
                index.append(cut_row)
                value.append(float(s))
                for row, sign in twin_rows.get(i, ()):
                    index.append(row)
                    value.append(sign * s)
            starts.append(len(index))

    lp = highspy.HighsLp()
    lp.num_col_ = n_var
    lp.num_row_ = n_rows
    lp.col_cost_ = cost
    lp.col_lower_ = np.zeros(n_var)
    lp.col_upper_ = np.ones(n_var)
    lp.row_lower_ = np.concatenate(
        [np.ones(n), np.full(horizon + 1 + len(twins), -highspy.kHighsInf)])
    lp.row_upper_ = np.concatenate(
        [np.ones(n), np.full(horizon, float(instance.kv_budget)), [float(slack)],
         np.zeros(len(twins))])
    lp.offset_ = float(o.sum())
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.asarray(starts, dtype=np.int32)
    lp.a_matrix_.index_ = np.asarray(index, dtype=np.int32)
    lp.a_matrix_.value_ = np.asarray(value, dtype=np.float64)
    lp.integrality_ = [highspy.HighsVarType.kInteger] * n_var

    h = _new_highs()
    h.setOptionValue("time_limit", float(time_limit_s))
    h.setOptionValue("mip_rel_gap", 0.0)
    h.setOptionValue("mip_abs_gap", 0.5)  # objective is integral: a gap < 1 proves optimality
    h.setOptionValue("threads", 1)
    h.passModel(lp)
    warm = highspy.HighsSolution()  # the incumbent as a MIP start
    x0 = np.zeros(n_var)
    x0[np.arange(n) * n_start + inc.start] = 1.0
    warm.col_value = x0.tolist()
    warm.value_valid = True
    h.setSolution(warm)
    h.run()
    status = h.getModelStatus()
    if status != highspy.HighsModelStatus.kOptimal:
        raise ExactSolverError(f"HiGHS stopped with status {h.modelStatusToString(status)}")
    x = np.asarray(h.getSolution().col_value).reshape(n, n_start)
    start = np.argmax(x, axis=1).astype(np.int64)
    sched = Schedule.from_starts("exact", start, dispatch="exact",
                                 runtime_s=time.perf_counter() - t0)
    total = evaluate(instance, sched, UNIT).total  # re-check feasibility and objective
    if abs(total - h.getInfo().objective_function_value) > 1e-6:
        raise ExactSolverError(
            f"MILP objective {h.getInfo().objective_function_value} != evaluated {total}")
    sched.info["incumbent"] = upper
    return sched

"""Local search on Sorted-F's batches (``sorted-f-ls``): never worse than Sorted-F.

Run back to back, a batch's own timeline does not depend on its position, so each batch
is summarised once by ``(size n_b, duration D_b, Σ member completion offsets W_b)``
measured with the schedule evaluator's step arithmetic in the chosen time model. The
total completion time of a sequence is ``Σ_b n_b·S_b + W_b`` with ``S_b`` the sum of the
durations before ``b``; that makes moves cheap to price:

1. **Smith's rule** — order batches by ``D_b / n_b`` ascending. For fixed batches this
   order is optimal (exchange argument), so it can only improve on F-order.
2. **Adjacent-pair moves** — for each neighbouring pair ``(b, c)``: merge them, move
   ``b``'s longest request into ``c``, move one of ``c``'s shortest into ``b``, or swap
   those two; a move is kept when it is feasible (``batch_peak ≤ M``) and lowers the
   total, pricing both orders of the new pair. Re-sort by Smith's rule after each pass.

Passes repeat until none improves, ``max_passes`` is reached or ``time_budget_s`` runs
out (with a budget hit the result depends on machine speed; tests use instances that
converge). Finally the batches are dispatched both back to back and eagerly
(:func:`planner.dispatch.eager`) and the better under the evaluator is returned.
Every step keeps or lowers the back-to-back total, so the result is never worse than
Sorted-F's back-to-back schedule in the same time model.

Cost per pass: O(B) pairs × O(1) moves × O(b log b + D_b) to re-measure a batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from planner.dispatch import eager, sequential
from planner.model import UNIT, Instance, IntArray, Schedule, TimeModel, batch_peak, evaluate, step_trace
from planner.sorted_f import sorted_f_batches

_EPS = 1e-12


@dataclass(frozen=True)
class _Stat:
    size: int
    dur: float
    work: float  # Σ completion offsets of members within the batch


class _Measure:
    """Batch stats in a time model, cached by membership."""

    def __init__(self, instance: Instance, time_model: TimeModel) -> None:
        self.p, self.o = instance.prompts, instance.outputs
        self.budget = instance.kv_budget
        self.tm = time_model
        self.cache: dict[tuple[int, ...], _Stat] = {}

    def stat(self, members: list[int]) -> _Stat:
        key = tuple(sorted(members))
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        ids = np.asarray(key, dtype=np.int64)
        o = self.o[ids]
        if self.tm.is_unit:
            st = _Stat(len(ids), float(o.max()), float(o.sum()))
        else:
            tr = step_trace(self.p[ids], o, np.zeros(len(ids), dtype=np.int64), self.tm)
            st = _Stat(len(ids), float(tr.step_end[-1]), float(tr.step_end[o - 1].sum()))
        self.cache[key] = st
        return st

    def fits(self, members: list[int]) -> bool:
        ids = np.asarray(members, dtype=np.int64)
        return batch_peak(self.p[ids], self.o[ids]) <= self.budget


def _smith(batches: list[list[int]], meas: _Measure) -> list[list[int]]:
    def ratio(b: list[int]) -> float:
        s = meas.stat(b)
        return s.dur / s.size

    return sorted(batches, key=ratio)


def _pair_cost(first: _Stat | None, second: _Stat | None, after: int) -> float:
    """Cost of a pair at a fixed start, minus the terms every candidate shares."""
    cost = 0.0
    if first is not None:
        cost += first.work + after * first.dur
        if second is not None:
            cost += second.size * first.dur
    if second is not None:
        cost += second.work + after * second.dur
    return cost


def _candidates(b: list[int], c: list[int], o: IntArray) -> list[tuple[list[int], list[int]]]:
    out: list[tuple[list[int], list[int]]] = [(b + c, [])]
    i_long = max(b, key=lambda i: (int(o[i]), i))
    if len(b) > 1:
        out.append(([i for i in b if i != i_long], [*c, i_long]))
    shortest_c = sorted(c, key=lambda i: (int(o[i]), i))[:3]
    if len(c) > 1:
        out.extend(([*b, j], [i for i in c if i != j]) for j in shortest_c)
    if shortest_c and int(o[shortest_c[0]]) < int(o[i_long]):
        j = shortest_c[0]
        out.append(([*(i for i in b if i != i_long), j], [*(i for i in c if i != j), i_long]))
    return out


def improve_batches(instance: Instance, batches: list[list[int]], time_model: TimeModel = UNIT,
                    time_budget_s: float = 2.0, max_passes: int = 20) -> list[list[int]]:
    """Local search over batch membership and order (back-to-back cost model)."""
    meas = _Measure(instance, time_model)
    deadline = time.perf_counter() + time_budget_s
    cur = _smith([list(b) for b in batches if b], meas)
    n = instance.n
    for _ in range(max_passes):
        improved = False
        before = 0
        i = 0
        while i < len(cur) - 1 and time.perf_counter() < deadline:
            b, c = cur[i], cur[i + 1]
            after = n - before - len(b) - len(c)
            base = _pair_cost(meas.stat(b), meas.stat(c), after)
            best = 0.0
            best_pair: tuple[list[int], list[int]] | None = None
            for nb, nc in _candidates(b, c, instance.outputs):
                if not meas.fits(nb) or (nc and not meas.fits(nc)):
                    continue
                sb = meas.stat(nb)
                sc = meas.stat(nc) if nc else None
                for first, second, pair in ((sb, sc, (nb, nc)), (sc, sb, (nc, nb))):
                    if first is None:
                        continue
                    delta = _pair_cost(first, second, after) - base
                    if delta < best - _EPS:
                        best, best_pair = delta, pair
            if best_pair is None:
                before += len(b)
                i += 1
                continue
            improved = True
            first_b, second_b = best_pair
            cur[i : i + 2] = [x for x in (first_b, second_b) if x]
        cur = _smith(cur, meas)
        if not improved or time.perf_counter() >= deadline:
            break
    return cur


def sorted_f_local_search(instance: Instance, time_model: TimeModel = UNIT,
                          time_budget_s: float = 2.0, max_passes: int = 20) -> Schedule:
    """Sorted-F batches improved by local search; best of back-to-back and eager dispatch."""
    t0 = time.perf_counter()
    start_batches = [list(b.members) for b in sorted_f_batches(instance)]
    batches = improve_batches(instance, start_batches, time_model, time_budget_s, max_passes)
    o = instance.outputs
    batches = [sorted(b, key=lambda i: (int(o[i]), i)) for b in batches]
    plan_s = time.perf_counter() - t0
    seq = sequential(instance, batches, "sorted-f-ls", runtime_s=plan_s)
    eag = eager(instance, [i for b in batches for i in b], "sorted-f-ls", batches=batches,
                runtime_s=plan_s)
    best = min((seq, eag), key=lambda s: evaluate(instance, s, time_model).total)
    runtime = time.perf_counter() - t0
    out = Schedule(method=best.method, start=best.start, order=best.order,
                   batches=best.batches, dispatch=best.dispatch, runtime_s=runtime,
                   info={"batches": len(batches), "initial_batches": len(start_batches)})
    return out

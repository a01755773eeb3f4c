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

Passes repeat until none improves, ``max_passes`` is reached or half of
``time_budget_s`` runs out (with a budget hit the result depends on machine speed;
tests use instances that converge). Every accepted move keeps or lowers the
back-to-back total.

3. **Order hill-climbing for eager dispatch** — eager admission
   (:func:`tailwise.planner.dispatch.eager`) is usually much better than back to back but has no
   closed-form cost, so the rest of the budget swaps adjacent batches (and, for small
   backlogs, adjacent requests) in the admission order, re-evaluating each move with the
   evaluator; it starts from the better of the original and the improved batch order.

The result is the best of the back-to-back and eager candidates under the evaluator, so
it is never worse than ``sorted-f`` or ``sorted-f-eager`` in the same time model.

Cost: a batch pass is O(B) pairs × O(1) moves × O(b log b + D_b) to re-measure a batch;
an order move is one eager dispatch plus one evaluation, O(n + horizon) numpy work
(≈ 0.3 s at n = 10,000, so large backlogs get only a few order moves per second).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from tailwise.planner.dispatch import eager, sequential
from tailwise.planner.model import (
    UNIT,
    Instance,
    IntArray,
    Schedule,
    TimeModel,
    batch_peak,
    evaluate,
    step_trace,
)
from tailwise.planner.sorted_f import sorted_f_batches

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


def _eager_total(instance: Instance, order: list[int], time_model: TimeModel) -> float:
    return evaluate(instance, eager(instance, order, "ls"), time_model).total


def improve_order(instance: Instance, blocks: list[list[int]], time_model: TimeModel,
                  deadline: float, small_n: int = 64) -> tuple[list[list[int]], float]:
    """Hill-climb the eager admission order: swap adjacent blocks (and, for small
    backlogs, adjacent requests); first improvement, full re-evaluation per move."""
    cur = [list(b) for b in blocks if b]
    best = _eager_total(instance, [i for b in cur for i in b], time_model)
    improved = True
    while improved and time.perf_counter() < deadline:
        improved = False
        for k in range(len(cur) - 1):
            if time.perf_counter() >= deadline:
                break
            trial = [*cur[:k], cur[k + 1], cur[k], *cur[k + 2:]]
            total = _eager_total(instance, [i for b in trial for i in b], time_model)
            if total < best - _EPS:
                cur, best, improved = trial, total, True
        if instance.n <= small_n:
            flat = [i for b in cur for i in b]
            moved = False
            for k in range(len(flat) - 1):
                trial_flat = [*flat[:k], flat[k + 1], flat[k], *flat[k + 2:]]
                total = _eager_total(instance, trial_flat, time_model)
                if total < best - _EPS:
                    flat, best, moved = trial_flat, total, True
            if moved:
                cur, improved = [[i] for i in flat], True
    return cur, best


def sorted_f_local_search(instance: Instance, time_model: TimeModel = UNIT,
                          time_budget_s: float = 2.0, max_passes: int = 20) -> Schedule:
    """Sorted-F improved by local search; never worse than ``sorted-f`` or
    ``sorted-f-eager`` under the same time model.

    Half the budget goes to batch moves (back-to-back cost model), the rest to
    hill-climbing the eager admission order from the better of the original and the
    improved batches' orders. The best of all candidates under the evaluator wins.
    """
    t0 = time.perf_counter()
    o = instance.outputs

    def inner(b: list[int]) -> list[int]:
        return sorted(b, key=lambda i: (int(o[i]), i))

    orig = [inner(list(b.members)) for b in sorted_f_batches(instance, time_model)]
    batches = improve_batches(instance, orig, time_model, time_budget_s / 2, max_passes)
    batches = [inner(b) for b in batches]
    seq = sequential(instance, batches, "sorted-f-ls")
    seq_total = evaluate(instance, seq, time_model).total
    starts = sorted(((_eager_total(instance, [i for b in bs for i in b], time_model), k, bs)
                     for k, bs in enumerate((batches, orig))), key=lambda x: (x[0], x[1]))
    blocks, eager_total = improve_order(instance, starts[0][2], time_model,
                                        t0 + time_budget_s)
    if seq_total <= eager_total:
        best = seq
    else:
        best = eager(instance, [i for b in blocks for i in b], "sorted-f-ls", batches=blocks)
    return Schedule(method="sorted-f-ls", start=best.start, order=best.order,
                    batches=best.batches, dispatch=best.dispatch,
                    runtime_s=time.perf_counter() - t0,
                    info={"batches": len(batches), "initial_batches": len(orig)})

"""Turning an order or a list of batches into start steps (the "batching rule").

Two rules, shared by every method so that they differ only in *what* they order:

* :func:`sequential` — batch ``b`` starts, all members in one step, in the step after the
  previous batch's last request finishes. Batches never overlap, which is the schedule
  shape Sorted-F's analysis uses; each batch must fit alone (:func:`batch_peak`).
* :func:`eager` — requests are admitted strictly in the given order (a FIFO waiting
  queue, head-of-line blocking, as a serving engine would), each at the earliest step not
  before its predecessor's start at which it fits **for its whole decode** next to
  everything already admitted. The fit check is exact: :class:`KvProfile` keeps the
  committed KV usage of every future step.

Eager admission searches the earliest feasible start by *jumps*: if starting at ``k``
overflows at step ``t`` by the new request's contribution, every start in
``[k, min(v, t+1))`` overflows there too (``v`` = the start that would bring step ``t``
back under budget), so the search jumps there. Feasibility is not monotone in ``k``
(a running request's usage grows until it ends), which is why this is a search and not a
"wait for the next completion" rule. Cost per request: O(jumps · o_i) numpy work.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from tailwise.planner.model import Instance, IntArray, Schedule, batch_peak


class KvProfile:
    """Committed KV tokens per future step, with exact fit queries."""

    def __init__(self, budget: int, horizon: int = 1024) -> None:
        self.budget = budget
        self.mem = np.zeros(max(horizon, 16), dtype=np.int64)

    def _ensure(self, size: int) -> None:
        if size > len(self.mem):
            new = np.zeros(max(size, 2 * len(self.mem)), dtype=np.int64)
            new[: len(self.mem)] = self.mem
            self.mem = new

    def usage(self, t: int) -> int:
        return int(self.mem[t]) if t < len(self.mem) else 0

    def fits(self, p: int, o: int, k: int) -> bool:
        """Would a request ``(p, o)`` started at step ``k`` stay within budget throughout?"""
        self._ensure(k + o)
        w = self.mem[k : k + o] + np.arange(p + 1, p + o + 1, dtype=np.int64)
        return bool(w.max() <= self.budget)

    def earliest_start(self, p: int, o: int, k: int) -> int:
        """Smallest start ``>= k`` at which ``(p, o)`` fits (exists: it fits alone)."""
        ramp = np.arange(p + 1, p + o + 1, dtype=np.int64)
        while True:
            self._ensure(k + o)
            over = self.mem[k : k + o] + ramp - self.budget
            bad = np.flatnonzero(over > 0)
            if bad.size == 0:
                return k
            # step t = k + j overflows by over[j]; a start k' fixes it only if
            # k' >= k + over[j] (contribution shrinks by 1 per step of delay) or k' > t
            jump = np.minimum(k + over[bad], k + bad + 1)
            k = int(jump.max())

    def commit(self, p: int, o: int, k: int) -> None:
        self._ensure(k + o)
        self.mem[k : k + o] += np.arange(p + 1, p + o + 1, dtype=np.int64)


def sequential(instance: Instance, batches: Sequence[Sequence[int]], method: str,
               runtime_s: float = 0.0) -> Schedule:
    """Batches back to back; a batch starts when the previous one has fully finished."""
    p, o = instance.prompts, instance.outputs
    start = np.zeros(instance.n, dtype=np.int64)
    seen = np.zeros(instance.n, dtype=np.bool_)
    t = 0
    order: list[int] = []
    for members in batches:
        ids = np.asarray(members, dtype=np.int64)
        if ids.size == 0:
            continue
        if seen[ids].any():
            raise ValueError(f"{method}: a request appears in two batches")
        seen[ids] = True
        peak = batch_peak(p[ids], o[ids])
        if peak > instance.kv_budget:
            raise ValueError(f"{method}: batch {list(ids)} needs {peak} KV tokens "
                             f"> budget {instance.kv_budget}")
        start[ids] = t
        t += int(o[ids].max())
        order.extend(int(i) for i in ids)
    if not seen.all():
        raise ValueError(f"{method}: {int((~seen).sum())} requests are in no batch")
    return Schedule(method=method, start=start, order=np.asarray(order, dtype=np.int64),
                    batches=tuple(tuple(int(i) for i in b) for b in batches if len(b)),
                    dispatch="sequential", runtime_s=runtime_s)


def eager(instance: Instance, order: Sequence[int] | IntArray, method: str,
          batches: Sequence[Sequence[int]] | None = None, runtime_s: float = 0.0) -> Schedule:
    """Admit in ``order`` (FIFO), each request at its earliest exactly-feasible step."""
    t0 = time.perf_counter()
    p, o = instance.prompts, instance.outputs
    ids = np.asarray(order, dtype=np.int64)
    if ids.shape != (instance.n,) or (
        instance.n and not np.array_equal(np.sort(ids), np.arange(instance.n))
    ):
        raise ValueError(f"{method}: order must be a permutation of 0..{instance.n - 1}")
    start = np.zeros(instance.n, dtype=np.int64)
    prof = KvProfile(instance.kv_budget, horizon=int(o.max()) * 4 if instance.n else 16)
    k = 0
    for i in ids.tolist():
        pi, oi = int(p[i]), int(o[i])
        k = prof.earliest_start(pi, oi, k)
        prof.commit(pi, oi, k)
        start[i] = k
    bt = None if batches is None else tuple(tuple(int(i) for i in b) for b in batches if len(b))
    return Schedule(method=method, start=start, order=ids.copy(), batches=bt, dispatch="eager",
                    runtime_s=runtime_s + time.perf_counter() - t0)


"""``PlannedOrder``: an offline plan used as the engine's waiting-queue policy.

The simulator's backlog mode (``tailwise simulate --backlog``) starts with every request
waiting; this policy serves them in the order the planner chose, so offline plans and
online policies run on the same engine model. The key of a waiting request is its rank
in the plan, looked up by ``request_id``; the engine's own batching, KV accounting and
preemption then decide *when* each one runs (a preempted request keeps its rank).

Requests the plan does not know (arrivals after the backlog was planned) are served
after all planned ones, in arrival order, and counted in ``counters["unplanned"]``.
Running requests keep the default order (admission order, vLLM's FCFS victim choice).

>>> from tailwise.scorer.request import ReqInfo
>>> q = PlannedOrder(["b", "a"])
>>> for rid in ("a", "b", "x"):
...     q.add(ReqInfo(rid, 0.0, 10), now=0.0)
>>> [q.pop(0.0).request_id for _ in range(3)], q.counters["unplanned"]
(['b', 'a', 'x'], 1)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy.typing as npt

from tailwise.planner.methods import order_for_backlog
from tailwise.planner.model import UNIT, TimeModel
from tailwise.scorer.interface import KeyedQueue
from tailwise.scorer.request import ReqInfo


class PlannedOrder(KeyedQueue):
    """Waiting requests served by their rank in an offline plan (lower rank first)."""

    name = "planned"

    def __init__(self, order: Sequence[str], aging_s: float | None = None) -> None:
        super().__init__(aging_s=aging_s)
        self._rank: dict[str, int] = {}
        for pos, rid in enumerate(order):
            if rid in self._rank:
                raise ValueError(f"request id {rid!r} appears twice in the plan")
            self._rank[rid] = pos

    @classmethod
    def from_backlog(cls, prompts: Sequence[int] | npt.ArrayLike,
                     outputs: Sequence[int] | npt.ArrayLike, kv_budget: int,
                     method: str = "sorted-f", request_ids: Sequence[str] | None = None,
                     time_model: TimeModel = UNIT) -> PlannedOrder:
        """Plan the backlog with ``method`` and wrap the order. ``request_ids`` are
        parallel to the lengths; by default ``str(index)``, the simulator's ids."""
        order = order_for_backlog(prompts, outputs, kv_budget, method, time_model=time_model)
        ids = [str(i) for i in range(len(order))] if request_ids is None else request_ids
        if len(ids) != len(order):
            raise ValueError(f"{len(ids)} request ids for {len(order)} requests")
        return cls([ids[i] for i in order])

    def rank(self, request_id: str) -> int | None:
        return self._rank.get(request_id)

    def waiting_key(self, req: ReqInfo, now: float) -> float:
        rank = self._rank.get(req.request_id)
        if rank is None:
            if req.sched_tag != -1:  # count each unplanned request once, not per requeue
                self.counters["unplanned"] += 1
                req.sched_tag = -1
            # after every planned request, FCFS among themselves
            return float(len(self._rank)) + req.arrival_time
        return float(rank)

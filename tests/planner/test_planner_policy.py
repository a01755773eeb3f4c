"""The plan as a waiting-queue policy (simulator backlog mode) and as an order."""

from __future__ import annotations

import numpy as np
import pytest

from tailwise.planner import order_for_backlog, plan_backlog
from tailwise.planner.policy import PlannedOrder
from tailwise.scorer.interface import KeyedQueue
from tailwise.scorer.request import ReqInfo


def test_planned_order_serves_in_plan_rank_then_unplanned_fcfs() -> None:
    q = PlannedOrder(["c", "a", "b"])
    assert isinstance(q, KeyedQueue)
    reqs = {rid: ReqInfo(rid, t, 10) for rid, t in (("a", 0.0), ("b", 0.1), ("x", 0.2),
                                                    ("c", 0.3), ("y", 0.05))}
    for r in reqs.values():
        q.add(r, now=0.5)
    served = [q.pop(0.5).request_id for _ in range(len(reqs))]
    assert served == ["c", "a", "b", "y", "x"]
    assert q.counters["unplanned"] == 2


def test_requeued_request_keeps_its_rank() -> None:
    q = PlannedOrder(["a", "b", "c"])
    a, b, c = (ReqInfo(r, 0.0, 5) for r in "abc")
    for r in (b, c, a):
        q.add(r, 0.0)
    first = q.pop(0.0)
    assert first is a
    q.requeue(a, 1.0)  # preempted: goes back ahead of b and c
    assert q.peek(1.0) is a and len(q) == 3
    assert q.remove(b) and [q.pop(1.0).request_id for _ in range(2)] == ["a", "c"]


def test_duplicate_ids_are_rejected() -> None:
    with pytest.raises(ValueError, match="twice"):
        PlannedOrder(["a", "a"])


def test_from_backlog_uses_the_planner_order() -> None:
    prompts, outputs = [8, 1, 1], [1, 4, 4]
    order = order_for_backlog(prompts, outputs, 10, method="sorted-f")
    assert sorted(order) == [0, 1, 2]
    ids = ["long", "s1", "s2"]
    q = PlannedOrder.from_backlog(prompts, outputs, 10, request_ids=ids)
    assert [q.rank(ids[i]) for i in order] == [0, 1, 2]
    q = PlannedOrder.from_backlog(prompts, outputs, 10)  # simulator ids: str(index)
    assert [q.rank(str(i)) for i in order] == [0, 1, 2]


@pytest.mark.parametrize("method", ["sorted-f", "sorted-f-eager", "sorted-f-ls", "fcfs",
                                    "shortest-prompt", "shortest-output", "greedy-pack"])
def test_order_is_by_planned_start(method: str) -> None:
    rng = np.random.default_rng(3)
    p, o = rng.integers(1, 200, 60), rng.integers(1, 50, 60)
    plan = plan_backlog(p, o, 2000, method)
    assert sorted(plan.order) == list(range(60))
    starts = plan.schedule.start[plan.order]
    assert (np.diff(starts) >= 0).all()
    if plan.batches is not None:
        assert sorted(i for b in plan.batches for i in b) == list(range(60))

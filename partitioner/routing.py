"""Dynamic queue routing: map a routing-feature value to its EWSJF queue in O(log q).

Queues are half-open intervals ``[lo, hi)``, sorted and disjoint, possibly with gaps
between them. A value inside a gap, below the first queue, at or above the last ``hi``,
or NaN goes to the *bubble* queue (:data:`BUBBLE`), whose weights live in
``EwsjfParams.bubble``. The router is immutable, so the engine can share it with the
policy object that owns it.

>>> from tailwise.scorer.policy import QueueSpec
>>> r = Router((QueueSpec(0, 100, 50, 0.01), QueueSpec(200, 1000, 400, 0.001)))
>>> [r.route(x) for x in (0, 99.5, 100, 150, 200, 999, 1000)]
[0, 0, -1, -1, 1, 1, -1]
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

from tailwise.scorer.policy import QueueSpec, check_intervals

#: queue index returned for values outside every interval
BUBBLE = -1


class Router:
    """Routes values to queue indices by bisection over the queue lower bounds.

    Raises :class:`~tailwise.scorer.policy.PolicyError` (a ``ValueError``) naming the first bad
    queue, with the same field names and rules as ``Policy.validate`` for boundaries.
    """

    __slots__ = ("_his", "_los", "_queues")

    def __init__(self, queues: Sequence[QueueSpec]) -> None:
        self._queues: tuple[QueueSpec, ...] = tuple(queues)
        check_intervals(self._queues)
        self._los: tuple[float, ...] = tuple(q.lo for q in self._queues)
        self._his: tuple[float, ...] = tuple(q.hi for q in self._queues)

    @property
    def queues(self) -> tuple[QueueSpec, ...]:
        return self._queues

    def __len__(self) -> int:
        return len(self._queues)

    def route(self, x: float) -> int:
        """Index of the queue whose ``[lo, hi)`` contains ``x``, else :data:`BUBBLE`."""
        i = bisect_right(self._los, x) - 1
        if i >= 0 and x < self._his[i]:
            return i
        return BUBBLE

    def __repr__(self) -> str:
        spans = ", ".join(f"[{lo:g}, {hi:g})" for lo, hi in zip(self._los, self._his, strict=True))
        return f"Router({spans})"



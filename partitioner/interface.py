"""The one interface the sidecar drives: :class:`Partitioner`.

Contract (what the learner loop and the persistence layer rely on):

* ``learn_one(x)`` feeds one routing-feature value (by default the uncached prompt tokens
  of an arrived or finished request). It is O(1) amortised, never raises on bad telemetry
  (non-finite, negative or absurd values are skipped and counted in ``skipped``) and never
  changes the partition by itself.
* ``predict_one(x)`` routes a routing-feature value to the index of the queue whose
  ``[lo, hi)`` holds it in the current partition, or :data:`BUBBLE` (gaps, outside every
  queue, NaN): the same answer the engine's EWSJF queue gives for that partition.
* ``partition()`` returns the current queues as sorted, disjoint ``[lo, hi)`` intervals
  (:class:`~tailwise.scorer.policy.QueueSpec`), ready to be put into a
  :class:`~tailwise.scorer.policy.Policy`. It is cheap (no recomputation).
* ``refresh(now)`` recomputes the partition when it is due, with ``now`` in engine
  seconds from an injected clock, and returns ``True`` iff the partition changed. Only
  ``refresh`` changes the partition, so the learner knows exactly when to push a policy.
* ``to_state()`` returns a JSON-serialisable dict; ``from_state(state)`` rebuilds an equal
  partitioner from it and raises :class:`PartitionerStateError` naming the bad field.
  A sidecar restart therefore loses neither the partition nor the reservoir.

Implementations are pure: no I/O, no threads, no wall clock.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Self

from tailwise.scorer.policy import QueueSpec

#: queue index :meth:`Partitioner.predict_one` returns for values outside every queue
BUBBLE = -1


class PartitionerStateError(ValueError):
    """A persisted partitioner state failed validation; the message names the field.

    >>> str(PartitionerStateError("reservoir[3]", "must be finite, got nan"))
    'reservoir[3]: must be finite, got nan'
    """

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


class Partitioner(ABC):
    """A streaming learner of an interval partition of the routing feature (river shape)."""

    #: number of ``learn_one`` values rejected as bad telemetry
    skipped: int

    @abstractmethod
    def learn_one(self, x: float) -> None:
        """Observe one routing-feature value; O(1) amortised, never raises on bad values."""

    @abstractmethod
    def predict_one(self, x: float) -> int:
        """Queue index of ``x`` in the current partition, or :data:`BUBBLE`."""

    @abstractmethod
    def partition(self) -> tuple[QueueSpec, ...]:
        """The current queues, sorted and disjoint; may be empty (everything is bubble)."""

    @abstractmethod
    def refresh(self, now: float, *, force: bool = False) -> bool:
        """Recompute the partition if due (or ``force``); ``True`` iff it changed."""

    @abstractmethod
    def to_state(self) -> dict[str, Any]:
        """Everything needed to resume, as plain JSON-serialisable data."""

    @classmethod
    @abstractmethod
    def from_state(cls, state: Mapping[str, Any]) -> Self:
        """Rebuild from :meth:`to_state` output; raise :class:`PartitionerStateError`."""

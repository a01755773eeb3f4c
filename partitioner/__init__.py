"""Refine-and-Prune streaming partitioner and queue routing (pure, no I/O).

:class:`Partitioner` is the contract the sidecar drives (``learn_one`` / ``partition`` /
``refresh`` / ``to_state`` / ``from_state``); :class:`RefinePrune` is EWSJF's algorithm;
:class:`Router` maps a routing-feature value to its queue, or :data:`BUBBLE`.
"""

from tailwise.partitioner.interface import Partitioner, PartitionerStateError
from tailwise.partitioner.refine_prune import RefinePrune
from tailwise.partitioner.routing import BUBBLE, Router

__all__ = ["BUBBLE", "Partitioner", "PartitionerStateError", "RefinePrune", "Router"]

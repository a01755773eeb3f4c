"""Refine-and-Prune streaming partitioner and its drift detector (pure, no I/O).

:class:`Partitioner` is the contract the sidecar drives (``learn_one`` / ``predict_one`` /
``partition`` / ``refresh`` / ``to_state`` / ``from_state``); :class:`RefinePrune` is
EWSJF's algorithm, and its ``predict_one`` routes a value to its queue, or :data:`BUBBLE`;
:class:`DriftDetector` is river's ADWIN on request features.
"""

from tailwise.partitioner.drift import DriftDetector
from tailwise.partitioner.interface import BUBBLE, Partitioner, PartitionerStateError
from tailwise.partitioner.refine_prune import RefinePrune

__all__ = ["BUBBLE", "DriftDetector", "Partitioner", "PartitionerStateError", "RefinePrune"]

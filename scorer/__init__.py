"""Scheduling decisions: the Policy object and pure scoring / ordering / victim code.

No I/O beyond the frozen-file helpers; used by both the simulator and the vLLM adapter.
"""

from tailwise.scorer.interface import FcfsQueue, KeyedQueue, QueueDiscipline
from tailwise.scorer.policy import Mode, Policy, PolicyError, Source, neutral_policy
from tailwise.scorer.request import ReqInfo
from tailwise.scorer.step_time import H100_LLAMA3_8B, StepTimeModel

__all__ = [
    "H100_LLAMA3_8B",
    "FcfsQueue",
    "KeyedQueue",
    "Mode",
    "Policy",
    "PolicyError",
    "QueueDiscipline",
    "ReqInfo",
    "Source",
    "StepTimeModel",
    "neutral_policy",
]

"""From names and Policy objects to SchedulingPolicy instances.

``build_scheduler(policy)`` is what every engine calls when a new Policy arrives;
``make_named(name)`` serves the CLI's ``--policy`` names (baselines included).
"""

from __future__ import annotations

from collections.abc import Callable

from scorer.baselines import Fcfs, OracleSJF, OracleSRPT, PredictedSJF, VllmPriority
from scorer.interface import SchedulingPolicy
from scorer.policy import Mode, Policy
from scorer.step_time import H100_LLAMA3_8B, StepTimeModel


class UnknownPolicyError(ValueError):
    """A policy name is not one of :data:`POLICY_NAMES`."""


def build_scheduler(policy: Policy) -> SchedulingPolicy:
    """The scheduling policy a validated :class:`Policy` describes."""
    policy.validate()
    if policy.mode is Mode.FCFS:
        return Fcfs()
    raise NotImplementedError(f"mode {policy.mode.value!r} is not implemented yet")


#: CLI names of the baselines that are not Policy modes (they need simulator knowledge)
_BASELINES: dict[str, Callable[[StepTimeModel], SchedulingPolicy]] = {
    "fcfs": lambda m: Fcfs(),
    "vllm-priority": lambda m: VllmPriority(),
    "sjf-oracle": lambda m: OracleSJF(m),
    "srpt-oracle": lambda m: OracleSRPT(m),
    "predicted-sjf": lambda m: PredictedSJF(m),
}

POLICY_NAMES: tuple[str, ...] = tuple(_BASELINES)


def make_named(name: str, model: StepTimeModel = H100_LLAMA3_8B) -> SchedulingPolicy:
    """A fresh scheduling policy for a CLI name (see :data:`POLICY_NAMES`)."""
    try:
        factory = _BASELINES[name]
    except KeyError:
        raise UnknownPolicyError(
            f"unknown policy {name!r}; choose from: {', '.join(POLICY_NAMES)}"
        ) from None
    return factory(model)

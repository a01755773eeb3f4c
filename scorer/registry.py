"""From names and Policy objects to QueueDiscipline instances.

``build_scheduler(policy)`` is what every engine calls when a new Policy arrives;
``make_named(name)`` serves the CLI's ``--policy`` names (baselines included).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from tailwise.scorer.baselines import (
    Fcfs,
    LeastAttainedService,
    OracleSJF,
    OracleSRPT,
    PredictedSJF,
    SglangHRRN,
    SglangLPM,
    VllmPriority,
)
from tailwise.scorer.boost import BoostPolicy
from tailwise.scorer.ewsjf import EwsjfPolicy
from tailwise.scorer.interface import QueueDiscipline
from tailwise.scorer.kairos import KairosPolicy
from tailwise.scorer.policy import BoostParams, BoostVariant, Mode, Policy, SloParams
from tailwise.scorer.step_time import H100_LLAMA3_8B, StepTimeModel
from tailwise.scorer.tailwise import TailwisePolicy


class UnknownPolicyError(ValueError):
    """A policy name is not one of :data:`POLICY_NAMES`."""


def build_scheduler(policy: Policy) -> QueueDiscipline:
    """The scheduling policy a validated :class:`Policy` describes."""
    policy.validate()
    if policy.mode is Mode.FCFS:
        return Fcfs()
    if policy.mode is Mode.BOOST:
        return BoostPolicy(policy)
    if policy.mode is Mode.EWSJF:
        return EwsjfPolicy(policy)
    if policy.mode is Mode.KAIROS:
        return KairosPolicy(policy)
    return TailwisePolicy(policy)


#: the Policy behind each CLI name that is a deployable mode (not an oracle baseline)
def default_policy(name: str, model: StepTimeModel = H100_LLAMA3_8B) -> Policy | None:
    """The starting policy for a named mode, or None for simulator-only baselines."""
    base = Policy(step_time=model)
    if name == "fcfs":
        return base
    if name in ("uniboost", "distboost", "gamma-ada"):
        variant = {"uniboost": BoostVariant.UNI, "distboost": BoostVariant.DIST,
                   "gamma-ada": BoostVariant.ADA}[name]
        return dataclasses.replace(base, mode=Mode.BOOST,
                                   boost=dataclasses.replace(BoostParams(), variant=variant))
    if name == "ewsjf":
        return dataclasses.replace(base, mode=Mode.EWSJF)
    if name == "kairos":
        return dataclasses.replace(base, mode=Mode.KAIROS,
                                   slo=dataclasses.replace(SloParams(), decode_cap=True))
    if name == "tailwise":
        return dataclasses.replace(base, mode=Mode.TAILWISE)
    return None


#: CLI names of the baselines that are not Policy modes (they need simulator knowledge)
_BASELINES: dict[str, Callable[[StepTimeModel], QueueDiscipline]] = {
    "fcfs": lambda m: Fcfs(),
    "vllm-priority": lambda m: VllmPriority(),
    "sjf-oracle": lambda m: OracleSJF(m),
    "srpt-oracle": lambda m: OracleSRPT(m),
    "predicted-sjf": lambda m: PredictedSJF(m),
    "hrrn": lambda m: SglangHRRN(),
    "lpm": lambda m: SglangLPM(),
    "las": lambda m: LeastAttainedService(m),
}

_MODES = ("uniboost", "distboost", "gamma-ada", "ewsjf", "kairos", "tailwise")
POLICY_NAMES: tuple[str, ...] = (*_BASELINES, *_MODES)
#: names whose parameters are learned online (partition refresh, γ fitting)
ADAPTIVE_NAMES: tuple[str, ...] = ("distboost", "gamma-ada", "ewsjf", "tailwise")


def make_named(name: str, model: StepTimeModel = H100_LLAMA3_8B) -> QueueDiscipline:
    """A fresh scheduling policy for a CLI name (see :data:`POLICY_NAMES`)."""
    if name in _BASELINES:
        return _BASELINES[name](model)
    policy = default_policy(name, model)
    if policy is None:
        raise UnknownPolicyError(
            f"unknown policy {name!r}; choose from: {', '.join(POLICY_NAMES)}"
        )
    return build_scheduler(policy)

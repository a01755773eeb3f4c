"""Named policies as experiment arms."""

from __future__ import annotations

from tailwise.lab.experiment import Arm
from tailwise.learner.local import LocalLearner
from tailwise.scorer.registry import ADAPTIVE_NAMES, build_scheduler, default_policy, make_named
from tailwise.scorer.step_time import StepTimeModel


def make_arm(name: str, model: StepTimeModel) -> Arm:
    """A named policy; adaptive ones get an in-process learner as source and sink."""
    if name in ADAPTIVE_NAMES:
        policy = default_policy(name, model)
        assert policy is not None
        learner = LocalLearner(policy)
        return Arm(build_scheduler(policy), source=learner, sink=learner)
    return Arm(make_named(name, model))

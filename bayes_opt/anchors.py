"""Anchors: fixed candidates a round measures beside the sampler's draws.

A sampler searching one mode's parameters around the base policy cannot reach what
another mode does (Kairos's slack-ordered prefill under a reasoning burst, EWSJF's
queues), and after a shift back to a regime seen before it relearns what it already
found. So each round also replays, on the same window and against the same champion:

* the **paper modes at their defaults** (:func:`mode_anchor`): each built on the base
  policy, so it keeps the operator's SLO classes, step-time model, safety envelope and
  partition, and changes only what the mode is (its ``mode`` and the parameter group the
  paper fixes: UniBoost's γ, Kairos's decode cap);
* the **recent champions** (:class:`Recall`): the last few distinct policies that won a
  round, so a recurring regime gets its champion back in one round (a warm start that
  needs no regime classifier: the window itself says which past champion fits).

The gate treats an anchor like any challenger (it must beat the champion by the
margin on the window, and pass the confirmation on the previous window, see
:mod:`tailwise.bayes_opt.tuner`). Anchors are not sampled: the round scores them and
adds them to the study as finished trials (role ``anchor``; not enqueued, which another
sidecar sharing the study could take) whose parameters are recorded only when their
mode is the space's mode, so the sampler models them like its own draws.

>>> from tailwise.scorer.policy import Policy, Mode
>>> [p.mode.value for _, p in anchor_policies(Policy(mode=Mode.TAILWISE), ("kairos", "ewsjf"))]
['kairos', 'ewsjf']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from tailwise.scorer.policy import BoostParams, BoostVariant, Mode, Policy, PolicyError

#: names :func:`mode_anchor` knows (CLI policy names of the deployable modes)
ANCHOR_NAMES = ("fcfs", "uniboost", "ewsjf", "kairos", "tailwise")

#: policy fields that do not change what a policy does
_IDENTITY = ("version", "created_at", "source", "note", "extra")


class AnchorError(PolicyError):
    """An anchor name is unknown; the message names it."""


def mode_anchor(base: Policy, name: str) -> Policy:
    """``base`` switched to the named mode at the paper's defaults (see the module)."""
    if name == "fcfs":
        return base.replace(mode=Mode.FCFS)
    if name == "uniboost":
        return base.replace(mode=Mode.BOOST, boost=dataclasses.replace(
            BoostParams(), variant=BoostVariant.UNI))
    if name == "ewsjf":
        return base.replace(mode=Mode.EWSJF)
    if name == "kairos":
        return base.replace(mode=Mode.KAIROS,
                            slo=dataclasses.replace(base.slo, decode_cap=True))
    if name == "tailwise":
        return base.replace(mode=Mode.TAILWISE)
    raise AnchorError("tuner.anchors", f"unknown policy {name!r}; choose from "
                      f"{list(ANCHOR_NAMES)}")


def anchor_policies(base: Policy, names: Iterable[str]) -> list[tuple[str, Policy]]:
    """(label, validated policy) for each anchor name."""
    out = []
    for name in names:
        p = mode_anchor(base, name)
        p.validate()
        out.append((name, p))
    return out


def behaviour(policy: Policy) -> dict[str, Any]:
    """What a policy does: its dict without version, timestamps, source or notes."""
    d = policy.to_dict()
    for k in _IDENTITY:
        d.pop(k, None)
    return d


def same(a: Policy, b: Policy) -> bool:
    """Whether two policies schedule alike (identity fields ignored)."""
    return behaviour(a) == behaviour(b)


class Recall:
    """The last ``size`` distinct champions, newest first (a bounded, de-duplicated list
    that round-trips through plain dicts for the study's user attributes)."""

    def __init__(self, size: int, policies: Sequence[Policy] = ()) -> None:
        self.size = size
        self.policies: list[Policy] = []
        for p in reversed(policies):
            self.add(p)

    def add(self, policy: Policy) -> None:
        self.policies = [policy] + [p for p in self.policies if not same(p, policy)]
        del self.policies[self.size:]

    def to_json(self) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self.policies]

    @classmethod
    def from_json(cls, size: int, data: Any) -> Recall:
        """Unreadable entries are dropped (a damaged attribute costs only the warm start)."""
        pols: list[Policy] = []
        for d in data if isinstance(data, list) else []:
            try:
                pols.append(Policy.from_dict(d))
            except (PolicyError, TypeError, ValueError, KeyError):
                continue
        return cls(size, pols)


__all__ = ["ANCHOR_NAMES", "AnchorError", "Recall", "anchor_policies", "behaviour",
           "mode_anchor", "same"]

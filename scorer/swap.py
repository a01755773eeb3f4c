"""The one policy-swap routine every engine calls: the simulator and the vLLM adapter.

A :class:`~tailwise.scorer.hooks.PolicySource` hands out immutable
:class:`~tailwise.scorer.policy.Policy` objects. Each step an engine reads the current
object and asks :meth:`PolicySwap.offer` what it means:

* the object it saw last time, or one equal to the policy in force (a version re-sent
  after a reconnect): nothing changes — the queue and every request's scheduling state
  are kept;
* otherwise the engine's ``build`` makes its queue for the new policy. A build that
  raises leaves the policy in force untouched (the engine counts it) and the same object
  is not tried again;
* a successful build is a :class:`Swap`: the engine calls :func:`reset_sched_state` on
  every live request it holds (waiting and running, via :meth:`PolicySwap.forget`),
  hands its waiting requests to the new queue, and the new policy is in force.

Per-request scheduling state (the ``sched_*`` slots of
:class:`~tailwise.scorer.request.ReqInfo`: sort key, tag, queue index, MemGuard
protection level) was written by the old policy and means nothing to the new one, so a
swap forgets it everywhere: MemGuard protection granted under the old policy does not
survive a swap, in the simulator as in vLLM.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from tailwise.scorer.policy import Policy
from tailwise.scorer.request import ReqInfo

#: what an engine builds for a policy (its queue; the adapter uses None for stock vLLM)
Q = TypeVar("Q")


def reset_sched_state(info: ReqInfo) -> None:
    """Forget the private ``sched_*`` state a previous policy left on ``info``."""
    info.sched_key = 0.0
    info.sched_tag = 0
    info.sched_queue = -1
    info.sched_protect_level = -1


@dataclass(frozen=True, slots=True)
class Swap(Generic[Q]):
    """Install ``built`` for ``policy``; ``first`` when no policy was in force before."""

    policy: Policy
    built: Q
    first: bool


@dataclass(frozen=True, slots=True)
class SwapFailed:
    """``build`` raised for ``policy``; the policy in force stays."""

    policy: Policy
    error: Exception


class PolicySwap(Generic[Q]):
    """Which policy objects replace the one in force (see the module docstring).

    >>> from tailwise.scorer.policy import neutral_policy
    >>> swap = PolicySwap(lambda p: p.mode.value)
    >>> p = neutral_policy()
    >>> swap.offer(p).built, swap.offer(p), swap.offer(p.replace()) is None
    ('fcfs', None, True)
    """

    def __init__(self, build: Callable[[Policy], Q]) -> None:
        self._build = build
        self._seen: Policy | None = None
        #: the policy whose queue is installed (None before the first successful swap)
        self.in_force: Policy | None = None

    def offer(self, policy: Policy) -> Swap[Q] | SwapFailed | None:
        """What reading ``policy`` from the source means: None (nothing to do), a
        failed build, or a swap the engine must install."""
        if policy is self._seen:
            return None
        self._seen = policy
        if self.in_force is not None and policy == self.in_force:
            return None  # the same content re-sent: nothing to rebuild
        try:
            built = self._build(policy)
        except Exception as exc:  # a policy that cannot be built never replaces a working one
            return SwapFailed(policy, exc)
        first = self.in_force is None
        self.in_force = policy
        return Swap(policy, built, first)

    @staticmethod
    def forget(live: Iterable[ReqInfo]) -> None:
        """Reset the scheduling state of every live request (call on each :class:`Swap`)."""
        for info in live:
            reset_sched_state(info)

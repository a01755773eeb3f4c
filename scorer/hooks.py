"""The two seams between an engine and the outside world, as pure interfaces.

* :class:`PolicySource` — where an engine reads the policy in force. The engine thread
  calls ``current()`` once per step; implementations must answer from memory, never
  from the network (the gRPC client in ``engine_adapter`` swaps an immutable reference
  from its own thread).
* :class:`TelemetrySink` — where an engine reports per-request and per-step events.
  Calls must not block (the gRPC emitter enqueues into a bounded buffer and counts
  drops).

The simulator and the vLLM adapter both take these, so ``tailwise simulate --online``
and production run the same wiring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from tailwise.scorer.policy import Policy
from tailwise.scorer.request import ReqInfo


@runtime_checkable
class PolicySource(Protocol):
    def current(self) -> Policy:
        """The policy to apply now (an immutable object; compare by identity/version)."""
        ...


class StaticPolicySource:
    """A fixed policy (frozen file, or the FCFS baseline)."""

    def __init__(self, policy: Policy) -> None:
        policy.validate()
        self._policy = policy

    def current(self) -> Policy:
        return self._policy


@dataclass(frozen=True, slots=True)
class StepStats:
    """One engine iteration, as reported to the sidecar."""

    now: float
    step_time_s: float
    prefill_tokens: int
    decode_requests: int
    running: int
    waiting: int
    kv_usage: float
    preempted: int
    policy_version: int
    #: total context of the decode requests in the (first) step, tokens
    decode_context: int = 0
    #: iterations this record covers (> 1 when the engine skipped ahead over a decode run)
    steps: int = 1


@runtime_checkable
class TelemetrySink(Protocol):
    """Non-blocking event sink; every method returns immediately."""

    def on_arrival(self, req: ReqInfo, now: float) -> None: ...
    def on_first_token(self, req: ReqInfo, now: float) -> None: ...
    def on_preempt(self, req: ReqInfo, now: float) -> None: ...
    def on_finish(self, req: ReqInfo, now: float) -> None: ...
    def on_step(self, stats: StepStats) -> None: ...


class NullSink:
    """Discards everything (telemetry off)."""

    def on_arrival(self, req: ReqInfo, now: float) -> None:
        return None

    def on_first_token(self, req: ReqInfo, now: float) -> None:
        return None

    def on_preempt(self, req: ReqInfo, now: float) -> None:
        return None

    def on_finish(self, req: ReqInfo, now: float) -> None:
        return None

    def on_step(self, stats: StepStats) -> None:
        return None

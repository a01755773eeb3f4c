"""Pacing: keep a sidecar in step with an engine that runs on a virtual clock.

The sidecar's loop runs on ENGINE time (telemetry timestamps), but the simulator runs
thousands of times faster than a tuning round. So the telemetry sink is wrapped: each
time engine time crosses the sidecar's next due round (``next_round_engine_time`` from
``PolicyService.GetStatus``), the engine thread flushes the emitter, long-polls
``GetStatus(wait_loop_engine_time=t)`` until the sidecar's loop has completed its
iteration at engine time ``t`` (the round included), and waits until the client holds
the version then in force. Each wait is bounded (``sync_timeout_s`` wall seconds; a
timeout is counted and the run goes on). The model is therefore "a round takes no engine
time": a policy learned at engine time ``t`` is in force from the next engine step.
Between boundaries the engine never waits, except to drain the emitter when its queue
passes a high-water mark (so no telemetry is dropped); a sidecar that stops answering
costs at most one timeout per boundary — the engine keeps the last good policy
(fail-static).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tailwise.scorer.hooks import StepStats
from tailwise.scorer.policy import Policy
from tailwise.scorer.request import ReqInfo


class StatusSource(Protocol):
    """What the pacer asks the sidecar (``tailwise.learner.admin.AdminClient.status``)."""

    def status(self, *, wait_loop_engine_time: float | None = None,
               wait_timeout_s: float = 0.0, max_rounds: int = 0) -> Any: ...


class EmitterLike(Protocol):
    def on_arrival(self, req: ReqInfo, now: float) -> None: ...
    def on_first_token(self, req: ReqInfo, now: float) -> None: ...
    def on_preempt(self, req: ReqInfo, now: float) -> None: ...
    def on_finish(self, req: ReqInfo, now: float) -> None: ...
    def on_step(self, stats: StepStats) -> None: ...
    def flush(self, timeout: float) -> bool: ...
    def pending(self) -> int: ...


class ClientLike(Protocol):
    def current(self) -> Policy: ...
    def wait_for(self, predicate: Callable[[Any], bool], timeout: float) -> bool: ...
    def nacked_versions(self) -> dict[int, str]: ...


@dataclass
class PacingStats:
    syncs: int = 0
    #: waits that hit ``sync_timeout_s`` (flush, loop or policy delivery)
    timeouts: int = 0
    #: status calls that failed (sidecar unreachable)
    errors: int = 0
    #: emitter drains forced by its high-water mark
    drains: int = 0
    wall_wait_s: float = 0.0
    max_wait_s: float = 0.0
    #: engine times of the syncs
    at: list[float] = field(default_factory=list)


class PacedSink:
    """A :class:`~tailwise.scorer.hooks.TelemetrySink` keeping a sidecar in step with a virtual
    engine clock; see the module docstring. Forwards every event to ``emitter``."""

    def __init__(self, emitter: EmitterLike, status: StatusSource, client: ClientLike, *,
                 sync_timeout_s: float = 300.0, high_water: int = 32_768,
                 fallback_every_s: float = 60.0) -> None:
        self.emitter = emitter
        self.status = status
        self.client = client
        self.sync_timeout_s = sync_timeout_s
        self.high_water = high_water
        self.fallback_every_s = fallback_every_s
        self.stats = PacingStats()
        self._next = -math.inf

    # -- TelemetrySink --------------------------------------------------------------------
    def on_arrival(self, req: ReqInfo, now: float) -> None:
        self.emitter.on_arrival(req, now)
        self._drain_if_full()

    def on_first_token(self, req: ReqInfo, now: float) -> None:
        self.emitter.on_first_token(req, now)

    def on_preempt(self, req: ReqInfo, now: float) -> None:
        self.emitter.on_preempt(req, now)

    def on_finish(self, req: ReqInfo, now: float) -> None:
        self.emitter.on_finish(req, now)
        self._drain_if_full()

    def on_step(self, stats: StepStats) -> None:
        self.emitter.on_step(stats)
        if stats.now >= self._next:
            self.sync(stats.now)
        else:
            self._drain_if_full()

    # -- pacing ---------------------------------------------------------------------------
    def _drain_if_full(self) -> None:
        if self.emitter.pending() >= self.high_water:
            self.stats.drains += 1
            self.emitter.flush(self.sync_timeout_s)

    def sync(self, t: float) -> None:
        """Flush, wait for the sidecar's loop to finish engine time ``t``, then for the
        policy it put in force; sets the next boundary. Never raises."""
        t0 = time.monotonic()
        deadline = t0 + self.sync_timeout_s

        def left() -> float:
            return max(deadline - time.monotonic(), 0.0)

        ok = self.emitter.flush(left())
        nxt = t + self.fallback_every_s
        try:
            st = self.status.status(wait_loop_engine_time=t, wait_timeout_s=left())
            ok = ok and bool(st.waited_ok or not st.loop_enabled)
            version = int(st.policy_version)
            if self.client.current().version < version:
                ok = self.client.wait_for(
                    lambda c: c.current().version >= version or version in c.nacked_versions(),
                    left()) and ok
            if st.HasField("next_round_engine_time") and st.next_round_engine_time > t:
                nxt = float(st.next_round_engine_time)
        except Exception:  # the sidecar is gone or broken: keep serving, fail-static
            self.stats.errors += 1
            ok = False
        waited = time.monotonic() - t0
        s = self.stats
        s.syncs += 1
        s.timeouts += 0 if ok else 1
        s.wall_wait_s += waited
        s.max_wait_s = max(s.max_wait_s, waited)
        s.at.append(t)
        self._next = nxt

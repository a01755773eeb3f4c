"""``PolicyService.GetStatus``: the learner's progress in engine time, for pacing.

A simulated engine runs far faster than the tuner, so ``tailwise simulate --online``
keeps the sidecar in step with its virtual clock: when its engine time crosses the
next due round (``next_round_engine_time``), it flushes its telemetry and calls
``GetStatus(wait_loop_engine_time=T)``, which returns once the learning loop has
completed an iteration at engine time >= T (any round due then included) — or at the
wait timeout, or at once when the loop is not running. A real engine never calls it;
dashboards and scripts may poll it without ``wait_loop_engine_time``.

The wait is bounded by the request's ``wait_timeout_s``, :data:`MAX_WAIT_S` and the
call's deadline, and holds one RPC worker thread meanwhile.
"""

from __future__ import annotations

import math
from typing import Any

from tailwise.learner.ingest import TelemetryIngest
from tailwise.learner.loop import LearningLoop, RoundRecord
from tailwise.learner.publisher import PolicyStore
from tailwise.learner.window import TelemetryWindow
from tailwise.wire.v1 import policy_pb2 as pb

#: longest a GetStatus call waits for the loop, wall seconds
MAX_WAIT_S = 600.0
#: most rounds one answer carries
MAX_ROUNDS = 1024


class StatusReporter:
    """Builds :class:`pb.LearnerStatus` from the sidecar's parts."""

    def __init__(self, loop: LearningLoop, window: TelemetryWindow, ingest: TelemetryIngest,
                 store: PolicyStore) -> None:
        self.loop = loop
        self.window = window
        self.ingest = ingest
        self.store = store

    def status(self, request: pb.GetStatusRequest, context: Any = None) -> pb.LearnerStatus:
        """Answer ``request``, waiting first when it asks for an engine time."""
        ok = True
        target = request.wait_loop_engine_time
        if math.isfinite(target) and target > 0:
            timeout = request.wait_timeout_s if math.isfinite(request.wait_timeout_s) else 0.0
            timeout = min(max(timeout, 0.0), MAX_WAIT_S)
            remaining = context.time_remaining() if context is not None else None
            if remaining is not None:
                timeout = min(timeout, max(float(remaining) - 0.05, 0.0))
            ok = self.loop.wait_for_iteration(target, timeout)
        return self.snapshot(int(min(request.max_rounds, MAX_ROUNDS)), waited_ok=ok)

    def snapshot(self, max_rounds: int = 0, *, waited_ok: bool = True) -> pb.LearnerStatus:
        loop, window = self.loop, self.window
        st = pb.LearnerStatus(
            loop_busy=loop.busy, loop_enabled=loop.cfg.enabled and loop.running,
            rounds=loop.rounds, round_every_s=loop.round_every_s,
            trial_window_s=loop.wcfg.trial_window_s,
            policy_version=self.store.current().version, paused=self.store.paused,
            events_accepted=window.accepted, events_rejected=window.rejected,
            events_dropped=self.ingest.dropped, ingest_pending=self.ingest.pending(),
            waited_ok=waited_ok)
        _set_opt(st, "engine_time", window.engine_now())
        _set_opt(st, "loop_engine_time", loop.loop_engine_time)
        _set_opt(st, "last_round_engine_time", loop.last_round_engine_time)
        _set_opt(st, "next_round_engine_time", loop.next_round_engine_time())
        if max_rounds > 0:
            for rec in list(loop.history)[-max_rounds:]:
                st.recent_rounds.append(round_info(rec))
        return st


def round_info(rec: RoundRecord) -> pb.RoundInfo:
    info = pb.RoundInfo(engine_time=rec.engine_time, outcome=rec.outcome,
                        window_requests=max(rec.window_requests, 0),
                        published_version=rec.published_version or 0,
                        trial_values=list(rec.trial_values), reason=rec.reason)
    _set_opt(info, "best_value", rec.best_value)
    _set_opt(info, "champion_value", rec.champion_value)
    _set_opt(info, "drift", rec.drift)
    _set_opt(info, "window_start", rec.window_start)
    _set_opt(info, "window_end", rec.window_end)
    return info


def _set_opt(msg: Any, name: str, value: float | None) -> None:
    if value is not None and math.isfinite(value):
        setattr(msg, name, float(value))

"""Engine side of ``TelemetryService.Report``: a non-blocking :class:`TelemetrySink`.

Every ``on_*`` call appends a small tuple to a bounded deque and returns; when the
deque is full the event is dropped and counted (``dropped``), so the engine thread never
waits on the network or on a slow sidecar. A background thread batches the queue
(``max_batch`` events or every ``flush_interval_s``) into ``EngineEvent`` messages and
streams them; a stream is closed after ``stream_rotate_s`` to collect the sidecar's
``Summary`` (and to bound every call with a deadline), then reopened. On failure it
reconnects with capped, jittered exponential backoff; events taken off the queue for a
stream that then failed are counted as ``unconfirmed``.

Timestamps are the engine's (``now`` arguments, ``StepStats.now``): virtual time under
the simulator. Never imports vLLM.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from tailwise.engine_adapter.policy_client import Backoff, SidecarEndpoint, SidecarStreamThread
from tailwise.scorer.hooks import StepStats
from tailwise.scorer.request import ReqInfo
from tailwise.wire import rpc
from tailwise.wire.codec import step_event
from tailwise.wire.errors import SidecarError, from_rpc_error
from tailwise.wire.v1 import policy_pb2 as pb

log = logging.getLogger(__name__)

# (kind, request_id, time, arrival, prompt, cached, slo, priority, out, preemptions, ftt)
_ReqTuple = tuple[pb.RequestEventKind, str, float, float, int, int, str, int, int, int, float]


@dataclass(frozen=True, slots=True)
class EmitterCounters:
    #: events accepted into the queue
    enqueued: int = 0
    #: events refused because the queue was full
    dropped: int = 0
    #: events put on a stream
    sent: int = 0
    #: events the sidecar confirmed (its Summary) — buffered or dropped there
    confirmed: int = 0
    #: events dropped by the sidecar's ingest buffer (from Summaries)
    sidecar_dropped: int = 0
    #: events sent on streams that then failed (may or may not have arrived)
    unconfirmed: int = 0
    batches: int = 0
    streams: int = 0
    reconnects: int = 0
    last_error: str = ""


class TelemetryEmitter(SidecarStreamThread):
    """``tailwise.scorer.hooks.TelemetrySink`` streaming to a sidecar; see the module docstring."""

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        tls_ca: str | os.PathLike[str] | bytes | None = None,
        tls_server_name: str | None = None,
        engine_id: str | None = None,
        max_queue: int = 65_536,
        max_batch: int = 1024,
        flush_interval_s: float = 0.05,
        stream_rotate_s: float = 30.0,
        initial_backoff_s: float = 0.1,
        max_backoff_s: float = 10.0,
        max_message_bytes: int = 4 * 1024 * 1024,
        rng: random.Random | None = None,
    ) -> None:
        if max_queue < 1 or max_batch < 1:
            raise ValueError("max_queue and max_batch must be >= 1")
        self.address = address
        self.engine_id = engine_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._endpoint = SidecarEndpoint.make(
            address, token=token, tls_ca=tls_ca, tls_server_name=tls_server_name,
            max_message_bytes=max_message_bytes, max_backoff_s=max_backoff_s)
        self._max_queue = max_queue
        self._max_batch = max_batch
        self._flush_interval_s = flush_interval_s
        self._stream_rotate_s = stream_rotate_s
        self._backoff = Backoff(initial_backoff_s, max_backoff_s, rng)
        self._q: deque[_ReqTuple | StepStats] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        #: pending flush() targets (events sent): streams end early to get a Summary
        self._flush_targets: list[int] = []
        self._drop_lock = threading.Lock()
        self._dropped = 0
        self._enqueued = 0
        self._counters = EmitterCounters()
        self._cond = threading.Condition()
        self._seq = 0
        self._thread: threading.Thread | None = None
        #: the events sent on the current stream (a fresh account per stream)
        self._acct = _StreamAccount()

    # -- TelemetrySink (engine thread: O(1), never blocks) --------------------------------
    def _put(self, item: _ReqTuple | StepStats) -> None:
        # ``enqueued`` is exact for one producing thread (the engine's); ``dropped`` is
        # exact for any number of them
        q = self._q
        if len(q) >= self._max_queue:
            with self._drop_lock:
                self._dropped += 1
            return
        q.append(item)
        self._enqueued += 1
        if len(q) >= self._max_batch:
            self._wake.set()

    def _req(self, kind: pb.RequestEventKind, req: ReqInfo, now: float) -> None:
        self._put((kind, req.request_id, now, req.arrival_time, req.prompt_tokens,
                   req.cached_tokens, req.slo_class, req.priority, req.num_output_tokens,
                   req.num_preemptions,
                   req.first_token_time if req.first_token_time is not None else 0.0))

    def on_arrival(self, req: ReqInfo, now: float) -> None:
        self._req(pb.REQUEST_EVENT_KIND_ARRIVAL, req, now)

    def on_first_token(self, req: ReqInfo, now: float) -> None:
        self._req(pb.REQUEST_EVENT_KIND_FIRST_TOKEN, req, now)

    def on_tokens(self, req: ReqInfo, now: float) -> None:
        """Progress report (tokens generated so far); optional, not in TelemetrySink."""
        self._req(pb.REQUEST_EVENT_KIND_TOKENS, req, now)

    def on_preempt(self, req: ReqInfo, now: float) -> None:
        self._req(pb.REQUEST_EVENT_KIND_PREEMPTED, req, now)

    def on_finish(self, req: ReqInfo, now: float) -> None:
        self._req(pb.REQUEST_EVENT_KIND_FINISHED, req, now)

    def on_step(self, stats: StepStats) -> None:
        self._put(stats)

    # -- observation ----------------------------------------------------------------------
    @property
    def counters(self) -> EmitterCounters:
        with self._cond:
            return dataclasses.replace(self._counters, dropped=self._dropped,
                                       enqueued=self._enqueued)

    def pending(self) -> int:
        return len(self._q)

    def _count(self, **inc: Any) -> None:
        with self._cond:
            c = self._counters
            changes: dict[str, Any] = {
                k: (v if isinstance(v, str) else getattr(c, k) + v) for k, v in inc.items()}
            self._counters = dataclasses.replace(c, **changes)
            self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Send everything queued now and wait until each of those events is accounted
        for: confirmed by a sidecar Summary, or counted ``unconfirmed`` (its stream failed).

        Returns False on timeout (e.g. no sidecar). For shutdown, tests and benchmarks; the
        engine never needs to call it.
        """
        with self._cond:
            target = self._counters.sent + len(self._q)
            self._flush_targets.append(target)
        self._wake.set()
        try:
            with self._cond:
                return self._cond.wait_for(
                    lambda: self._counters.confirmed + self._counters.unconfirmed >= target,
                    timeout=timeout)
        finally:
            with self._cond:
                self._flush_targets.remove(target)

    # -- lifecycle ------------------------------------------------------------------------
    def close(self, flush_timeout: float = 2.0) -> None:
        if self._thread is not None and flush_timeout > 0:
            self.flush(flush_timeout)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(flush_timeout + 5.0)
            self._thread = None

    # -- sender thread --------------------------------------------------------------------
    _thread_name = "tailwise-telemetry"

    def _attempt(self, channel: Any) -> None:
        self._acct = _StreamAccount()
        self._stream(channel, self._acct)
        self._backoff.reset()

    def _failed(self, exc: Exception) -> float:
        """The stream's unconfirmed events are counted; the engine keeps emitting into
        the queue meanwhile."""
        delay = self._backoff.next()
        sidecar = isinstance(exc, SidecarError)
        self._count(unconfirmed=self._acct.close(),
                    last_error=f"{type(exc).__name__}: {exc}" if sidecar else repr(exc))
        if sidecar:
            log.info("telemetry stream to %s failed (%s); retry in %.2fs",
                     self.address, exc, delay)
        else:
            log.error("telemetry emitter error", exc_info=exc)
        return delay

    def _stream(self, channel: Any, acct: _StreamAccount) -> None:
        stub = rpc.TelemetryStub(channel)
        self._count(streams=1)
        try:
            summary = stub.report(self._batches(acct), timeout=self._stream_rotate_s + 30.0,
                                  metadata=self._endpoint.metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        sent = acct.close()
        received = int(summary.events_received)
        self._count(confirmed=received, unconfirmed=max(sent - received, 0),
                    sidecar_dropped=int(summary.events_dropped))

    def _flush_pending(self) -> bool:
        with self._cond:
            return bool(self._flush_targets)

    def _batches(self, acct: _StreamAccount) -> Iterator[pb.EngineEvent]:
        ends_at = time.monotonic() + self._stream_rotate_s
        while True:
            self._wake.wait(self._flush_interval_s)
            self._wake.clear()
            while time.monotonic() < ends_at:
                with acct.lock:
                    # never take events off the queue for a stream already given up on
                    if acct.closed or not self._q:
                        break
                    batch, n = self._take_batch()
                    acct.sent += n
                yield batch
            if acct.closed or self._stop.is_set() or time.monotonic() >= ends_at:
                return
            if self._flush_pending() and not self._q:
                return  # end the stream so its Summary confirms what was flushed

    def _take_batch(self) -> tuple[pb.EngineEvent, int]:
        q = self._q
        batch = pb.EngineEvent(engine_id=self.engine_id, seq=self._seq,
                               emitter_dropped=self._dropped)
        self._seq += 1
        reqs, steps = batch.requests, batch.steps
        n = 0
        while q and n < self._max_batch:
            item = q.popleft()
            n += 1
            if isinstance(item, StepStats):
                steps.append(step_event(item))
            else:
                k, rid, t, arr, p, c, slo, prio, out, npre, ftt = item
                reqs.add(kind=k, request_id=rid, time=t,
                         arrival_time=arr, prompt_tokens=p, cached_tokens=c, slo_class=slo,
                         priority=prio, output_tokens=out, num_preemptions=npre,
                         first_token_time=ftt)
        self._count(sent=n, batches=1)
        return batch, n


class _StreamAccount:
    """Events one stream took off the queue; closed once its outcome is known, after
    which the stream's request generator takes nothing more."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.closed = False
        self.sent = 0

    def close(self) -> int:
        with self.lock:
            self.closed = True
            return self.sent


def connect(
    address: str,
    *,
    token: str | None = None,
    tls_ca: str | os.PathLike[str] | bytes | None = None,
    **kwargs: Any,
) -> TelemetryEmitter:
    """A started :class:`TelemetryEmitter` for ``address`` (what the vLLM adapter calls)."""
    return TelemetryEmitter(address, token=token, tls_ca=tls_ca, **kwargs).start()

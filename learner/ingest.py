"""Telemetry ingest: RPC threads hand batches to a bounded buffer and never wait.

``TelemetryService.Report`` runs on a gRPC worker thread per engine stream. For each
batch it does O(1) work — ``put_nowait`` into a bounded queue, or, when the queue is
full, drop the batch and count its events — so a slow learning loop can never push
back on an engine. One ingest thread drains the queue into the
:class:`~tailwise.learner.window.TelemetryWindow`.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any

from tailwise.learner.metrics import SidecarMetrics
from tailwise.learner.window import TelemetryWindow
from tailwise.wire.v1 import policy_pb2 as pb

log = logging.getLogger(__name__)

_STOP = object()


class TelemetryIngest:
    """Bounded buffer + drain thread; also the ``TelemetryService`` servicer."""

    def __init__(self, window: TelemetryWindow, metrics: SidecarMetrics,
                 max_batches: int = 2048) -> None:
        self.window = window
        self.metrics = metrics
        self._q: queue.Queue[Any] = queue.Queue(maxsize=max_batches)
        self._lock = threading.Lock()
        self.received = 0
        self.dropped = 0
        self.batches = 0
        #: per engine_id, the emitter's cumulative drop count last reported
        self._emitter_dropped: dict[str, int] = {}
        self._thread: threading.Thread | None = None
        #: also fed every batch (router hints); set by the sidecar
        self.hints: Any = None

    # -- producer side (gRPC threads) ---------------------------------------------------
    def offer(self, batch: pb.EngineEvent) -> bool:
        """Buffer ``batch`` or drop it (counted); never blocks."""
        n = len(batch.requests) + len(batch.steps)
        self._note_emitter_drops(batch.engine_id, batch.emitter_dropped)
        try:
            self._q.put_nowait(batch)
        except queue.Full:
            with self._lock:
                self.received += n
                self.dropped += n
            self.metrics.events_dropped.labels("sidecar").inc(n)
            return False
        with self._lock:
            self.received += n
            self.batches += 1
        self.metrics.batches.inc()
        return True

    def _note_emitter_drops(self, engine_id: str, cumulative: int) -> None:
        with self._lock:
            prev = self._emitter_dropped.get(engine_id, 0)
            # a restarted emitter starts again from 0: count its new drops from there
            delta = cumulative - prev if cumulative >= prev else cumulative
            self._emitter_dropped[engine_id] = cumulative
            if len(self._emitter_dropped) > 10_000:
                self._emitter_dropped.pop(next(iter(self._emitter_dropped)))
        if delta > 0:
            self.metrics.events_dropped.labels("emitter").inc(delta)

    def Report(self, request_iterator: Iterator[pb.EngineEvent], context: Any) -> pb.Summary:  # noqa: N802
        """``TelemetryService.Report``: buffer each batch, answer a summary at the end."""
        received = dropped = batches = 0
        self.metrics.telemetry_streams.inc()
        try:
            for batch in request_iterator:
                n = len(batch.requests) + len(batch.steps)
                received += n
                batches += 1
                if not self.offer(batch):
                    dropped += n
        finally:
            self.metrics.telemetry_streams.dec()
        return pb.Summary(events_received=received, events_dropped=dropped, batches=batches)

    # -- consumer side ------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tailwise-ingest", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is None:
            return
        try:
            self._q.put(_STOP, timeout=timeout)
        except queue.Full:
            log.warning("ingest queue full at shutdown; abandoning buffered telemetry")
        self._thread.join(timeout)
        self._thread = None

    def pending(self) -> int:
        """Batches buffered and not yet applied (approximate, for status)."""
        return self._q.qsize()

    def drain(self, timeout: float | None = None) -> None:
        """Wait until every buffered batch has been applied (tests, benchmarks)."""
        if timeout is None:
            self._q.join()
            return
        done = threading.Event()

        def _join() -> None:
            self._q.join()
            done.set()

        threading.Thread(target=_join, daemon=True).start()
        done.wait(timeout)

    def _run(self) -> None:
        while True:
            item = self._q.get()
            try:
                if item is _STOP:
                    return
                accepted = self.window.apply(item)
                if self.hints is not None:
                    self.hints.apply(item)
                self.metrics.events_ingested.inc(accepted)
                now = self.window.engine_now()
                if now is not None:
                    self.metrics.engine_time.set(now)
            except Exception:  # never let one bad batch kill ingest
                log.exception("telemetry batch failed to apply")
                self.metrics.loop_errors.labels("ingest").inc()
            finally:
                self._q.task_done()

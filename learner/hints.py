"""Router hints in the sidecar: one HintTracker per engine, served over gRPC and HTTP/JSON.

The ingest thread feeds every decoded telemetry batch to :meth:`HintBook.apply`; the
hints themselves are computed by :class:`tailwise.scorer.hints.HintTracker`, the same
code the fleet simulator's routers read. Readers (the ``HintService`` gRPC method and
the small HTTP endpoint) take a snapshot under a lock and never wait on ingest.

HTTP endpoint (stdlib ``http.server``, GET only, JSON, bounded): ``/v1/hints`` lists
every replica, ``/v1/hints/<engine_id>`` answers one (404 when unknown). With a sidecar
token set, requests need ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import grpc

from tailwise.scorer.hints import HintTracker, ReplicaHints
from tailwise.scorer.policy import Policy
from tailwise.scorer.step_time import H100_LLAMA3_8B, StepTimeModel
from tailwise.wire.codec import StepEventError, engine_time_ok, step_stats_from_proto
from tailwise.wire.v1 import policy_pb2 as pb

log = logging.getLogger(__name__)

_KIND = pb.RequestEventKind


class HintBook:
    """Trackers by engine id (at most ``max_engines``; further engines are counted)."""

    def __init__(self, *, kv_total_blocks: int, step_budget: int, max_engines: int = 64,
                 model: StepTimeModel = H100_LLAMA3_8B) -> None:
        self.kv_total_blocks = kv_total_blocks
        self.step_budget = step_budget
        self.max_engines = max_engines
        self.model = model
        self._trackers: dict[str, HintTracker] = {}
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self.refused_engines = 0
        #: records skipped as malformed (NaN or negative times and counts, ...): the same
        #: batches reach the window, whose ``tailwise_events_rejected`` counts them for
        #: operators; these counts are the hint book's own
        self.rejected_steps = 0
        self.rejected_requests = 0

    def apply(self, batch: pb.EngineEvent) -> None:
        """Feed one telemetry batch (ingest thread)."""
        engine = batch.engine_id[:128] or "engine"
        with self._lock:
            tr = self._trackers.get(engine)
            if tr is None:
                if len(self._trackers) >= self.max_engines:
                    self.refused_engines += 1
                    return
                tr = HintTracker(engine, self.model, kv_total_blocks=self.kv_total_blocks,
                                 step_budget=self.step_budget)
                self._trackers[engine] = tr
            self._seen[engine] = time.monotonic()
            for ev in batch.requests:
                if not engine_time_ok(ev.time) or ev.prompt_tokens < 0 \
                        or ev.cached_tokens < 0:  # the window's checks of these fields
                    self.rejected_requests += 1
                    continue
                rid = ev.request_id
                if ev.kind == _KIND.REQUEST_EVENT_KIND_ARRIVAL:
                    tr.arrival(rid, ev.prompt_tokens, ev.time, ev.cached_tokens)
                elif ev.kind == _KIND.REQUEST_EVENT_KIND_FIRST_TOKEN:
                    tr.first_token(rid, ev.time)
                elif ev.kind == _KIND.REQUEST_EVENT_KIND_PREEMPTED:
                    tr.preempt(rid, ev.time)
                elif ev.kind == _KIND.REQUEST_EVENT_KIND_FINISHED:
                    tr.finish(rid, ev.time)
            for st in batch.steps:
                try:  # the codec's check: a bad record never reaches the router's hints
                    stats = step_stats_from_proto(st)
                except StepEventError:
                    self.rejected_steps += 1
                    continue
                tr.step(stats)

    def snapshot(self, policy: Policy | None = None) -> list[tuple[ReplicaHints, float]]:
        """Every replica's hints and the wall seconds since its last batch."""
        now = time.monotonic()
        with self._lock:
            out = []
            for engine, tr in self._trackers.items():
                if policy is not None and tr.policy is not policy:
                    tr.set_policy(policy)
                out.append((tr.hints(), now - self._seen[engine]))
            return out


def to_proto(h: ReplicaHints, age_s: float) -> pb.ReplicaHints:
    return pb.ReplicaHints(
        replica=h.replica, queue_depth=h.queue_depth, queue_tokens=h.queue_tokens,
        queue_s=h.queue_s, running=h.running, kv_pressure=h.kv_pressure,
        kv_used_blocks=h.kv_used_blocks, kv_total_blocks=h.kv_total_blocks,
        admission_horizon_s=h.admission_horizon_s, policy_version=h.policy_version,
        policy_mode=h.policy_mode, at=h.at, age_s=age_s)


def to_json(h: ReplicaHints, age_s: float) -> dict[str, Any]:
    return {**h.to_dict(), "age_s": round(age_s, 3)}


class HintServicer:
    """``tailwise.v1.HintService``."""

    def __init__(self, book: HintBook, policy: Any) -> None:
        self.book = book
        self._policy = policy  # () -> Policy in force

    def GetHints(self, request: pb.GetHintsRequest, context: Any) -> pb.HintsResponse:  # noqa: N802
        snap = self.book.snapshot(self._policy())
        if request.replica:
            snap = [(h, a) for h, a in snap if h.replica == request.replica]
            if not snap:
                context.abort(grpc.StatusCode.NOT_FOUND,
                              f"replica: no telemetry from {request.replica[:128]!r}")
        return pb.HintsResponse(replicas=[to_proto(h, a) for h, a in snap])


class HintHttpServer:
    """The JSON endpoint, on its own daemon thread."""

    def __init__(self, book: HintBook, policy: Any, host: str, port: int,
                 token: str | None = None) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "tailwise-hints"
            timeout = 5

            def do_GET(self) -> None:
                if token and not hmac.compare_digest(
                        self.headers.get("Authorization", ""), f"Bearer {token}"):
                    self._send(401, {"error": "missing or wrong bearer token"})
                    return
                path = self.path.split("?", 1)[0].rstrip("/")
                snap = outer.book.snapshot(outer._policy())
                if path == "/v1/hints":
                    self._send(200, {"replicas": [to_json(h, a) for h, a in snap]})
                elif path.startswith("/v1/hints/"):
                    want = unquote(path[len("/v1/hints/"):])
                    hit = [to_json(h, a) for h, a in snap if h.replica == want]
                    if hit:
                        self._send(200, hit[0])
                    else:
                        self._send(404, {"error": f"replica: no telemetry from {want[:128]!r}"})
                else:
                    self._send(404, {"error": "use GET /v1/hints or /v1/hints/<engine_id>"})

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("hints http: " + format, *args)

        self.book = book
        self._policy = policy
        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="tailwise-hints",
                                        daemon=True)

    def start(self) -> HintHttpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5.0)

"""``PolicyService``: xDS-style policy push with ACK/NACK, and the admin calls.

Protocol of one ``Subscribe`` stream (state of the world, latest version only):

1. The adapter sends ``HELLO`` (adapter id, the version it runs, versions it NACKed).
2. The server sends the policy in force as a ``PolicyUpdate`` with a fresh random
   ``nonce`` and then every newer version as it is published (intermediate versions
   published faster than they can be sent are skipped: only the latest matters).
3. The adapter answers each update with ``ACK`` or ``NACK`` + ``error_detail`` quoting
   the nonce. Answers with an unknown nonce are counted as stale and ignored.
4. A version NACKed by an adapter is never sent to it again — not on this stream, not
   after it reconnects (the server remembers per adapter id), and not by a restarted
   sidecar (the adapter repeats its NACKed versions in ``HELLO``). The adapter keeps
   its previous policy until a newer version arrives.

The stream ends when the client cancels, its deadline expires, or after
``stream_max_age_s`` (the client reconnects at once; this bounds every call).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tailwise.learner.metrics import SidecarMetrics
from tailwise.learner.publisher import PolicyStore
from tailwise.scorer.policy import PolicyError
from tailwise.wire import codec
from tailwise.wire.errors import FailedPrecondition, InvalidArgument, Unimplemented, abort_with
from tailwise.wire.v1 import policy_pb2 as pb

log = logging.getLogger(__name__)

#: how long a new stream waits for HELLO before sending anyway (wall seconds)
HELLO_WAIT_S = 5.0

#: ``GetStatus`` handler: (request, context) -> status
StatusProvider = Callable[[pb.GetStatusRequest, Any], pb.LearnerStatus]
_MAX_ADAPTERS = 4096
_MAX_NACKED = 1024


@dataclass
class AdapterRecord:
    """What the sidecar knows about one adapter id (across its streams)."""

    nacked: set[int] = field(default_factory=set)
    acked_version: int | None = None
    last_error: str = ""
    streams: int = 0


class _Stream:
    """Per-stream state shared by the response generator and the ACK reader thread."""

    def __init__(self) -> None:
        self.hello = threading.Event()
        self.closed = threading.Event()
        self.adapter_id = ""
        self.pending: dict[str, int] = {}  # nonce -> version
        self.lock = threading.Lock()


class PolicyServicer:
    def __init__(self, store: PolicyStore, metrics: SidecarMetrics, *,
                 stream_max_age_s: float = 3600.0, allow_unchecked: bool = False,
                 status: StatusProvider | None = None) -> None:
        self.store = store
        self.metrics = metrics
        #: answers GetStatus (``tailwise.learner.status.StatusReporter``); None: UNIMPLEMENTED
        self.status = status
        self.stream_max_age_s = stream_max_age_s
        self.allow_unchecked = allow_unchecked
        self._adapters: OrderedDict[str, AdapterRecord] = OrderedDict()
        self._lock = threading.Condition()

    # -- adapter bookkeeping --------------------------------------------------------------
    def adapter(self, adapter_id: str) -> AdapterRecord:
        with self._lock:
            rec = self._adapters.get(adapter_id)
            if rec is None:
                rec = self._adapters[adapter_id] = AdapterRecord()
                if len(self._adapters) > _MAX_ADAPTERS:
                    self._adapters.popitem(last=False)
            self._adapters.move_to_end(adapter_id)
            return rec

    def adapters(self) -> dict[str, AdapterRecord]:
        with self._lock:
            return dict(self._adapters)

    def wait_for_adapter(self, adapter_id: str, predicate: Callable[[AdapterRecord], bool],
                         timeout: float) -> bool:
        """Block until adapter ``adapter_id``'s record satisfies ``predicate`` (tests,
        harnesses: re-checked on every HELLO/ACK/NACK)."""
        def ok() -> bool:
            rec = self._adapters.get(adapter_id)
            return rec is not None and predicate(rec)

        with self._lock:
            return self._lock.wait_for(ok, timeout=timeout)

    def _on_ack(self, stream: _Stream, ack: pb.Ack) -> None:
        try:
            self._record_ack(stream, ack)
        finally:
            with self._lock:
                self._lock.notify_all()

    def _record_ack(self, stream: _Stream, ack: pb.Ack) -> None:
        if ack.kind == pb.ACK_KIND_HELLO:
            stream.adapter_id = ack.adapter_id[:256] or f"anon-{secrets.token_hex(4)}"
            rec = self.adapter(stream.adapter_id)
            with self._lock:
                rec.nacked.update(list(ack.nacked_versions)[:_MAX_NACKED])
                rec.streams += 1
            stream.hello.set()
            return
        with stream.lock:
            version = stream.pending.pop(ack.nonce, None)
        if version is None or version != ack.version:
            self.metrics.stale_acks.inc()
            return
        rec = self.adapter(stream.adapter_id)
        if ack.kind == pb.ACK_KIND_ACK:
            self.metrics.policies_acked.inc()
            with self._lock:
                rec.acked_version = version
        elif ack.kind == pb.ACK_KIND_NACK:
            self.metrics.policies_nacked.inc()
            detail = ack.error_detail[:2000]
            with self._lock:
                rec.nacked.add(version)
                rec.last_error = detail
                if len(rec.nacked) > _MAX_NACKED:
                    rec.nacked.discard(min(rec.nacked))
            log.warning("adapter %s NACKed version %d: %s", stream.adapter_id, version, detail)
        else:
            self.metrics.stale_acks.inc()

    def _read_acks(self, stream: _Stream, acks: Iterator[pb.Ack]) -> None:
        try:
            for ack in acks:
                self._on_ack(stream, ack)
        except Exception as exc:  # the stream ended under us (cancel, deadline, reset)
            log.debug("ack reader ended: %s", exc)
        finally:
            stream.closed.set()
            stream.hello.set()
            self.store.kick()

    # -- RPCs -----------------------------------------------------------------------------
    def Subscribe(self, request_iterator: Iterator[pb.Ack],  # noqa: N802
                  context: Any) -> Iterator[pb.PolicyUpdate]:
        stream = _Stream()
        reader = threading.Thread(target=self._read_acks, args=(stream, request_iterator),
                                  name="tailwise-acks", daemon=True)
        reader.start()

        def _on_done() -> None:
            stream.closed.set()
            self.store.kick()

        context.add_callback(_on_done)
        self.metrics.connected_adapters.inc()
        try:
            yield from self._updates(stream, context)
        finally:
            self.metrics.connected_adapters.dec()
            if stream.adapter_id:
                rec = self.adapter(stream.adapter_id)
                with self._lock:
                    rec.streams = max(rec.streams - 1, 0)
                    self._lock.notify_all()

    def _updates(self, stream: _Stream, context: Any) -> Iterator[pb.PolicyUpdate]:
        started = time.monotonic()
        stream.hello.wait(self._remaining(context, started, HELLO_WAIT_S))
        sent: int | None = None
        while not stream.closed.is_set() and context.is_active():
            left = self._remaining(context, started, self.stream_max_age_s)
            if left <= 0:
                return
            pub = self.store.wait_newer(sent, timeout=min(left, 1.0))
            if stream.closed.is_set():
                return
            if pub.version == sent:
                continue
            sent = pub.version
            rec = self.adapter(stream.adapter_id) if stream.adapter_id else None
            if rec is not None and pub.version in rec.nacked:
                continue  # never re-send a NACKed version
            nonce = secrets.token_hex(8)
            with stream.lock:
                stream.pending[nonce] = pub.version
                if len(stream.pending) > 64:  # unanswered updates: keep the newest
                    stream.pending.pop(next(iter(stream.pending)))
            self.metrics.policies_pushed.inc()
            yield pb.PolicyUpdate(version=pub.version, nonce=nonce, policy=pub.msg,
                                  sent_at=time.time())

    @staticmethod
    def _remaining(context: Any, started: float, cap: float) -> float:
        left = cap - (time.monotonic() - started)
        deadline = context.time_remaining()
        if deadline is not None:
            left = min(left, float(deadline))
        return max(left, 0.0)

    def SetPolicy(self, request: pb.SetPolicyRequest,  # noqa: N802
                  context: Any) -> pb.SetPolicyResponse:
        action = request.action
        if action == pb.SET_POLICY_ACTION_KILL:
            pub = self.store.kill(request.reason[:500])
        elif action == pb.SET_POLICY_ACTION_RESUME:
            self.store.set_paused(False)
            pub = self.store.current()
        elif action == pb.SET_POLICY_ACTION_SET:
            if not request.HasField("policy"):
                abort_with(context, InvalidArgument("policy: missing"))
            if request.unchecked:
                if not self.allow_unchecked:
                    abort_with(context, FailedPrecondition(
                        "unchecked pushes are a testing hook; start the sidecar with "
                        "testing_allow_unchecked_push"))
                pub = self.store.publish_unchecked(request.policy)
            else:
                try:
                    policy = codec.policy_from_proto(request.policy)
                    pub = self.store.publish(policy, source=policy.source,
                                             note=request.reason[:500] or "manual (SetPolicy)",
                                             pause=True)
                except PolicyError as exc:
                    abort_with(context, InvalidArgument(str(exc)))
        else:
            abort_with(context, InvalidArgument(f"action: unspecified or unknown ({action})"))
        return pb.SetPolicyResponse(version=pub.version, paused=self.store.paused)

    def GetPolicy(self, request: pb.GetPolicyRequest, context: Any) -> pb.PolicyUpdate:  # noqa: N802
        pub = self.store.current()
        return pb.PolicyUpdate(version=pub.version, nonce="", policy=pub.msg, sent_at=time.time())

    def GetStatus(self, request: pb.GetStatusRequest,  # noqa: N802
                  context: Any) -> pb.LearnerStatus:
        if self.status is None:
            abort_with(context, Unimplemented("this sidecar reports no learner status"))
        return self.status(request, context)

"""Engine side of ``PolicyService.Subscribe``: the policy the engine reads each step.

:class:`PolicyClient` implements :class:`tailwise.scorer.hooks.PolicySource`. A background
thread keeps a subscription open, decodes and validates every ``PolicyUpdate``
(:func:`tailwise.wire.codec.decode_update` → ``Policy.validate()``), answers ACK or NACK with
the reason, and swaps one immutable reference; :meth:`PolicyClient.current` only reads
that reference, so the engine thread never waits on the network.

Reliability (CONVENTIONS §Reliability rules):

* fail-static — when the sidecar goes away the last good policy stays in force;
* start-up without a sidecar — the frozen file if given (and valid), else FCFS
  (:func:`tailwise.scorer.policy.neutral_policy`);
* reconnect with capped exponential backoff + jitter (:class:`Backoff`); a stream that
  ends at its deadline (``stream_max_age_s``) is reopened at once;
* a NACKed version is never applied, and is listed in the next HELLO so even a
  restarted sidecar does not send it again.

This module never imports vLLM: the simulator uses it too.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import random
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import grpc

from tailwise.scorer.frozen import FrozenPolicyError
from tailwise.scorer.policy import Policy, PolicyError, neutral_policy
from tailwise.wire import codec, rpc
from tailwise.wire.errors import DeadlineExceeded, SidecarError, Unauthenticated, from_rpc_error
from tailwise.wire.policy_file import load as load_frozen
from tailwise.wire.v1 import policy_pb2 as pb

log = logging.getLogger(__name__)

_MAX_NACKED_REMEMBERED = 256


class Backoff:
    """Delay ``min(max_s, initial_s·2^k)`` scaled by a uniform factor in [0.5, 1]
    ("equal jitter"), so adapters reconnecting to a restarted sidecar spread out.

    >>> b = Backoff(initial_s=0.1, max_s=1.0, rng=random.Random(0))
    >>> [round(b.next(), 3) for _ in range(6)]
    [0.092, 0.176, 0.284, 0.504, 0.756, 0.702]
    """

    def __init__(self, initial_s: float = 0.1, max_s: float = 10.0,
                 rng: random.Random | None = None) -> None:
        if not 0 < initial_s <= max_s:
            raise ValueError(f"backoff: need 0 < initial_s <= max_s, got {initial_s}, {max_s}")
        self.initial_s = initial_s
        self.max_s = max_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        base = min(self.max_s, self.initial_s * (2.0 ** min(self.attempt, 62)))
        self.attempt += 1
        return base * (0.5 + 0.5 * self._rng.random())

    def reset(self) -> None:
        self.attempt = 0


@dataclass(frozen=True, slots=True)
class ClientCounters:
    received: int = 0
    acked: int = 0
    nacked: int = 0
    #: streams (re)opened after the first one
    reconnects: int = 0
    connected: bool = False
    #: the frozen file given at start could not be loaded (FCFS used instead)
    frozen_error: str = ""
    last_error: str = ""
    last_nack: str = ""


@dataclass(frozen=True)
class SidecarEndpoint:
    """How an adapter thread (policy stream, telemetry stream) reaches the sidecar: its
    address, the bearer-token metadata, TLS and the bounded channel options."""

    address: str
    metadata: tuple[tuple[str, str], ...]
    tls_ca: bytes | None
    tls_server_name: str | None
    options: list[tuple[str, int]]

    @classmethod
    def make(cls, address: str, *, token: str | None,
             tls_ca: str | os.PathLike[str] | bytes | None, tls_server_name: str | None,
             max_message_bytes: int, max_backoff_s: float) -> SidecarEndpoint:
        """Reads ``tls_ca`` (PEM bytes, or a path to them) once."""
        ca = tls_ca if tls_ca is None or isinstance(tls_ca, bytes) else Path(tls_ca).read_bytes()
        options = rpc.client_channel_options(max_message_bytes,
                                             max_reconnect_backoff_s=max_backoff_s)
        return cls(address, rpc.bearer_metadata(token), ca, tls_server_name, options)

    def open(self) -> Any:
        """A new gRPC channel to the sidecar (the caller closes it)."""
        return rpc.open_channel(self.address, tls_ca=self.tls_ca,
                                tls_server_name=self.tls_server_name, options=self.options)


def initial_policy(frozen_file: str | os.PathLike[str] | None) -> tuple[Policy, str]:
    """The policy before any sidecar answers: the frozen file, else FCFS (+ error text)."""
    if frozen_file is None:
        return neutral_policy(), ""
    try:
        return load_frozen(frozen_file), ""
    except FrozenPolicyError as exc:
        log.error("frozen policy refused, falling back to FCFS: %s", exc)
        return neutral_policy(), str(exc)


class SidecarStreamThread:
    """A background thread that keeps one stream to the sidecar open, for the policy
    client and the telemetry emitter: it opens a channel, runs one stream
    (:meth:`_attempt`, returns at a normal end such as a deadline rotation), and after a
    failure waits out the delay :meth:`_failed` chose (backoff) before it reopens; every
    reopening is counted (``reconnects``). Nothing escapes it: an adapter thread never
    dies, the engine keeps serving on what it has (fail-static)."""

    _thread_name = "tailwise-sidecar-stream"
    _stop: threading.Event
    _endpoint: SidecarEndpoint
    _thread: threading.Thread | None

    def _count(self, **changes: Any) -> None:
        raise NotImplementedError

    def _attempt(self, channel: Any) -> None:
        """Run one stream on ``channel`` (raise on failure)."""
        raise NotImplementedError

    def _failed(self, exc: Exception) -> float:
        """Account for a failed stream; returns the seconds to wait before reopening."""
        raise NotImplementedError

    def _attempt_ended(self) -> None:
        """After every stream, failed or not (before its channel closes)."""

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._thread_name,
                                            daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        first = True
        while not self._stop.is_set():
            if not first:
                self._count(reconnects=1)
            first = False
            channel = self._endpoint.open()
            delay = 0.0
            try:
                self._attempt(channel)
            except Exception as exc:  # never let the thread die
                delay = self._failed(exc)
            finally:
                self._attempt_ended()
                channel.close()
            if delay > 0 and self._stop.wait(delay):  # wakes early to stop
                break


class PolicyClient(SidecarStreamThread):
    """``PolicySource`` fed by a sidecar; see the module docstring."""

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        tls_ca: str | os.PathLike[str] | bytes | None = None,
        tls_server_name: str | None = None,
        frozen_file: str | os.PathLike[str] | None = None,
        adapter_id: str | None = None,
        initial_backoff_s: float = 0.1,
        max_backoff_s: float = 10.0,
        stream_max_age_s: float = 3600.0,
        max_message_bytes: int = 4 * 1024 * 1024,
        rng: random.Random | None = None,
        on_update: Callable[[Policy], None] | None = None,
        on_count: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.address = address
        self.adapter_id = adapter_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._endpoint = SidecarEndpoint.make(
            address, token=token, tls_ca=tls_ca, tls_server_name=tls_server_name,
            max_message_bytes=max_message_bytes, max_backoff_s=max_backoff_s)
        self._backoff = Backoff(initial_backoff_s, max_backoff_s, rng)
        self._stream_max_age_s = stream_max_age_s
        self._on_update = on_update
        self._on_count = on_count
        policy, frozen_error = initial_policy(frozen_file)
        #: the one reference the engine reads; replaced, never mutated
        self._policy: Policy = policy
        self._counters = ClientCounters(frozen_error=frozen_error)
        self._nacked: dict[int, str] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._call: Any = None
        self._thread: threading.Thread | None = None

    # -- PolicySource ---------------------------------------------------------------------
    def current(self) -> Policy:
        """The policy in force (a plain attribute read: never blocks)."""
        return self._policy

    # -- observation ----------------------------------------------------------------------
    @property
    def counters(self) -> ClientCounters:
        with self._cond:
            return self._counters

    def nacked_versions(self) -> dict[int, str]:
        """Versions this client refused, with the reason."""
        with self._cond:
            return dict(self._nacked)

    def wait_for(self, predicate: Callable[[PolicyClient], bool], timeout: float) -> bool:
        """Block until ``predicate(self)`` holds (re-checked on every state change)."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout=timeout)

    def _count(self, **changes: Any) -> None:
        with self._cond:
            c = self._counters
            values = {k: (getattr(c, k) + v if isinstance(v, int) and not isinstance(v, bool)
                          else v) for k, v in changes.items()}
            self._counters = dataclasses.replace(c, **values)
            self._cond.notify_all()
        if self._on_count is not None:
            try:
                self._on_count(changes)
            except Exception:
                log.exception("on_count callback failed")

    # -- lifecycle ------------------------------------------------------------------------
    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- the subscription thread ----------------------------------------------------------
    _thread_name = "tailwise-policy-client"

    def _attempt(self, channel: Any) -> None:
        self._stream(channel)

    def _failed(self, exc: Exception) -> float:
        if isinstance(exc, SidecarError) and self._stop.is_set():
            return 0.0  # the stream ended because we are closing
        delay = self._backoff.next()
        if isinstance(exc, Unauthenticated):
            delay = self._backoff.max_s
            log.error("sidecar %s refused our token: %s", self.address, exc)
        elif isinstance(exc, SidecarError):
            log.info("policy stream to %s failed (%s: %s); retry in %.2fs",
                     self.address, type(exc).__name__, exc, delay)
        else:  # keep serving fail-static
            log.error("policy client error; retry in %.2fs", delay, exc_info=exc)
        self._count(last_error=f"{type(exc).__name__}: {exc}"
                    if isinstance(exc, SidecarError) else repr(exc))
        return delay

    def _attempt_ended(self) -> None:
        self._call = None
        self._count(connected=False)

    def _stream(self, channel: Any) -> None:
        stub = rpc.PolicyStub(channel)
        outbox: queue.Queue[pb.Ack | None] = queue.Queue()
        with self._cond:
            nacked = sorted(self._nacked)[-_MAX_NACKED_REMEMBERED:]
        outbox.put(pb.Ack(kind=pb.ACK_KIND_HELLO, adapter_id=self.adapter_id,
                          version=self._policy.version, nacked_versions=nacked))

        def acks() -> Iterator[pb.Ack]:
            while True:
                item = outbox.get()
                if item is None:
                    return
                yield item

        call = stub.subscribe(acks(), timeout=self._stream_max_age_s, metadata=self._endpoint.metadata)
        self._call = call
        if self._stop.is_set():
            call.cancel()
        got_any = False
        try:
            for update in call:
                if not got_any:
                    got_any = True
                    self._backoff.reset()
                    self._count(connected=True)
                    log.info("policy stream to sidecar %s open (adapter %s, %d reconnects so far)",
                             self.address, self.adapter_id, self.counters.reconnects)
                outbox.put(self._handle(update))
        except grpc.RpcError as exc:
            err = from_rpc_error(exc)
            if isinstance(err, DeadlineExceeded) and got_any:
                return  # the stream reached its maximum age: reopen at once
            raise err from exc
        finally:
            outbox.put(None)
        if not got_any:
            raise DeadlineExceeded("stream ended before the first update")

    def _handle(self, update: pb.PolicyUpdate) -> pb.Ack:
        version, nonce = int(update.version), update.nonce
        self._count(received=1)
        try:
            if version in self._nacked:
                raise PolicyError("version", f"{version} was refused before: "
                                             f"{self._nacked[version]}")
            policy = codec.decode_update(update)
        except Exception as exc:  # PolicyError, or anything a malformed message provokes
            detail = str(exc) if isinstance(exc, PolicyError) else f"policy: {exc!r}"
            with self._cond:
                self._nacked.setdefault(version, detail)
                while len(self._nacked) > _MAX_NACKED_REMEMBERED:
                    self._nacked.pop(min(self._nacked))
            self._count(nacked=1, last_nack=f"v{version}: {detail}")
            log.warning("NACK policy version %d: %s", version, detail)
            return pb.Ack(kind=pb.ACK_KIND_NACK, nonce=nonce, version=version,
                          error_detail=detail, adapter_id=self.adapter_id)
        if policy != self._policy:
            with self._cond:
                self._policy = policy  # the atomic swap the engine thread observes
            log.info("policy version %d in force (mode=%s)", version, policy.mode.value)
            if self._on_update is not None:
                try:
                    self._on_update(policy)
                except Exception:
                    log.exception("on_update callback failed")
        self._count(acked=1)
        return pb.Ack(kind=pb.ACK_KIND_ACK, nonce=nonce, version=version,
                      adapter_id=self.adapter_id)


def connect(
    address: str,
    *,
    token: str | None = None,
    tls_ca: str | os.PathLike[str] | bytes | None = None,
    frozen_file: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> PolicyClient:
    """Start a :class:`PolicyClient` for ``address`` (what the vLLM adapter calls).

    Returns at once; until the sidecar answers, ``current()`` is the frozen policy or
    FCFS.
    """
    return PolicyClient(address, token=token, tls_ca=tls_ca, frozen_file=frozen_file,
                        **kwargs).start()

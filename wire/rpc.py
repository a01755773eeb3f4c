"""Typed service bindings for ``tailwise.v1`` (server handlers and client stubs).

The generated ``policy_pb2_grpc`` module is checked in for other consumers, but the
tailwise code binds the services here instead: the generated module is untyped (it would
break ``mypy --strict`` wherever it is imported) and refuses to import on a grpcio older
than the grpcio-tools that wrote it. A test checks these method paths and message types
against the generated module so the two cannot drift.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import grpc

from tailwise.wire.v1 import policy_pb2 as pb

POLICY_SERVICE = "tailwise.v1.PolicyService"
TELEMETRY_SERVICE = "tailwise.v1.TelemetryService"
SUBSCRIBE = f"/{POLICY_SERVICE}/Subscribe"
SET_POLICY = f"/{POLICY_SERVICE}/SetPolicy"
GET_POLICY = f"/{POLICY_SERVICE}/GetPolicy"
GET_STATUS = f"/{POLICY_SERVICE}/GetStatus"
REPORT = f"/{TELEMETRY_SERVICE}/Report"
HINT_SERVICE = "tailwise.v1.HintService"
GET_HINTS = f"/{HINT_SERVICE}/GetHints"

#: full service names, for reflection and the health service
SERVICE_NAMES: tuple[str, ...] = (
    pb.DESCRIPTOR.services_by_name["PolicyService"].full_name,
    pb.DESCRIPTOR.services_by_name["TelemetryService"].full_name,
    pb.DESCRIPTOR.services_by_name["HintService"].full_name,
)

Metadata = Sequence[tuple[str, str]]


class PolicyServicer(Protocol):
    def Subscribe(  # noqa: N802 - gRPC method names
        self, request_iterator: Iterator[pb.Ack], context: Any
    ) -> Iterator[pb.PolicyUpdate]: ...

    def SetPolicy(  # noqa: N802
        self, request: pb.SetPolicyRequest, context: Any
    ) -> pb.SetPolicyResponse: ...

    def GetPolicy(  # noqa: N802
        self, request: pb.GetPolicyRequest, context: Any
    ) -> pb.PolicyUpdate: ...

    def GetStatus(  # noqa: N802
        self, request: pb.GetStatusRequest, context: Any
    ) -> pb.LearnerStatus: ...


class TelemetryServicer(Protocol):
    def Report(  # noqa: N802
        self, request_iterator: Iterator[pb.EngineEvent], context: Any
    ) -> pb.Summary: ...


class HintServicer(Protocol):
    def GetHints(  # noqa: N802
        self, request: pb.GetHintsRequest, context: Any
    ) -> pb.HintsResponse: ...


def add_hint_service(servicer: HintServicer, server: Any) -> None:
    handlers = {
        "GetHints": grpc.unary_unary_rpc_method_handler(
            servicer.GetHints,
            request_deserializer=pb.GetHintsRequest.FromString,
            response_serializer=pb.HintsResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(HINT_SERVICE, handlers),))
    server.add_registered_method_handlers(HINT_SERVICE, handlers)


def add_policy_service(servicer: PolicyServicer, server: Any) -> None:
    handlers = {
        "Subscribe": grpc.stream_stream_rpc_method_handler(
            servicer.Subscribe,
            request_deserializer=pb.Ack.FromString,
            response_serializer=pb.PolicyUpdate.SerializeToString,
        ),
        "SetPolicy": grpc.unary_unary_rpc_method_handler(
            servicer.SetPolicy,
            request_deserializer=pb.SetPolicyRequest.FromString,
            response_serializer=pb.SetPolicyResponse.SerializeToString,
        ),
        "GetPolicy": grpc.unary_unary_rpc_method_handler(
            servicer.GetPolicy,
            request_deserializer=pb.GetPolicyRequest.FromString,
            response_serializer=pb.PolicyUpdate.SerializeToString,
        ),
        "GetStatus": grpc.unary_unary_rpc_method_handler(
            servicer.GetStatus,
            request_deserializer=pb.GetStatusRequest.FromString,
            response_serializer=pb.LearnerStatus.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(POLICY_SERVICE, handlers),)
    )
    server.add_registered_method_handlers(POLICY_SERVICE, handlers)


def add_telemetry_service(servicer: TelemetryServicer, server: Any) -> None:
    handlers = {
        "Report": grpc.stream_unary_rpc_method_handler(
            servicer.Report,
            request_deserializer=pb.EngineEvent.FromString,
            response_serializer=pb.Summary.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(TELEMETRY_SERVICE, handlers),)
    )
    server.add_registered_method_handlers(TELEMETRY_SERVICE, handlers)


class PolicyStub:
    """Client side of ``PolicyService``; every call takes a deadline (``timeout``)."""

    def __init__(self, channel: Any) -> None:
        self._subscribe = channel.stream_stream(
            SUBSCRIBE,
            request_serializer=pb.Ack.SerializeToString,
            response_deserializer=pb.PolicyUpdate.FromString,
            _registered_method=True,
        )
        self._set_policy = channel.unary_unary(
            SET_POLICY,
            request_serializer=pb.SetPolicyRequest.SerializeToString,
            response_deserializer=pb.SetPolicyResponse.FromString,
            _registered_method=True,
        )
        self._get_policy = channel.unary_unary(
            GET_POLICY,
            request_serializer=pb.GetPolicyRequest.SerializeToString,
            response_deserializer=pb.PolicyUpdate.FromString,
            _registered_method=True,
        )
        self._get_status = channel.unary_unary(
            GET_STATUS,
            request_serializer=pb.GetStatusRequest.SerializeToString,
            response_deserializer=pb.LearnerStatus.FromString,
            _registered_method=True,
        )

    def subscribe(self, acks: Iterator[pb.Ack], *, timeout: float,
                  metadata: Metadata = ()) -> Any:
        """The response stream (iterate it for PolicyUpdates; ``.cancel()`` ends it)."""
        return self._subscribe(acks, timeout=timeout, metadata=tuple(metadata))

    def set_policy(self, request: pb.SetPolicyRequest, *, timeout: float,
                   metadata: Metadata = ()) -> pb.SetPolicyResponse:
        resp: pb.SetPolicyResponse = self._set_policy(
            request, timeout=timeout, metadata=tuple(metadata)
        )
        return resp

    def get_policy(self, *, timeout: float, metadata: Metadata = ()) -> pb.PolicyUpdate:
        resp: pb.PolicyUpdate = self._get_policy(
            pb.GetPolicyRequest(), timeout=timeout, metadata=tuple(metadata)
        )
        return resp

    def get_status(self, request: pb.GetStatusRequest, *, timeout: float,
                   metadata: Metadata = ()) -> pb.LearnerStatus:
        resp: pb.LearnerStatus = self._get_status(
            request, timeout=timeout, metadata=tuple(metadata)
        )
        return resp


class TelemetryStub:
    """Client side of ``TelemetryService``."""

    def __init__(self, channel: Any) -> None:
        self._report = channel.stream_unary(
            REPORT,
            request_serializer=pb.EngineEvent.SerializeToString,
            response_deserializer=pb.Summary.FromString,
            _registered_method=True,
        )

    def report(self, batches: Iterator[pb.EngineEvent], *, timeout: float,
               metadata: Metadata = ()) -> pb.Summary:
        resp: pb.Summary = self._report(batches, timeout=timeout, metadata=tuple(metadata))
        return resp


class HintStub:
    """Client side of ``HintService`` (what a gateway scorer calls)."""

    def __init__(self, channel: Any) -> None:
        self._get_hints = channel.unary_unary(
            GET_HINTS,
            request_serializer=pb.GetHintsRequest.SerializeToString,
            response_deserializer=pb.HintsResponse.FromString,
            _registered_method=True,
        )

    def get_hints(self, replica: str = "", *, timeout: float,
                  metadata: Metadata = ()) -> pb.HintsResponse:
        resp: pb.HintsResponse = self._get_hints(
            pb.GetHintsRequest(replica=replica), timeout=timeout, metadata=tuple(metadata))
        return resp


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying ``token`` (empty when there is none)."""
    return (("authorization", f"Bearer {token}"),) if token else ()


#: channel options shared by every tailwise client (keepalive must not be more
#: frequent than the server's ``grpc.http2.min_ping_interval_without_data_ms``)
def client_channel_options(max_message_bytes: int = 4 * 1024 * 1024,
                           keepalive_time_s: float = 30.0,
                           keepalive_timeout_s: float = 10.0,
                           max_reconnect_backoff_s: float = 5.0) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", int(keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", int(max_reconnect_backoff_s * 1000)),
    ]


def open_channel(address: str, *, tls_ca: bytes | None = None,
                 tls_server_name: str | None = None,
                 options: list[tuple[str, Any]] | None = None) -> Any:
    """An insecure channel, or a TLS one verifying the server against ``tls_ca``."""
    opts: list[tuple[str, Any]] = list(options or client_channel_options())
    if tls_ca is None:
        return grpc.insecure_channel(address, options=opts)
    if tls_server_name:
        opts.append(("grpc.ssl_target_name_override", tls_server_name))
    creds = grpc.ssl_channel_credentials(root_certificates=tls_ca)
    return grpc.secure_channel(address, creds, options=opts)

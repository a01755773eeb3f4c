"""Transport security of the sidecar: bind policy, bearer token, TLS.

* The default bind is 127.0.0.1. Binding any other address requires TLS, a token, or
  the explicit ``insecure`` flag (:func:`check_bind`).
* :class:`TokenInterceptor` checks ``authorization: Bearer <token>`` on every call
  (constant-time compare) and answers UNAUTHENTICATED otherwise. The gRPC health
  service is exempt so load balancers and probes can check liveness without secrets.
* :func:`server_credentials` loads a PEM certificate chain and key for TLS.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from tailwise.learner.config import ConfigError, SidecarConfig
from tailwise.wire.errors import Unauthenticated, status_of

log = logging.getLogger(__name__)

HEALTH_PREFIX = "/grpc.health.v1.Health/"


def split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"listen: expected HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and ``localhost`` are local; everything else (0.0.0.0 too) is not.

    >>> is_loopback("127.0.0.1"), is_loopback("[::1]"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(cfg: SidecarConfig) -> None:
    """Refuse a non-local bind without TLS or token unless ``insecure`` is set."""
    host, _ = split_host_port(cfg.listen)
    if is_loopback(host):
        return
    has_tls = cfg.tls_cert is not None
    if not has_tls and cfg.token is None and not cfg.insecure:
        raise ConfigError(
            f"listen: refusing to bind non-local address {cfg.listen!r} without TLS "
            "(--tls-cert/--tls-key) or a token (--token/--token-file); pass --insecure to "
            "override")
    if not has_tls:
        log.warning("listening on %s without TLS: %s", cfg.listen,
                    "the bearer token travels in clear text" if cfg.token else "no protection")


def server_credentials(cert: Path, key: Path) -> Any:
    try:
        cert_pem, key_pem = cert.read_bytes(), key.read_bytes()
    except OSError as exc:
        raise ConfigError(f"tls: cannot read {exc.filename} ({exc.strerror})") from exc
    return grpc.ssl_server_credentials([(key_pem, cert_pem)])


class TokenInterceptor:
    """Server interceptor enforcing a bearer token (duck-typed ``grpc.ServerInterceptor``)."""

    def __init__(self, token: str, on_failure: Callable[[], None] | None = None) -> None:
        self._expected = f"Bearer {token}".encode()
        self._on_failure = on_failure

    def _authorized(self, metadata: Any) -> bool:
        for key, value in metadata or ():
            if key == "authorization":
                got = value.encode() if isinstance(value, str) else bytes(value)
                return hmac.compare_digest(got, self._expected)
        return False

    def intercept_service(self, continuation: Callable[[Any], Any],
                          handler_call_details: Any) -> Any:
        method = handler_call_details.method or ""
        if method.startswith(HEALTH_PREFIX) or self._authorized(
            handler_call_details.invocation_metadata
        ):
            return continuation(handler_call_details)
        if self._on_failure is not None:
            self._on_failure()
        handler = continuation(handler_call_details)
        return _deny_like(handler)


def _deny_like(handler: Any) -> Any:
    """A handler of the same streaming shape as ``handler`` that aborts UNAUTHENTICATED."""
    code = status_of(Unauthenticated())
    detail = "missing or invalid bearer token"

    def deny(_request: Any, context: Any) -> Any:
        context.abort(code, detail)

    if handler is None:
        return None
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny)
    return grpc.unary_unary_rpc_method_handler(deny)

"""Transport security of a real sidecar process (issue 7, reliability): loopback bind by
default, bearer token enforced on every tailwise call (UNAUTHENTICATED), TLS with a
self-signed certificate generated here."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.certs import self_signed
from support.net import non_loopback_ipv4

from tailwise.engine_adapter.policy_client import PolicyClient
from tailwise.engine_adapter.telemetry import TelemetryEmitter
from tailwise.learner.admin import AdminClient
from tailwise.learner.config import SidecarConfig
from tailwise.learner.security import is_loopback, split_host_port
from tailwise.scorer.request import ReqInfo
from tailwise.wire.errors import Unauthenticated, Unavailable

pytestmark = [pytest.mark.timeout(120)]


def test_binds_loopback_by_default(sidecar_factory: Any, figures: dict[str, Any]) -> None:
    host, _ = split_host_port(SidecarConfig().listen)
    assert is_loopback(host)
    sc = sidecar_factory(listen=f"{host}:0")  # the default host, any free port
    assert sc.ready["address"].startswith(f"{host}:")
    with socket.create_connection(("127.0.0.1", sc.port), timeout=5):
        pass
    other = non_loopback_ipv4()
    if other is not None:  # the port is not reachable on the host's other interfaces
        with pytest.raises(OSError):
            socket.create_connection((other, sc.port), timeout=2).close()
    figures["default_bind"] = f"{host} (refused on {other or 'no other interface'})"


def test_token_is_required(tmp_path: Path, sidecar_factory: Any) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    sc = sidecar_factory(["--token-file", str(tmp_path / "token"), "--no-loop"])
    for token in (None, "wrong", "s3cret-but-longer"):
        with AdminClient(sc.address, token=token, timeout_s=10) as admin:
            with pytest.raises(Unauthenticated):
                admin.current()
            with pytest.raises(Unauthenticated):
                admin.kill("not allowed")
            with pytest.raises(Unauthenticated):
                admin.status()
    # the engine side without the token gets nothing and is told why
    with PolicyClient(sc.address, initial_backoff_s=0.05, max_backoff_s=0.2) as anon:
        assert anon.wait_for(lambda c: "Unauthenticated" in c.counters.last_error, 30)
        assert anon.counters.acked == 0
    em = TelemetryEmitter(sc.address, initial_backoff_s=0.05, max_backoff_s=0.2).start()
    try:
        em.on_arrival(ReqInfo("r", 1.0, 10), 1.0)
        em.flush(10)
        assert "Unauthenticated" in em.counters.last_error and em.counters.confirmed == 0
    finally:
        em.close(flush_timeout=0)
    # health stays open for probes; the right token works for everything else
    with grpc.insecure_channel(sc.address) as ch:
        r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert r.status == health_pb2.HealthCheckResponse.SERVING
    with AdminClient(sc.address, token="s3cret") as admin:
        assert admin.current()[0] == 1
        assert admin.status().policy_version == 1
    with PolicyClient(sc.address, token="s3cret") as client:
        assert client.wait_for(lambda c: c.counters.acked == 1, 30)


def test_tls_with_self_signed_certificate(tmp_path: Path, sidecar_factory: Any) -> None:
    cert, key = self_signed(tmp_path)
    sc = sidecar_factory(["--tls-cert", str(cert), "--tls-key", str(key), "--no-loop"])
    with AdminClient(sc.address, tls_ca=cert) as admin:
        assert admin.current()[0] == 1
    with PolicyClient(sc.address, tls_ca=cert) as client:
        assert client.wait_for(lambda c: c.counters.acked == 1, 30)
    with TelemetryEmitter(sc.address, tls_ca=cert, flush_interval_s=0.01) as em:
        em.on_arrival(ReqInfo("r", 1.0, 10), 1.0)
        assert em.flush(30) and em.counters.confirmed == 1
    # plaintext is refused, and so is a client that does not trust the certificate
    with AdminClient(sc.address, timeout_s=3) as plain, pytest.raises(Unavailable):
        plain.current()
    (tmp_path / "other").mkdir()
    other, _ = self_signed(tmp_path / "other")
    with AdminClient(sc.address, tls_ca=other, timeout_s=3) as wrong, pytest.raises(Unavailable):
        wrong.current()

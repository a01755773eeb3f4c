"""In-process sidecar over real gRPC on 127.0.0.1: protocol, client, emitter, security."""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from learner_helpers import events_batch

from tailwise.engine_adapter.policy_client import PolicyClient, connect
from tailwise.engine_adapter.telemetry import TelemetryEmitter
from tailwise.learner.admin import AdminClient
from tailwise.learner.config import ConfigError, LoopConfig, SidecarConfig
from tailwise.learner.server import Sidecar
from tailwise.scorer.hooks import PolicySource, StepStats, TelemetrySink
from tailwise.scorer.policy import Mode, neutral_policy
from tailwise.scorer.request import ReqInfo
from tailwise.wire import codec, rpc
from tailwise.wire.errors import FailedPrecondition, InvalidArgument, Unauthenticated
from tailwise.wire.policy_file import save
from tailwise.wire.v1 import policy_pb2 as pb

pytestmark = pytest.mark.timeout(60)


def make_sidecar(tmp: Path, **kw: Any) -> Sidecar:
    cfg = SidecarConfig(listen="127.0.0.1:0", metrics_port=-1, state_dir=tmp,
                        loop=LoopConfig(enabled=False), testing_allow_unchecked_push=True, **kw)
    return Sidecar(cfg, use_default_learners=False).start()


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[Sidecar]:
    sc = make_sidecar(tmp_path)
    yield sc
    sc.stop(0.5)


def value(sc: Sidecar, name: str, **labels: str) -> float:
    v = sc.metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if v is None else v


def nan_gamma_msg() -> pb.Policy:
    msg = codec.policy_to_proto(neutral_policy())
    msg.boost.gamma = math.nan
    return msg


class RawSubscription:
    """Drives Subscribe by hand to check the wire protocol itself."""

    def __init__(self, address: str, hello: pb.Ack, metadata: Any = ()) -> None:
        self.channel = grpc.insecure_channel(address)
        self.out: queue.Queue[pb.Ack | None] = queue.Queue()
        self.out.put(hello)
        self.call = rpc.PolicyStub(self.channel).subscribe(self._acks(), timeout=30,
                                                            metadata=metadata)
        self.updates: queue.Queue[pb.PolicyUpdate] = queue.Queue()
        self.error: grpc.RpcError | None = None
        self.done = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _acks(self) -> Iterator[pb.Ack]:
        while (a := self.out.get()) is not None:
            yield a

    def _read(self) -> None:
        try:
            for u in self.call:
                self.updates.put(u)
        except grpc.RpcError as exc:
            self.error = exc
        finally:
            self.done.set()

    def next(self, timeout: float = 10.0) -> pb.PolicyUpdate:
        return self.updates.get(timeout=timeout)

    def close(self) -> None:
        self.out.put(None)
        self.call.cancel()
        self.channel.close()


def test_protocol_nonce_ack_nack_and_never_resend(sidecar: Sidecar) -> None:
    admin = AdminClient(sidecar.address)
    s = RawSubscription(sidecar.address, pb.Ack(kind=pb.ACK_KIND_HELLO, adapter_id="A"))
    u1 = s.next()
    assert u1.version == 1 and len(u1.nonce) == 16 and u1.policy.mode == pb.MODE_TAILWISE
    # an answer quoting an unknown nonce is stale and ignored
    s.out.put(pb.Ack(kind=pb.ACK_KIND_ACK, nonce="bogus", version=1))
    s.out.put(pb.Ack(kind=pb.ACK_KIND_ACK, nonce=u1.nonce, version=1))
    v2 = admin.push_unchecked(nan_gamma_msg())
    u2 = s.next()
    assert u2.version == v2 == 2 and u2.nonce != u1.nonce
    s.out.put(pb.Ack(kind=pb.ACK_KIND_NACK, nonce=u2.nonce, version=2,
                     error_detail="boost.gamma: nan"))
    assert sidecar.policy_service.wait_for_adapter("A", lambda r: 2 in r.nacked, 10)
    s.close()
    rec = sidecar.policy_service.adapters()["A"]
    assert rec.nacked == {2} and rec.acked_version == 1 and "boost.gamma" in rec.last_error
    # reconnect as the same adapter: the NACKed version in force is NOT sent again, so
    # the first update this stream sees is the next version
    s2 = RawSubscription(sidecar.address, pb.Ack(kind=pb.ACK_KIND_HELLO, adapter_id="A"))
    assert sidecar.policy_service.wait_for_adapter("A", lambda r: r.streams == 1, 10)
    # a different adapter gets it (the NACK was A's)
    s3 = RawSubscription(sidecar.address, pb.Ack(kind=pb.ACK_KIND_HELLO, adapter_id="B"))
    assert s3.next().version == 2
    v3 = admin.push(neutral_policy().replace(mode=Mode.BOOST))
    assert s2.next().version == v3 == 3
    assert value(sidecar, "tailwise_stale_acks_total") == 1
    assert value(sidecar, "tailwise_policies_nacked_total") == 1
    assert value(sidecar, "tailwise_policies_acked_total") == 1
    for x in (s2, s3):
        x.close()
    admin.close()


def test_hello_carries_nacked_versions_for_a_restarted_sidecar(sidecar: Sidecar) -> None:
    admin = AdminClient(sidecar.address)
    v = admin.push_unchecked(nan_gamma_msg())
    s = RawSubscription(sidecar.address, pb.Ack(kind=pb.ACK_KIND_HELLO, adapter_id="fresh",
                                                nacked_versions=[v]))
    assert sidecar.policy_service.wait_for_adapter("fresh", lambda r: r.streams == 1, 10)
    v2 = admin.push(neutral_policy())
    assert s.next().version == v2 == v + 1  # version v was skipped
    s.close()
    admin.close()


def test_client_acks_good_nacks_bad_and_keeps_the_last_good(sidecar: Sidecar) -> None:
    admin = AdminClient(sidecar.address)
    swaps: list[int] = []
    with PolicyClient(sidecar.address, on_update=lambda p: swaps.append(p.version)) as c:
        assert isinstance(c, PolicySource)
        assert c.wait_for(lambda c: c.counters.acked == 1, 10)
        assert c.current().version == 1
        # non-monotone queues, injected through the testing hook
        msg = codec.policy_to_proto(neutral_policy())
        msg.queues.add(lo=0, hi=100, mean_len=50, density=0.1, w_base=1, w_urg=1, w_fair=1)
        msg.queues.add(lo=50, hi=200, mean_len=80, density=0.1, w_base=1, w_urg=1, w_fair=1)
        admin.push_unchecked(msg)
        assert c.wait_for(lambda c: c.counters.nacked == 1, 10)
        assert c.current().version == 1
        assert "queues[1].lo" in c.nacked_versions()[2]
        assert sidecar.policy_service.wait_for_adapter(
            c.adapter_id, lambda r: r.nacked == {2} and "queues[1].lo" in r.last_error, 10)
        admin.push(neutral_policy().replace(mode=Mode.BOOST))
        assert c.wait_for(lambda c: c.counters.acked == 2, 10)
        assert c.current().version == 3 and c.current().mode is Mode.BOOST
        # kill switch: FCFS at once
        admin.kill("test")
        assert c.wait_for(lambda c: c.current().mode is Mode.FCFS, 10)
    assert swaps == [1, 3, 4]
    admin.close()


def test_admin_validates_and_guards_the_testing_hook(tmp_path: Path) -> None:
    cfg = SidecarConfig(listen="127.0.0.1:0", metrics_port=-1, state_dir=tmp_path,
                        loop=LoopConfig(enabled=False))
    sc = Sidecar(cfg, use_default_learners=False).start()
    try:
        with AdminClient(sc.address) as admin:
            with pytest.raises(FailedPrecondition, match="testing hook"):
                admin.push_unchecked(nan_gamma_msg())
            raw = pb.SetPolicyRequest(action=pb.SET_POLICY_ACTION_SET, policy=nan_gamma_msg())
            with pytest.raises(InvalidArgument, match=r"boost\.gamma"):
                admin._set(raw)
            with pytest.raises(InvalidArgument, match="action"):
                admin._set(pb.SetPolicyRequest())
            version, policy = admin.current()
            assert version == 1 and policy.mode is Mode.TAILWISE  # the default initial policy
            assert not admin.resume()
    finally:
        sc.stop(0.5)


def test_health_and_reflection(sidecar: Sidecar) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(sidecar.address) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for svc in ("", "tailwise.v1.PolicyService", "tailwise.v1.TelemetryService"):
            r = health.Check(health_pb2.HealthCheckRequest(service=svc), timeout=5)
            assert r.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        resp = next(iter(refl.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)))
        names = {s.name for s in resp.list_services_response.service}
        assert {"tailwise.v1.PolicyService", "tailwise.v1.TelemetryService",
                "grpc.health.v1.Health"} <= names


def test_token_is_required_except_for_health(tmp_path: Path) -> None:
    sc = make_sidecar(tmp_path, token="s3cret")
    try:
        for token in (None, "wrong"):
            with AdminClient(sc.address, token=token) as admin, \
                    pytest.raises(Unauthenticated):
                admin.current()
            s = RawSubscription(sc.address, pb.Ack(kind=pb.ACK_KIND_HELLO),
                                rpc.bearer_metadata(token))
            assert s.done.wait(10) and s.error is not None
            assert s.error.code() == grpc.StatusCode.UNAUTHENTICATED
            s.close()
        with grpc.insecure_channel(sc.address) as ch:
            stub = rpc.TelemetryStub(ch)
            with pytest.raises(grpc.RpcError) as err:
                stub.report(iter([events_batch(1)]), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert r.status == health_pb2.HealthCheckResponse.SERVING
        with AdminClient(sc.address, token="s3cret") as admin:
            assert admin.current()[0] == 1
        with PolicyClient(sc.address, token="nope", max_backoff_s=0.2) as c:
            assert c.wait_for(lambda c: "Unauthenticated" in c.counters.last_error, 10)
            assert c.current().version == 0  # still the FCFS fallback
        assert value(sc, "tailwise_auth_failures_total") >= 5
    finally:
        sc.stop(0.5)


def test_non_local_bind_needs_tls_or_token_or_insecure(tmp_path: Path) -> None:
    cfg = SidecarConfig(listen="0.0.0.0:0", metrics_port=-1, state_dir=tmp_path)
    with pytest.raises(ConfigError, match="refusing to bind non-local"):
        Sidecar(cfg, use_default_learners=False)
    for ok in ({"token": "t"}, {"insecure": True}):
        Sidecar(SidecarConfig(listen="0.0.0.0:0", metrics_port=-1, state_dir=tmp_path, **ok),
                use_default_learners=False)


def test_fail_static_start_without_sidecar(tmp_path: Path) -> None:
    frozen = neutral_policy().replace(mode=Mode.BOOST, version=17)
    path = save(frozen, tmp_path / "p.json")
    with connect("127.0.0.1:1", frozen_file=path, initial_backoff_s=0.01,
                 max_backoff_s=0.05) as c:
        assert c.current().mode is Mode.BOOST and c.current().version == 17
        assert c.wait_for(lambda c: c.counters.reconnects >= 3, 10)
        assert c.current().version == 17 and not c.counters.connected
    path.write_text(path.read_text().replace("boost", "kairos"))
    c2 = PolicyClient("127.0.0.1:1", frozen_file=path)
    assert c2.current().mode is Mode.FCFS
    assert "sha256 mismatch" in c2.counters.frozen_error


def test_stream_rotation_reconnects_without_backoff(tmp_path: Path) -> None:
    sc = make_sidecar(tmp_path, stream_max_age_s=0.3)
    try:
        with PolicyClient(sc.address, initial_backoff_s=5.0, max_backoff_s=5.0) as c:
            assert c.wait_for(lambda c: c.counters.reconnects >= 2 and c.counters.acked >= 3, 15)
            assert c.counters.last_error == ""
            assert c.current().version == 1
    finally:
        sc.stop(0.5)


# -- telemetry --------------------------------------------------------------------------------
def req(i: int, t: float) -> ReqInfo:
    return ReqInfo(f"q{i}", t, 100 + i, slo_class="interactive", cached_tokens=10,
                   num_output_tokens=5)


def test_emitter_delivers_events_to_the_window(sidecar: Sidecar) -> None:
    with TelemetryEmitter(sidecar.address, engine_id="E1", flush_interval_s=0.01) as em:
        assert isinstance(em, TelemetrySink)
        for i in range(200):
            r = req(i, float(i))
            em.on_arrival(r, float(i))
            em.on_first_token(r, i + 0.1)
            em.on_finish(r, i + 0.5)
        em.on_step(StepStats(200.0, 0.01, 0, 1, 1, 0, 0.1, 0, 1))
        assert em.flush(15)
        c = em.counters
        assert c.sent == c.confirmed == 601 and c.dropped == 0
    sidecar.ingest.drain(10)
    assert len(sidecar.window) == 200
    assert sidecar.window.engine_now() == 200.0
    tr = sidecar.window.trace(0.0)
    assert tr is not None and list(tr.prompt_tokens[:3]) == [100, 101, 102]
    assert value(sidecar, "tailwise_events_ingested_total") == 601


def test_emitter_never_blocks_without_a_sidecar_and_counts_drops() -> None:
    em = TelemetryEmitter("127.0.0.1:1", max_queue=100, initial_backoff_s=0.01,
                          max_backoff_s=0.05).start()
    try:
        r = req(0, 0.0)
        for i in range(10_000):
            em.on_arrival(r, float(i))
        c = em.counters
        assert c.enqueued + c.dropped == 10_000
        assert c.dropped >= 10_000 - 100 - c.sent
        assert em.pending() <= 100
    finally:
        em.close(0)


def test_sidecar_ingest_drops_are_counted_and_never_block_senders(tmp_path: Path) -> None:
    sc = make_sidecar(tmp_path, ingest_buffer_batches=2)
    gate = threading.Event()
    real_apply = sc.window.apply

    def stuck_apply(batch: pb.EngineEvent) -> int:
        gate.wait(30)
        return real_apply(batch)

    sc.window.apply = stuck_apply  # type: ignore[method-assign]
    try:
        with grpc.insecure_channel(sc.address) as ch:
            stub = rpc.TelemetryStub(ch)
            batches = [events_batch(10, t0=100.0 * k, start=100 * k) for k in range(20)]
            summary = stub.report(iter(batches), timeout=10)  # returns although ingest is stuck
        assert summary.events_received == 20 * 20
        # one batch may be in the (stuck) ingest thread's hands, two in the buffer
        assert 17 * 20 <= summary.events_dropped <= 18 * 20
        assert value(sc, "tailwise_events_dropped_total", where="sidecar") == summary.events_dropped
    finally:
        gate.set()
        sc.stop(0.5)
    assert sc.ingest.dropped == summary.events_dropped


def test_emitter_reported_drops_reach_sidecar_metrics(sidecar: Sidecar) -> None:
    with grpc.insecure_channel(sidecar.address) as ch:
        stub = rpc.TelemetryStub(ch)
        b1 = events_batch(1)
        b1.emitter_dropped = 5
        b2 = events_batch(1, start=1)
        b2.emitter_dropped = 12
        stub.report(iter([b1, b2]), timeout=5)
    assert value(sidecar, "tailwise_events_dropped_total", where="emitter") == 12

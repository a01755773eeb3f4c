"""Integration with a REAL sidecar process (``tailwise sidecar``) on 127.0.0.1, port 0."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from learner_helpers import (
    SidecarProcess,
    metric,
    run_sidecar_expect_exit,
    scrape,
    self_signed,
)

from tailwise.engine_adapter.policy_client import PolicyClient
from tailwise.engine_adapter.telemetry import TelemetryEmitter
from tailwise.learner.admin import AdminClient
from tailwise.scorer.hooks import StepStats
from tailwise.scorer.policy import Mode, neutral_policy
from tailwise.scorer.request import ReqInfo
from tailwise.wire import codec
from tailwise.wire.errors import Unauthenticated, Unavailable

pytestmark = [pytest.mark.timeout(180)]


def poll(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """Cross-process condition (no event to wait on): bounded polling."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_subscribe_nack_ack_health_metrics(tmp_path: Path) -> None:
    sc = SidecarProcess(["--testing-allow-unchecked-push", "--no-loop"], tmp_path)
    try:
        assert sc.ready["policy_version"] == 1
        with grpc.insecure_channel(sc.address) as ch:
            r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert r.status == health_pb2.HealthCheckResponse.SERVING
        admin = AdminClient(sc.address)
        with PolicyClient(sc.address) as client:
            assert client.wait_for(lambda c: c.counters.acked == 1, 30)
            assert client.current().version == 1
            # a bad policy (NaN gamma) is NACKed with its reason and not applied
            bad = codec.policy_to_proto(neutral_policy().replace(mode=Mode.BOOST))
            bad.boost.gamma = math.nan
            assert admin.push_unchecked(bad) == 2
            assert client.wait_for(lambda c: c.counters.nacked == 1, 30)
            assert client.current().version == 1 and client.current().mode is Mode.TAILWISE
            assert "boost.gamma" in client.nacked_versions()[2]
            # the next good one is ACKed and applied
            assert admin.push(neutral_policy().replace(mode=Mode.BOOST)) == 3
            assert client.wait_for(lambda c: c.counters.acked == 2, 30)
            assert client.current().version == 3 and client.current().mode is Mode.BOOST

            def counted() -> bool:
                m = scrape(sc.metrics_port)
                return metric(m, "tailwise_policies_nacked_total") == 1 and \
                    metric(m, "tailwise_policies_acked_total") == 2
            poll(counted, 30, "ACK/NACK metrics")
            m = scrape(sc.metrics_port)
            assert metric(m, "tailwise_connected_adapters") == 1
            assert metric(m, "tailwise_policy_version") == 3
            assert metric(m, "tailwise_policies_pushed_total") == 3
        admin.close()
    finally:
        assert sc.terminate() == 0  # graceful SIGTERM shutdown


def test_token_and_tls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    (tmp_path / "token").write_text("tok-123\n")
    sc = SidecarProcess(["--token-file", str(tmp_path / "token"), "--tls-cert", str(cert),
                         "--tls-key", str(key), "--no-loop"], tmp_path / "state")
    try:
        with AdminClient(sc.address, token="tok-123", tls_ca=cert) as admin:
            assert admin.current()[0] == 1
        for token in (None, "wrong"):
            with AdminClient(sc.address, token=token, tls_ca=cert) as admin, \
                    pytest.raises(Unauthenticated):
                admin.current()
        with AdminClient(sc.address, token="tok-123", timeout_s=3) as plaintext, \
                pytest.raises(Unavailable):
            plaintext.current()
        with PolicyClient(sc.address, token="tok-123", tls_ca=cert) as client:
            assert client.wait_for(lambda c: c.counters.acked == 1, 30)
    finally:
        sc.terminate()


def test_non_local_bind_is_refused_without_tls_or_token(tmp_path: Path) -> None:
    res = run_sidecar_expect_exit(["--listen", "0.0.0.0:0"], tmp_path)
    assert res.returncode == 2
    assert "refusing to bind non-local address" in res.stderr


def _study_trials(storage: str) -> dict[int, tuple[str, float | None]]:
    import optuna

    from tailwise.bayes_opt.storage import open_storage

    st = optuna.load_study(study_name="tailwise", storage=open_storage(storage))
    return {t.number: (t.state.name, t.value) for t in st.get_trials(deepcopy=False)}


def test_sigkill_mid_stream_fail_static_and_resume(tmp_path: Path) -> None:
    have_tuner = True
    try:
        import tailwise.bayes_opt.tuner  # noqa: F401
    except ImportError:  # pragma: no cover - before bayes_opt lands
        have_tuner = False
    state = tmp_path / "state"
    cfg = tmp_path / "sidecar.json"
    cfg.write_text(json.dumps({"tuner": {"min_window_requests": 5, "seed": 3},
                               "window": {"trial_window_s": 30.0, "min_requests": 10},
                               "loop": {"n_trials": 2}}))
    args = ["--config", str(cfg), "--testing-allow-unchecked-push"]
    a = SidecarProcess(args, state)
    port = a.port
    admin = AdminClient(a.address)
    client = PolicyClient(a.address, initial_backoff_s=0.05, max_backoff_s=0.5).start()
    emitter = TelemetryEmitter(a.address, engine_id="eng", max_queue=500,
                               flush_interval_s=0.01, initial_backoff_s=0.05,
                               max_backoff_s=0.5).start()
    try:
        assert client.wait_for(lambda c: c.counters.acked == 1, 30)
        assert admin.push(neutral_policy().replace(mode=Mode.BOOST)) == 2
        assert client.wait_for(lambda c: c.current().version == 2, 30)
        # 45 engine seconds of traffic: one tuning round once 30 engine s have passed
        for i in range(45):
            r = ReqInfo(f"r{i}", float(i), 100 + 50 * (i % 5), num_output_tokens=10 + i)
            emitter.on_arrival(r, float(i))
            emitter.on_finish(r, i + 0.5)
        assert emitter.flush(30)
        n_complete = 0
        if have_tuner:
            poll(lambda: metric(scrape(a.metrics_port), "tailwise_trials",
                                'state="complete"') >= 2, 120, "two COMPLETE trials")
            poll(lambda: metric(scrape(a.metrics_port), "tailwise_tuning_rounds_total",
                                'outcome="kept_champion"')
                 + metric(scrape(a.metrics_port), "tailwise_tuning_rounds_total",
                          'outcome="promoted"') >= 1, 60, "the round to finish")
        version_before = client.current().version
        # mid-stream: subscription open, telemetry still flowing
        emitter.on_step(StepStats(45.0, 0.01, 0, 1, 1, 0, 0.1, 0, version_before))
        a.kill()
        assert client.wait_for(lambda c: not c.counters.connected, 30)
        # fail-static: the last good policy stays; reads and emits return (a blocking call
        # would hang here until the test timeout, as nothing answers them now)
        for _ in range(2000):
            assert client.current().version == version_before
            emitter.on_step(StepStats(45.0, 0.01, 0, 1, 1, 0, 0.1, 0, version_before))
        assert emitter.counters.dropped > 0  # queue bounded at 500: drops counted
        if have_tuner:
            before = _study_trials(str(state / "study.journal"))
            n_complete = sum(1 for s, _ in before.values() if s == "COMPLETE")
            assert n_complete >= 2
        reconnects = client.counters.reconnects
        # a new sidecar on the same port and state dir
        b = SidecarProcess(["--listen", f"127.0.0.1:{port}", *args], state)
        try:
            assert b.ready["policy_version"] == version_before
            assert client.wait_for(
                lambda c: c.counters.connected and c.counters.reconnects > reconnects, 60)
            assert client.wait_for(lambda c: c.counters.acked >= 3, 30)
            assert client.current().version == version_before
            with AdminClient(b.address) as admin_b:
                v = admin_b.push(neutral_policy().replace(mode=Mode.BOOST, note="after"))
            assert v == version_before + 1  # the counter resumed
            assert client.wait_for(lambda c: c.current().version == v, 30)
            assert emitter.flush(30)
            if have_tuner:
                after = _study_trials(str(state / "study.journal"))
                for number, (st, val) in before.items():
                    if st == "COMPLETE":
                        assert after[number] == (st, val)
        finally:
            assert b.terminate() == 0
    finally:
        client.close()
        emitter.close(0)
        admin.close()
        a.kill()

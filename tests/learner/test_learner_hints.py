"""Router hints served by the sidecar equal the hints the fleet simulator's routers read
(differential: one simulated engine feeds both a local HintTracker and the sidecar)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest

from tailwise.engine_adapter.telemetry import TelemetryEmitter
from tailwise.learner.config import HintsConfig, LoopConfig, SidecarConfig
from tailwise.learner.server import Sidecar
from tailwise.scorer.hints import HintTracker
from tailwise.scorer.registry import make_named
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import EngineConfig, Simulator
from tailwise.simulator.fleet import TeeSink
from tailwise.simulator.workload import generate, rate_scale_for_load
from tailwise.wire import rpc

pytestmark = pytest.mark.timeout(90)
M = H100_LLAMA3_8B


def _get(url: str, token: str | None = None) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_sidecar_hints_equal_the_simulators(tmp_path: Path) -> None:
    cfg = EngineConfig(num_gpu_blocks=4000)
    # the engine below runs FCFS, so the sidecar publishes FCFS too (horizon 0)
    sc = Sidecar(SidecarConfig(listen="127.0.0.1:0", metrics_port=-1, state_dir=tmp_path,
                               loop=LoopConfig(enabled=False), initial_policy="fcfs",
                               hints=HintsConfig(port=0, kv_total_blocks=cfg.num_gpu_blocks,
                                                 step_budget=cfg.max_num_batched_tokens)),
                 use_default_learners=False).start()
    try:
        tr = generate(600, rate_rps=20.0, seed=5)
        tr = tr.scaled(rate_scale_for_load(tr, 1.5, cfg, M))
        local = HintTracker("E7", M, kv_total_blocks=cfg.num_gpu_blocks,
                            step_budget=cfg.max_num_batched_tokens)
        with TelemetryEmitter(sc.address, engine_id="E7", flush_interval_s=0.01) as em:
            sim = Simulator(tr, make_named("fcfs", M), cfg, M, sink=TeeSink([local, em]))
            arr = tr.arrival_s.tolist()
            stop = len(arr) * 2 // 3  # mid-run, with a queue and KV in use
            for i in range(stop):
                sim.advance(arr[i], arr[i])
                sim.offer(i)
            assert em.flush(30)
        sc.ingest.drain(30)
        want = local.hints()
        assert want.queue_depth > 0 and want.kv_pressure > 0  # a non-trivial state
        with grpc.insecure_channel(sc.address) as ch:
            got = rpc.HintStub(ch).get_hints("E7", timeout=10).replicas
        assert len(got) == 1
        g = got[0]
        assert (g.replica, g.queue_depth, g.queue_tokens, g.running, g.kv_used_blocks) == (
            "E7", want.queue_depth, want.queue_tokens, want.running, want.kv_used_blocks)
        assert g.queue_s == pytest.approx(want.queue_s)
        assert g.kv_pressure == pytest.approx(want.kv_pressure)
        assert g.admission_horizon_s == 0.0 and g.policy_mode == "fcfs"
        code, body = _get(f"http://127.0.0.1:{sc.hints_port}/v1/hints")
        assert code == 200
        (one,) = body["replicas"]  # type: ignore[misc]
        assert one["queue_depth"] == want.queue_depth and one["queue_tokens"] == want.queue_tokens
        code, body = _get(f"http://127.0.0.1:{sc.hints_port}/v1/hints/E7")
        assert code == 200 and body["kv_used_blocks"] == want.kv_used_blocks
        assert _get(f"http://127.0.0.1:{sc.hints_port}/v1/hints/nope")[0] == 404
        with grpc.insecure_channel(sc.address) as ch, pytest.raises(grpc.RpcError) as err:
            rpc.HintStub(ch).get_hints("nope", timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        sc.stop(0.5)


def test_hints_http_needs_the_token_when_one_is_set(tmp_path: Path) -> None:
    sc = Sidecar(SidecarConfig(listen="127.0.0.1:0", metrics_port=-1, state_dir=tmp_path,
                               loop=LoopConfig(enabled=False), token="s3cret",
                               hints=HintsConfig(port=0)), use_default_learners=False).start()
    try:
        url = f"http://127.0.0.1:{sc.hints_port}/v1/hints"
        assert _get(url)[0] == 401
        assert _get(url, "wrong")[0] == 401
        assert _get(url, "s3cret") == (200, {"replicas": []})
    finally:
        sc.stop(0.5)


def test_a_bad_step_record_never_reaches_the_hints() -> None:
    """The hint book takes step records through the codec's one check: a NaN KV usage or
    a negative count is skipped and counted; a good record moves the hints."""
    from tailwise.learner.hints import HintBook
    from tailwise.wire.v1 import policy_pb2 as pb

    book = HintBook(kv_total_blocks=1000, step_budget=8192)
    batch = pb.EngineEvent(engine_id="E1")
    batch.steps.add(time=1.0, step_time_s=0.01, running=3, waiting=2, kv_usage=0.5)
    book.apply(batch)
    (before, _), = book.snapshot()
    assert (before.running, before.kv_pressure) == (3, 0.5)
    bad = pb.EngineEvent(engine_id="E1")
    bad.steps.add(time=2.0, step_time_s=0.01, running=9, kv_usage=float("nan"))
    bad.steps.add(time=2.0, step_time_s=0.01, running=9, waiting=-1, kv_usage=0.9)
    bad.steps.add(time=float("inf"), step_time_s=0.01, running=9, kv_usage=0.9)
    book.apply(bad)
    assert book.rejected_steps == 3
    (after, _), = book.snapshot()
    assert (after.running, after.kv_pressure) == (3, 0.5)


def test_a_request_event_with_a_bad_time_is_skipped() -> None:
    """A NaN arrival used to sit at the head of the tracker's recent arrivals for good (no
    comparison with NaN is true), so the replica's queue hints only grew. The hint book
    now skips request events whose time is no engine time: its hints equal a clean
    replay's."""
    from tailwise.learner.hints import HintBook
    from tailwise.wire.v1 import policy_pb2 as pb

    kinds = pb.RequestEventKind

    def feed(book: HintBook, bad: bool) -> None:
        if bad:
            b = pb.EngineEvent(engine_id="E1")
            b.requests.add(kind=kinds.REQUEST_EVENT_KIND_ARRIVAL, request_id="x",
                           time=float("nan"), prompt_tokens=50)
            b.requests.add(kind=kinds.REQUEST_EVENT_KIND_ARRIVAL, request_id="y",
                           time=float("inf"), prompt_tokens=50)
            book.apply(b)
        for i in range(5):
            b = pb.EngineEvent(engine_id="E1")
            t = 1.0 + i
            b.requests.add(kind=kinds.REQUEST_EVENT_KIND_ARRIVAL, request_id=f"r{i}", time=t,
                           prompt_tokens=20)
            b.requests.add(kind=kinds.REQUEST_EVENT_KIND_FIRST_TOKEN, request_id=f"r{i}",
                           time=t + 0.1)
            b.steps.add(time=t + 0.5, step_time_s=0.01, running=1, kv_usage=0.1)
            book.apply(b)

    clean, dirty = (HintBook(kv_total_blocks=1000, step_budget=8192) for _ in range(2))
    feed(clean, False)
    feed(dirty, True)
    assert dirty.rejected_requests == 2
    (want, _), = clean.snapshot()
    (got, _), = dirty.snapshot()
    assert (got.queue_depth, got.queue_tokens) == (want.queue_depth, want.queue_tokens)

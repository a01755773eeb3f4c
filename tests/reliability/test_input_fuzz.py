"""Fuzzed telemetry and traces: malformed input is rejected or counted, never a crash.

Telemetry goes to a real sidecar process. Each hypothesis batch mixes events that are
valid by construction with events broken by construction (non-finite/negative/absurd
times, empty or oversized ids, negative counts, unknown kinds, an ARRIVAL without a
prompt, a FINISHED before its arrival, bad step fields). The sidecar must count exactly
the valid ones as accepted and the broken ones as rejected, and keep serving. Raw garbage
bytes, an oversized message and events from the engine-side emitter with NaN/negative
values complete it.

Traces: generated CSV (generic format) and Mooncake JSONL files mixing good rows and rows
broken by construction. ``skip_bad`` loading must keep exactly the good rows and count
the rest; strict loading must fail with a TraceError naming the line iff a row is bad;
the simulator runs whatever loaded.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import given
from hypothesis import strategies as st
from support.fuzz import fuzz_settings

from tailwise.engine_adapter.telemetry import TelemetryEmitter
from tailwise.lab.sidecar_process import SidecarSubprocess
from tailwise.learner.admin import AdminClient
from tailwise.scorer.hooks import StepStats
from tailwise.scorer.registry import build_scheduler, default_policy
from tailwise.scorer.request import ReqInfo
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import EngineConfig, simulate
from tailwise.simulator.traces import TraceError, load_trace
from tailwise.wire import rpc
from tailwise.wire.v1 import policy_pb2 as pb

pytestmark = [pytest.mark.timeout(240)]

_ids = itertools.count()


def tally(figures: dict[str, Any], **counts: int) -> None:
    """Add to the session's reliability figures (printed at the end, not asserted)."""
    for key, n in counts.items():
        figures[key] = int(figures.get(key, 0)) + n

BAD_TIMES = [math.nan, math.inf, -math.inf, -1.0, -1e-9, 2e11, 1e300]


def rid() -> str:
    return f"r{next(_ids)}"


@st.composite
def good_event(draw: st.DrawFn) -> tuple[str, Any]:
    t = draw(st.floats(0.0, 1e6))
    kind = draw(st.sampled_from(["arrival", "progress", "step"]))
    if kind == "step":
        return "step", pb.StepEvent(
            time=t, step_time_s=draw(st.floats(0.0, 10.0)), prefill_tokens=draw(st.integers(0, 8192)),
            decode_requests=draw(st.integers(0, 256)), running=draw(st.integers(0, 256)),
            waiting=draw(st.integers(0, 10**6)), kv_usage=draw(st.floats(0.0, 1.0)),
            preempted=draw(st.integers(0, 10)), policy_version=draw(st.integers(0, 10**9)))
    ev = pb.RequestEvent(request_id=rid(), time=t, prompt_tokens=draw(st.integers(1, 10**6)),
                         cached_tokens=draw(st.integers(0, 100)),
                         output_tokens=draw(st.integers(0, 10**5)), slo_class="interactive")
    ev.kind = pb.REQUEST_EVENT_KIND_ARRIVAL if kind == "arrival" else draw(st.sampled_from(
        [pb.REQUEST_EVENT_KIND_FIRST_TOKEN, pb.REQUEST_EVENT_KIND_TOKENS,
         pb.REQUEST_EVENT_KIND_PREEMPTED]))
    return "request", ev


@st.composite
def bad_event(draw: st.DrawFn) -> tuple[str, Any]:
    fault = draw(st.sampled_from(["time", "id_empty", "id_long", "negative", "kind",
                                  "no_prompt", "finish_before_arrival", "step_time",
                                  "step_kv", "step_negative", "step_duration"]))
    ev = pb.RequestEvent(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id=rid(), time=1.0,
                         prompt_tokens=100)
    if fault == "time":
        ev.time = draw(st.sampled_from(BAD_TIMES))
    elif fault == "id_empty":
        ev.request_id = ""
    elif fault == "id_long":
        ev.request_id = "x" * draw(st.integers(513, 4000))
    elif fault == "negative":
        setattr(ev, draw(st.sampled_from(["prompt_tokens", "cached_tokens", "output_tokens",
                                          "num_preemptions"])), -draw(st.integers(1, 2**62)))
    elif fault == "kind":
        ev.kind = draw(st.sampled_from([0, 6, 99]))  # type: ignore[assignment]
    elif fault == "no_prompt":
        ev.prompt_tokens = 0
    elif fault == "finish_before_arrival":
        ev.kind = pb.REQUEST_EVENT_KIND_FINISHED
        ev.arrival_time = ev.time + draw(st.floats(1.0, 1e6))
    if fault.startswith("step"):
        st_ev = pb.StepEvent(time=1.0, step_time_s=0.01, kv_usage=0.5)
        if fault == "step_time":
            st_ev.time = draw(st.sampled_from(BAD_TIMES))
        elif fault == "step_kv":
            st_ev.kv_usage = draw(st.sampled_from([math.nan, -0.1, 1.6, math.inf]))
        elif fault == "step_duration":
            st_ev.step_time_s = draw(st.sampled_from([math.nan, -1.0, math.inf]))
        else:
            setattr(st_ev, draw(st.sampled_from(["prefill_tokens", "decode_requests", "running",
                                                 "waiting", "preempted"])), -1)
        return "step", st_ev
    return "request", ev


class Sidecar:
    def __init__(self, tmp: Path) -> None:
        self.sc = SidecarSubprocess(["--state-dir", str(tmp / "state"), "--metrics-port", "-1",
                                     "--no-loop", "--log-level", "ERROR"], tmp / "sidecar.log")
        self.admin = AdminClient(self.sc.address)
        self.channel = grpc.insecure_channel(self.sc.address)
        self.stub = rpc.TelemetryStub(self.channel)

    def counts(self) -> tuple[int, int]:
        s = self.admin.status()
        return int(s.events_accepted), int(s.events_rejected)

    def wait_counts(self, want: tuple[int, int], timeout: float = 30.0) -> tuple[int, int]:
        deadline = time.monotonic() + timeout
        got = self.counts()
        while sum(got) < sum(want) and time.monotonic() < deadline:
            time.sleep(0.02)  # the ingest thread applies batches asynchronously
            got = self.counts()
        return got

    def healthy(self) -> bool:
        r = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(),
                                                           timeout=10)
        return bool(r.status == health_pb2.HealthCheckResponse.SERVING
                    and self.sc.proc.poll() is None)

    def close(self) -> None:
        self.channel.close()
        self.admin.close()
        self.sc.stop(grace_s=5.0)


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    s = Sidecar(tmp_path_factory.mktemp("telemetry"))
    yield s
    s.close()


@fuzz_settings(60)
@given(good=st.lists(good_event(), max_size=30), bad=st.lists(bad_event(), max_size=30),
       seed=st.integers(0, 2**32 - 1))
def test_malformed_telemetry_is_counted_never_fatal(
        sidecar: Sidecar, figures: dict[str, Any], good: list[tuple[str, Any]],
        bad: list[tuple[str, Any]], seed: int) -> None:
    events = good + bad
    np.random.default_rng(seed).shuffle(events)  # type: ignore[arg-type]
    batch = pb.EngineEvent(engine_id="fuzz")
    for where, ev in events:
        (batch.steps if where == "step" else batch.requests).append(ev)
    acc0, rej0 = sidecar.counts()
    summary = sidecar.stub.report(iter([batch]), timeout=30)
    assert summary.events_received == len(events)
    acc, rej = sidecar.wait_counts((acc0 + len(good), rej0 + len(bad)))
    assert (acc - acc0, rej - rej0) == (len(good), len(bad))
    tally(figures, telemetry_events_fuzzed=len(events), telemetry_bad_events_rejected=len(bad))


def test_garbage_bytes_and_oversized_messages(sidecar: Sidecar) -> None:
    raw = sidecar.channel.stream_unary(rpc.REPORT)  # no serializers: raw bytes on the wire
    for blob in (b"\xff" * 100, b"\x1a\x05\x08", bytes(range(256))):
        with pytest.raises(grpc.RpcError):
            raw(iter([blob]), timeout=10)
        assert sidecar.healthy()
    big = pb.EngineEvent(engine_id="big")
    big.requests.add(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id="x", time=1.0,
                     prompt_tokens=1, slo_class="s" * (5 * 1024 * 1024))
    wide = grpc.insecure_channel(sidecar.sc.address,
                                 options=[("grpc.max_send_message_length", 64 << 20)])
    try:
        with pytest.raises(grpc.RpcError) as err:
            rpc.TelemetryStub(wide).report(iter([big]), timeout=10)
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        wide.close()
    assert sidecar.healthy()
    acc0, rej0 = sidecar.counts()
    good = pb.EngineEvent(engine_id="after")
    good.steps.add(time=5.0, step_time_s=0.01, kv_usage=0.1)
    sidecar.stub.report(iter([good]), timeout=10)
    assert sidecar.wait_counts((acc0 + 1, rej0)) == (acc0 + 1, rej0)


def test_engine_side_emitter_survives_bad_values(sidecar: Sidecar) -> None:
    """The engine calls the emitter with whatever its bookkeeping holds; the call
    returns at once and the sidecar rejects (and counts) what is malformed."""
    acc0, rej0 = sidecar.counts()
    with TelemetryEmitter(sidecar.sc.address, engine_id="eng", flush_interval_s=0.01) as em:
        bad = ReqInfo("", math.nan, -5)
        em.on_arrival(bad, math.nan)
        em.on_finish(ReqInfo("r-neg", 10.0, 100), -1.0)
        em.on_step(StepStats(math.inf, -1.0, -3, 0, 0, 0, math.nan, 0, 0))
        em.on_arrival(ReqInfo("r-ok", 3.0, 100), 3.0)
        assert em.flush(30)
    assert sidecar.wait_counts((acc0 + 1, rej0 + 3)) == (acc0 + 1, rej0 + 3)
    assert sidecar.healthy()


# -- traces -------------------------------------------------------------------------------
CSV_BAD = {
    "prompt": ["0", "-5", "abc", "", "1.5", "nan", "inf", "1e400", "True"],
    "output": ["0", "-1", "x", "", "2.5", "-inf"],
    "time": ["nan", "inf", "-inf", "", "yesterday"],
}


@st.composite
def csv_rows(draw: st.DrawFn) -> tuple[list[str], list[tuple[float, int, int]], int]:
    """(lines, the good rows as parsed, number of bad rows)."""
    lines = ["arrival,prompt_tokens,output_tokens"]
    good: list[tuple[float, int, int]] = []
    t, n_bad = 0.0, 0
    for _ in range(draw(st.integers(0, 40))):
        if draw(st.integers(0, 3)) > 0:
            t += draw(st.floats(0.0, 5.0))
            p, o = draw(st.integers(1, 20_000)), draw(st.integers(1, 2_000))
            lines.append(f"{t!r},{p},{o}")
            good.append((t, p, o))
            continue
        n_bad += 1
        field = draw(st.sampled_from(["prompt", "output", "time", "short", "order"]))
        if field == "order" and good and t >= 1.0:
            lines.append(f"{t - 1.0!r},10,10")
        elif field == "short" or field == "order":
            lines.append(f"{t!r},10")
        else:
            v = draw(st.sampled_from(CSV_BAD[field]))
            row = {"time": repr(t), "prompt": "10", "output": "10", field: v}
            lines.append(f"{row['time']},{row['prompt']},{row['output']}")
    return lines, good, n_bad


@st.composite
def jsonl_rows(draw: st.DrawFn) -> tuple[list[str], list[tuple[float, int, int]], int]:
    lines: list[str] = []
    good: list[tuple[float, int, int]] = []
    t, n_bad = 0.0, 0
    for _ in range(draw(st.integers(0, 40))):
        if draw(st.integers(0, 3)) > 0:
            t += draw(st.integers(0, 5000))
            p, o = draw(st.integers(1, 20_000)), draw(st.integers(1, 2_000))
            rec = {"timestamp": t, "input_length": p, "output_length": o,
                   "hash_ids": draw(st.lists(st.integers(0, 10**6), max_size=4))}
            lines.append(json.dumps(rec))
            good.append((t / 1000.0, p, o))
            continue
        n_bad += 1
        lines.append(draw(st.sampled_from([
            "{not json", "[1, 2, 3]", '"a string"',
            json.dumps({"timestamp": "soon", "input_length": 5, "output_length": 5}),
            json.dumps({"timestamp": t, "input_length": -3, "output_length": 5}),
            json.dumps({"timestamp": t, "input_length": 5, "output_length": None}),
            json.dumps({"timestamp": t, "input_length": 5, "output_length": 5,
                        "hash_ids": ["a", 1]}),
            json.dumps({"timestamp": t, "input_length": 5.5, "output_length": 5}),
        ])))
    if lines and not lines[0].startswith("{"):  # keep format detection on the first line
        lines.insert(0, json.dumps({"timestamp": 0, "input_length": 1, "output_length": 1}))
        good.insert(0, (0.0, 1, 1))
    return lines, good, n_bad


@fuzz_settings(80)
@given(case=st.one_of(csv_rows().map(lambda c: ("csv", c)),
                      jsonl_rows().map(lambda c: ("jsonl", c))))
def test_malformed_trace_rows_are_counted_or_refused(
        tmp_path_factory: pytest.TempPathFactory, figures: dict[str, Any],
        case: tuple[str, tuple[list[str], list[tuple[float, int, int]], int]]) -> None:
    ext, (lines, good, n_bad) = case
    path = tmp_path_factory.mktemp("trace") / f"fuzz.{ext}"
    path.write_text("\n".join(lines) + "\n")
    tally(figures, trace_rows_fuzzed=len(good) + n_bad, trace_bad_rows_counted=n_bad)
    if n_bad:
        with pytest.raises(TraceError, match=r":\d+: "):
            load_trace(path)
    if not good:
        with pytest.raises(TraceError):
            load_trace(path, skip_bad=True)
        return
    tr = load_trace(path, skip_bad=True)
    assert (len(tr), tr.skipped) == (len(good), n_bad)
    t = np.array([g[0] for g in good])
    assert np.allclose(tr.arrival_s, t - t[0])
    assert tr.prompt_tokens.tolist() == [g[1] for g in good]
    assert tr.output_tokens.tolist() == [g[2] for g in good]
    policy = default_policy("tailwise", H100_LLAMA3_8B)
    assert policy is not None
    res = simulate(tr, build_scheduler(policy), EngineConfig(num_gpu_blocks=2000),
                   H100_LLAMA3_8B)
    done = np.isfinite(res.records.finish) | res.records.rejected
    assert done.all()

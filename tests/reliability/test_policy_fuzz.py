"""Fuzzed policy pushes: bad PolicyUpdates are NACKed with a reason and never applied.

A real sidecar (``--testing-allow-unchecked-push``) publishes whatever wire policy the test
hands it; the adapter's PolicyClient must validate each one. Three families:

* **adversarial** (hypothesis): a valid policy with one field broken according to the
  documented contract (DESIGN.md §The policy object): NaN, ±inf, negative, above its
  range ("huge"), non-monotone/overlapping queue boundaries, max_boost_s > aging_s,
  unspecified/unknown enums, a missing sub-message, a bad schema version. The test's own
  table of ranges is the oracle: every one of them must be NACKed, naming a field.
* **random** (hypothesis): every field drawn at random (NaN/inf included). Whatever the
  client decides, it must answer; a NACK carries a reason and changes nothing, an ACK
  puts exactly that policy in force.
* **truncated bytes**: a valid serialized policy cut at every byte. Cuts that still parse
  are pushed — they must be NACKed when a required sub-message was lost and ACKed when only
  the trailing note/extra were; cuts that do not parse cannot be published, so they are
  served raw by a fake PolicyService: the client must survive the undecodable stream, keep
  its policy, and take the next valid update.

At the end a short engine run (simulator + the same client) shows only ACKed versions
were ever in force; the sidecar's NACK counter matches the client's.
"""

from __future__ import annotations

import math
import threading
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.fuzz import fuzz_settings

from tailwise.engine_adapter.policy_client import PolicyClient
from tailwise.lab.sidecar_process import SidecarSubprocess
from tailwise.learner.admin import AdminClient
from tailwise.scorer.policy import SCHEMA_VERSION, Mode, Policy, QueueSpec, neutral_policy
from tailwise.scorer.registry import build_scheduler, default_policy
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import EngineConfig, simulate
from tailwise.simulator.traces import Trace
from tailwise.wire import codec, rpc
from tailwise.wire.v1 import policy_pb2 as pb

pytestmark = [pytest.mark.timeout(240)]

INF = math.inf
#: (path in pb.Policy, lowest valid, highest valid) — DESIGN.md §The policy object
FLOATS: list[tuple[tuple[str, ...], float, float]] = [
    (("created_at",), 0.0, INF),
    (("queues", "0", "lo"), 0.0, INF), (("queues", "0", "mean_len"), 0.0, INF),
    (("queues", "0", "density"), 0.0, INF), (("queues", "1", "w_base"), 0.0, INF),
    (("queues", "1", "w_urg"), 0.0, INF), (("queues", "1", "w_fair"), 0.0, INF),
    (("ewsjf", "base", "a"), 0.0, INF), (("ewsjf", "urg", "a"), 0.0, INF),
    (("ewsjf", "fair", "c"), -INF, INF), (("ewsjf", "alpha"), 0.0, 100.0),
    (("ewsjf", "refresh_s"), 0.0, INF), (("ewsjf", "bubble", "w_base"), 0.0, INF),
    (("boost", "gamma"), 0.01, 50.0), (("boost", "gamma_min"), 1e-6, 0.1),
    (("boost", "ada_target_s"), 1e-3, INF), (("boost", "ada_quantile"), 0.5, 0.9999),
    (("boost", "ada_step"), 1.0001, 10.0), (("boost", "memguard_theta_s"), 1e-6, 3600.0),
    (("boost", "memguard_ratio"), 1.0001, 100.0),
    (("slo", "ttft_s"), 1e-3, 86400.0), (("slo", "tpot_s"), 1e-4, 3600.0),
    (("slo", "classes", "0", "ttft_s"), 1e-3, 86400.0),
    (("safety", "aging_s"), 120.0, 86400.0), (("safety", "max_boost_s"), 0.0, 240.0),
    (("step_time", "prefill_fixed_ms"), 0.0, INF), (("step_time", "decode_per_ctx_ms"), 0.0, INF),
]
INTS: list[tuple[tuple[str, ...], int, int]] = [
    (("ewsjf", "max_queues"), 2, 256), (("ewsjf", "refresh_requests"), 1, 10_000_000),
    (("ewsjf", "reservoir_size"), 16, 10_000_000), (("boost", "ada_window"), 10, 1_000_000),
    (("slo", "window"), 1, 100_000),
]
ENUMS = [("mode",), ("source",), ("boost", "variant"), ("preemption", "mode")]
REQUIRED = ["ewsjf", "boost", "preemption", "slo", "safety", "step_time"]

COUNTS: dict[str, int] = {"adversarial_tried": 0, "adversarial_nacked": 0,
                          "random_tried": 0, "random_nacked": 0, "random_acked": 0,
                          "truncated_tried": 0, "truncated_nacked": 0, "truncated_acked": 0,
                          "undecodable_served": 0}


def base_policy() -> Policy:
    p = default_policy("tailwise", H100_LLAMA3_8B)
    assert p is not None
    queues = (QueueSpec(0.0, 512.0, 200.0, 0.002), QueueSpec(512.0, 4096.0, 1500.0, 0.0003))
    return p.replace(queues=queues, note="fuzz base", extra=(("k", "v"),))


def base_msg() -> pb.Policy:
    return codec.policy_to_proto(base_policy())


def _target(msg: Any, path: tuple[str, ...]) -> tuple[Any, str]:
    obj = msg
    for part in path[:-1]:
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj, path[-1]


def put(msg: pb.Policy, path: tuple[str, ...], value: Any) -> pb.Policy:
    obj, name = _target(msg, path)
    setattr(obj, name, value)
    return msg


@st.composite
def adversarial(draw: st.DrawFn) -> tuple[str, pb.Policy]:
    msg = base_msg()
    kind = draw(st.sampled_from(["nan", "inf", "negative", "huge", "int", "queues", "envelope",
                                 "enum", "missing", "schema"]))
    if kind in ("nan", "inf"):
        path, _, _ = draw(st.sampled_from(FLOATS))
        value = math.nan if kind == "nan" else draw(st.sampled_from([INF, -INF]))
        return f"{'.'.join(path)}={value}", put(msg, path, value)
    if kind == "negative":
        path, lo, _ = draw(st.sampled_from([f for f in FLOATS if f[1] >= 0]))
        value = -draw(st.floats(min_value=1e-9, max_value=1e300))
        return f"{'.'.join(path)}={value}", put(msg, path, value)
    if kind == "huge":
        path, _, hi = draw(st.sampled_from([f for f in FLOATS if math.isfinite(f[2])]))
        value = hi * draw(st.floats(min_value=1.01, max_value=1e200))
        return f"{'.'.join(path)}={value}", put(msg, path, value)
    if kind == "int":
        path, lo, hi = draw(st.sampled_from(INTS))
        value = draw(st.one_of(st.integers(-(2**63), lo - 1), st.integers(hi + 1, 2**63 - 1)))
        return f"{'.'.join(path)}={value}", put(msg, path, value)
    if kind == "queues":
        how = draw(st.sampled_from(["reversed", "empty", "overlap", "unsorted"]))
        q0, q1 = msg.queues[0], msg.queues[1]
        if how == "reversed":
            q0.lo, q0.hi = q0.hi, q0.lo
        elif how == "empty":
            q1.hi = q1.lo
        elif how == "overlap":
            q1.lo = q0.hi - draw(st.floats(min_value=1.0, max_value=q0.hi - q0.lo))
        else:
            a, b = pb.QueueSpec(), pb.QueueSpec()
            a.CopyFrom(q0)
            b.CopyFrom(q1)
            del msg.queues[:]
            msg.queues.extend([b, a])
        return f"queues {how}", msg
    if kind == "envelope":  # max_boost_s above aging_s
        msg.safety.max_boost_s = msg.safety.aging_s * draw(st.floats(1.001, 100.0))
        return "max_boost_s > aging_s", msg
    if kind == "enum":
        path = draw(st.sampled_from(ENUMS))
        value = draw(st.sampled_from([0, 6, 99, 2**31 - 1]))
        if path == ("boost", "variant") and value == 6:
            value = 4  # first unknown variant
        return f"{'.'.join(path)}={value}", put(msg, path, value)
    if kind == "missing":
        name = draw(st.sampled_from(REQUIRED))
        msg.ClearField(name)  # type: ignore[arg-type]
        return f"{name} missing", msg
    msg.schema_version = draw(st.sampled_from([0, SCHEMA_VERSION + 1, 99]))
    return f"schema_version={msg.schema_version}", msg


def _floats() -> st.SearchStrategy[float]:
    return st.floats(allow_nan=True, allow_infinity=True, width=64)


@st.composite
def random_policy(draw: st.DrawFn) -> pb.Policy:
    """Every leaf of a valid message replaced by an arbitrary value of its type."""
    msg = base_msg()

    def fill(m: Any) -> None:
        for f in m.DESCRIPTOR.fields:
            if f.is_repeated:
                if f.message_type is not None:
                    for sub in getattr(m, f.name):
                        fill(sub)
                continue
            if f.message_type is not None:
                if m.HasField(f.name) and draw(st.booleans()):
                    fill(getattr(m, f.name))
                continue
            if draw(st.integers(0, 15)) != 0:  # leave most fields valid
                continue
            if f.type == f.TYPE_DOUBLE:
                setattr(m, f.name, draw(st.one_of(_floats(), st.floats(0.5, 10.0))))
            elif f.type in (f.TYPE_INT64,):
                setattr(m, f.name, draw(st.integers(-(2**63), 2**63 - 1)))
            elif f.type in (f.TYPE_UINT32, f.TYPE_UINT64):
                setattr(m, f.name, draw(st.integers(0, 2**32 - 1)))
            elif f.type == f.TYPE_BOOL:
                setattr(m, f.name, draw(st.booleans()))
            elif f.type == f.TYPE_ENUM:
                setattr(m, f.name, draw(st.integers(0, 7)))
            elif f.type == f.TYPE_STRING:
                setattr(m, f.name, draw(st.text(max_size=20)))

    fill(msg)
    return msg


class Rig:
    def __init__(self, tmp: Path) -> None:
        self.sc = SidecarSubprocess(
            ["--state-dir", str(tmp / "state"), "--metrics-port", "0", "--no-loop",
             "--testing-allow-unchecked-push", "--log-level", "ERROR"], tmp / "sidecar.log")
        self.admin = AdminClient(self.sc.address)
        self.client = PolicyClient(self.sc.address, initial_backoff_s=0.05,
                                   max_backoff_s=0.5).start()
        assert self.client.wait_for(lambda c: c.counters.acked >= 1, 30)
        self.acked: list[int] = [self.client.current().version]

    def push(self, msg: pb.Policy) -> tuple[bool, str]:
        """Publish unchecked; returns (ACKed?, NACK reason) once the client answered."""
        before = self.client.current()
        v = self.admin.push_unchecked(msg)
        assert self.client.wait_for(
            lambda c: v in c.nacked_versions() or c.current().version == v, 20), \
            f"no answer to version {v}"
        reason = self.client.nacked_versions().get(v)
        if reason is not None:
            assert self.client.current() is before  # never applied
            return False, reason
        self.acked.append(v)
        return True, ""

    def close(self) -> None:
        self.client.close()
        self.admin.close()
        self.sc.stop(grace_s=5.0)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    r = Rig(tmp_path_factory.mktemp("fuzz"))
    yield r
    r.close()


@fuzz_settings(400)
@given(case=adversarial())
def test_adversarial_policies_are_nacked_with_a_reason(rig: Rig, case: tuple[str, pb.Policy]
                                                       ) -> None:
    what, msg = case
    COUNTS["adversarial_tried"] += 1
    acked, reason = rig.push(msg)
    assert not acked, f"{what} was applied"
    COUNTS["adversarial_nacked"] += 1
    assert reason and ":" in reason, f"{what}: NACK without a reason naming the field"


@fuzz_settings(200)
@given(msg=random_policy())
def test_random_policies_are_answered_and_only_valid_ones_applied(rig: Rig, msg: pb.Policy
                                                                  ) -> None:
    COUNTS["random_tried"] += 1
    acked, reason = rig.push(msg)
    if acked:
        COUNTS["random_acked"] += 1
        applied = rig.client.current()
        applied.validate()
        again = pb.Policy()
        again.CopyFrom(msg)
        again.version = applied.version
        again.note = again.note or applied.note  # the sidecar labels an empty note
        assert codec.policy_from_proto(again) == applied
    else:
        COUNTS["random_nacked"] += 1
        assert reason


def test_truncated_policies(rig: Rig) -> None:
    data = base_msg().SerializeToString()
    undecodable: list[bytes] = []
    for cut in range(len(data)):
        msg = pb.Policy()
        try:
            msg.ParseFromString(data[:cut])
        except Exception:
            undecodable.append(data[:cut])
            continue
        COUNTS["truncated_tried"] += 1
        complete = all(msg.HasField(f) for f in REQUIRED)  # type: ignore[arg-type]
        acked, reason = rig.push(msg)
        if complete:  # only trailing note/extra were cut: still a valid policy
            assert acked, reason
            COUNTS["truncated_acked"] += 1
        else:
            assert not acked and reason
            COUNTS["truncated_nacked"] += 1
    assert undecodable and COUNTS["truncated_nacked"] > 0


# -- undecodable bytes on the wire: a fake PolicyService ------------------------------------
class RawPolicyService:
    """Serves raw bytes on Subscribe: the queued payloads, one per stream."""

    def __init__(self, payloads: list[bytes]) -> None:
        self.payloads = payloads
        self.streams = 0
        self.lock = threading.Lock()

    def subscribe(self, request_iterator: Iterator[bytes], context: Any) -> Iterator[bytes]:
        next(request_iterator, None)  # the HELLO
        with self.lock:
            self.streams += 1
            payload = self.payloads.pop(0) if self.payloads else None
        if payload is not None:
            yield payload
        for _ in request_iterator:  # hold the stream until the client ends it
            pass


def test_undecodable_updates_never_reach_the_engine(figures: dict[str, Any]) -> None:
    good = neutral_policy().replace(mode=Mode.BOOST, version=7)
    valid = pb.PolicyUpdate(version=7, nonce="n7", policy=codec.policy_to_proto(good))
    blob = valid.SerializeToString()
    garbage = [blob[: len(blob) // 2], blob[:7], b"\xff" * 64, b"\x0a\x05abc"]
    svc = RawPolicyService([*garbage, blob])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handler = grpc.stream_stream_rpc_method_handler(svc.subscribe)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        rpc.POLICY_SERVICE, {"Subscribe": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with PolicyClient(f"127.0.0.1:{port}", initial_backoff_s=0.02,
                          max_backoff_s=0.1) as client:
            start = client.current()
            assert client.wait_for(lambda c: c.current().version == 7, 30)
            assert client.current() == good
            # every garbage stream failed without touching the policy, then it reconnected
            assert start.mode is Mode.FCFS and client.counters.reconnects >= len(garbage)
            assert client.counters.acked == 1
    finally:
        server.stop(0)
    COUNTS["undecodable_served"] += len(garbage)
    figures["undecodable_updates_rejected"] = len(garbage)


def test_engine_only_ever_ran_acked_versions(rig: Rig, figures: dict[str, Any]) -> None:
    good = rig.client.current()
    rng = np.random.default_rng(0)
    tr = Trace("t", np.sort(rng.uniform(0, 5, 200)), rng.integers(1, 2000, 200),
               rng.integers(1, 200, 200))
    res = simulate(tr, build_scheduler(good), EngineConfig(num_gpu_blocks=2000),
                   H100_LLAMA3_8B, source=rig.client)
    assert {p.version for _, p in res.policy_timeline} == {good.version}
    assert good.version in rig.acked
    # the sidecar counted every NACK the client sent
    nacked = rig.client.counters.nacked
    url = f"http://127.0.0.1:{rig.sc.ready['metrics_port']}/metrics"
    deadline = 0.0
    for _ in range(100):
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        deadline = next((float(line.split()[-1]) for line in text.splitlines()
                         if line.startswith("tailwise_policies_nacked_total ")), 0.0)
        if deadline == nacked:
            break
        threading.Event().wait(0.05)
    assert deadline == nacked
    bad = COUNTS["adversarial_tried"] + COUNTS["random_nacked"] + COUNTS["truncated_nacked"]
    figures["bad_policies_tried"] = bad
    figures["bad_policies_nacked"] = (COUNTS["adversarial_nacked"] + COUNTS["random_nacked"]
                                      + COUNTS["truncated_nacked"])
    figures["bad_policies_applied"] = 0
    figures["policy_fuzz"] = dict(COUNTS)

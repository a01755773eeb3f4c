"""Frozen policy files: round trip, tamper refusal, old schema, and an engine that starts
from the file with no sidecar reachable (issue 7, reliability)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.fuzz import fuzz_settings
from support.net import closed_port

from tailwise.engine_adapter.policy_client import connect
from tailwise.scorer.frozen import FrozenPolicyError, loads, policy_digest
from tailwise.scorer.policy import BoostParams, Mode, Policy, QueueSpec, SafetyParams, Source
from tailwise.scorer.registry import build_scheduler
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import EngineConfig, simulate
from tailwise.simulator.traces import Trace
from tailwise.wire.policy_file import load, save

pytestmark = [pytest.mark.timeout(120)]


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    aging = draw(st.floats(1.0, 3600.0))
    edges = sorted(set(draw(st.lists(st.integers(1, 100_000), min_size=0, max_size=6))))
    queues = tuple(QueueSpec(float(lo), float(hi), (lo + hi) / 2, draw(st.floats(0.0, 1.0)))
                   for lo, hi in zip([0, *edges], edges, strict=False))
    return Policy(
        mode=draw(st.sampled_from(list(Mode))), version=draw(st.integers(0, 2**40)),
        queues=queues,
        boost=BoostParams(gamma=draw(st.floats(0.01, 50.0)),
                          memguard_ratio=draw(st.floats(1.01, 100.0))),
        safety=SafetyParams(max_boost_s=aging * draw(st.floats(0.0, 1.0)), aging_s=aging),
        note=draw(st.text(max_size=40)), extra=(("k", draw(st.text(max_size=10))),))


@fuzz_settings(100)
@given(p=policies())
def test_round_trip(tmp_path_factory: pytest.TempPathFactory, p: Policy) -> None:
    path = save(p, tmp_path_factory.mktemp("frozen") / "p.json")
    back = load(path)
    assert back == p.replace(source=Source.FROZEN)


def _doc(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def test_tampered_or_truncated_file_is_refused(tmp_path: Path) -> None:
    p = Policy(mode=Mode.TAILWISE, safety=SafetyParams(60.0, 120.0))
    path = save(p, tmp_path / "p.json")
    doc = _doc(path)
    doc["policy"]["safety"]["aging_s"] = 1e6  # tampered: the hash no longer matches
    bad = tmp_path / "tampered.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(FrozenPolicyError, match="sha256 mismatch"):
        load(bad)
    text = path.read_text()
    for cut in (len(text) // 2, len(text) - 3):
        (tmp_path / "cut.json").write_text(text[:cut])
        with pytest.raises(FrozenPolicyError):
            load(tmp_path / "cut.json")
    # a consistent hash over an invalid body is still refused by validation
    doc = _doc(path)
    doc["policy"]["boost"]["gamma"] = -1.0
    doc["sha256"] = policy_digest(doc["policy"])
    with pytest.raises(FrozenPolicyError, match=r"boost\.gamma"):
        loads(json.dumps(doc))


def test_older_schema_loads(tmp_path: Path) -> None:
    """A schema-1 file (flat SLO targets, single gamma, no note/extra) loads with today's
    defaults for what it lacks."""
    body = {"schema_version": 1, "mode": "boost", "version": 4, "created_at": 1.0,
            "source": "learned", "boost": {"gamma": 0.5, "memguard_theta_s": 0.1,
                                            "memguard_ratio": 2.0},
            "slo": {"ttft_s": 4.0, "tpot_s": 0.04},
            "safety": {"max_boost_s": 30.0, "aging_s": 90.0}}
    doc = {"format": "tailwise-policy", "schema_version": 1, "sha256": policy_digest(body),
           "policy": body}
    (tmp_path / "old.json").write_text(json.dumps(doc))
    p = load(tmp_path / "old.json")
    assert (p.schema_version, p.mode, p.version) == (3, Mode.BOOST, 4)
    assert (p.boost.gamma, p.slo.ttft_s, p.safety.aging_s) == (0.5, 4.0, 90.0)
    assert p.slo.classes == Policy().slo.classes


def _trace() -> Trace:
    rng = np.random.default_rng(5)
    return Trace("t", np.sort(rng.uniform(0, 10, 300)), rng.integers(1, 3000, 300),
                 rng.integers(1, 300, 300))


def test_engine_starts_from_frozen_file_without_sidecar(tmp_path: Path,
                                                        figures: dict[str, Any]) -> None:
    frozen = Policy(mode=Mode.TAILWISE, version=12, safety=SafetyParams(50.0, 100.0),
                    boost=BoostParams(gamma=0.3))
    path = save(frozen, tmp_path / "prod.json")
    address = f"127.0.0.1:{closed_port()}"  # nothing listens: no sidecar at start
    client = connect(address, frozen_file=path, initial_backoff_s=0.05, max_backoff_s=0.2)
    try:
        assert client.current() == load(path)  # at once, before any network answer
        res = simulate(_trace(), build_scheduler(client.current()), EngineConfig(num_gpu_blocks=3000),
                       H100_LLAMA3_8B, source=client)
        assert [p for _, p in res.policy_timeline] == [load(path)]
        assert np.isfinite(res.records.finish).all()
        assert not client.counters.connected and client.counters.frozen_error == ""
        assert client.wait_for(lambda c: c.counters.reconnects >= 1, 30)  # it keeps trying
        assert client.current() == load(path)
    finally:
        client.close()
    # a tampered file: FCFS (stock vLLM behaviour) and the reason is recorded
    doc = _doc(path)
    doc["policy"]["version"] = 13
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with connect(address, frozen_file=tmp_path / "bad.json", initial_backoff_s=0.05) as fallback:
        assert fallback.current().mode is Mode.FCFS
        assert "sha256" in fallback.counters.frozen_error
    figures["frozen_start_without_sidecar"] = "ok"

"""Policy: validation names the field, canonical serialisation, frozen files."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tailwise.scorer import frozen
from tailwise.scorer.frozen import FrozenPolicyError
from tailwise.scorer.policy import (
    SCHEMA_VERSION,
    BoostParams,
    EwsjfParams,
    LinearWeight,
    Mode,
    Policy,
    PolicyError,
    QueueSpec,
    SafetyParams,
    Source,
)
from tailwise.wire import policy_file


def test_defaults_validate() -> None:
    for mode in Mode:
        Policy(mode=mode).validate()


@pytest.mark.parametrize(("policy", "field"), [
    (Policy(boost=BoostParams(gamma=math.nan)), "boost.gamma"),
    (Policy(boost=BoostParams(gamma=math.inf)), "boost.gamma"),
    (Policy(boost=BoostParams(gamma=-1.0)), "boost.gamma"),
    (Policy(queues=(QueueSpec(0, 100, 50, 0.1), QueueSpec(50, 200, 120, 0.1))), "queues[1].lo"),
    (Policy(queues=(QueueSpec(100, 100, 50, 0.1),)), "queues[0].hi"),
    (Policy(queues=(QueueSpec(0, 100, 50, 0.1, w_base=-1.0),)), "queues[0].w_base"),
    (Policy(ewsjf=EwsjfParams(base=LinearWeight(-0.5))), "ewsjf.base.a"),
    (Policy(ewsjf=EwsjfParams(max_queues=0)), "ewsjf.max_queues"),
    (Policy(safety=SafetyParams(max_boost_s=100, aging_s=10)), "safety.max_boost_s"),
    (Policy(version=-1), "version"),
])
def test_validation_names_the_field(policy: Policy, field: str) -> None:
    with pytest.raises(PolicyError) as err:
        policy.validate()
    assert err.value.field == field
    assert str(err.value).startswith(field + ":")


def test_from_dict_rejects_unknown_and_mistyped_fields() -> None:
    with pytest.raises(PolicyError, match=r"^boost\.gama: unknown field"):
        Policy.from_dict({"boost": {"gama": 1.0}})
    with pytest.raises(PolicyError, match=r"^mode: must be one of"):
        Policy.from_dict({"mode": "lifo"})
    with pytest.raises(PolicyError, match=r"^boost\.gamma: must be a number"):
        Policy.from_dict({"boost": {"gamma": "fast"}})
    with pytest.raises(PolicyError, match="newer than this tailwise"):
        Policy.from_dict({"schema_version": 99})


@given(gamma=st.floats(0.01, 50), aging=st.floats(1, 1000), version=st.integers(0, 10**9),
       n=st.integers(0, 5))
def test_dict_round_trip(gamma: float, aging: float, version: int, n: int) -> None:
    queues = tuple(QueueSpec(i * 100.0, i * 100.0 + 50, i * 100.0 + 25, 0.01) for i in range(n))
    p = Policy(mode=Mode.TAILWISE, version=version, queues=queues,
               boost=BoostParams(gamma=gamma), safety=SafetyParams(max_boost_s=aging / 2,
                                                                  aging_s=aging))
    q = Policy.from_dict(json.loads(json.dumps(p.to_dict())))
    assert q == p


def test_frozen_round_trip_and_tamper(tmp_path: Path) -> None:
    p = Policy(mode=Mode.TAILWISE, version=7, queues=(QueueSpec(0, 512, 200, 0.002),))
    path = policy_file.save(p, tmp_path / "policy.json")
    loaded = policy_file.load(path)
    assert loaded == dataclasses.replace(p, source=Source.FROZEN)
    doc = json.loads(path.read_text())
    doc["policy"]["boost"]["gamma"] = 9.0
    path.write_text(json.dumps(doc))
    with pytest.raises(FrozenPolicyError, match="sha256 mismatch"):
        policy_file.load(path)
    path.write_text(path.read_text()[:50])
    with pytest.raises(FrozenPolicyError, match="not valid JSON"):
        policy_file.load(path)
    with pytest.raises(FrozenPolicyError, match="cannot read"):
        policy_file.load(tmp_path / "missing.json")


def test_older_schema_loads(tmp_path: Path) -> None:
    # a schema-1 file: no schema 2 fields (SLO classes, boost variants, note/extra)
    body = {"schema_version": 1, "mode": "boost", "version": 3, "created_at": 0.0,
            "source": "frozen", "boost": {"gamma": 0.7, "memguard_theta_s": 0.1,
                                          "memguard_ratio": 2.0},
            "slo": {"ttft_s": 5.0, "tpot_s": 0.04}}
    doc = {"format": "tailwise-policy", "schema_version": 1,
           "sha256": frozen.policy_digest(body), "policy": body}
    f = tmp_path / "old.json"
    f.write_text(json.dumps(doc))
    p = policy_file.load(f)
    assert p.schema_version == SCHEMA_VERSION == 3 and p.boost.gamma == 0.7 and p.slo.ttft_s == 5.0
    assert p.mode is Mode.BOOST

"""``--additional-config '{"tailwise": {...}}'`` validation and startup wiring.

The validation and wiring tests need no vLLM; the ones that build a scheduler are
marked ``vllm`` and skip when it is absent.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from tailwise.engine_adapter.config import ConfigError, TailwiseConfig
from tailwise.engine_adapter.wiring import make_policy_source, make_telemetry_sink
from tailwise.scorer.hooks import NullSink, StaticPolicySource
from tailwise.scorer.policy import Mode, Policy, Source
from tailwise.wire.policy_file import save as save_frozen


@pytest.mark.parametrize(
    ("section", "key", "fragment"),
    [
        ({"mdoe": "fcfs"}, "mdoe", "unknown key"),
        ({"mode": "fastest"}, "mode", "must be one of"),
        ({"mode": 3}, "mode", "must be one of"),
        ({"mode": "boost", "policy_file": "/x.json"}, "mode", "not both"),
        ({"sidecar": ""}, "sidecar", "host:port"),
        ({"sidecar": "localhost"}, "sidecar", "host:port"),
        ({"sidecar": "localhost:99999"}, "sidecar", "1..65535"),
        ({"sidecar": 50051}, "sidecar", "host:port"),
        ({"policy_file": 7}, "policy_file", "file path"),
        ({"telemetry": "yes"}, "telemetry", "true or false"),
        ({"telemetry": True}, "telemetry", "requires 'sidecar'"),
        ({"sidecar_token": "t"}, "sidecar_token", "requires 'sidecar'"),
        ({"sidecar": "h:1", "sidecar_token": ""}, "sidecar_token", "non-empty"),
        ({"sidecar": "h:1", "sidecar_tls_ca": 5}, "sidecar_tls_ca", "file path"),
    ],
)
def test_invalid_settings_name_the_key(section: dict[str, Any], key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        TailwiseConfig.from_additional_config({"tailwise": section})
    assert err.value.key == key
    assert str(err.value).startswith(f"tailwise.{key}: ")
    assert fragment in str(err.value)


def test_section_must_be_an_object() -> None:
    with pytest.raises(ConfigError, match="must be a JSON object"):
        TailwiseConfig.from_additional_config({"tailwise": ["mode", "fcfs"]})
    with pytest.raises(ConfigError, match="additional_config must be a JSON object"):
        TailwiseConfig.from_additional_config("tailwise")


def test_defaults_without_a_section() -> None:
    for raw in (None, {}, {"other_plugin": {"x": 1}}):
        cfg = TailwiseConfig.from_additional_config(raw)
        assert cfg == TailwiseConfig()
        policy = cfg.startup_policy()
        assert policy.mode is Mode.FCFS and policy.source is Source.BASELINE


def test_valid_settings() -> None:
    cfg = TailwiseConfig.from_dict({"sidecar": " 127.0.0.1:50051 ", "mode": "tailwise"})
    assert cfg.sidecar == "127.0.0.1:50051" and cfg.telemetry  # on by default with a sidecar
    assert cfg.startup_policy().mode is Mode.TAILWISE
    off = TailwiseConfig.from_dict({"sidecar": "[::1]:50051", "telemetry": False})
    assert not off.telemetry


def test_policy_file_is_loaded_and_tampering_refused(tmp_path: Path) -> None:
    path = save_frozen(Policy(mode=Mode.BOOST, version=7), tmp_path / "p.json")
    cfg = TailwiseConfig.from_dict({"policy_file": str(path)})
    policy = cfg.startup_policy()
    assert policy.mode is Mode.BOOST and policy.version == 7 and policy.source is Source.FROZEN

    doc = json.loads(path.read_text())
    doc["policy"]["version"] = 8
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"^tailwise\.policy_file: .*sha256 mismatch"):
        cfg.startup_policy()
    missing = TailwiseConfig.from_dict({"policy_file": str(tmp_path / "nope.json")})
    with pytest.raises(ConfigError, match=r"^tailwise\.policy_file: .*cannot read"):
        missing.startup_policy()


def test_no_sidecar_wiring_is_static() -> None:
    cfg = TailwiseConfig.from_dict({"mode": "ewsjf"})
    source = make_policy_source(cfg)
    assert isinstance(source, StaticPolicySource)
    assert source.current().mode is Mode.EWSJF
    assert source.current() is source.current()
    assert isinstance(make_telemetry_sink(cfg), NullSink)


def test_sidecar_without_client_module_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tailwise.engine_adapter.policy_client", None)  # import fails
    cfg = TailwiseConfig.from_dict({"sidecar": "127.0.0.1:50051", "telemetry": False})
    with pytest.raises(ConfigError, match=r"^tailwise\.sidecar: .*policy_client cannot be imported"):
        make_policy_source(cfg)


def test_sidecar_wiring_uses_the_connect_factories(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, Any]] = []

    class Client:
        """Like PolicyClient: FCFS (version 0, baseline) until the first push."""

        def __init__(self) -> None:
            self.policy = Policy()

        def current(self) -> Policy:
            return self.policy

    client = Client()

    def connect_policy(address: str, **kw: Any) -> Client:
        calls.append(("policy", (address, kw)))
        return client

    def connect_telemetry(address: str, **kw: Any) -> NullSink:
        calls.append(("telemetry", (address, kw)))
        return NullSink()

    monkeypatch.setitem(
        sys.modules, "tailwise.engine_adapter.policy_client",
        types.SimpleNamespace(connect=connect_policy),
    )
    monkeypatch.setitem(
        sys.modules, "tailwise.engine_adapter.telemetry", types.SimpleNamespace(connect=connect_telemetry)
    )
    cfg = TailwiseConfig.from_dict(
        {"sidecar": "10.0.0.5:7000", "mode": "boost", "sidecar_token": "s3cret"}
    )
    source = make_policy_source(cfg)
    assert source.current().mode is Mode.BOOST  # the startup policy until the first push
    pushed = Policy(mode=Mode.FCFS, version=4, source=Source.LEARNED)
    client.policy = pushed
    assert source.current() is pushed  # then whatever the sidecar says (kill switch too)
    make_telemetry_sink(cfg)
    auth = {"token": "s3cret", "tls_ca": None}
    assert calls == [
        ("policy", ("10.0.0.5:7000", {**auth, "frozen_file": None})),
        ("telemetry", ("10.0.0.5:7000", auth)),
    ]

    monkeypatch.setitem(
        sys.modules, "tailwise.engine_adapter.telemetry", types.SimpleNamespace(connect=None)
    )
    with pytest.raises(ConfigError, match=r"^tailwise\.telemetry: .*connect\(\) does not exist"):
        make_telemetry_sink(cfg)


@pytest.mark.vllm
def test_scheduler_refuses_bad_additional_config(make_scheduler: Any) -> None:
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install 'tailwise[vllm]')")
    with pytest.raises(ConfigError, match=r"^tailwise\.mdoe: unknown key"):
        make_scheduler("tailwise", additional_config={"tailwise": {"mdoe": "boost"}})


@pytest.mark.vllm
def test_scheduler_startup_policy_from_config(make_scheduler: Any, tmp_path: Path) -> None:
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install 'tailwise[vllm]')")
    plain = make_scheduler("tailwise")
    assert plain.tailwise_policy is not None and plain.tailwise_policy.mode is Mode.FCFS
    assert not plain.tailwise_active and type(plain.waiting).__name__ == "FCFSRequestQueue"

    by_mode = make_scheduler("tailwise", additional_config={"tailwise": {"mode": "tailwise"}})
    assert by_mode.tailwise_active and by_mode.tailwise_policy.mode is Mode.TAILWISE

    path = save_frozen(Policy(mode=Mode.EWSJF, version=3), tmp_path / "p.json")
    frozen = make_scheduler("tailwise", additional_config={"tailwise": {"policy_file": str(path)}})
    assert frozen.tailwise_active and frozen.tailwise_policy.version == 3
    assert frozen.tailwise_policy.source is Source.FROZEN

"""Deployment files: the Kubernetes manifest validates against the Kubernetes schemas
(kubernetes-validate, schemas shipped in the package: offline), its ConfigMap holds a
frozen policy that loads (hash checked) and a sidecar config that parses, vLLM starts
with the tailwise scheduler class; the systemd unit passes ``systemd-analyze verify``."""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tailwise.learner.config import config_from_mapping
from tailwise.scorer.frozen import loads

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "k8s" / "tailwise.yaml"
UNIT = ROOT / "deploy" / "systemd" / "tailwise-sidecar.service"


def _docs() -> list[dict[str, Any]]:
    yaml = pytest.importorskip("yaml")
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def test_manifest_validates_against_the_kubernetes_schemas() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    for doc in _docs():
        kv.validate(doc, kv.latest_version(), strict=True)  # raises on any schema error


def test_an_invalid_manifest_is_rejected() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    deploy = next(d for d in _docs() if d["kind"] == "Deployment")
    deploy["spec"]["replicas"] = "two"
    with pytest.raises(kv.ValidationError):
        kv.validate(deploy, kv.latest_version(), strict=True)


def test_manifest_wires_vllm_sidecar_policy_and_metrics() -> None:
    docs = {d["kind"]: d for d in _docs()}
    cm = docs["ConfigMap"]["data"]
    policy = loads(cm["policy.json"], "configmap")  # hash and schema checked
    policy.validate()
    cfg = config_from_mapping(tomllib.loads(cm["sidecar.toml"]))
    assert str(cfg.initial_policy) == "/etc/tailwise/policy.json"
    containers = {c["name"]: c for c in
                  docs["Deployment"]["spec"]["template"]["spec"]["containers"]}
    args = containers["vllm"]["args"]
    assert args[args.index("--scheduler-cls") + 1] == "tailwise.engine_adapter.vllm.TailwiseScheduler"
    extra = json.loads(args[args.index("--additional-config") + 1])["tailwise"]
    assert extra["sidecar"] == cfg.listen
    assert containers["tailwise-sidecar"]["args"][:2] == ["tailwise", "sidecar"]
    ports = {p["name"]: p["port"] for p in docs["Service"]["spec"]["ports"]}
    assert ports["metrics"] == cfg.metrics_port and ports["hints"] == cfg.hints.port


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not available")
    exe = shutil.which("tailwise")
    if exe is None:
        pytest.skip("the tailwise console script is not installed")
    unit = tmp_path / UNIT.name
    # verify checks that ExecStart exists: point it at this install's console script
    unit.write_text(UNIT.read_text().replace("/opt/tailwise/bin/tailwise", exe))
    res = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "tailwise-sidecar" not in res.stderr, res.stderr  # no warning about our unit

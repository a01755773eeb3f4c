"""deploy/grafana/tailwise.json: valid JSON, and every metric it queries is one the code
exports (the sidecar's SidecarMetrics and the adapter's series, read from their
registries: a renamed metric breaks this test). Needs no vLLM."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from tailwise.engine_adapter.metrics import AdapterMetrics
from tailwise.learner.metrics import SidecarMetrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "tailwise.json"
_SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",),
             "histogram": ("_bucket", "_sum", "_count", "_created")}
_NAME = re.compile(r"(?<![\w:$])([a-zA-Z_][a-zA-Z0-9_]*:[a-zA-Z0-9_:]+|tailwise_[a-zA-Z0-9_]+)")


def _exported(registry: CollectorRegistry) -> set[str]:
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + s for s in _SUFFIXES.get(family.type, ("",)))
    return names


def exported_names() -> set[str]:
    sidecar = SidecarMetrics(CollectorRegistry())
    adapter_registry = CollectorRegistry()
    AdapterMetrics("m", registry=adapter_registry)
    return _exported(sidecar.registry) | _exported(adapter_registry)


def _exprs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        if isinstance(node.get("query"), str):
            found.append(node["query"])
        return found + [e for v in node.values() for e in _exprs(v)]
    if isinstance(node, list):
        return [e for v in node for e in _exprs(v)]
    return []


def queried_names(dashboard: dict[str, Any]) -> set[str]:
    return {m for expr in _exprs(dashboard) for m in _NAME.findall(expr)}


def test_dashboard_is_valid_grafana_json() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["title"] and dash["uid"]
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        assert p["targets"], p["title"]
        assert all(t["expr"].strip() for t in p["targets"]), p["title"]


def test_every_queried_metric_is_exported() -> None:
    dash = json.loads(DASHBOARD.read_text())
    queried = queried_names(dash)
    exported = exported_names()
    assert queried, "no metric names found in the dashboard"
    assert queried <= exported, f"queried but not exported: {sorted(queried - exported)}"
    # both sides are on the dashboard
    assert any(n.startswith("vllm:tailwise_") for n in queried)
    assert any(n.startswith("tailwise_") for n in queried)


def test_checker_catches_an_unknown_name() -> None:
    fake = {"panels": [{"targets": [{"expr": "rate(vllm:tailwise_made_up_total[5m])"}]}]}
    assert queried_names(fake) - exported_names() == {"vllm:tailwise_made_up_total"}

"""Fleet experiments: every router × policy on one trace, N replicas, one report.

``tailwise simulate --replicas N --router R[,R...]`` lands here. Each cell runs
:func:`~tailwise.simulator.fleet.simulate_fleet` with fresh per-replica policies (an
adaptive policy gets one in-process learner per replica, as one sidecar per replica
would). ``--target-load L`` means L × the capacity of the whole fleet (each replica at
about L when the router balances well).

``results.json``: ``{"trace", "config", "fleet": {router: {policy: {"fleet": summary,
"replicas": [summary, ...], "routing": {...}}}}}`` with the stable per-run summary
schema of DESIGN.md.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tailwise.scorer.step_time import StepTimeModel
from tailwise.simulator.engine import EngineConfig
from tailwise.simulator.fleet import FleetResult, ReplicaArm, simulate_fleet
from tailwise.simulator.metrics import MetricsConfig, summarize
from tailwise.simulator.report import html_page, html_table, json_default, lookup, md_table
from tailwise.simulator.routers import ROUTER_NAMES, UnknownRouterError, make_router
from tailwise.simulator.traces import Trace, TraceError
from tailwise.simulator.workload import offered_load, rate_scale_for_load


@dataclass
class FleetExperiment:
    trace: Trace
    policies: list[str]
    routers: list[str]
    replicas: int
    #: builds one replica's arm for a policy name (called once per replica)
    factory: Callable[[str], ReplicaArm]
    engine: EngineConfig = field(default_factory=EngineConfig)
    model: StepTimeModel | None = None
    rate_scale: float | None = None
    target_load: float | None = None
    metrics: MetricsConfig = field(default_factory=MetricsConfig)


@dataclass
class FleetCell:
    router: str
    policy: str
    result: FleetResult
    summary: dict[str, Any]


def parse_routers(spec: str) -> list[str]:
    """``"a,b"`` -> ["a", "b"]; unknown or repeated names raise with the name."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise UnknownRouterError("--router: give at least one router name")
    for n in names:
        if n not in ROUTER_NAMES:
            raise UnknownRouterError(f"unknown router {n!r}; choose from: {', '.join(ROUTER_NAMES)}")
    if len(set(names)) != len(names):
        raise UnknownRouterError("--router: a router is listed twice")
    return names


def fleet_summary(res: FleetResult, cfg: MetricsConfig) -> dict[str, Any]:
    """Fleet-wide summary, one summary per replica, and how evenly work was spread."""
    per = [summarize(res.replica(k), cfg) for k in range(len(res.replicas))]
    counts = np.bincount(res.assignment, minlength=len(res.replicas))
    mean = float(counts.mean()) if len(counts) else 0.0
    p99s = [lookup(s, ("overall", "ttlt", "p99")) for s in per]
    finite = [v for v in p99s if v is not None]
    return {
        "fleet": summarize(res.merged(), cfg),
        "replicas": per,
        "routing": {
            "requests_per_replica": counts.tolist(),
            "imbalance": float(counts.max() / mean) if mean > 0 else 0.0,
            "worst_replica_ttlt_p99": max(finite) if finite else None,
            "wall_s": res.wall_s,
        },
    }


def run_fleet(exp: FleetExperiment,
              on_progress: Callable[[str, int, int], None] | None = None
              ) -> tuple[list[FleetCell], dict[str, Any]]:
    """Run every router × policy cell on the same scaled trace."""
    assert exp.model is not None
    if exp.replicas < 1:
        raise TraceError(f"--replicas must be >= 1, got {exp.replicas}")
    if exp.rate_scale is not None and exp.target_load is not None:
        raise TraceError("give either --rate-scale or --target-load, not both")
    trace, scale = exp.trace, 1.0
    if exp.target_load is not None:
        scale = rate_scale_for_load(trace, exp.target_load * exp.replicas, exp.engine, exp.model)
    elif exp.rate_scale is not None:
        scale = exp.rate_scale
    if scale != 1.0:
        trace = trace.scaled(scale)
    cells: list[FleetCell] = []
    for router in exp.routers:
        for policy in exp.policies:
            arms = [exp.factory(policy) for _ in range(exp.replicas)]
            r = make_router(router, exp.replicas, block_size=exp.engine.block_size,
                            hash_block_tokens=exp.engine.hash_block_tokens,
                            kv_tokens=exp.engine.kv_tokens)
            cb = None
            if on_progress is not None:
                def cb(done: int, total: int, _k: str = f"{router}/{policy}") -> None:
                    on_progress(_k, done, total)
            res = simulate_fleet(trace, arms, r, exp.engine, exp.model, progress=cb)
            cells.append(FleetCell(router, policy, res, fleet_summary(res, exp.metrics)))
    load = None
    if len(trace) >= 2 and trace.duration_s > 0:
        load = round(offered_load(trace, exp.engine, exp.model) / exp.replicas, 4)
    context = {
        "trace": trace.summary(),
        "config": {"replicas": exp.replicas, "routers": exp.routers, "policies": exp.policies,
                   "engine": asdict(exp.engine), "step_model": exp.model.name,
                   "rate_scale": round(scale, 6), "target_load": exp.target_load,
                   "offered_load_per_replica": load},
    }
    return cells, context


_COLS: list[tuple[str, tuple[str, ...]]] = [
    ("fleet TTLT p99 (s)", ("fleet", "overall", "ttlt", "p99")),
    ("fleet TTLT mean (s)", ("fleet", "overall", "ttlt", "mean")),
    ("fleet TTFT mean (s)", ("fleet", "overall", "ttft", "mean")),
    ("fleet TTFT p99 (s)", ("fleet", "overall", "ttft", "p99")),
    ("worst replica TTLT p99 (s)", ("routing", "worst_replica_ttlt_p99")),
    ("imbalance (max/mean req)", ("routing", "imbalance")),
    ("preemptions", ("fleet", "overall", "preemptions")),
]


def fleet_table(cells: Sequence[FleetCell]) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    """Rows router × policy; ``best`` marks the lowest value of each column."""
    header = ["router", "policy"] + [c for c, _ in _COLS]
    vals = [[lookup(c.summary, p) for _, p in _COLS] for c in cells]
    best_col: list[float | None] = []
    for j in range(len(_COLS)):
        col = [x for v in vals if (x := v[j]) is not None]
        best_col.append(min(col) if col else None)
    rows, best = [], []
    for c, v in zip(cells, vals, strict=True):
        rows.append([c.router, c.policy] + ["–" if x is None else f"{x:.3f}" for x in v])
        best.append([False, False] + [x is not None and x == best_col[j] for j, x in enumerate(v)])
    return header, rows, best


def replica_table(cell: FleetCell) -> tuple[list[str], list[list[str]]]:
    header = ["replica", "requests", "TTFT mean (s)", "TTLT p99 (s)", "preemptions",
              "mean KV usage"]
    rows = []
    for k, s in enumerate(cell.summary["replicas"]):
        vals = [lookup(s, ("overall", "ttft", "mean")), lookup(s, ("overall", "ttlt", "p99"))]
        rows.append([str(k), str(s["overall"]["requests"])]
                    + ["–" if v is None else f"{v:.3f}" for v in vals]
                    + [str(s["overall"]["preemptions"]), f"{s['engine']['mean_kv_usage']:.3f}"])
    return header, rows


def _plot(out: Path, cells: Sequence[FleetCell], title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    routers = list(dict.fromkeys(c.router for c in cells))
    policies = list(dict.fromkeys(c.policy for c in cells))
    colors = plt.get_cmap("tab10")
    hatches = ["", "//", "..", "xx", "\\\\", "oo"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(len(policies), 1)
    for ax, (label, path) in zip(axes, (_COLS[0], _COLS[2]), strict=True):
        for j, pol in enumerate(policies):
            ys = [next((lookup(c.summary, path) or 0.0 for c in cells
                        if c.router == r and c.policy == pol), 0.0) for r in routers]
            ax.bar(np.arange(len(routers)) + j * width, ys, width, label=pol, color=colors(j),
                   hatch=hatches[j % len(hatches)], edgecolor="black", linewidth=0.5)
        ax.set_xticks(np.arange(len(routers)) + width * (len(policies) - 1) / 2, routers)
        ax.set_ylabel(label)
        ax.set_title(label.split(" (")[0] + " by router")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out / "fleet_routers.png", dpi=110)
    plt.close(fig)
    return "fleet_routers.png"


def write_fleet_report(out: Path, cells: Sequence[FleetCell], context: dict[str, Any],
                       plots: bool = True) -> Path:
    """results.json, report.md and report.html for a router × policy fleet run."""
    out.mkdir(parents=True, exist_ok=True)
    fleet: dict[str, dict[str, Any]] = {}
    for c in cells:
        fleet.setdefault(c.router, {})[c.policy] = c.summary
    (out / "results.json").write_text(json.dumps(
        {"trace": context["trace"], "config": context["config"], "fleet": fleet},
        indent=2, allow_nan=False, default=json_default) + "\n")
    tr, conf = context["trace"], context["config"]
    intro = (f"Trace {tr.get('name', '?')}: {tr.get('requests', '?')} requests over "
             f"{tr.get('duration_s', '?')} s, {conf['replicas']} replicas, offered load per "
             f"replica {conf.get('offered_load_per_replica')} (rate scale {conf['rate_scale']}). "
             f"Lower is better in every column; the best value of each column is marked.")
    header, rows, best = fleet_table(cells)
    image = _plot(out, cells, f"{tr.get('name', '?')} · {conf['replicas']} replicas") \
        if plots else None
    md = ["# tailwise fleet report", "", intro, "", "## Fleet (router × policy)", "",
          md_table(header, rows, best), ""]
    body = ["<h1>tailwise fleet report</h1>", f"<p>{html.escape(intro)}</p>",
            "<h2>Fleet (router × policy)</h2>", html_table(header, rows, best)]
    if image:
        md += [f"![fleet P99 TTLT and mean TTFT by router]({image})", ""]
        body.append(f"<img src='{image}' alt='fleet P99 TTLT and mean TTFT by router' "
                    "style='max-width:100%'>")
    md += ["## Per replica", ""]
    body.append("<h2>Per replica</h2>")
    for c in cells:
        rh, rr = replica_table(c)
        md += [f"### {c.router} · {c.policy}", "", md_table(rh, rr), ""]
        body += [f"<h3>{html.escape(c.router)} · {html.escape(c.policy)}</h3>", html_table(rh, rr)]
    (out / "report.md").write_text("\n".join(md))
    (out / "report.html").write_text(html_page("tailwise fleet report", "".join(body)))
    return out / "report.md"


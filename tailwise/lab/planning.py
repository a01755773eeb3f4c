"""``tailwise plan``'s wiring: the backlog from a trace, the time model, the written plan.

The planner (:mod:`tailwise.planner`) is pure; this module reads the backlog with the
trace loaders and writes ``schedule.json``, ``schedule.csv`` and ``kv_usage.png``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from tailwise.planner import Evaluation, Instance, Schedule, TimeModel
from tailwise.planner.report import CSV_FIELDS, method_row, schedule_records
from tailwise.records.trace import Trace
from tailwise.simulator.step_models import load_step_model
from tailwise.simulator.traces import load_trace

#: at most this many points per KV-usage panel (peaks kept)
_PLOT_POINTS = 4000


class PlanOptionError(ValueError):
    """A ``tailwise plan`` option or its backlog is unusable (one-line message)."""


def load_backlog(path: str, fmt: str | None, window: float | None, limit: int | None,
                  skip_bad: bool) -> Trace:
    """The requests of ``path`` as a backlog: the first ``window`` seconds, ``limit`` rows."""
    trace = load_trace(path, fmt, skip_bad=skip_bad)
    if window is not None:
        if not window > 0:
            raise PlanOptionError(f"--window must be > 0 seconds, got {window}")
        trace = trace.select(np.flatnonzero(trace.arrival_s <= window))
    if limit is not None:
        if limit < 1:
            raise PlanOptionError(f"--limit must be >= 1, got {limit}")
        trace = trace.head(limit)
    if len(trace) == 0:
        raise PlanOptionError(f"{path}: no requests in the backlog")
    return trace


def plan_time_model(kind: str, step_model: str) -> TimeModel:
    """``unit`` (the paper's model) or ``step`` (the engine step-time model)."""
    if kind == "unit":
        return TimeModel.unit()
    if kind == "step":
        return TimeModel(load_step_model(step_model))
    raise PlanOptionError(f"--time-model must be 'unit' or 'step', got {kind!r}")


def format_plan_time(x: float, unit: str) -> str:
    """Steps as whole numbers, seconds with two decimals."""
    return f"{x:,.0f}" if unit == "steps" else f"{x:,.2f}"


def plot_kv_usage(path: Path, results: dict[str, tuple[Schedule, Evaluation]], budget: int,
             unit: str) -> None:
    """KV usage per step, one panel per method on a shared time axis (Agg canvas: no
    display and no global pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = max(len(results), 1)
    fig = Figure(figsize=(10, 1.5 * rows + 1.0))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    for ax, (name, (_, ev)) in zip(axes, results.items(), strict=False):
        kv = ev.kv_usage.astype(np.float64)
        x = np.concatenate(([0.0], ev.step_end[:-1]))  # step start times
        if len(kv) > _PLOT_POINTS:  # keep peaks: max over equal chunks
            cuts = np.linspace(0, len(kv), _PLOT_POINTS + 1).astype(np.int64)[:-1]
            kv = np.maximum.reduceat(kv, cuts)
            x = x[np.minimum(cuts, len(x) - 1)]
        ax.fill_between(x, kv, step="post", alpha=0.35)
        ax.plot(x, kv, drawstyle="steps-post", linewidth=0.7)
        ax.axhline(budget, color="black", linestyle="--", linewidth=0.7)
        ax.set_ylim(0, budget * 1.08)
        ax.set_ylabel("KV tokens", fontsize="small")
        ax.set_title(f"{name}: mean {format_plan_time(ev.mean, unit)} {unit}, "
                     f"makespan {format_plan_time(ev.makespan, unit)} {unit}", fontsize="small", loc="left")
    axes[-1].set_xlabel(f"time ({unit}); dashed line: KV budget {budget:,} tokens")
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)


def write_plan_outputs(out: Path, inst: Instance, trace: Trace, config: dict[str, Any],
                   chosen: str, results: dict[str, tuple[Schedule, Evaluation]],
                   capacity: dict[str, Any] | None) -> list[Path]:
    """schedule.json, schedule.csv and kv_usage.png of the ``chosen`` plan."""
    out.mkdir(parents=True, exist_ok=True)
    sched, ev = results[chosen]
    rows = schedule_records(inst, sched, ev)
    doc = {
        "backlog": trace.summary(),
        "config": config,
        "plan": method_row(sched, ev)
        | {"batches_members": [list(b) for b in sched.batches or ()]},
        "methods": {name: method_row(s, e) for name, (s, e) in results.items()},
        "schedule": rows,
    }
    if capacity is not None:
        doc["capacity"] = capacity
    paths = [out / "schedule.json", out / "schedule.csv", out / "kv_usage.png"]
    paths[0].write_text(json.dumps(doc, indent=1) + "\n")
    with paths[1].open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(CSV_FIELDS))
        writer.writeheader()
        writer.writerows(rows)
    plot_kv_usage(paths[2], results, inst.kv_budget, ev.time_unit)
    return paths

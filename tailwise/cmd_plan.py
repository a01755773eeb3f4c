"""``tailwise plan``: offline batch planning of a backlog under a KV budget.

Thin I/O around :mod:`planner`: load the backlog with the trace loaders (timestamps
ignored, or only the first ``--window`` seconds), plan it with every method, print the
chosen plan and a comparison table, write the schedule (JSON + CSV) and a KV-usage plot,
and optionally sweep the budget for capacity planning. Bad input exits with status 2
and a one-line ``error:`` message.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from tailwise.planner import (
    EXACT_MAX_N,
    METHODS,
    Evaluation,
    ExactSolverError,
    Instance,
    PlanInputError,
    Schedule,
    TimeModel,
    UnknownMethodError,
    capacity_sweep,
    compare,
    default_methods,
)
from tailwise.planner.report import CSV_FIELDS, method_row, schedule_records
from tailwise.scorer.step_time import StepTimeModelError
from tailwise.simulator.step_models import load_step_model
from tailwise.simulator.traces import Trace, TraceError, load_trace

EXIT_BAD_INPUT = 2
EXIT_TARGET_MISSED = 1
_PLOT_POINTS = 4000


class _BadInput(Exception):
    """Raised inside the command for a one-line exit-2 error."""


def _fail(msg: str) -> typer.Exit:
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(EXIT_BAD_INPUT)


def _load_backlog(path: str, fmt: str | None, window: float | None, limit: int | None,
                  skip_bad: bool) -> Trace:
    trace = load_trace(path, fmt, skip_bad=skip_bad)
    if window is not None:
        if not window > 0:
            raise _BadInput(f"--window must be > 0 seconds, got {window}")
        trace = trace.select(np.flatnonzero(trace.arrival_s <= window))
    if limit is not None:
        if limit < 1:
            raise _BadInput(f"--limit must be >= 1, got {limit}")
        trace = trace.head(limit)
    if len(trace) == 0:
        raise _BadInput(f"{path}: no requests in the backlog")
    return trace


def _time_model(kind: str, step_model: str) -> TimeModel:
    if kind == "unit":
        return TimeModel.unit()
    if kind == "step":
        return TimeModel(load_step_model(step_model))
    raise _BadInput(f"--time-model must be 'unit' or 'step', got {kind!r}")


def _fmt(x: float, unit: str) -> str:
    return f"{x:,.0f}" if unit == "steps" else f"{x:,.2f}"


def _comparison_table(results: dict[str, tuple[Schedule, Evaluation]], chosen: str,
                      unit: str) -> Table:
    base = results.get("fcfs")
    table = Table(title=f"Methods compared (times in {unit}; lower is better)")
    for col in ("method", "mean", "p50", "p99", "sum", "makespan", "peak KV", "mean/FCFS",
                "batches", "plan s"):
        table.add_column(col, justify="left" if col == "method" else "right")
    best = min(ev.mean for _, ev in results.values())
    for name, (sched, ev) in results.items():
        ratio = f"{ev.mean / base[1].mean:.3f}" if base and base[1].mean > 0 else "-"
        label = name + (" *" if name == chosen else "") + (" (best)" if ev.mean == best else "")
        table.add_row(
            label, _fmt(ev.mean, unit), _fmt(ev.percentile(50), unit),
            _fmt(ev.percentile(99), unit), _fmt(ev.total, unit), _fmt(ev.makespan, unit),
            f"{ev.peak_kv / ev.kv_budget:.0%}", ratio,
            str(len(sched.batches)) if sched.batches is not None else "-",
            f"{sched.runtime_s:.2f}",
        )
    return table


def _plot_kv(path: Path, results: dict[str, tuple[Schedule, Evaluation]], budget: int,
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
        ax.set_title(f"{name}: mean {_fmt(ev.mean, unit)} {unit}, "
                     f"makespan {_fmt(ev.makespan, unit)} {unit}", fontsize="small", loc="left")
    axes[-1].set_xlabel(f"time ({unit}); dashed line: KV budget {budget:,} tokens")
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)


def _write_outputs(out: Path, inst: Instance, trace: Trace, config: dict[str, Any],
                   chosen: str, results: dict[str, tuple[Schedule, Evaluation]],
                   capacity: dict[str, Any] | None) -> list[Path]:
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
    _plot_kv(paths[2], results, inst.kv_budget, ev.time_unit)
    return paths


def plan(
    backlog: Annotated[str, typer.Argument(
        help="backlog file (Azure CSV, Mooncake JSONL, generic CSV/JSONL) or a bundled "
             "trace name (azure-conv, azure-code)")],
    kv_budget: Annotated[int, typer.Option(
        "--kv-budget", help="KV-cache budget in tokens (with --capacity: the sweep's "
                            "upper end)")],
    time_model: Annotated[str, typer.Option(
        "--time-model", help="unit (each step costs 1, the paper's model) or step "
                             "(engine step-time model, seconds)")] = "step",
    step_model: Annotated[str, typer.Option(
        "--step-model", help="bundled step model name or JSON path")] = "h100-llama3-8b",
    method: Annotated[str, typer.Option(
        "--method", help=f"plan to write and summarise: {', '.join(METHODS)}")] = "sorted-f-ls",
    window: Annotated[float | None, typer.Option(
        "--window", help="only requests arriving in the first SECONDS of the trace")] = None,
    limit: Annotated[int | None, typer.Option(
        "--limit", help="only the first N requests")] = None,
    out: Annotated[Path, typer.Option(
        "--out", help="directory for schedule.json, schedule.csv, kv_usage.png")
    ] = Path("plan-out"),
    methods: Annotated[str | None, typer.Option(
        "--methods", help="comma-separated methods to compare (default: all; exact only "
                          f"for n <= {EXACT_MAX_N})")] = None,
    capacity: Annotated[bool, typer.Option(
        "--capacity", help="sweep the budget up to --kv-budget and report the smallest one "
                           "meeting --target-mean-latency (exit 1 if none does)")] = False,
    target_mean_latency: Annotated[float | None, typer.Option(
        "--target-mean-latency", help="target mean completion time (time-model units)")
    ] = None,
    ls_seconds: Annotated[float, typer.Option(
        "--ls-seconds", help="time budget of the local search (sorted-f-ls)")] = 2.0,
    fmt: Annotated[str | None, typer.Option(
        "--format", help="azure | mooncake | generic (default: detect)")] = None,
    skip_bad: Annotated[bool, typer.Option(
        "--skip-bad", help="skip malformed rows instead of failing")] = False,
) -> None:
    """Plan a backlog (all requests waiting at t=0) under a KV budget and compare methods."""
    console = Console(width=140)
    try:
        if capacity and target_mean_latency is None:
            raise _BadInput("--capacity needs --target-mean-latency")
        if target_mean_latency is not None and not target_mean_latency > 0:
            raise _BadInput(f"--target-mean-latency must be > 0, got {target_mean_latency}")
        if not ls_seconds >= 0:
            raise _BadInput(f"--ls-seconds must be >= 0, got {ls_seconds}")
        if method not in METHODS:
            raise UnknownMethodError(
                f"unknown method {method!r} (choose from {', '.join(METHODS)})")
        tm = _time_model(time_model, step_model)
        trace = _load_backlog(backlog, fmt, window, limit, skip_bad)
        try:
            inst = Instance.from_lengths(trace.prompt_tokens, trace.output_tokens, kv_budget,
                                         name=trace.name)
        except PlanInputError as exc:
            where = " (requests numbered from 0 in file order)" if "request " in str(exc) else ""
            raise _BadInput(f"{backlog}: {exc}{where}") from None
        if methods is None:
            names = default_methods(inst.n)
        else:
            names = [m.strip() for m in methods.split(",") if m.strip()]
            unknown = [m for m in names if m not in METHODS]
            if unknown:
                raise UnknownMethodError(
                    f"unknown method(s) {unknown} (choose from {', '.join(METHODS)})")
        if method not in names:
            names.append(method)
        if "exact" in names and inst.n > EXACT_MAX_N:
            raise _BadInput(f"method 'exact' is limited to n <= {EXACT_MAX_N} requests, "
                            f"the backlog has {inst.n}")
        results = compare(inst, tm, names, ls_budget_s=ls_seconds)
        cap = None
        if capacity:
            assert target_mean_latency is not None
            cap = capacity_sweep(inst.prompts, inst.outputs, target_mean_latency, kv_budget, tm,
                                 method, ls_budget_s=min(ls_seconds, 1.0))
    except _BadInput as exc:
        raise _fail(str(exc)) from None
    except (TraceError, PlanInputError, StepTimeModelError, UnknownMethodError,
            ExactSolverError) as exc:
        raise _fail(str(exc)) from None

    sched, ev = results[method]
    unit = ev.time_unit
    summary = Table(title=f"Plan: {method} on {trace.name}", show_header=False)
    summary.add_column("field")
    summary.add_column("value", justify="right")
    for key, value in (
        ("requests", f"{inst.n:,}"),
        ("prompt tokens (mean / max)", f"{inst.prompts.mean():,.0f} / {inst.prompts.max():,}"),
        ("output tokens (mean / max)", f"{inst.outputs.mean():,.0f} / {inst.outputs.max():,}"),
        ("KV budget (tokens)", f"{inst.kv_budget:,}"),
        ("time model", tm.name),
        ("dispatch", sched.dispatch),
        ("batches", str(len(sched.batches)) if sched.batches is not None else "-"),
        (f"mean completion ({unit})", _fmt(ev.mean, unit)),
        (f"sum of completions ({unit})", _fmt(ev.total, unit)),
        (f"makespan ({unit})", _fmt(ev.makespan, unit)),
        ("peak KV", f"{ev.peak_kv:,} ({ev.peak_kv / inst.kv_budget:.0%})"),
        ("planning time (s)", f"{sched.runtime_s:.3f}"),
    ):
        summary.add_row(key, value)
    console.print(summary)
    console.print(_comparison_table(results, method, unit))
    if "exact" in results and not tm.is_unit:
        console.print("note: 'exact' is optimal in the unit-time model; shown here evaluated "
                      "in step time.")

    cap_doc: dict[str, Any] | None = None
    if cap is not None:
        table = Table(title=f"Capacity sweep ({cap.method}, target mean "
                            f"{_fmt(cap.target_mean, unit)} {unit})")
        for col in ("KV budget", f"mean ({unit})", "meets target"):
            table.add_column(col, justify="right")
        for pt in cap.sweep:
            table.add_row(f"{pt.kv_budget:,}", _fmt(pt.mean, unit), "yes" if pt.meets else "no")
        console.print(table)
        cap_doc = {"target_mean": cap.target_mean, "method": cap.method, "time_unit": unit,
                   "smallest_kv_budget": cap.smallest,
                   "sweep": [{"kv_budget": pt.kv_budget, "mean": pt.mean, "meets": pt.meets}
                             for pt in cap.sweep]}
        if cap.smallest is None:
            console.print(f"capacity: target not met at any budget up to {kv_budget:,} tokens")
        else:
            console.print(f"capacity: smallest KV budget meeting the target: "
                          f"{cap.smallest:,} tokens")

    config = {"kv_budget": inst.kv_budget, "time_model": tm.name, "time_unit": unit,
              "method": method, "window_s": window, "limit": limit,
              "prefill_chunk": tm.prefill_chunk if not tm.is_unit else None,
              "ls_seconds": ls_seconds}
    try:
        paths = _write_outputs(out, inst, trace, config, method, results, cap_doc)
    except OSError as exc:
        raise _fail(f"cannot write to {out}: {exc.strerror or exc}") from None
    console.print("wrote " + ", ".join(str(p) for p in paths))
    if cap is not None and cap.smallest is None:
        raise typer.Exit(EXIT_TARGET_MISSED)


def register(app: typer.Typer) -> None:
    """Add the ``plan`` command to the ``tailwise`` app."""
    app.command("plan")(plan)

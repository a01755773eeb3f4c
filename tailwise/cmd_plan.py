"""``tailwise plan``: offline batch planning of a backlog under a KV budget.

Thin command over :mod:`tailwise.lab.planning` and :mod:`tailwise.planner`: load the
backlog with the trace loaders (timestamps ignored, or only the first ``--window``
seconds), plan it with every method, print the
chosen plan and a comparison table, write the schedule (JSON + CSV) and a KV-usage plot,
and optionally sweep the budget for capacity planning. Bad input exits with status 2
and a one-line ``error:`` message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tailwise.cli_flags import given
from tailwise.lab.planning import (
    PlanOptionError,
    format_plan_time,
    load_backlog,
    plan_time_model,
    write_plan_outputs,
)
from tailwise.planner import (
    EXACT_MAX_N,
    METHODS,
    Evaluation,
    ExactSolverError,
    Instance,
    PlanInputError,
    Schedule,
    UnknownMethodError,
    capacity_sweep,
    compare,
    default_methods,
)
from tailwise.records.trace import TraceError
from tailwise.scorer.step_time import StepTimeModelError

EXIT_BAD_INPUT = 2
EXIT_TARGET_MISSED = 1


def _fail(msg: str) -> typer.Exit:
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(EXIT_BAD_INPUT)


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
            label, format_plan_time(ev.mean, unit), format_plan_time(ev.percentile(50), unit),
            format_plan_time(ev.percentile(99), unit), format_plan_time(ev.total, unit),
            format_plan_time(ev.makespan, unit),
            f"{ev.peak_kv / ev.kv_budget:.0%}", ratio,
            str(len(sched.batches)) if sched.batches is not None else "-",
            f"{sched.runtime_s:.2f}",
        )
    return table


def plan(
    ctx: typer.Context,
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
            raise PlanOptionError("--capacity needs --target-mean-latency")
        if not capacity and target_mean_latency is not None:
            raise PlanOptionError("--target-mean-latency applies only with --capacity")
        if time_model == "unit" and given(ctx, "step_model"):
            raise PlanOptionError("--step-model does not apply to --time-model unit")
        if target_mean_latency is not None and not target_mean_latency > 0:
            raise PlanOptionError(f"--target-mean-latency must be > 0, got {target_mean_latency}")
        if not ls_seconds >= 0:
            raise PlanOptionError(f"--ls-seconds must be >= 0, got {ls_seconds}")
        if method not in METHODS:
            raise UnknownMethodError(
                f"unknown method {method!r} (choose from {', '.join(METHODS)})")
        tm = plan_time_model(time_model, step_model)
        trace = load_backlog(backlog, fmt, window, limit, skip_bad)
        try:
            inst = Instance.from_lengths(trace.prompt_tokens, trace.output_tokens, kv_budget,
                                         name=trace.name)
        except PlanInputError as exc:
            where = " (requests numbered from 0 in file order)" if "request " in str(exc) else ""
            raise PlanOptionError(f"{backlog}: {exc}{where}") from None
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
        if given(ctx, "ls_seconds") and "sorted-f-ls" not in names:
            raise PlanOptionError("--ls-seconds applies only to the method sorted-f-ls, "
                                  "which is not run")
        if "exact" in names and inst.n > EXACT_MAX_N:
            raise PlanOptionError(f"method 'exact' is limited to n <= {EXACT_MAX_N} requests, "
                            f"the backlog has {inst.n}")
        results = compare(inst, tm, names, ls_budget_s=ls_seconds)
        cap = None
        if capacity:
            assert target_mean_latency is not None
            cap = capacity_sweep(inst.prompts, inst.outputs, target_mean_latency, kv_budget, tm,
                                 method, ls_budget_s=min(ls_seconds, 1.0))
    except PlanOptionError as exc:
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
        (f"mean completion ({unit})", format_plan_time(ev.mean, unit)),
        (f"sum of completions ({unit})", format_plan_time(ev.total, unit)),
        (f"makespan ({unit})", format_plan_time(ev.makespan, unit)),
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
                            f"{format_plan_time(cap.target_mean, unit)} {unit})")
        for col in ("KV budget", f"mean ({unit})", "meets target"):
            table.add_column(col, justify="right")
        for pt in cap.sweep:
            table.add_row(f"{pt.kv_budget:,}", format_plan_time(pt.mean, unit), "yes" if pt.meets else "no")
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
        paths = write_plan_outputs(out, inst, trace, config, method, results, cap_doc)
    except OSError as exc:
        raise _fail(f"cannot write to {out}: {exc.strerror or exc}") from None
    console.print("wrote " + ", ".join(str(p) for p in paths))
    if cap is not None and cap.smallest is None:
        raise typer.Exit(EXIT_TARGET_MISSED)


def register(app: typer.Typer) -> None:
    """Add the ``plan`` command to the ``tailwise`` app."""
    app.command("plan")(plan)

"""Console side of ``tailwise simulate --replicas N --router ...`` (progress, table)."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tailwise.lab.arms import make_arm
from tailwise.lab.fleet import (
    FleetExperiment,
    fleet_table,
    parse_routers,
    run_fleet,
    write_fleet_report,
)
from tailwise.scorer.step_time import StepTimeModel
from tailwise.simulator.engine import EngineConfig
from tailwise.simulator.fleet import ReplicaArm
from tailwise.simulator.metrics import MetricsConfig
from tailwise.simulator.traces import Trace


def replica_arm(name: str, model: StepTimeModel) -> ReplicaArm:
    """One replica's policy; adaptive ones get their own in-process learner."""
    arm = make_arm(name, model)
    return ReplicaArm(arm.scheduler, arm.source, arm.sink)


def run_fleet_command(trace: Trace, policies: list[str], routers: str, replicas: int,
                      engine: EngineConfig, model: StepTimeModel, *, rate_scale: float | None,
                      target_load: float | None, out: Path, plots: bool, progress: bool,
                      metrics: MetricsConfig) -> Path:
    exp = FleetExperiment(trace=trace, policies=policies, routers=parse_routers(routers),
                          replicas=replicas, factory=lambda n: replica_arm(n, model),
                          engine=engine, model=model, rate_scale=rate_scale,
                          target_load=target_load, metrics=metrics)
    if progress and sys.stderr.isatty():
        with Progress(TextColumn("{task.description:>28}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=Console(stderr=True)) as bar:
            tasks = {f"{r}/{p}": bar.add_task(f"{r}/{p}", total=len(trace))
                     for r in exp.routers for p in policies}

            def on_progress(key: str, done: int, total: int) -> None:
                bar.update(tasks[key], completed=done)

            cells, context = run_fleet(exp, on_progress)
    else:
        cells, context = run_fleet(exp)
    path = write_fleet_report(out, cells, context, plots=plots)
    header, rows, best = fleet_table(cells)
    keep = [0, 1, 2, 3, 4, 7]  # router, policy, TTLT p99/mean, TTFT mean, imbalance
    header = [header[i] for i in keep]
    rows = [[r[i] for i in keep] for r in rows]
    best = [[b[i] for i in keep] for b in best]
    table = Table(title=f"{context['trace']['name']} · {replicas} replicas · load/replica "
                        f"{context['config']['offered_load_per_replica']}")
    for i, col in enumerate(header):
        table.add_column(col, justify="left" if i < 2 else "right")
    for row, b in zip(rows, best, strict=True):
        table.add_row(*(f"[bold green]{c}[/]" if flag else c for c, flag in zip(row, b, strict=True)))
    console = Console()
    console.print(table)
    console.print(f"report: {path}")
    return path

"""``tailwise bench``: every policy on every suite workload; report + results.json."""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from tailwise.lab.bench import BenchError, BenchOptions, parse_policies, run_bench, write_results
from tailwise.lab.bench_report import readme_table, write_report
from tailwise.scorer.frozen import FrozenPolicyError
from tailwise.scorer.policy import PolicyError
from tailwise.scorer.step_time import StepTimeModelError
from tailwise.simulator.step_models import load_step_model
from tailwise.simulator.suite import (
    SHAPE_KNOBS,
    SUITE,
    UnknownWorkloadError,
    Workload,
    check_shape,
    parse_names,
    parse_shape,
)
from tailwise.simulator.traces import TraceError
from tailwise.wire.policy_file import load as load_frozen

_USER_ERRORS = (BenchError, UnknownWorkloadError, TraceError, StepTimeModelError,
                FrozenPolicyError, PolicyError)


def _fail(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    @app.command()
    def bench(
        out: Annotated[Path, typer.Option(help="Report directory.")] = Path("bench"),
        workload: Annotated[str | None, typer.Option(
            help=f"Comma-separated workloads (default all): {', '.join(SUITE)}.")] = None,
        policy: Annotated[str | None, typer.Option(
            help="Comma-separated policies (default: every registered policy).")] = None,
        policy_file: Annotated[list[Path] | None, typer.Option(
            help="Also run a frozen policy file (repeatable); named file:<stem>.")] = None,
        step_model: Annotated[str, typer.Option(
            help="Bundled step-time model or a JSON file.")] = "h100-llama3-8b",
        seed: Annotated[int, typer.Option(help="Seed of the synthetic workloads.")] = 0,
        scale: Annotated[float, typer.Option(
            help="Multiply every workload's request count.")] = 1.0,
        plots: Annotated[bool, typer.Option(help="Write the suite figure.")] = True,
        progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
        profile: Annotated[bool, typer.Option(
            help="Print wall time and peak RSS at the end.")] = False,
        jobs: Annotated[int, typer.Option(
            help="Worker processes (runs are deterministic, so results do not change).")] = 1,
        head: Annotated[int | None, typer.Option(
            help="Only the first N requests of each workload (a slice, same load).")] = None,
        engine_impl: Annotated[str, typer.Option(
            "--engine", help="sim (built-in simulator) or vllm (vLLM's real scheduler on "
                             "CPU; needs the [vllm] extra).")] = "sim",
        shape: Annotated[str | None, typer.Option(
            help="Move the workloads' shape knobs, KNOB=V,... (a held-out variant; every "
                 "selected workload must take each knob): "
                 + "; ".join(f"{w}: {', '.join(k)}" for w, k in SHAPE_KNOBS.items())
                 + ".")] = None,
    ) -> None:
        """Run every policy on every suite workload and write report.md/.html + results.json."""
        t0 = time.perf_counter()
        try:
            workloads = parse_names(workload)
            model = load_step_model(step_model)
            files = {f"file:{p.stem}": load_frozen(p) for p in (policy_file or [])}
            names = parse_policies(policy, files)
            if policy is None:
                names += [f for f in files if f not in names]
            knobs = parse_shape(shape)
            for w in workloads:
                check_shape(w, knobs)
        except _USER_ERRORS as exc:
            _fail(str(exc))
            return
        opts = BenchOptions(workloads=workloads, policies=names, files=files, model=model,
                            seed=seed, scale=scale, jobs=jobs, head=head, engine=engine_impl,
                            shape=tuple(sorted(knobs.items())))
        try:
            opts.validate()
        except BenchError as exc:
            _fail(f"--{exc!s}")
            return
        try:
            if progress and sys.stderr.isatty():
                with Progress(TextColumn("{task.description:<34}"), BarColumn(),
                              MofNCompleteColumn(), TimeElapsedColumn(),
                              console=Console(stderr=True)) as bar:
                    total = bar.add_task("suite (runs)", total=len(workloads) * len(names))
                    current: dict[str, TaskID] = {}

                    def on_workload(wl: Workload) -> None:
                        current.clear()

                    def on_progress(w: str, p: str, done: int, n: int) -> None:
                        if jobs > 1:  # whole runs from worker processes
                            bar.update(total, advance=1, description=f"done: {w} · {p}")
                            return
                        key = f"{w} · {p}"
                        if key not in current:
                            for old in current.values():
                                bar.remove_task(old)
                                bar.advance(total)
                            current.clear()
                            current[key] = bar.add_task(key, total=n)
                        bar.update(current[key], completed=done)

                    results = run_bench(opts, on_progress, on_workload)
                    for old in current.values():
                        bar.remove_task(old)
                    bar.update(total, completed=len(workloads) * len(names))
            else:
                results = run_bench(opts)
        except _USER_ERRORS as exc:
            _fail(str(exc))
            return
        write_results(out, results)
        path = write_report(out, results, plots=plots)
        console = Console()
        console.print(readme_table(results), markup=False, soft_wrap=True)
        console.print(f"report: {path}")
        if profile:
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            console.print(f"wall {time.perf_counter() - t0:.1f} s, peak RSS {rss:.0f} MiB"
                          + (f" (largest worker {child:.0f} MiB)" if jobs > 1 else ""))

"""``tailwise simulate``: run policies on a trace and write the comparison report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tailwise.cli_flags import fail, given, reject
from tailwise.lab.comparison import Comparison, EngineChoiceError, as_backlog, run_comparison
from tailwise.planner.methods import METHODS as PLAN_METHODS
from tailwise.records.trace import TraceError
from tailwise.scorer.frozen import FrozenPolicyError
from tailwise.scorer.policy import PolicyError
from tailwise.scorer.registry import POLICY_NAMES, UnknownPolicyError
from tailwise.scorer.step_time import StepTimeModelError
from tailwise.simulator.engine import EngineConfig, EngineConfigError
from tailwise.simulator.metrics import MetricsConfig
from tailwise.simulator.report import lookup
from tailwise.simulator.routers import UnknownRouterError
from tailwise.simulator.step_models import load_step_model
from tailwise.simulator.traces import load_trace
from tailwise.wire.policy_file import load as load_frozen

_USER_ERRORS = (TraceError, StepTimeModelError, EngineConfigError, UnknownPolicyError,
                FrozenPolicyError, PolicyError, EngineChoiceError)


def parse_columns(spec: str | None) -> dict[str, str] | None:
    if not spec:
        return None
    out = {}
    for part in spec.split(","):
        role, sep, col = part.partition("=")
        if not sep or role.strip() not in ("arrival", "prompt", "output", "class", "slo",
                                           "hash_ids"):
            fail(f"--columns: expected ROLE=COLUMN with ROLE in arrival, prompt, output, "
                 f"class, slo, hash_ids; got {part!r}")
        out[role.strip()] = col.strip()
    return out


def parse_policies(spec: str) -> list[str]:
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        fail("--policy: give at least one policy name")
    unknown = [n for n in names if n not in POLICY_NAMES]
    if unknown:
        fail(f"unknown policy {unknown[0]!r}; choose from: {', '.join(POLICY_NAMES)}")
    if len(set(names)) != len(names):
        fail("--policy: a policy is listed twice")
    return names


#: the modes of ``tailwise simulate``
COMPARE, SCENARIO, ONLINE_SCENARIO, ONLINE_TRACE = (
    "a comparison on a trace", "--scenario without --online", "--online --scenario",
    "--online on a trace")
#: flags that apply only in some modes (every other flag applies in all of them)
APPLIES: dict[str, frozenset[str]] = {
    **{name: frozenset({COMPARE, ONLINE_TRACE}) for name in (
        "trace", "head", "fmt", "columns", "time_unit", "skip_bad", "rate_scale")},
    "policy": frozenset({COMPARE, SCENARIO}),
    "policy_file": frozenset({COMPARE}),
    "backlog": frozenset({COMPARE}),
    "plan": frozenset({COMPARE}),
    "progress": frozenset({COMPARE}),
    "replicas": frozenset({COMPARE}),
    "router": frozenset({COMPARE}),
    "seed": frozenset({SCENARIO, ONLINE_SCENARIO, ONLINE_TRACE}),
    **{name: frozenset({ONLINE_SCENARIO, ONLINE_TRACE}) for name in (
        "sidecar", "token", "round_every_s", "trials_per_round", "min_requests")},
}


def mode_of(scenario: str | None, online: bool) -> str:
    if online:
        return ONLINE_SCENARIO if scenario is not None else ONLINE_TRACE
    return SCENARIO if scenario is not None else COMPARE


def check_flags(ctx: typer.Context, mode: str) -> None:
    """Exit 2 on a flag the chosen mode would ignore."""
    if mode in (SCENARIO, ONLINE_SCENARIO):
        reject(ctx, ["trace"], "and --scenario are exclusive (a scenario builds its own trace)")
    for name, modes in APPLIES.items():
        if mode not in modes:
            reject(ctx, [name], f"does not apply to {mode}")
    if given(ctx, "sidecar"):
        reject(ctx, EXTERNAL_SIDECAR_OWNS,
               "does not apply with --sidecar: an external sidecar tunes by its own config")


#: flags an external ``--sidecar`` ignores (they go into the config of a sidecar
#: ``--online`` starts itself)
EXTERNAL_SIDECAR_OWNS = ("trials_per_round", "min_requests")


def register(app: typer.Typer) -> None:
    @app.command()
    def simulate(
        ctx: typer.Context,
        trace: Annotated[str, typer.Option(
            help="Bundled trace (azure-code, azure-conv) or a trace file (Azure CSV, "
                 "Mooncake JSONL, generic CSV/JSONL).")] = "azure-code",
        policy: Annotated[str, typer.Option(
            help=f"Comma-separated policies: {', '.join(POLICY_NAMES)}.")] = ",".join(POLICY_NAMES),
        policy_file: Annotated[list[Path] | None, typer.Option(
            help="Also run a frozen policy file (repeatable); named file:<stem>.")] = None,
        out: Annotated[Path, typer.Option(help="Report directory.")] = Path("report"),
        rate_scale: Annotated[float | None, typer.Option(
            help="Multiply the arrival rate by X (timestamps divided by X).")] = None,
        target_load: Annotated[float | None, typer.Option(
            help="Scale arrivals so offered work ≈ L × engine capacity (scenarios: "
                 "default 0.9).")] = None,
        head: Annotated[int | None, typer.Option(help="Use only the first N requests.")] = None,
        fmt: Annotated[str | None, typer.Option(
            "--format", help="Trace format: azure, mooncake, generic (default: detect).")] = None,
        columns: Annotated[str | None, typer.Option(
            help="Generic traces: ROLE=COLUMN,... (arrival, prompt, output, class, slo).")] = None,
        time_unit: Annotated[str, typer.Option(help="Generic traces: s or ms.")] = "s",
        skip_bad: Annotated[bool, typer.Option(
            help="Skip and count malformed rows instead of failing.")] = False,
        step_model: Annotated[str, typer.Option(
            help="Bundled step-time model (h100-llama3-8b, a100-llama3-8b) or a JSON file.")
        ] = "h100-llama3-8b",
        num_gpu_blocks: Annotated[int, typer.Option(help="KV cache blocks.")] = 28_600,
        block_size: Annotated[int, typer.Option(help="Tokens per KV block.")] = 16,
        max_num_seqs: Annotated[int, typer.Option(help="Max running requests.")] = 256,
        max_num_batched_tokens: Annotated[int, typer.Option(help="Token budget per step.")] = 8192,
        prefix_caching: Annotated[bool, typer.Option(help="Prefix caching.")] = True,
        preemption: Annotated[str, typer.Option(help="recompute or swap.")] = "recompute",
        short_threshold: Annotated[int, typer.Option(
            help="Class 'short' = prompt tokens ≤ this (when the trace has no classes).")] = 1024,
        ttft_slo: Annotated[float, typer.Option(help="TTFT SLO (s) for goodput.")] = 8.0,
        tpot_slo: Annotated[float, typer.Option(help="TPOT SLO (s) for goodput.")] = 0.05,
        window: Annotated[float, typer.Option(help="Window (s) of the P99-over-time plot.")] = 60.0,
        plots: Annotated[bool, typer.Option(help="Write PNG plots.")] = True,
        progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
        scenario: Annotated[str | None, typer.Option(
            help="Workload-shift scenario instead of --trace: code-to-conv, load-ramp, "
                 "long-burst, reasoning, code-reasoning-slo, chat-longdoc-burst, slo-flip, "
                 "reasoning-longdoc-chat (three phases, own engine with KV pressure).")] = None,
        online: Annotated[bool, typer.Option(
            help="Closed loop on --scenario or on --trace: compare static FCFS, a static "
                 "best-of-papers policy tuned offline on the pre-shift workload (a trace: "
                 "its first quarter), and online tailwise connected over gRPC to a real "
                 "sidecar.")] = False,
        sidecar: Annotated[str | None, typer.Option(
            help="With --online: an existing sidecar HOST:PORT (default: start one).")] = None,
        token: Annotated[str | None, typer.Option(
            help="With --sidecar: bearer token.")] = None,
        round_every_s: Annotated[float, typer.Option(
            help="With --online: engine seconds between tuning rounds.")] = 60.0,
        trials_per_round: Annotated[int, typer.Option(
            help="With --online: Optuna trials per round.")] = 8,
        min_requests: Annotated[int, typer.Option(
            help="With --online: finished requests a round's replay window needs; a round "
                 "with fewer is skipped (too_few_requests). At a few requests per second "
                 "lower it or raise --round-every-s.")] = 400,
        seed: Annotated[int, typer.Option(help="Seed for scenarios and tuning.")] = 0,
        engine_impl: Annotated[str, typer.Option(
            "--engine", help="sim (built-in simulator) or vllm (the real vLLM scheduler and "
                             "KV cache manager on CPU with fake model outputs; needs the "
                             "[vllm] extra).")] = "sim",
        backlog: Annotated[bool, typer.Option(
            help="Backlog mode: every request waits at t=0 (timestamps ignored).")] = False,
        plan: Annotated[str | None, typer.Option(
            help="With --backlog: also run offline planner orders as policies, e.g. "
                 "sorted-f,sorted-f-ls (named plan:<method>).")] = None,
        replicas: Annotated[int, typer.Option(
            help="Fleet mode: N engine replicas behind a router on one clock "
                 "(--target-load then means load per replica).")] = 1,
        router: Annotated[str | None, typer.Option(
            help="Fleet mode: comma-separated routers: round-robin, least-loaded, "
                 "prefix-affinity, kv-aware (default least-loaded).")] = None,
    ) -> None:
        """Run policies on one trace (same trace and seed for all) and write a report."""
        mode = mode_of(scenario, online)
        check_flags(ctx, mode)
        if mode != COMPARE:
            from tailwise.lab.closed_loop import run_online
            from tailwise.lab.comparison import engine_runner
            from tailwise.lab.options import OnlineOptions

            try:
                model = load_step_model(step_model)
                engine = EngineConfig(num_gpu_blocks=num_gpu_blocks, block_size=block_size,
                                      max_num_seqs=max_num_seqs,
                                      max_num_batched_tokens=max_num_batched_tokens,
                                      enable_prefix_caching=prefix_caching,
                                      preemption_mode=preemption)
                engine.validate()
                runner = engine_runner(engine_impl)
                if min_requests < 1:
                    fail(f"--min-requests must be >= 1, got {min_requests}")
                tr = None
                if mode == ONLINE_TRACE:
                    tr = load_trace(trace, fmt, skip_bad=skip_bad, columns=parse_columns(columns),
                                    time_unit=time_unit)
                    if head is not None:
                        if head < 1:
                            fail(f"--head must be >= 1, got {head}")
                        tr = tr.head(head)
                    if rate_scale is not None and target_load is not None:
                        fail("give either --rate-scale or --target-load, not both")
                    load = target_load
                else:
                    load = target_load if target_load is not None else 0.9
                path = run_online(OnlineOptions(
                    scenario=scenario or "", online=online, sidecar=sidecar,
                    token=token, out=out, engine=engine, model=model, load=load,
                    window_s=window, round_every_s=round_every_s,
                    trials_per_round=trials_per_round, min_requests=min_requests,
                    seed=seed, plots=plots,
                    metrics=MetricsConfig(short_threshold=short_threshold, ttft_slo_s=ttft_slo,
                                          tpot_slo_s=tpot_slo),
                    policies=tuple(parse_policies(policy)),
                    trace=tr, rate_scale=rate_scale,
                    runner=runner, engine_name=engine_impl))
            except _USER_ERRORS as exc:
                fail(str(exc))
                return
            Console().print(f"report: {path}")
            return
        names = parse_policies(policy)
        try:
            model = load_step_model(step_model)
            engine = EngineConfig(num_gpu_blocks=num_gpu_blocks, block_size=block_size,
                                  max_num_seqs=max_num_seqs,
                                  max_num_batched_tokens=max_num_batched_tokens,
                                  enable_prefix_caching=prefix_caching, preemption_mode=preemption)
            engine.validate()
            tr = load_trace(trace, fmt, skip_bad=skip_bad, columns=parse_columns(columns),
                            time_unit=time_unit)
            if head is not None:
                if head < 1:
                    fail(f"--head must be >= 1, got {head}")
                tr = tr.head(head)
            files = {f"file:{p.stem}": load_frozen(p) for p in (policy_file or [])}
        except _USER_ERRORS as exc:
            fail(str(exc))
            return
        plans: list[str] = []
        if plan is not None:
            if not backlog:
                fail("--plan needs --backlog (plans are computed for a backlog at t=0)")
            plans = [m.strip() for m in plan.split(",") if m.strip()]
            unknown_plans = [m for m in plans if m not in PLAN_METHODS]
            if unknown_plans:
                fail(f"unknown plan method {unknown_plans[0]!r}; choose from: "
                     f"{', '.join(PLAN_METHODS)}")
        if backlog:
            tr = as_backlog(tr)
            if rate_scale is not None or target_load is not None:
                fail("--backlog ignores timestamps: drop --rate-scale / --target-load")
        if tr.skipped:
            Console(stderr=True).print(
                f"[yellow]skipped {tr.skipped} bad rows[/] (first: {tr.skip_reasons[0]})")
        if replicas != 1 or router is not None:
            if engine_impl != "sim" or backlog or files:
                fail("--replicas/--router run the built-in simulator on a timed trace with "
                     "named policies (no --engine vllm, --backlog or --policy-file)")
            from tailwise.lab.fleet_cli import run_fleet_command

            try:
                run_fleet_command(tr, names, router or "least-loaded", replicas, engine, model,
                                  rate_scale=rate_scale, target_load=target_load, out=out,
                                  plots=plots, progress=progress,
                                  metrics=MetricsConfig(short_threshold=short_threshold,
                                                        ttft_slo_s=ttft_slo,
                                                        tpot_slo_s=tpot_slo))
            except (*_USER_ERRORS, UnknownRouterError) as exc:
                fail(str(exc))
            return

        comp = Comparison(trace=tr, policies=names, engine=engine, model=model,
                          metrics=MetricsConfig(short_threshold=short_threshold,
                                                ttft_slo_s=ttft_slo, tpot_slo_s=tpot_slo),
                          frozen=files, plans=plans, rate_scale=rate_scale,
                          target_load=target_load, engine_name=engine_impl)
        console = Console()
        try:
            if progress and sys.stderr.isatty():
                with Progress(TextColumn("{task.description:>16}"), BarColumn(),
                              MofNCompleteColumn(), TimeElapsedColumn(),
                              console=Console(stderr=True)) as bar:
                    tasks = {n: bar.add_task(n, total=len(tr)) for n in comp.arm_names()}

                    def on_progress(name: str, done: int, total: int) -> None:
                        bar.update(tasks[name], completed=done)

                    runs, context, path = run_comparison(comp, out, window_s=window,
                                                         plots=plots, on_progress=on_progress)
            else:
                runs, context, path = run_comparison(comp, out, window_s=window, plots=plots)
        except _USER_ERRORS as exc:
            fail(str(exc))
            return
        table = Table(title=f"{context['trace']['name']} · load {context['config']['offered_load']}"
                            f" · scale {context['config']['rate_scale']:.3g}")
        for col in ("policy", "TTLT mean", "TTLT p99", "short TTFT", "goodput", "preempt"):
            table.add_column(col, justify="right" if col != "policy" else "left")
        for r in runs:
            s = r.summary
            vals = [lookup(s, ("overall", "ttlt", "mean")), lookup(s, ("overall", "ttlt", "p99")),
                    lookup(s, ("classes", "short", "ttft", "mean")),
                    lookup(s, ("overall", "goodput_rps"))]
            table.add_row(r.name, *("–" if v is None else f"{v:.3f}" for v in vals),
                          str(s["overall"]["preemptions"]))
        console.print(table)
        console.print(f"report: {path}")

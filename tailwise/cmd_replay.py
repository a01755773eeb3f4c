"""``tailwise replay`` (a trace against a live OpenAI-compatible server) and ``tailwise
report`` (report directories side by side)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tailwise.cli_flags import fail
from tailwise.simulator.metrics import MetricsConfig
from tailwise.simulator.traces import TraceError, load_trace


def _token_range(spec: str) -> tuple[int, int]:
    lo, sep, hi = spec.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(lo), int(hi)
    except ValueError:
        fail(f"--token-range: expected LO:HI (integers), got {spec!r}")
        raise


def register(app: typer.Typer) -> None:
    @app.command()
    def replay(
        endpoint: Annotated[str, typer.Option(
            help="Server base URL, with or without /v1 (e.g. http://127.0.0.1:8000/v1).")],
        trace: Annotated[str, typer.Option(
            help="Bundled trace (azure-code, azure-conv) or a trace file, as in simulate.")],
        out: Annotated[Path, typer.Option(help="Report directory.")] = Path("replay-report"),
        label: Annotated[str, typer.Option(
            help="Name of this run in results.json and reports (e.g. stock, tailwise).")
        ] = "replay",
        model: Annotated[str | None, typer.Option(
            help="Model name (default: the first model of GET /v1/models).")] = None,
        rate_scale: Annotated[float, typer.Option(
            help="Multiply the arrival rate by X (timestamps divided by X).")] = 1.0,
        head: Annotated[int | None, typer.Option(help="Use only the first N requests.")] = None,
        fmt: Annotated[str | None, typer.Option(
            "--format", help="Trace format: azure, mooncake, generic (default: detect).")] = None,
        max_concurrency: Annotated[int, typer.Option(
            help="At most this many requests open at once (later ones wait, in order).")] = 256,
        timeout: Annotated[float, typer.Option(
            help="Seconds a request may take from send to last token.")] = 600.0,
        prompt_mode: Annotated[str, typer.Option(
            help="auto (token ids if the server accepts them), tokens, or text.")] = "auto",
        token_range: Annotated[str, typer.Option(
            help="Token ids LO:HI used to build prompts (must be valid for the model).")
        ] = "100:300",
        max_model_len: Annotated[int | None, typer.Option(
            help="Clip prompt+output to this (default: the server's max_model_len).")] = None,
        api_key: Annotated[str | None, typer.Option(
            envvar="OPENAI_API_KEY", help="Bearer token for the server.")] = None,
        short_threshold: Annotated[int, typer.Option(
            help="Class 'short' = prompt tokens ≤ this.")] = 1024,
        ttft_slo: Annotated[float, typer.Option(help="TTFT SLO (s) for goodput.")] = 8.0,
        tpot_slo: Annotated[float, typer.Option(help="TPOT SLO (s) for goodput.")] = 0.05,
        window: Annotated[float, typer.Option(help="Window (s) of the P99-over-time plot.")] = 60.0,
        scrape_metrics: Annotated[bool, typer.Option(
            help="Poll the server's /metrics (vLLM/SGLang gauges) for the queue/KV plot.")
        ] = True,
        plots: Annotated[bool, typer.Option(help="Write PNG plots.")] = True,
        progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    ) -> None:
        """Replay a trace's arrivals against an OpenAI-compatible server (vLLM, SGLang)
        and write the simulate report from client-side measurements. Ctrl-C writes what
        was measured so far."""
        from tailwise.lab.replay import ReplayError, ReplayOptions
        from tailwise.lab.replay_report import replay as run

        if prompt_mode not in ("auto", "tokens", "text"):
            fail(f"--prompt-mode must be auto, tokens or text, got {prompt_mode!r}")
        if head is not None and head < 1:
            fail(f"--head must be >= 1, got {head}")
        if not rate_scale > 0 or rate_scale == float("inf"):
            fail(f"--rate-scale must be a positive finite number, got {rate_scale}")
        if max_model_len is not None and max_model_len < 2:
            fail(f"--max-model-len must be >= 2, got {max_model_len}")
        try:
            tr = load_trace(trace, fmt)
            if head is not None:
                tr = tr.head(head)
            if rate_scale != 1.0:
                tr = tr.scaled(rate_scale)
        except TraceError as exc:
            fail(str(exc))
            return
        if len(tr) == 0:
            fail(f"--trace: {trace} has no requests")
        opts = ReplayOptions(
            endpoint=endpoint, trace=tr, out=out, label=label, model=model,
            prompt_mode=prompt_mode,  # type: ignore[arg-type]
            max_concurrency=max_concurrency, timeout_s=timeout,
            token_range=_token_range(token_range), api_key=api_key,
            max_model_len=max_model_len, rate_scale=rate_scale,
            scrape_interval_s=1.0 if scrape_metrics else None,
            metrics=MetricsConfig(short_threshold=short_threshold, ttft_slo_s=ttft_slo,
                                  tpot_slo_s=tpot_slo),
            window_s=window, plots=plots)
        err = Console(stderr=True)
        show = progress and sys.stderr.isatty()

        async def main() -> tuple[Path, bool, int]:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGINT, stop.set)
            failed = 0
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=err, disable=not show) as bar:
                task = bar.add_task(f"{label}: 0 failed", total=len(tr))

                def on_done(m: object) -> None:
                    nonlocal failed
                    failed += getattr(m, "status", "ok") != "ok"
                    bar.update(task, advance=1, description=f"{label}: {failed} failed")

                try:
                    path, outcome = await run(opts, stop=stop, on_done=on_done)
                finally:
                    with contextlib.suppress(NotImplementedError, RuntimeError):
                        loop.remove_signal_handler(signal.SIGINT)
            return path, outcome.interrupted, failed

        try:
            path, interrupted, failed = asyncio.run(main())
        except ReplayError as exc:
            fail(str(exc))
            return
        if interrupted:
            err.print("[yellow]interrupted: the report covers the requests measured so far[/]")
        if failed:
            err.print(f"[yellow]{failed} requests failed or were interrupted; see 'Errors by "
                      f"reason' in the report[/]")
        Console().print(f"report: {path}")
        if interrupted:
            raise typer.Exit(130)  # the shell's status for SIGINT, after the report is written

    @app.command()
    def report(
        dirs: Annotated[list[Path], typer.Argument(
            help="Two or more report directories (from simulate or replay).")],
        out: Annotated[Path, typer.Option(help="Comparison directory.")] = Path("comparison"),
        names: Annotated[str | None, typer.Option(
            help="Comma-separated labels for the directories (default: their names).")] = None,
        policy: Annotated[str | None, typer.Option(
            help="Comma-separated policy names to keep (default: every run).")] = None,
        baseline: Annotated[str | None, typer.Option(
            help="Run (DIR/POLICY or POLICY) the ratios divide by (default: the first).")
        ] = None,
        plots: Annotated[bool, typer.Option(help="Write the CDF plot.")] = True,
    ) -> None:
        """Put report directories side by side: metrics, ratios to a baseline, errors."""
        from tailwise.lab.compare import CompareError, compare

        def split(spec: str) -> list[str]:
            return [x.strip() for x in spec.split(",") if x.strip()]

        try:
            path = compare(dirs, out, names=split(names) if names else None,
                           policies=split(policy) if policy else None, baseline=baseline,
                           plots=plots)
        except CompareError as exc:
            fail(str(exc))
            return
        Console().print(f"comparison: {path}")

"""One ``tailwise replay`` end to end (:func:`replay`) and its report: the ``simulate``
report (same files, same ``results.json`` schema, through the simulator's own metrics and
report code) filled from client-side measurements, plus the client's errors by reason and
``replay_<label>.csv``.
"""

from __future__ import annotations

import asyncio
import csv
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tailwise.lab.replay import (
    Measurement,
    PlannedRequest,
    Prepared,
    ReplayOptions,
    ReplayOutcome,
    error_counts,
    prepare,
    run_replay,
    to_sim_result,
)
from tailwise.simulator.metrics import dist, summarize
from tailwise.simulator.report import Run, Section, write_report


def write_replay_report(opts: ReplayOptions, prep: Prepared, outcome: ReplayOutcome) -> Path:
    """The simulate report (same files and schema), plus the client's errors by reason."""
    ms = sorted(outcome.measurements, key=lambda m: m.index)
    res = to_sim_result(opts.trace, prep.plan, ms, opts.label, outcome.wall_s,
                        outcome.server_series)
    # the standard summary plus the replay's own sections (schema: add fields freely)
    summary: dict[str, Any] = dict(summarize(res, opts.metrics))
    errors = error_counts(ms)
    ok = [m for m in ms if m.status == "ok"]
    short_out = sum(m.tokens < prep.plan[m.index].output_tokens for m in ok)
    mism = [m for m in ok if m.server_prompt_tokens is not None
            and m.server_prompt_tokens != prep.plan[m.index].prompt_tokens]
    summary["errors"] = {"failed": sum(m.status == "error" for m in ms),
                         "interrupted": sum(m.status == "interrupted" for m in ms),
                         "by_reason": errors}
    summary["client"] = {
        "planned": len(prep.plan), "sent": sum(math.isfinite(m.sent_s) for m in ms),
        "output_shorter_than_asked": short_out,
        "prompt_tokens_differing_from_plan": len(mism),
        "clipped_to_max_model_len": sum(prep.plan[m.index].clipped for m in ms),
        "send_lag_s": dist(np.array([m.sent_s - m.arrival_s for m in ms], dtype=np.float64)),
    }
    run = Run(opts.label, res, summary)
    cfg = prep.cfg
    context = {
        "trace": {**res.trace.summary(), "planned_requests": len(prep.plan)},
        "config": {"engine_impl": "replay", "endpoint": cfg.base_url, "model": cfg.model,
                   "prompt_mode": cfg.prompt_mode, "max_concurrency": cfg.max_concurrency,
                   "timeout_s": cfg.timeout_s, "max_model_len": prep.max_model_len,
                   "rate_scale": round(opts.rate_scale, 6), "interrupted": outcome.interrupted,
                   "wall_s": round(outcome.wall_s, 3), "policies": [opts.label],
                   "queue_series": "server /metrics" if outcome.server_series else "client"},
    }
    sections = [_errors_section(opts.label, ms)]
    notes = [f"{summary['client']['sent']} of {len(prep.plan)} planned requests sent"]
    if outcome.interrupted:
        notes.append("run interrupted (Ctrl-C): the tables cover what was measured so far")
    if summary["client"]["clipped_to_max_model_len"]:
        notes.append(f"{summary['client']['clipped_to_max_model_len']} requests clipped to "
                     f"max_model_len {prep.max_model_len}")
    late = sum(m.sent_s - m.arrival_s > 0.1 for m in ms if math.isfinite(m.sent_s))
    if late:
        notes.append(f"{late} requests sent over 0.1 s after their arrival (waiting for one "
                     f"of the {prep.cfg.max_concurrency} --max-concurrency slots, or a busy "
                     f"client; p99 lag {summary['client']['send_lag_s']['p99']:.2f} s): that "
                     f"wait counts in their TTFT")
    if short_out:
        notes.append(f"{short_out} answers shorter than asked (server ignored ignore_eos?)")
    if mism:
        notes.append(f"{len(mism)} prompts counted differently by the server (text prompts "
                     f"are approximate)")
    trace = context["trace"]
    queue_src = ("the server's own /metrics gauges" if outcome.server_series
                 else "client view (requests sent, no token yet)")
    description = (
        f"Replay of trace **{trace.get('name', '?')}** ({len(prep.plan)} requests over "
        f"{trace.get('duration_s', '?')} s after rate scale {opts.rate_scale:g}) against "
        f"`{cfg.base_url}`, model `{cfg.model}`, prompts as "
        f"{'token ids' if cfg.prompt_mode == 'tokens' else 'text (approximate lengths)'}, "
        f"output lengths forced with ignore_eos, at most {cfg.max_concurrency} requests open, "
        f"timeout {cfg.timeout_s:g} s. Queue plot: "
        f"{queue_src}. Latencies measured on the client from each request's "
        f"trace arrival time (queueing inside the server is not observable: '–'). "
        f"Classes: short = prompt ≤ {opts.metrics.short_threshold} tokens. SLO: TTFT ≤ "
        f"{opts.metrics.ttft_slo_s} s, TPOT ≤ {opts.metrics.tpot_slo_s * 1000:g} ms. "
        + "; ".join(notes) + ".")
    opts.out.mkdir(parents=True, exist_ok=True)
    _write_client_csv(opts.out / f"replay_{opts.label}.csv", ms, prep.plan)
    return write_report(opts.out, [run], context, opts.metrics, window_s=opts.window_s,
                        plots=opts.plots, title="tailwise replay report",
                        description=description, sections=sections,
                        time_label="replay time (s)")


def _errors_section(label: str, ms: Sequence[Measurement]) -> Section:
    first: dict[str, str] = {}
    for m in ms:
        if m.status != "ok":
            first.setdefault(m.reason, m.detail)
    counts = error_counts(ms)
    rows = [[label, reason, str(n), first[reason]] for reason, n in counts.items()]
    note = (f"{sum(counts.values())} of {len(ms)} requests failed or were interrupted; "
            f"per request: `replay_{label}.csv`." if counts else
            f"No failed request ({len(ms)} sent; per request: `replay_{label}.csv`).")
    return Section("Errors by reason", ["run", "reason", "requests", "first message"], rows, note)


def _write_client_csv(path: Path, ms: Sequence[Measurement],
                      plan: Sequence[PlannedRequest]) -> None:
    def f(x: float) -> str:
        return f"{x:.6f}" if math.isfinite(x) else ""

    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["request", "status", "reason", "arrival_s", "sent_s", "first_token_s",
                    "finish_s", "prompt_tokens_sent", "prompt_tokens_server",
                    "output_tokens_asked", "output_tokens_received", "trace_prompt_tokens",
                    "trace_output_tokens", "detail"])
        for m in ms:
            p = plan[m.index]
            w.writerow([m.index, m.status, m.reason, f(m.arrival_s), f(m.sent_s),
                        f(m.first_token_s), f(m.finish_s), p.prompt_tokens,
                        "" if m.server_prompt_tokens is None else m.server_prompt_tokens,
                        p.output_tokens, m.tokens, p.trace_prompt_tokens,
                        p.trace_output_tokens, m.detail])


async def replay(opts: ReplayOptions, *, stop: asyncio.Event | None = None,
                 on_start: Callable[[Prepared], None] | None = None,
                 on_done: Callable[[Measurement], None] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> tuple[Path, ReplayOutcome]:
    """Prepare, replay until done or ``stop`` is set, and write the report either way."""
    limits = httpx.Limits(max_connections=opts.max_concurrency + 1,
                          max_keepalive_connections=opts.max_concurrency + 1)
    timeout = httpx.Timeout(opts.timeout_s, connect=min(opts.timeout_s, 10.0))
    async with httpx.AsyncClient(limits=limits, timeout=timeout, transport=transport) as client:
        prep = await prepare(opts, client)
        if on_start is not None:
            on_start(prep)
        outcome = await run_replay(prep.plan, prep.cfg, client=client, stop=stop,
                                   on_done=on_done)
    return write_replay_report(opts, prep, outcome), outcome

"""Metrics of a simulator run: :mod:`tailwise.records.summary` applied to a
:class:`~tailwise.simulator.engine.SimResult`, per-window series and the per-request CSV."""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tailwise.records.summary import (
    QUANTILES,
    Dist,
    EngineStats,
    MetricsConfig,
    PerRequest,
    Summary,
    dist,
)
from tailwise.records.summary import per_request as per_request_of_records
from tailwise.records.summary import summarize as summarize_records
from tailwise.simulator.engine import SimResult

__all__ = ["QUANTILES", "Dist", "MetricsConfig", "PerRequest", "Summary", "dist", "engine_stats",
           "per_request", "summarize", "windows", "write_requests_csv"]


def per_request(res: SimResult, cfg: MetricsConfig | None = None) -> PerRequest:
    """Every per-request metric of the run."""
    return per_request_of_records(res.records, cfg)


def engine_stats(res: SimResult) -> EngineStats:
    """The engine's side of a run: its clock, sampled KV usage and queue, counters."""
    ts = res.timeseries
    # a replay against a real server may have no KV series (not observable)
    return EngineStats(end_time=res.end_time, wall_s=res.wall_s, kv_usage=ts.get("kv_usage"),
                       waiting=ts["waiting"], counters=res.counters)


def summarize(res: SimResult, cfg: MetricsConfig | None = None) -> Summary:
    """``{"overall": {...}, "classes": {name: {...}}, "engine": {...}}`` for one run."""
    return summarize_records(res.records, engine_stats(res), cfg)


def windows(res: SimResult, window_s: float, cfg: MetricsConfig | None = None,
            by: str = "arrival") -> dict[str, npt.NDArray[np.float64]]:
    """P99 TTLT, mean TTFT and mean short-class TTFT per window of arrival (or finish)
    time."""
    if not math.isfinite(window_s) or window_s <= 0:
        raise ValueError(f"window must be > 0 seconds, got {window_s!r}")
    pr = per_request(res, cfg)
    r = res.records
    t = r.arrival if by == "arrival" else r.finish
    end = float(np.nanmax(t)) if len(t) else 0.0
    edges = np.arange(0.0, end + window_s, window_s)
    if len(edges) < 2:
        edges = np.array([0.0, window_s])
    cls = np.asarray(pr.classes)
    p99, ttft, short_ttft, n = [], [], [], []
    for lo, hi in itertools.pairwise(edges):
        m = (t >= lo) & (t < hi) & pr.done
        n.append(float(m.sum()))
        p99.append(float(np.percentile(pr.ttlt[m], 99)) if m.any() else np.nan)
        ttft.append(float(np.mean(pr.ttft[m])) if m.any() else np.nan)
        ms = m & (cls == "short")
        short_ttft.append(float(np.mean(pr.ttft[ms])) if ms.any() else np.nan)
    return {"start": edges[:-1], "p99_ttlt": np.asarray(p99), "ttft_mean": np.asarray(ttft),
            "short_ttft_mean": np.asarray(short_ttft), "count": np.asarray(n)}


def write_requests_csv(res: SimResult, path: Path, cfg: MetricsConfig | None = None) -> None:
    """One row per request with every per-request metric."""
    pr = per_request(res, cfg)
    r = res.records
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["request", "class", "arrival_s", "prompt_tokens", "output_tokens",
                    "ttft_s", "tpot_s", "ttlt_s", "queue_delay_s", "preemptions",
                    "wasted_recompute_tokens", "cached_tokens", "slo_ok", "rejected"])
        for i in range(len(r.arrival)):
            w.writerow([i, pr.classes[i], f"{r.arrival[i]:.6f}", int(r.prompt[i]),
                        int(r.output[i]), _csv_number(pr.ttft[i]), _csv_number(pr.tpot[i]),
                        _csv_number(pr.ttlt[i]),
                        _csv_number(pr.queue_delay[i]), int(r.preemptions[i]),
                        int(r.wasted_tokens[i]), int(r.cached_tokens[i]),
                        int(pr.slo_ok[i]), int(r.rejected[i])])


def _csv_number(x: float) -> str:
    return "" if not math.isfinite(x) else f"{x:.6f}"

"""Latency metrics per request and per class, in the stable ``results.json`` schema.

Per request: TTFT (first token − arrival), TPOT ((finish − first token)/(output − 1), for
outputs of 2+ tokens), TTLT (finish − arrival, end to end), queueing delay (first
admission − arrival), preemptions, wasted recompute tokens. Aggregates: mean, P50, P90,
P95, P99; throughput in requests/s and output tokens/s over the run's makespan; goodput =
requests meeting both their TTFT and TPOT SLO per second. Times in seconds.

Classes: the trace's own class column when present, else ``short``/``long`` by a
threshold on prompt tokens (default 1024, configurable).
"""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tailwise.simulator.engine import SimResult

QUANTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class MetricsConfig:
    short_threshold: int = 1024
    ttft_slo_s: float = 8.0
    tpot_slo_s: float = 0.05
    #: per-SLO-class (TTFT, TPOT) targets overriding the defaults
    slo_classes: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass
class PerRequest:
    """Derived per-request metrics (NaN where undefined)."""

    ttft: npt.NDArray[np.float64]
    tpot: npt.NDArray[np.float64]
    ttlt: npt.NDArray[np.float64]
    queue_delay: npt.NDArray[np.float64]
    classes: list[str]
    slo_ok: npt.NDArray[np.bool_]
    done: npt.NDArray[np.bool_]


def per_request(res: SimResult, cfg: MetricsConfig | None = None) -> PerRequest:
    cfg = cfg or MetricsConfig()
    r = res.records
    ttft = r.first_token - r.arrival
    ttlt = r.finish - r.arrival
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(r.output > 1, (r.finish - r.first_token) / (r.output - 1), np.nan)
    queue = r.first_scheduled - r.arrival
    if r.classes is not None:
        classes = [c or "unlabelled" for c in r.classes]
    else:
        classes = ["short" if p <= cfg.short_threshold else "long" for p in r.prompt.tolist()]
    ttft_t = np.full(len(r.arrival), cfg.ttft_slo_s)
    tpot_t = np.full(len(r.arrival), cfg.tpot_slo_s)
    if r.slo_classes is not None and cfg.slo_classes:
        for i, c in enumerate(r.slo_classes):
            if c in cfg.slo_classes:
                ttft_t[i], tpot_t[i] = cfg.slo_classes[c]
    done = ~np.isnan(r.finish)
    with np.errstate(invalid="ignore"):
        slo_ok = done & (ttft <= ttft_t) & (np.isnan(tpot) | (tpot <= tpot_t))
    return PerRequest(ttft, tpot, ttlt, queue, classes, slo_ok, done)


def dist(x: npt.NDArray[np.float64]) -> dict[str, float | None]:
    """Mean and P50/P90/P95/P99 of the finite values (``None`` when there are none).

    >>> dist(np.array([1.0, 2.0, 3.0, np.nan]))["mean"]
    2.0
    """
    v = x[np.isfinite(x)]
    if v.size == 0:
        return {"mean": None, **{f"p{q}": None for q in QUANTILES}}
    qs = np.percentile(v, QUANTILES)
    return {"mean": float(v.mean()), **{f"p{q}": float(val) for q, val in zip(QUANTILES, qs, strict=True)}}


def _group(res: SimResult, pr: PerRequest, mask: npt.NDArray[np.bool_], span: float) -> dict[str, Any]:
    r = res.records
    done = mask & pr.done
    n_done = int(done.sum())
    return {
        "requests": int(mask.sum()),
        "completed": n_done,
        "rejected": int((mask & r.rejected).sum()),
        "ttft": dist(pr.ttft[mask]),
        "tpot": dist(pr.tpot[mask]),
        "ttlt": dist(pr.ttlt[mask]),
        "queue_delay": dist(pr.queue_delay[mask]),
        "throughput_rps": n_done / span if span > 0 else 0.0,
        "throughput_tps": float(r.output[done].sum()) / span if span > 0 else 0.0,
        "goodput_rps": float((pr.slo_ok & mask).sum()) / span if span > 0 else 0.0,
        "slo_attainment": float((pr.slo_ok & mask).sum()) / max(int(mask.sum()), 1),
        "preemptions": int(r.preemptions[mask].sum()),
        "wasted_recompute_tokens": int(r.wasted_tokens[mask].sum()),
        "cached_prompt_tokens": int(r.cached_tokens[mask].sum()),
    }


def summarize(res: SimResult, cfg: MetricsConfig | None = None) -> dict[str, Any]:
    """``{"overall": {...}, "classes": {name: {...}}, "engine": {...}}`` for one run."""
    pr = per_request(res, cfg)
    r = res.records
    span = float(np.nanmax(r.finish) - r.arrival.min()) if pr.done.any() else 0.0
    every = np.ones(len(r.arrival), dtype=np.bool_)
    names = sorted(set(pr.classes), key=lambda c: (c != "short", c))
    cls = np.asarray(pr.classes)
    ts = res.timeseries
    return {
        "overall": _group(res, pr, every, span),
        "classes": {c: _group(res, pr, cls == c, span) for c in names},
        "engine": {
            "makespan_s": span,
            "sim_end_s": res.end_time,
            "wall_s": res.wall_s,
            # a replay against a real server may have no KV series (not observable)
            "mean_kv_usage": (float(np.nanmean(ts["kv_usage"]))
                              if "kv_usage" in ts and np.isfinite(ts["kv_usage"]).any()
                              else (None if "kv_usage" not in ts else 0.0)),
            "max_waiting": int(ts["waiting"].max()) if len(ts["waiting"]) else 0,
            "counters": dict(res.counters),
        },
    }


def windows(res: SimResult, window_s: float, cfg: MetricsConfig | None = None,
            by: str = "arrival") -> dict[str, npt.NDArray[np.float64]]:
    """P99 TTLT and mean short-class TTFT per window of arrival (or finish) time."""
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
    p99, short_ttft, n = [], [], []
    for lo, hi in itertools.pairwise(edges):
        m = (t >= lo) & (t < hi) & pr.done
        n.append(float(m.sum()))
        p99.append(float(np.percentile(pr.ttlt[m], 99)) if m.any() else np.nan)
        ms = m & (cls == "short")
        short_ttft.append(float(np.mean(pr.ttft[ms])) if ms.any() else np.nan)
    return {"start": edges[:-1], "p99_ttlt": np.asarray(p99),
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
                        int(r.output[i]), _fmt(pr.ttft[i]), _fmt(pr.tpot[i]), _fmt(pr.ttlt[i]),
                        _fmt(pr.queue_delay[i]), int(r.preemptions[i]),
                        int(r.wasted_tokens[i]), int(r.cached_tokens[i]),
                        int(pr.slo_ok[i]), int(r.rejected[i])])


def _fmt(x: float) -> str:
    return "" if not math.isfinite(x) else f"{x:.6f}"

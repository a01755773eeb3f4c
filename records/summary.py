"""Latency metrics per request and per class, in the stable ``results.json`` schema.

Per request: TTFT (first token − arrival), TPOT ((finish − first token)/(output − 1), for
outputs of 2+ tokens), TTLT (finish − arrival, end to end), queueing delay (first
admission − arrival), preemptions, wasted recompute tokens. Aggregates: mean, P50, P90,
P95, P99; throughput in requests/s and output tokens/s over the run's makespan; goodput =
requests meeting both their TTFT and TPOT SLO per second. Times in seconds.

Classes: the trace's own class column when present, else ``short``/``long`` by a
threshold on prompt tokens (default 1024, configurable).

:func:`summarize` takes plain :class:`~tailwise.records.requests.RequestRecords` and
:class:`EngineStats`, so a simulator run and the sidecar's measured telemetry are
summarised by the same code. The result is a :class:`Summary` (typed dicts: the JSON
schema of DESIGN.md, names stable).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np
import numpy.typing as npt

from tailwise.records.requests import RequestRecords

QUANTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class MetricsConfig:
    short_threshold: int = 1024
    ttft_slo_s: float = 8.0
    tpot_slo_s: float = 0.05
    #: per-SLO-class (TTFT, TPOT) targets overriding the defaults
    slo_classes: dict[str, tuple[float, float]] = field(default_factory=dict)


class Dist(TypedDict):
    mean: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None


class GroupSummary(TypedDict):
    """Metrics of a group of requests (all of them, or one class)."""

    requests: int
    completed: int
    rejected: int
    ttft: Dist
    tpot: Dist
    ttlt: Dist
    queue_delay: Dist
    throughput_rps: float
    throughput_tps: float
    goodput_rps: float
    slo_attainment: float
    preemptions: int
    wasted_recompute_tokens: int
    cached_prompt_tokens: int


class EngineSummary(TypedDict):
    makespan_s: float
    sim_end_s: float
    wall_s: float
    #: None when the engine's KV usage is not observable (a replay against a real server)
    mean_kv_usage: float | None
    max_waiting: int
    counters: dict[str, int]


class Summary(TypedDict):
    """One run: ``overall``, per class, and the engine's figures."""

    overall: GroupSummary
    classes: dict[str, GroupSummary]
    engine: EngineSummary


@dataclass(frozen=True)
class EngineStats:
    """What the engine reports beside the requests: its clock, sampled KV usage and
    waiting queue, counters."""

    end_time: float
    wall_s: float = 0.0
    #: sampled KV usage; None when not observable (a replay against a real server)
    kv_usage: npt.NDArray[np.float64] | None = field(default_factory=lambda: np.zeros(0))
    waiting: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    counters: Mapping[str, int] = field(default_factory=dict)


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


def per_request(r: RequestRecords, cfg: MetricsConfig | None = None) -> PerRequest:
    """Every per-request metric of ``r``."""
    cfg = cfg or MetricsConfig()
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


def dist(x: npt.NDArray[np.float64]) -> Dist:
    """Mean and P50/P90/P95/P99 of the finite values (``None`` when there are none).

    >>> dist(np.array([1.0, 2.0, 3.0, np.nan]))["mean"]
    2.0
    """
    v = x[np.isfinite(x)]
    if v.size == 0:
        return {"mean": None, "p50": None, "p90": None, "p95": None, "p99": None}
    p50, p90, p95, p99 = (float(q) for q in np.percentile(v, QUANTILES))
    return {"mean": float(v.mean()), "p50": p50, "p90": p90, "p95": p95, "p99": p99}


def _group(r: RequestRecords, pr: PerRequest, mask: npt.NDArray[np.bool_],
           span: float) -> GroupSummary:
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


def _mean_kv(kv: npt.NDArray[np.float64] | None) -> float | None:
    if kv is None:
        return None
    return float(np.nanmean(kv)) if np.isfinite(kv).any() else 0.0


def summarize(records: RequestRecords, engine: EngineStats,
              cfg: MetricsConfig | None = None) -> Summary:
    """``{"overall": {...}, "classes": {name: {...}}, "engine": {...}}`` for one run."""
    pr = per_request(records, cfg)
    r = records
    span = float(np.nanmax(r.finish) - r.arrival.min()) if pr.done.any() else 0.0
    every = np.ones(len(r.arrival), dtype=np.bool_)
    names = sorted(set(pr.classes), key=lambda c: (c != "short", c))
    cls = np.asarray(pr.classes)
    return {
        "overall": _group(r, pr, every, span),
        "classes": {c: _group(r, pr, cls == c, span) for c in names},
        "engine": {
            "makespan_s": span,
            "sim_end_s": engine.end_time,
            "wall_s": engine.wall_s,
            "mean_kv_usage": _mean_kv(engine.kv_usage),
            "max_waiting": int(engine.waiting.max()) if len(engine.waiting) else 0,
            "counters": dict(engine.counters),
        },
    }

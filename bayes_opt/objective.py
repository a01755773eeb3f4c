"""Objectives: turn one window's metrics summary into the number Optuna optimises.

Every objective reads the stable ``results.json`` schema produced by
:func:`tailwise.simulator.metrics.summarize` (replay) or reported by the learner from the engine's
own telemetry (live reward), so replay and live trials are scored by the same code.

``operator`` (default, maximise) — what an operator's dashboard shows, each figure
relative to the FCFS baseline replayed on the *same* window, as a clipped log-ratio
``r_k = clip(ln(x_k / x_k^base), ±ln(max_ratio))`` (lower latency ⇒ r < 0):

==================  ==========================================================  =========
term (weight name)  figure ``x``                                                default w
==================  ==========================================================  =========
``ttft_mean``       mean TTFT of each class, log-ratios averaged over classes   1.0
``ttft_p99``        P99 TTFT of each class, averaged over classes               1.0
``ttlt_p99``        P99 TTLT (end to end) of the whole window                   1.0
``slo_miss``        SLO miss rate ``1 − attainment`` of each class, plus a      1.0
                    floor of one request's share (so 0 misses is finite)
``wasted``          wasted (recomputed) tokens, plus a floor of                 0.25
                    ``wasted_floor_per_request`` tokens per request
==================  ==========================================================  =========

``value = −Σ_k w_k·r_k / Σ_k w_k`` over the terms that are defined on the window: 0 when
the candidate equals the baseline, +0.1 ≈ a 10% better weighted geometric mean. Classes
are the summary's classes (the trace's SLO/class labels, else short/long by prompt
length), each counted equally so a small interactive class is not drowned by a large
batch class. Log-ratios make a 2× gain on TTFT and a 2× gain on P99 TTLT count the same
however different the seconds are, and the clip (default 10×) stops one collapsed term
(e.g. a baseline with almost no wasted work) from drowning the others. Weights are set by
operators in the sidecar config (``[tuner.objective.weights]``); a negative, NaN or
infinite weight, or all weights zero, is refused with the field named.

``reward`` (maximise) — EWSJF's meta-objective ``λ1·C + λ2·L − λ3·S − λ4·U``:

C, completion / SLO attainment, in [0, 1]
    ``overall.slo_attainment``: requests of the window that finished *and* met their TTFT
    and TPOT SLO, over all requests of the window. Summaries without that field (older
    or hand-written ones) use ``overall.goodput_rps / overall.throughput_rps`` (SLO-meeting
    share of the completed requests).
L, latency gain over the baseline (≤ 1; 0 = as good as the baseline, < 0 = worse)
    ``1 − mean_k(T_k / T_k^base)`` over the statistics ``k`` of
    :attr:`ObjectiveConfig.latency_stats` (default mean and P99) of the latency metric
    :attr:`ObjectiveConfig.latency_metric` (default ``ttlt``, end to end). The baseline is
    FCFS replayed on the *same* window, so L is comparable across windows of different
    load; with no baseline L = 0.
S, starvation (≥ 0)
    ``overall.queue_delay.p99 / starvation_ref_s``: the tail of the time requests waited
    before their first admission, in units of a *fixed* reference (default 60 s, the
    default ``aging_s``). The reference does not come from the candidate, so a candidate
    cannot lower S by loosening its own ``aging_s``.
U, unfairness (≥ 0)
    ``|n_short − n_long|`` where ``n_c = classes[c].ttlt.mean / baseline.classes[c].ttlt.mean``
    is a class's mean end-to-end latency normalised by the same class under the baseline:
    0 when both classes gain (or lose) in the same proportion, large when one class pays
    for the other. 0 when a class or the baseline is missing.

``p99_ttlt`` (minimise) — ``overall.ttlt.p99`` in seconds.
``goodput`` (maximise) — ``overall.goodput_rps`` (SLO-meeting requests per second).

A value that is NaN or infinite (a metric missing because nothing finished, a zero
baseline, ...) is returned as NaN: Optuna records such a trial as FAILED and the tuner never
promotes it.

>>> s = {"overall": {"slo_attainment": 0.9, "ttlt": {"mean": 2.0, "p99": 10.0},
...                  "queue_delay": {"p99": 6.0}}}
>>> b = {"overall": {"ttlt": {"mean": 4.0, "p99": 10.0}}}
>>> c = components(s, b, ObjectiveConfig())
>>> (c.completion, c.latency_gain, c.starvation, c.unfairness)
(0.9, 0.25, 0.1, 0.0)
>>> round(reward(c, Lambdas()), 6)
1.1
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal


class ObjectiveError(ValueError):
    """An objective configuration value is out of range; the message names the field."""


class ObjectiveKind(StrEnum):
    OPERATOR = "operator"
    REWARD = "reward"
    P99_TTLT = "p99_ttlt"
    GOODPUT = "goodput"


#: Optuna study direction of each objective
DIRECTIONS: dict[ObjectiveKind, Literal["maximize", "minimize"]] = {
    ObjectiveKind.OPERATOR: "maximize",
    ObjectiveKind.REWARD: "maximize",
    ObjectiveKind.P99_TTLT: "minimize",
    ObjectiveKind.GOODPUT: "maximize",
}

_STATS = ("mean", "p50", "p90", "p95", "p99")
_METRICS = ("ttlt", "ttft", "tpot", "queue_delay")


@dataclass(frozen=True, slots=True)
class Lambdas:
    """Weights of the reward terms (λ1..λ4); all must be finite and >= 0."""

    completion: float = 1.0
    latency: float = 1.0
    starvation: float = 0.5
    unfairness: float = 0.1


@dataclass(frozen=True, slots=True)
class Weights:
    """Weights of the ``operator`` objective's terms; finite, >= 0, not all zero."""

    ttft_mean: float = 1.0
    ttft_p99: float = 1.0
    ttlt_p99: float = 1.0
    slo_miss: float = 1.0
    wasted: float = 0.25


OPERATOR_TERMS = ("ttft_mean", "ttft_p99", "ttlt_p99", "slo_miss", "wasted")


@dataclass(frozen=True)
class ObjectiveConfig:
    kind: ObjectiveKind = ObjectiveKind.OPERATOR
    lambdas: Lambdas = field(default_factory=Lambdas)
    #: weights of the ``operator`` objective
    weights: Weights = field(default_factory=Weights)
    #: each log-ratio is clipped to ±ln(max_ratio)
    max_ratio: float = 10.0
    #: wasted-work floor, tokens per request of the window (a window with less recompute
    #: than this counts as "none")
    wasted_floor_per_request: float = 100.0
    #: metric and statistics of the latency-gain term L
    latency_metric: str = "ttlt"
    latency_stats: tuple[str, ...] = ("mean", "p99")
    #: S reference: a P99 queueing delay of this many seconds counts as S = 1
    starvation_ref_s: float = 60.0
    #: requests with prompts up to this many tokens form the "short" class (replay)
    short_threshold: int = 1024

    def __post_init__(self) -> None:
        if isinstance(self.latency_stats, list):  # from a config file
            object.__setattr__(self, "latency_stats", tuple(self.latency_stats))
        if isinstance(self.lambdas, Mapping):
            try:
                object.__setattr__(self, "lambdas", Lambdas(**self.lambdas))
            except TypeError as exc:
                raise ObjectiveError(f"objective.lambdas: {exc}") from None
        if isinstance(self.weights, Mapping):
            try:
                object.__setattr__(self, "weights", Weights(**self.weights))
            except TypeError as exc:
                raise ObjectiveError(f"objective.weights: {exc}") from None
        for name in OPERATOR_TERMS:
            v = getattr(self.weights, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                    or v < 0:
                raise ObjectiveError(f"objective.weights.{name}: must be finite and >= 0, "
                                     f"got {v!r}")
        if not any(getattr(self.weights, n) > 0 for n in OPERATOR_TERMS):
            raise ObjectiveError(f"objective.weights: at least one of {list(OPERATOR_TERMS)} "
                                 "must be > 0 (all are zero)")
        for name, lo in (("max_ratio", 1.0), ("wasted_floor_per_request", 0.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                    or v <= lo:
                raise ObjectiveError(f"objective.{name}: must be finite and > {lo:g}, got {v!r}")
        if not isinstance(self.kind, ObjectiveKind):
            try:
                object.__setattr__(self, "kind", ObjectiveKind(self.kind))
            except ValueError:
                raise ObjectiveError(
                    f"objective.kind: must be one of {[k.value for k in ObjectiveKind]}, "
                    f"got {self.kind!r}"
                ) from None
        for name in ("completion", "latency", "starvation", "unfairness"):
            v = getattr(self.lambdas, name)
            if not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise ObjectiveError(f"objective.lambdas.{name}: must be finite and >= 0, got {v!r}")
        if self.latency_metric not in _METRICS:
            raise ObjectiveError(
                f"objective.latency_metric: must be one of {list(_METRICS)}, got {self.latency_metric!r}"
            )
        if not self.latency_stats or any(s not in _STATS for s in self.latency_stats):
            raise ObjectiveError(
                f"objective.latency_stats: must be a non-empty subset of {list(_STATS)}, "
                f"got {self.latency_stats!r}"
            )
        r = self.starvation_ref_s
        if not isinstance(r, int | float) or not math.isfinite(r) or r <= 0:
            raise ObjectiveError(f"objective.starvation_ref_s: must be finite and > 0, got {r!r}")
        if isinstance(self.short_threshold, bool) or not isinstance(self.short_threshold, int) \
                or self.short_threshold < 0:
            raise ObjectiveError(
                f"objective.short_threshold: must be an integer >= 0, got {self.short_threshold!r}"
            )

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        return DIRECTIONS[self.kind]


@dataclass(frozen=True)
class Components:
    """The four reward terms of one evaluation (NaN where undefined)."""

    completion: float
    latency_gain: float
    starvation: float
    unfairness: float
    #: the ``operator`` objective's clipped log-ratios vs. the baseline (NaN: undefined)
    log_ratios: Mapping[str, float] = field(default_factory=dict)

    def as_attrs(self) -> dict[str, float | None]:
        """JSON-safe (NaN → None) for Optuna user attributes."""
        return {
            "C": _json_num(self.completion),
            "L": _json_num(self.latency_gain),
            "S": _json_num(self.starvation),
            "U": _json_num(self.unfairness),
            **{f"r_{k}": _json_num(v) for k, v in self.log_ratios.items()},
        }


def components(
    summary: Mapping[str, Any], baseline: Mapping[str, Any] | None, cfg: ObjectiveConfig
) -> Components:
    """C, L, S, U of ``summary`` against ``baseline`` (see the module docstring)."""
    ov = _section(summary, "overall")
    # C
    if "slo_attainment" in ov:
        c = _num(ov.get("slo_attainment"))
    else:
        c = _ratio(_num(ov.get("goodput_rps")), _num(ov.get("throughput_rps")))
        if c != c:  # nothing completed: no request attained its SLO
            c = 0.0 if _num(ov.get("throughput_rps")) == 0.0 else c
    # L
    if baseline is None:
        lat = 0.0
    else:
        bov = _section(baseline, "overall")
        ratios = [
            _ratio(_stat(ov, cfg.latency_metric, k), _stat(bov, cfg.latency_metric, k))
            for k in cfg.latency_stats
        ]
        lat = 1.0 - sum(ratios) / len(ratios)
    # S
    s = _stat(ov, "queue_delay", "p99") / cfg.starvation_ref_s
    # U
    u = 0.0
    if baseline is not None:
        cls = _maybe_section(summary, "classes")
        bcls = _maybe_section(baseline, "classes")
        if cls is not None and bcls is not None and all(
            k in cls and k in bcls for k in ("short", "long")
        ):
            n_short = _ratio(_stat(cls["short"], "ttlt", "mean"), _stat(bcls["short"], "ttlt", "mean"))
            n_long = _ratio(_stat(cls["long"], "ttlt", "mean"), _stat(bcls["long"], "ttlt", "mean"))
            u = abs(n_short - n_long)
    lr = log_ratios(summary, baseline, cfg) if baseline is not None else {}
    return Components(c, lat, s, u, lr)


def log_ratios(summary: Mapping[str, Any], baseline: Mapping[str, Any],
               cfg: ObjectiveConfig) -> dict[str, float]:
    """The ``operator`` terms of ``summary`` vs. ``baseline`` (module docstring); NaN
    where a term is undefined on this window (no class in common, missing metric).

    >>> b = {"overall": {"requests": 10, "ttlt": {"p99": 10.0}, "wasted_recompute_tokens": 0},
    ...      "classes": {"a": {"requests": 10, "ttft": {"mean": 2.0, "p99": 4.0},
    ...                        "slo_attainment": 0.9}}}
    >>> r = log_ratios(b, b, ObjectiveConfig())
    >>> sorted(r.items())[0], all(v == 0.0 for v in r.values())
    (('slo_miss', 0.0), True)
    """
    clip = math.log(cfg.max_ratio)

    def lr(x: float, x0: float) -> float | None:
        """None: the baseline lacks the figure (term skipped); NaN: the candidate lacks
        a figure the baseline has (the candidate is broken: the value is NaN)."""
        if not math.isfinite(x0) or x0 < 0:
            return None
        if not math.isfinite(x) or x < 0:
            return math.nan
        if x == x0:
            return 0.0
        if x == 0.0 or x0 == 0.0:
            return -clip if x < x0 else clip
        return max(-clip, min(clip, math.log(x / x0)))

    def mean(vals: list[float | None]) -> float | None:
        ok = [v for v in vals if v is not None]
        return sum(ok) / len(ok) if ok else None  # NaN propagates

    ov, bov = _section(summary, "overall"), _section(baseline, "overall")
    cls = _maybe_section(summary, "classes") or {}
    bcls = _maybe_section(baseline, "classes") or {}
    common = [k for k in cls if k in bcls and isinstance(cls[k], Mapping)
              and isinstance(bcls[k], Mapping)]
    if not common:  # no per-class figures: the whole window is one class
        common, cls, bcls = ["overall"], {"overall": ov}, {"overall": bov}
    out: dict[str, float | None] = {}
    for term, stat in (("ttft_mean", "mean"), ("ttft_p99", "p99")):
        out[term] = mean([lr(_stat(cls[k], "ttft", stat), _stat(bcls[k], "ttft", stat))
                          for k in common])
    out["ttlt_p99"] = lr(_stat(ov, "ttlt", "p99"), _stat(bov, "ttlt", "p99"))
    misses: list[float | None] = []
    for k in common:
        n = max(_num(cls[k].get("requests")), _num(bcls[k].get("requests")), 1.0)
        floor = 1.0 / n if math.isfinite(n) else 0.01
        a, a0 = _num(cls[k].get("slo_attainment")), _num(bcls[k].get("slo_attainment"))
        misses.append(lr(1.0 - a + floor, 1.0 - a0 + floor))
    out["slo_miss"] = mean(misses)
    n_req = _num(ov.get("requests"))
    floor_w = cfg.wasted_floor_per_request * (n_req if math.isfinite(n_req) else 1.0)
    out["wasted"] = lr(_num(ov.get("wasted_recompute_tokens")) + floor_w,
                       _num(bov.get("wasted_recompute_tokens")) + floor_w)
    return {k: v for k, v in out.items() if v is not None}


def operator_value(ratios: Mapping[str, float], w: Weights) -> float:
    """``−Σ w_k·r_k / Σ w_k`` over the terms the baseline defines with weight > 0; NaN
    if none, or if the candidate lacks one of them (NaN term)."""
    num = den = 0.0
    for name in OPERATOR_TERMS:
        wk = float(getattr(w, name))
        if name not in ratios or wk == 0:
            continue
        r = ratios[name]
        if not math.isfinite(r):
            return math.nan
        if wk > 0:
            num += wk * r
            den += wk
    return -num / den if den > 0 else math.nan


def reward(c: Components, lam: Lambdas) -> float:
    """``λ1·C + λ2·L − λ3·S − λ4·U`` (a zero weight ignores its term, even if NaN)."""
    total = 0.0
    for weight, term, sign in (
        (lam.completion, c.completion, 1.0),
        (lam.latency, c.latency_gain, 1.0),
        (lam.starvation, c.starvation, -1.0),
        (lam.unfairness, c.unfairness, -1.0),
    ):
        if weight != 0.0:
            total += sign * weight * term
    return total


def evaluate(
    summary: Mapping[str, Any], baseline: Mapping[str, Any] | None, cfg: ObjectiveConfig
) -> tuple[float, Components]:
    """The objective value (NaN when not finite) and the reward components.

    Components are computed for every objective kind so they can be recorded alongside.
    """
    comp = components(summary, baseline, cfg)
    if cfg.kind is ObjectiveKind.OPERATOR:
        value = operator_value(comp.log_ratios, cfg.weights) if baseline is not None \
            else math.nan
    elif cfg.kind is ObjectiveKind.REWARD:
        value = reward(comp, cfg.lambdas)
    elif cfg.kind is ObjectiveKind.P99_TTLT:
        value = _stat(_section(summary, "overall"), "ttlt", "p99")
    else:
        value = _num(_section(summary, "overall").get("goodput_rps"))
    return (value if math.isfinite(value) else math.nan), comp


def improvement(value: float, reference: float, direction: str) -> float:
    """Relative improvement of ``value`` over ``reference`` (> 0 = better), NaN if undefined.

    >>> improvement(1.1, 1.0, "maximize"), improvement(9.0, 10.0, "minimize")
    (0.10000000000000009, 0.1)
    """
    if not (math.isfinite(value) and math.isfinite(reference)):
        return math.nan
    gain = value - reference if direction == "maximize" else reference - value
    if reference == 0.0:
        return math.inf if gain > 0 else (0.0 if gain == 0 else -math.inf)
    return gain / abs(reference)


def gain(value: float, reference: float, cfg: ObjectiveConfig) -> float:
    """How much better ``value`` is than ``reference`` (> 0 = better; what the gate's
    margin is compared with). The ``operator`` value is already a log-ratio to the
    baseline, so its gain is the plain difference (0.02 ≈ 2% better); the other kinds use
    :func:`improvement` (relative).

    >>> gain(0.05, 0.0, ObjectiveConfig())
    0.05
    """
    if cfg.kind is ObjectiveKind.OPERATOR:
        if not (math.isfinite(value) and math.isfinite(reference)):
            return math.nan
        return value - reference
    return improvement(value, reference, cfg.direction)


# -- helpers ------------------------------------------------------------------------------
def _num(v: Any) -> float:
    if v is None or isinstance(v, bool) or not isinstance(v, int | float):
        return math.nan
    return float(v)


def _ratio(a: float, b: float) -> float:
    if not (math.isfinite(a) and math.isfinite(b)) or b <= 0.0:
        return math.nan
    return a / b


def _maybe_section(d: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    v = d.get(key) if isinstance(d, Mapping) else None
    return v if isinstance(v, Mapping) else None


def _section(d: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    return _maybe_section(d, key) or {}


def _stat(group: Mapping[str, Any], metric: str, stat: str) -> float:
    m = group.get(metric) if isinstance(group, Mapping) else None
    return _num(m.get(stat)) if isinstance(m, Mapping) else math.nan


def _json_num(x: float) -> float | None:
    return x if math.isfinite(x) else None

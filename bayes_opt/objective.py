"""Objectives: turn one window's metrics summary into the number Optuna optimises.

Every objective reads the stable ``results.json`` schema produced by
:func:`tailwise.simulator.metrics.summarize` (replay) or reported by the learner from the engine's
own telemetry (live reward), so replay and live trials are scored by the same code.

``reward`` (default, maximise) — EWSJF's meta-objective ``λ1·C + λ2·L − λ3·S − λ4·U``:

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
    REWARD = "reward"
    P99_TTLT = "p99_ttlt"
    GOODPUT = "goodput"


#: Optuna study direction of each objective
DIRECTIONS: dict[ObjectiveKind, Literal["maximize", "minimize"]] = {
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


@dataclass(frozen=True)
class ObjectiveConfig:
    kind: ObjectiveKind = ObjectiveKind.REWARD
    lambdas: Lambdas = field(default_factory=Lambdas)
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


@dataclass(frozen=True, slots=True)
class Components:
    """The four reward terms of one evaluation (NaN where undefined)."""

    completion: float
    latency_gain: float
    starvation: float
    unfairness: float

    def as_attrs(self) -> dict[str, float | None]:
        """JSON-safe (NaN → None) for Optuna user attributes."""
        return {
            "C": _json_num(self.completion),
            "L": _json_num(self.latency_gain),
            "S": _json_num(self.starvation),
            "U": _json_num(self.unfairness),
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
    return Components(c, lat, s, u)


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
    if cfg.kind is ObjectiveKind.REWARD:
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

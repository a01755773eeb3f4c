"""The search space: which policy parameters a study tunes, per mode (define-by-run).

:func:`suggest_params` asks an Optuna trial for the parameters of ``cfg.mode`` (only those
the mode uses: a boost variant that sets γ itself does not get a γ, EWSJF does not get
MemGuard, ...); :func:`params_to_policy` turns them into a validated
:class:`~scorer.policy.Policy` on top of a base policy; :func:`policy_to_params` is the
inverse used to enqueue the champion, clipped into the space. Anything invalid (a
parameter out of the policy's range, NaN, a missing or mistyped value, a partition with
more queues than ``max_queues``) raises :class:`~scorer.policy.PolicyError` — the trial
fails cleanly and the candidate is never pushed.

Parameters (names are what optuna-dashboard shows):

=========================== ========================= ==================================
name                        modes                     maps to
=========================== ========================= ==================================
``ewsjf.{w}.a``             ewsjf, tailwise           ``ewsjf.{w}.a``, w ∈ base/urg/fair
``ewsjf.{w}.c_per_1k``      ewsjf, tailwise           ``ewsjf.{w}.c = c_per_1k / 1000``
``ewsjf.alpha``             ewsjf, tailwise [*]       Refine split threshold α
``ewsjf.max_queues``        ewsjf, tailwise [*]       Prune bound
``boost.gamma`` (log)       boost, tailwise (uni)     γ of b_γ(w)
``boost.ada_target_s``      boost, tailwise (ada)     γ-Ada target tail TTLT
``boost.memguard_theta_s``  boost, tailwise           MemGuard θ (log)
``boost.memguard_ratio``    boost, tailwise           MemGuard r (log)
``boost.partition_aware``   tailwise                  scale boosts by partition queue
``slo.urgency``             tailwise                  add SLO urgency to the order
``slo.window`` / decode_cap kairos                    Kairos scoring window / decode cap
``safety.aging_s`` (log)    all                       aging bound
``safety.max_boost_frac``   all                       ``max_boost_s = frac · aging_s``
``preemption.cache_aware``  all                       victim by re-admission cost
``preemption.anti_thrash``  all                       protect restored requests
=========================== ========================= ==================================

[*] only with ``SpaceConfig.search_partition``: α and ``max_queues`` act through the
partition, so they are searched only when the objective re-partitions the window with
them (see :mod:`bayes_opt.tuner`); otherwise they are noise dimensions and keep the base
policy's values. ``max_boost_s`` is searched as a fraction of ``aging_s`` so the safety
envelope ``max_boost_s ≤ aging_s`` holds by construction. ``c`` is searched per 1000
tokens so its range has the same scale as ``a`` (b̄ is in tokens).

>>> from optuna.trial import FixedTrial
>>> from scorer.policy import Policy, Mode
>>> cfg = SpaceConfig(mode=Mode.BOOST)
>>> params = {"boost.gamma": 2.0, "boost.memguard_theta_s": 0.1,
...           "boost.memguard_ratio": 2.0, "safety.aging_s": 40.0,
...           "safety.max_boost_frac": 0.5, "preemption.cache_aware": True,
...           "preemption.anti_thrash": True}
>>> p = suggest_policy(FixedTrial(params), Policy(), (), cfg)
>>> p.mode.value, p.boost.gamma, p.safety.max_boost_s
('boost', 2.0, 20.0)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from scorer.policy import (
    BoostVariant,
    EwsjfParams,
    LinearWeight,
    Mode,
    Policy,
    PolicyError,
    QueueSpec,
    SafetyParams,
    Source,
)


class SpaceError(PolicyError):
    """Trial parameters do not describe a policy; names the parameter."""


Range = tuple[float, float]

WEIGHTS = ("base", "urg", "fair")


@dataclass(frozen=True)
class SpaceConfig:
    """Bounds of the search space. Ranges are (low, high), inclusive."""

    mode: Mode = Mode.TAILWISE
    #: search α and max_queues (the objective must then re-partition the window)
    search_partition: bool = True
    weight_a: Range = (0.0, 4.0)
    weight_c_per_1k: Range = (-2.0, 2.0)
    alpha: Range = (0.25, 8.0)
    max_queues: tuple[int, int] = (2, 64)
    gamma: Range = (0.01, 50.0)
    ada_target_s: Range = (1.0, 300.0)
    memguard_theta_s: Range = (0.001, 5.0)
    memguard_ratio: Range = (1.1, 8.0)
    aging_s: Range = (5.0, 600.0)
    max_boost_frac: Range = (0.0, 1.0)
    kairos_window: tuple[int, int] = (8, 512)
    #: also search the booleans (cache-aware/anti-thrash preemption, partition-aware
    #: boosts, SLO urgency); off keeps the base policy's choices
    search_switches: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.mode, Mode):
            try:
                object.__setattr__(self, "mode", Mode(self.mode))
            except ValueError:
                raise SpaceError("space.mode", f"unknown mode {self.mode!r}") from None
        if self.mode is Mode.FCFS:
            raise SpaceError("space.mode", "fcfs has no parameters to tune")
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple):
                lo, hi = v
                if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                    raise SpaceError(f"space.{f.name}", f"must be finite with low <= high, got {v!r}")
        for name in ("gamma", "ada_target_s", "memguard_theta_s", "memguard_ratio", "aging_s"):
            if getattr(self, name)[0] <= 0:
                raise SpaceError(f"space.{name}", "log-scale range must be > 0")
        if self.memguard_ratio[0] <= 1.0:
            raise SpaceError("space.memguard_ratio", "must be > 1")
        if not 0.0 <= self.max_boost_frac[0] <= self.max_boost_frac[1] <= 1.0:
            raise SpaceError("space.max_boost_frac", "must lie within [0, 1]")
        if self.max_queues[0] < 1 or self.kairos_window[0] < 1:
            raise SpaceError("space.max_queues", "integer ranges must start at >= 1")

    def uses(self, part: str) -> bool:
        """Whether the mode tunes a parameter group: ewsjf, boost, tailwise, kairos."""
        m = self.mode
        return {
            "ewsjf": m in (Mode.EWSJF, Mode.TAILWISE),
            "boost": m in (Mode.BOOST, Mode.TAILWISE),
            "tailwise": m is Mode.TAILWISE,
            "kairos": m is Mode.KAIROS,
        }[part]


def suggest_params(trial: optuna.trial.BaseTrial, base: Policy, cfg: SpaceConfig) -> dict[str, Any]:
    """Ask ``trial`` for this mode's parameters (define-by-run); returns name → value."""
    p: dict[str, Any] = {}
    fl = trial.suggest_float
    if cfg.uses("ewsjf"):
        for w in WEIGHTS:
            p[f"ewsjf.{w}.a"] = fl(f"ewsjf.{w}.a", *cfg.weight_a)
            p[f"ewsjf.{w}.c_per_1k"] = fl(f"ewsjf.{w}.c_per_1k", *cfg.weight_c_per_1k)
        if cfg.search_partition:
            p["ewsjf.alpha"] = fl("ewsjf.alpha", *cfg.alpha, log=True)
            p["ewsjf.max_queues"] = trial.suggest_int("ewsjf.max_queues", *cfg.max_queues, log=True)
    if cfg.uses("boost"):
        variant = base.boost.variant
        if variant is BoostVariant.UNI:
            lo = max(cfg.gamma[0], base.boost.gamma_min)
            hi = min(cfg.gamma[1], base.boost.gamma_max)
            if lo > hi:
                raise SpaceError("boost.gamma", f"space {cfg.gamma} and the base policy's "
                                 f"[gamma_min, gamma_max] do not overlap")
            p["boost.gamma"] = fl("boost.gamma", lo, hi, log=True)
        elif variant is BoostVariant.ADA:
            p["boost.ada_target_s"] = fl("boost.ada_target_s", *cfg.ada_target_s, log=True)
        p["boost.memguard_theta_s"] = fl("boost.memguard_theta_s", *cfg.memguard_theta_s, log=True)
        p["boost.memguard_ratio"] = fl("boost.memguard_ratio", *cfg.memguard_ratio, log=True)
    if cfg.uses("tailwise") and cfg.search_switches:
        p["boost.partition_aware"] = trial.suggest_categorical("boost.partition_aware", (True, False))
        p["slo.urgency"] = trial.suggest_categorical("slo.urgency", (False, True))
    if cfg.uses("kairos"):
        p["slo.window"] = trial.suggest_int("slo.window", *cfg.kairos_window, log=True)
        if cfg.search_switches:
            p["slo.decode_cap"] = trial.suggest_categorical("slo.decode_cap", (True, False))
    p["safety.aging_s"] = fl("safety.aging_s", *cfg.aging_s, log=True)
    p["safety.max_boost_frac"] = fl("safety.max_boost_frac", *cfg.max_boost_frac)
    if cfg.search_switches:
        p["preemption.cache_aware"] = trial.suggest_categorical("preemption.cache_aware", (True, False))
        p["preemption.anti_thrash"] = trial.suggest_categorical("preemption.anti_thrash", (True, False))
    return p


def params_to_policy(
    params: Mapping[str, Any], base: Policy, partition: Sequence[QueueSpec], mode: Mode
) -> Policy:
    """``base`` with ``params`` applied, ``mode`` set, ``partition`` reweighted; validated.

    Queue weights follow the (possibly new) linear weights: ``w(b̄) = a + c·b̄`` at each
    queue's mean length. Raises :class:`~scorer.policy.PolicyError` on anything invalid.
    """
    try:
        e = base.ewsjf
        ew: dict[str, Any] = {}
        for w in WEIGHTS:
            old: LinearWeight = getattr(e, w)
            a = _f(params, f"ewsjf.{w}.a", old.a)
            c = _f(params, f"ewsjf.{w}.c_per_1k", old.c * 1000.0) / 1000.0
            ew[w] = LinearWeight(a, c)
        ewsjf = dataclasses.replace(
            e, alpha=_f(params, "ewsjf.alpha", e.alpha),
            max_queues=_i(params, "ewsjf.max_queues", e.max_queues), **ew,
        )
        b = base.boost
        boost = dataclasses.replace(
            b,
            gamma=_f(params, "boost.gamma", b.gamma),
            ada_target_s=_f(params, "boost.ada_target_s", b.ada_target_s),
            memguard_theta_s=_f(params, "boost.memguard_theta_s", b.memguard_theta_s),
            memguard_ratio=_f(params, "boost.memguard_ratio", b.memguard_ratio),
            partition_aware=_b(params, "boost.partition_aware", b.partition_aware),
        )
        s = base.slo
        slo = dataclasses.replace(
            s, urgency=_b(params, "slo.urgency", s.urgency),
            window=_i(params, "slo.window", s.window),
            decode_cap=_b(params, "slo.decode_cap", s.decode_cap),
        )
        aging = _f(params, "safety.aging_s", base.safety.aging_s)
        if "safety.max_boost_frac" in params:
            frac = _f(params, "safety.max_boost_frac", 1.0)
            if not 0.0 <= frac <= 1.0:  # False for NaN
                raise SpaceError("safety.max_boost_frac", f"must be in [0, 1], got {frac!r}")
            max_boost = min(frac * aging, aging)
        else:
            max_boost = base.safety.max_boost_s
        safety = SafetyParams(max_boost_s=max_boost, aging_s=aging)
        pr = base.preemption
        preemption = dataclasses.replace(
            pr, cache_aware=_b(params, "preemption.cache_aware", pr.cache_aware),
            anti_thrash=_b(params, "preemption.anti_thrash", pr.anti_thrash),
        )
        queues = reweight(partition, ewsjf)
        return base.replace(
            mode=mode, source=Source.LEARNED, ewsjf=ewsjf, boost=boost, slo=slo, safety=safety,
            preemption=preemption, queues=queues,
        )
    except PolicyError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:  # a mistyped value in a dataclass
        raise SpaceError("params", str(exc)) from exc


def suggest_policy(
    trial: optuna.trial.BaseTrial, base: Policy, partition: Sequence[QueueSpec], cfg: SpaceConfig
) -> Policy:
    """:func:`suggest_params` then :func:`params_to_policy`; Optuna's own complaints about
    a fixed value (missing, not a number, not a choice) become :class:`SpaceError`."""
    try:
        params = suggest_params(trial, base, cfg)
    except PolicyError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise SpaceError("params", str(exc)) from exc
    return params_to_policy(params, base, partition, cfg.mode)


def policy_to_params(policy: Policy, cfg: SpaceConfig) -> dict[str, Any]:
    """The space's parameters of ``policy``, clipped into the space (to enqueue it).

    The tuner evaluates the champion itself, not its clipped image; the params only tell
    the sampler where the champion sits.
    """
    sampled: dict[str, Any] = {}
    probe = _Probe(policy, cfg)
    suggest_params(probe, policy, cfg)  # records the distributions the mode uses
    for name, dist in probe.dists.items():
        sampled[name] = _clip(probe.values[name], dist)
    return sampled


def reweight(queues: Sequence[QueueSpec], ewsjf: EwsjfParams) -> tuple[QueueSpec, ...]:
    """Queues with weights recomputed from the linear weights at each queue's mean length."""
    return tuple(
        dataclasses.replace(
            q, w_base=ewsjf.base.at(q.mean_len), w_urg=ewsjf.urg.at(q.mean_len),
            w_fair=ewsjf.fair.at(q.mean_len),
        )
        for q in queues
    )


# -- helpers ------------------------------------------------------------------------------
def _f(params: Mapping[str, Any], name: str, default: float) -> float:
    v = params.get(name, default)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise SpaceError(name, f"must be a number, got {v!r}")
    return float(v)


def _i(params: Mapping[str, Any], name: str, default: int) -> int:
    v = params.get(name, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not float(v).is_integer():
        raise SpaceError(name, f"must be an integer, got {v!r}")
    return int(v)


def _b(params: Mapping[str, Any], name: str, default: bool) -> bool:
    v = params.get(name, default)
    if not isinstance(v, bool):
        raise SpaceError(name, f"must be true or false, got {v!r}")
    return v


def _clip(value: Any, dist: optuna.distributions.BaseDistribution) -> Any:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return value if value in dist.choices else dist.choices[0]
    if isinstance(dist, optuna.distributions.IntDistribution):
        return int(min(max(int(round(value)), dist.low), dist.high))
    if isinstance(dist, optuna.distributions.FloatDistribution):
        v = float(value)
        return dist.low if not math.isfinite(v) else min(max(v, dist.low), dist.high)
    raise TypeError(f"unsupported distribution {dist!r}")  # pragma: no cover


class _Probe(optuna.trial.FixedTrial):
    """A FixedTrial that answers with a policy's own values and records distributions."""

    def __init__(self, policy: Policy, cfg: SpaceConfig) -> None:
        super().__init__({})
        self.policy = policy
        self.cfg = cfg
        self.dists: dict[str, optuna.distributions.BaseDistribution] = {}
        self.values: dict[str, Any] = {}

    def _suggest(self, name: str, distribution: optuna.distributions.BaseDistribution) -> Any:
        v = _policy_value(self.policy, name)
        self.dists[name] = distribution
        self.values[name] = v
        return v


def _policy_value(policy: Policy, name: str) -> Any:
    if name == "safety.max_boost_frac":
        aging = policy.safety.aging_s
        return policy.safety.max_boost_s / aging if aging > 0 else 1.0
    if name.endswith(".c_per_1k"):
        w: LinearWeight = getattr(policy.ewsjf, name.split(".")[1])
        return w.c * 1000.0
    group, _, rest = name.partition(".")
    obj: Any = {
        "ewsjf": policy.ewsjf, "boost": policy.boost, "slo": policy.slo,
        "safety": policy.safety, "preemption": policy.preemption,
    }[group]
    for part in rest.split("."):
        obj = getattr(obj, part)
    return obj


__all__ = [
    "WEIGHTS",
    "SpaceConfig",
    "SpaceError",
    "params_to_policy",
    "policy_to_params",
    "reweight",
    "suggest_params",
    "suggest_policy",
]

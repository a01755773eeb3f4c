"""The search space: which policy parameters a study tunes, per mode (define-by-run).

:func:`suggest_params` asks an Optuna trial for exactly the parameters the mode's
scheduler reads (``scorer/{boost,ewsjf,kairos,tailwise}.py``), conditionally: DistBoost
fits γ itself so it gets no γ; tailwise asks for α and ``max_queues`` only when its
boosts are partition-aware. Parameters a mode ignores would be pure noise dimensions for
the sampler. :func:`params_to_policy` turns the answers into a validated
:class:`~tailwise.scorer.policy.Policy` on top of a base policy; :func:`policy_to_params` is the
inverse used to enqueue the champion, clipped into the space. Anything invalid (a value
out of the policy's range, NaN, a missing or mistyped value, a partition with more queues
than ``max_queues``) raises :class:`~tailwise.scorer.policy.PolicyError` naming the parameter —
the trial fails cleanly and the candidate is never pushed.

Parameters (names are what optuna-dashboard shows):

=============================== ====================== ===============================
name                            modes                  maps to
=============================== ====================== ===============================
``ewsjf.{w}.a``                 ewsjf                  ``ewsjf.{w}.a``, w: base/urg/fair
``ewsjf.{w}.c_per_1k``          ewsjf                  ``ewsjf.{w}.c = c_per_1k / 1000``
``ewsjf.alpha`` (log)           ewsjf, tailwise [*]    Refine split threshold α
``ewsjf.max_queues`` (log)      ewsjf, tailwise [*]    Prune bound
``boost.gamma`` (log)           boost, tailwise [†]    γ of b_γ(w)
``boost.memguard_theta_s`` (log) boost, tailwise       MemGuard θ
``boost.memguard_ratio`` (log)  boost, tailwise        MemGuard r
``boost.partition_aware``       tailwise               committed work from the queue's b̄
``slo.urgency``                 tailwise [‡]           EDF on TTFT deadlines, boosted
``slo.demote_late``             tailwise               late requests behind on-time ones
``safety.max_boost_frac``       boost, tailwise        ``max_boost_s = frac · aging_s``
``safety.aging_s`` (log)        ewsjf, boost, tailwise aging bound
``preemption.cache_aware``      boost, tailwise        victim by re-admission cost
``preemption.anti_thrash``      boost, tailwise        protect restored requests
``preemption.priority_band_s``  boost, tailwise        equal-priority band (log)
``regime.aging_factor`` (log)   tailwise               envelope E = factor · service scale
``regime.horizon_factor`` (log) tailwise               boost time-scale 1/γ ≥ factor · T
                                                       (and ≥ T + D₇₅, queue_horizon)
``regime.pacing_blocks``        tailwise               admission pacing headroom
``regime.queue_floor_factor``   tailwise               aging floor = factor · FCFS drain
``regime.prefix_rekey_k`` (log) tailwise               waiting requests re-probed/round
``regime.tail_protect_factor``  tailwise               evicted last once arrived more
(log)                                                  than factor · T ago
``regime.demote_delay_factor``  tailwise               a demoted victim re-enters as an
(log)                                                  arrival factor · T after preemption
``regime.{switch}``             tailwise               adaptive_horizon, relative_aging,
                                                       admission_pacing, prefix_rekey,
                                                       queue_floor, residual_victims,
                                                       demote_preempted, tail_protect,
                                                       queue_horizon, demote_as_arrival,
                                                       scale_excludes_requeue
``slo.window`` (log)            kairos                 Kairos scoring window
``slo.decode_cap``              kairos, tailwise [‡]   slack-guided decode cap
=============================== ====================== ===============================

[*] With ``SpaceConfig.search_partition`` (default), and in tailwise mode only when
``boost.partition_aware`` is on: α and ``max_queues`` act through the partition, so
:func:`suggest_policy` gives each such candidate its own partition with
:func:`refine_partition` (the learner's partition pruned to the candidate's
``max_queues`` and, given the window, refined once with its α). Otherwise they keep the
base policy's values and the learner's partition is used as is.
[†] UniBoost, and γ-Ada, where it is the starting γ (what a replay sees); not DistBoost.
[‡] In tailwise mode ``slo.urgency``, ``slo.decode_cap`` and ``regime.tail_protect`` are
searched with ``search_tradeoffs`` (default on) even when ``search_switches`` is off:
each trades mean TTFT against P99 TTLT, so the right setting depends on the objective's
weights, which is the learner's to weigh; the other switches are design decisions
measured offline and keep the base policy's values. ``slo.demote_late`` is searched
only with ``search_switches``: as a fourth trade-off switch (its first version) it cost
the online learner more than it gave (``benchmarks/online_targets.py``, 120-s phases,
5 seeds: mean whole-run margin over static tailwise +0.087 -> +0.024; chat-longdoc-burst
-0.068 -> -0.019, slo-flip +0.248 -> +0.065), the larger space spreading eight trials a
round thinner.

By default (``around_base=4``) every log-scale parameter is searched within a factor 4
of the base policy's value: the base (the shipped defaults, or an operator's frozen
policy) is measured-good, and online tuning refines it rather than wandering over
orders of magnitude — on a shifted workload random draws from the full ranges almost
never beat the defaults, draws near them often do. ``around_base=None`` searches the
full ranges.

``max_boost_s`` is searched as a fraction of ``aging_s`` so the safety envelope
``max_boost_s ≤ aging_s`` holds by construction (modes that do not boost keep the base
value, clipped to ``aging_s``). ``c`` is searched per 1000 tokens so its range has the
scale of ``a`` (b̄ is in tokens). Booleans are searched only with ``search_switches``, but
for the three trade-off switches of [‡].

>>> from optuna.trial import FixedTrial
>>> from tailwise.scorer.policy import Policy, Mode
>>> cfg = SpaceConfig(mode=Mode.BOOST, search_switches=False)
>>> params = {"boost.gamma": 0.2, "boost.memguard_theta_s": 0.1,
...           "boost.memguard_ratio": 2.0, "safety.aging_s": 200.0,
...           "safety.max_boost_frac": 0.5, "preemption.priority_band_s": 600.0}
>>> p = suggest_policy(FixedTrial(params), Policy(), (), cfg)
>>> p.mode.value, p.boost.gamma, p.safety.max_boost_s
('boost', 0.2, 100.0)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import optuna
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped,unused-ignore]

from tailwise.partitioner.refine_prune import STATE_KIND, STATE_VERSION, RefinePrune
from tailwise.scorer.policy import (
    REGIME_SWITCHES,
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
    memguard_theta_s: Range = (0.001, 5.0)
    memguard_ratio: Range = (1.1, 8.0)
    aging_s: Range = (5.0, 600.0)
    max_boost_frac: Range = (0.1, 1.0)
    priority_band_s: Range = (1.0, 3600.0)
    kairos_window: tuple[int, int] = (8, 512)
    aging_factor: Range = (0.25, 16.0)
    horizon_factor: Range = (0.1, 10.0)
    pacing_blocks: Range = (0.0, 4.0)
    queue_floor_factor: Range = (0.5, 4.0)
    prefix_rekey_k: tuple[int, int] = (1, 64)
    tail_protect_factor: Range = (0.05, 4.0)
    demote_delay_factor: Range = (0.05, 8.0)
    #: also search the booleans (cache-aware/anti-thrash preemption, partition-aware
    #: boosts, SLO urgency, Kairos decode cap); off (default) keeps the base policy's
    #: choices, which are design decisions measured offline
    search_switches: bool = False
    #: search the switches whose right setting depends on the objective's weights, not
    #: on the workload alone: SLO urgency, Kairos's decode cap and tail protection (each
    #: trades mean TTFT against P99 TTLT); the other switches stay the base policy's.
    #: Measured on the three shift scenarios x 5 seeds (``benchmarks/online_targets.py``
    #: with and without ``--no-search-tradeoffs``): mean whole-run margin over static
    #: tailwise +0.034 -> +0.038 (180-s phases), -0.019 -> +0.003 (120-s phases); it
    #: gains on code-reasoning-slo and slo-flip and loses on chat-longdoc-burst
    search_tradeoffs: bool = True
    #: log-scale parameters are searched within [v / f, v · f] of the base policy's value
    #: v (intersected with the ranges above); None searches the full ranges
    around_base: float | None = 4.0

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
            if isinstance(v, list):  # from a config file
                v = tuple(v)
                object.__setattr__(self, f.name, v)
            if isinstance(v, tuple):
                if len(v) != 2 or not all(
                    isinstance(x, int | float) and not isinstance(x, bool) for x in v
                ):
                    raise SpaceError(f"space.{f.name}", f"must be a (low, high) pair, got {v!r}")
                lo, hi = v
                if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                    raise SpaceError(f"space.{f.name}", f"must be finite with low <= high, got {v!r}")
        for name in ("alpha", "gamma", "memguard_theta_s", "memguard_ratio", "aging_s",
                     "priority_band_s", "aging_factor", "horizon_factor", "queue_floor_factor",
                     "prefix_rekey_k", "tail_protect_factor", "demote_delay_factor"):
            if getattr(self, name)[0] <= 0:
                raise SpaceError(f"space.{name}", "log-scale range must be > 0")
        if self.memguard_ratio[0] <= 1.0:
            raise SpaceError("space.memguard_ratio", "must be > 1")
        if not 0.0 <= self.max_boost_frac[0] <= self.max_boost_frac[1] <= 1.0:
            raise SpaceError("space.max_boost_frac", "must lie within [0, 1]")
        if self.max_queues[0] < 1 or self.kairos_window[0] < 1:
            raise SpaceError("space.max_queues", "integer ranges must start at >= 1")
        fac = self.around_base
        if fac is not None and (isinstance(fac, bool) or not isinstance(fac, int | float)
                                or not math.isfinite(fac) or fac <= 1.0):
            raise SpaceError("space.around_base",
                             f"must be None or a finite number > 1, got {fac!r}")

    def box(self, rng: Range, value: float) -> Range:
        """``rng`` narrowed to ``[value / f, value · f]`` (f = :attr:`around_base`).

        >>> SpaceConfig().box((0.01, 50.0), 0.1)
        (0.025, 0.4)
        >>> SpaceConfig().box((0.01, 50.0), 100.0)  # a base value outside: its edge
        (12.5, 50.0)
        """
        lo, hi = rng
        f = self.around_base
        if f is None or not (isinstance(value, int | float) and math.isfinite(value)) or value <= 0:
            return rng
        v = min(max(float(value), lo), hi)
        return (max(lo, v / f), min(hi, v * f))

    @property
    def boosts(self) -> bool:
        """Whether the mode's scheduler is a γ-boost (boost, tailwise)."""
        return self.mode in (Mode.BOOST, Mode.TAILWISE)


def suggest_params(trial: optuna.trial.BaseTrial, base: Policy, cfg: SpaceConfig) -> dict[str, Any]:
    """Ask ``trial`` for this mode's parameters (define-by-run); returns name → value.

    Raises :class:`SpaceError` naming the parameter when the trial cannot answer (a
    fixed value that is missing, NaN, not a number or not one of the choices).
    """
    p: dict[str, Any] = {}
    ask = _Asker(trial, p)
    mode = cfg.mode
    if mode is Mode.EWSJF:
        for w in WEIGHTS:
            ask.real(f"ewsjf.{w}.a", cfg.weight_a)
            ask.real(f"ewsjf.{w}.c_per_1k", cfg.weight_c_per_1k)
    partitioned = mode is Mode.EWSJF
    if mode is Mode.TAILWISE:
        if cfg.search_switches:
            ask.switch("boost.partition_aware", (False, True))
        partitioned = bool(p.get("boost.partition_aware", base.boost.partition_aware))
    if partitioned and cfg.search_partition:
        e = base.ewsjf
        ask.real("ewsjf.alpha", cfg.box(cfg.alpha, e.alpha), log=True)
        mq = cfg.box(cfg.max_queues, e.max_queues)
        ask.integer("ewsjf.max_queues", (math.floor(mq[0]), math.ceil(mq[1])), log=True)
    if cfg.boosts:
        if base.boost.variant is not BoostVariant.DIST:
            lo = max(cfg.gamma[0], base.boost.gamma_min)
            hi = min(cfg.gamma[1], base.boost.gamma_max)
            if lo > hi:
                raise SpaceError("boost.gamma", f"space {cfg.gamma} and the base policy's "
                                 f"[gamma_min, gamma_max] do not overlap")
            ask.real("boost.gamma", cfg.box((lo, hi), base.boost.gamma), log=True)
        b = base.boost
        ask.real("boost.memguard_theta_s", cfg.box(cfg.memguard_theta_s, b.memguard_theta_s),
                 log=True)
        ask.real("boost.memguard_ratio", cfg.box(cfg.memguard_ratio, b.memguard_ratio), log=True)
        ask.real("safety.max_boost_frac", cfg.max_boost_frac)
        band = cfg.box(cfg.priority_band_s, base.preemption.priority_band_s)
        ask.real("preemption.priority_band_s", band, log=True)
        if cfg.search_switches:
            ask.switch("preemption.cache_aware", (True, False))
            ask.switch("preemption.anti_thrash", (True, False))
    if mode is Mode.TAILWISE:
        g = base.regime
        ask.real("regime.aging_factor", cfg.box(cfg.aging_factor, g.aging_factor), log=True)
        ask.real("regime.horizon_factor", cfg.box(cfg.horizon_factor, g.horizon_factor),
                 log=True)
        ask.real("regime.pacing_blocks", cfg.pacing_blocks)
        ask.real("regime.queue_floor_factor",
                 cfg.box(cfg.queue_floor_factor, g.queue_floor_factor), log=True)
        ask.integer("regime.prefix_rekey_k", cfg.prefix_rekey_k, log=True)
        ask.real("regime.tail_protect_factor",
                 cfg.box(cfg.tail_protect_factor, g.tail_protect_factor), log=True)
        if g.demote_as_arrival or cfg.search_switches:
            ask.real("regime.demote_delay_factor",
                     cfg.box(cfg.demote_delay_factor, g.demote_delay_factor), log=True)
        if cfg.search_switches:
            ask.switch("slo.urgency", (False, True))
            ask.switch("slo.demote_late", (False, True))
            ask.switch("slo.decode_cap", (False, True))
            for flag in REGIME_SWITCHES:
                ask.switch(f"regime.{flag}", (True, False))
        elif cfg.search_tradeoffs:
            ask.switch("slo.urgency", (base.slo.urgency, not base.slo.urgency))
            ask.switch("slo.decode_cap", (base.slo.decode_cap, not base.slo.decode_cap))
            ask.switch("regime.tail_protect", (g.tail_protect, not g.tail_protect))
    if mode is Mode.KAIROS:
        win = cfg.box(cfg.kairos_window, base.slo.window)
        ask.integer("slo.window", (math.floor(win[0]), math.ceil(win[1])), log=True)
        if cfg.search_switches:
            ask.switch("slo.decode_cap", (True, False))
    if mode is not Mode.KAIROS:
        ask.real("safety.aging_s", cfg.box(cfg.aging_s, base.safety.aging_s), log=True)
    return p


class _Asker:
    """Wraps a trial's ``suggest_*`` so every failure names its parameter."""

    def __init__(self, trial: optuna.trial.BaseTrial, out: dict[str, Any]) -> None:
        self.trial = trial
        self.out = out

    def real(self, name: str, rng: Range, log: bool = False) -> None:
        self._ask(name, lambda: self.trial.suggest_float(name, rng[0], rng[1], log=log))

    def integer(self, name: str, rng: tuple[int, int], log: bool = False) -> None:
        self._ask(name, lambda: self.trial.suggest_int(name, rng[0], rng[1], log=log))

    def switch(self, name: str, choices: tuple[bool, bool]) -> None:
        self._ask(name, lambda: self.trial.suggest_categorical(name, choices))

    def _ask(self, name: str, fn: Callable[[], Any]) -> None:
        try:
            self.out[name] = fn()
        except (TypeError, ValueError, OverflowError) as exc:
            raise SpaceError(name, str(exc)) from exc


def params_to_policy(
    params: Mapping[str, Any], base: Policy, partition: Sequence[QueueSpec], mode: Mode
) -> Policy:
    """``base`` with ``params`` applied, ``mode`` set, ``partition`` reweighted; validated.

    Queue weights follow the (possibly new) linear weights: ``w(b̄) = a + c·b̄`` at each
    queue's mean length. Raises :class:`~tailwise.scorer.policy.PolicyError` on anything invalid.
    """
    try:
        e = base.ewsjf
        ew: dict[str, Any] = {}
        for w in WEIGHTS:
            old: LinearWeight = getattr(e, w)
            a = param_float(params, f"ewsjf.{w}.a", old.a)
            c = param_float(params, f"ewsjf.{w}.c_per_1k", old.c * 1000.0) / 1000.0
            ew[w] = LinearWeight(a, c)
        ewsjf = dataclasses.replace(
            e, alpha=param_float(params, "ewsjf.alpha", e.alpha),
            max_queues=param_int(params, "ewsjf.max_queues", e.max_queues), **ew,
        )
        b = base.boost
        boost = dataclasses.replace(
            b,
            gamma=param_float(params, "boost.gamma", b.gamma),
            memguard_theta_s=param_float(params, "boost.memguard_theta_s", b.memguard_theta_s),
            memguard_ratio=param_float(params, "boost.memguard_ratio", b.memguard_ratio),
            partition_aware=param_bool(params, "boost.partition_aware", b.partition_aware),
        )
        s = base.slo
        slo = dataclasses.replace(
            s, urgency=param_bool(params, "slo.urgency", s.urgency),
            demote_late=param_bool(params, "slo.demote_late", s.demote_late),
            window=param_int(params, "slo.window", s.window),
            decode_cap=param_bool(params, "slo.decode_cap", s.decode_cap),
        )
        aging = param_float(params, "safety.aging_s", base.safety.aging_s)
        if "safety.max_boost_frac" in params:
            frac = param_float(params, "safety.max_boost_frac", 1.0)
            if not 0.0 <= frac <= 1.0:  # False for NaN
                raise SpaceError("safety.max_boost_frac", f"must be in [0, 1], got {frac!r}")
            max_boost = min(frac * aging, aging)
        else:
            max_boost = min(base.safety.max_boost_s, aging)  # unused by the mode
        safety = SafetyParams(max_boost_s=max_boost, aging_s=aging)
        pr = base.preemption
        preemption = dataclasses.replace(
            pr, cache_aware=param_bool(params, "preemption.cache_aware", pr.cache_aware),
            anti_thrash=param_bool(params, "preemption.anti_thrash", pr.anti_thrash),
            priority_band_s=param_float(params, "preemption.priority_band_s", pr.priority_band_s),
        )
        g = base.regime
        regime = dataclasses.replace(
            g, aging_factor=param_float(params, "regime.aging_factor", g.aging_factor),
            horizon_factor=param_float(params, "regime.horizon_factor", g.horizon_factor),
            pacing_blocks=param_float(params, "regime.pacing_blocks", g.pacing_blocks),
            queue_floor_factor=param_float(params, "regime.queue_floor_factor",
                                           g.queue_floor_factor),
            prefix_rekey_k=param_int(params, "regime.prefix_rekey_k", g.prefix_rekey_k),
            tail_protect_factor=param_float(params, "regime.tail_protect_factor",
                                            g.tail_protect_factor),
            demote_delay_factor=param_float(params, "regime.demote_delay_factor",
                                            g.demote_delay_factor),
            **{flag: param_bool(params, f"regime.{flag}", getattr(g, flag)) for flag in REGIME_SWITCHES},
        )
        queues = reweight(partition, ewsjf)
        return base.replace(
            mode=mode, source=Source.LEARNED, ewsjf=ewsjf, boost=boost, slo=slo, safety=safety,
            preemption=preemption, queues=queues, regime=regime,
        )
    except PolicyError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:  # a mistyped value in a dataclass
        raise SpaceError("params", str(exc)) from exc


def suggest_policy(
    trial: optuna.trial.BaseTrial,
    base: Policy,
    partition: Sequence[QueueSpec],
    cfg: SpaceConfig,
    values: npt.NDArray[Any] | None = None,
    seed: int = 0,
) -> Policy:
    """The candidate policy of ``trial``: :func:`suggest_params`, then
    :func:`params_to_policy` on ``partition`` — first passed through
    :func:`refine_partition` with the candidate's α and ``max_queues`` when the space
    searches them (``values``: the window's routing-feature values to refine on).
    """
    params = suggest_params(trial, base, cfg)
    if "ewsjf.max_queues" in params:
        shape = params_to_policy(params, base, (), cfg.mode)
        partition = refine_partition(partition, shape.ewsjf, values, seed)
    return params_to_policy(params, base, partition, cfg.mode)


def policy_to_params(policy: Policy, cfg: SpaceConfig, base: Policy | None = None) -> dict[str, Any]:
    """The space's parameters of ``policy``, clipped into the space (to enqueue it).

    ``base`` is the base policy the space is built on (default: ``policy`` itself); it
    decides the ranges (see ``around_base``) and, with switches off, which conditional
    parameters exist. The tuner evaluates the champion itself, not its clipped image;
    the params only tell the sampler where the champion sits.
    """
    sampled: dict[str, Any] = {}
    probe = _Probe(policy, cfg)
    suggest_params(probe, base if base is not None else policy, cfg)  # records distributions
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


def refine_partition(
    partition: Sequence[QueueSpec],
    ewsjf: EwsjfParams,
    values: npt.NDArray[Any] | None = None,
    seed: int = 0,
) -> tuple[QueueSpec, ...]:
    """``partition`` pruned to ``ewsjf.max_queues`` and, with ``values``, refined once.

    One Refine-and-Prune pass (:class:`tailwise.partitioner.refine_prune.RefinePrune`) with the
    candidate's α and ``max_queues``, starting from the learner's current partition, over
    the window's prompt lengths (the routing feature; prefix-cache hits are unknown before
    replay, so uncached = prompt). That is what the partition would become at the next
    refresh if the candidate were in force, so α and ``max_queues`` act on the replay as
    they would online. Weights come from ``ewsjf``'s linear weights. Raises
    :class:`~tailwise.scorer.policy.PolicyError` for parameters the partitioner rejects.
    """
    loose = dataclasses.replace(
        ewsjf,
        max_queues=max(ewsjf.max_queues, len(partition), 1),
        reservoir_size=max(ewsjf.reservoir_size, 16),
    )
    plain = Policy(ewsjf=loose, queues=tuple(partition)).to_dict()
    reservoir: list[float] = []
    if values is not None and len(values):
        v = np.asarray(values, dtype=np.float64)
        reservoir = [float(x) for x in v[np.isfinite(v) & (v >= 0)][-loose.reservoir_size:]]
    state = {
        "kind": STATE_KIND,
        "state_version": STATE_VERSION,
        "seed": seed,
        "params": plain["ewsjf"],
        "reservoir": reservoir,
        "since_refresh": 0,
        "last_refresh_t": None,
        "skipped": 0,
        "refreshes": 0,
        "queues": plain["queues"],
    }
    rp = RefinePrune.from_state(state)
    # one OpenMP thread: scikit-learn's k-means on a few thousand 1-D points is ~100x
    # slower with its default thread pool (thread start-up/spin dominates the work)
    with threadpool_limits(limits=1, user_api="openmp"):
        rp.update_params(dataclasses.replace(ewsjf, reservoir_size=loose.reservoir_size))
        if reservoir:
            rp.refresh(0.0, force=True)
    return rp.partition()


# -- helpers ------------------------------------------------------------------------------
def param_float(params: Mapping[str, Any], name: str, default: float) -> float:
    """Search-space parameter ``name`` as a float (``default`` when absent)."""
    v = params.get(name, default)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise SpaceError(name, f"must be a number, got {v!r}")
    return float(v)


def param_int(params: Mapping[str, Any], name: str, default: int) -> int:
    """Search-space parameter ``name`` as an integer (``default`` when absent)."""
    v = params.get(name, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not float(v).is_integer():
        raise SpaceError(name, f"must be an integer, got {v!r}")
    return int(v)


def param_bool(params: Mapping[str, Any], name: str, default: bool) -> bool:
    """Search-space parameter ``name`` as a boolean (``default`` when absent)."""
    v = params.get(name, default)
    if not isinstance(v, bool):
        raise SpaceError(name, f"must be true or false, got {v!r}")
    return v


def _clip(value: Any, dist: optuna.distributions.BaseDistribution) -> Any:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return value if value in dist.choices else dist.choices[0]
    if isinstance(dist, optuna.distributions.IntDistribution):
        return min(max(round(float(value)), dist.low), dist.high)
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
        "safety": policy.safety, "preemption": policy.preemption, "regime": policy.regime,
    }[group]
    for part in rest.split("."):
        obj = getattr(obj, part)
    return obj


__all__ = [
    "REGIME_SWITCHES",
    "WEIGHTS",
    "SpaceConfig",
    "SpaceError",
    "params_to_policy",
    "policy_to_params",
    "refine_partition",
    "reweight",
    "suggest_params",
    "suggest_policy",
]

"""The policy object: an immutable, versioned, validated description of how to schedule.

A :class:`Policy` is what the sidecar learns, pushes over gRPC, and what an operator
freezes into a file. It is data only; :func:`tailwise.scorer.build_scheduler` turns it into a
:class:`~tailwise.scorer.interface.QueueDiscipline`. ``validate()`` raises :class:`PolicyError`
naming the offending field, and every constructor path (``from_dict``, the protobuf codec,
the frozen-file loader) validates.

Canonical JSON (:func:`canonical_json`) is the hashing basis of frozen files: sorted keys,
no whitespace, no NaN. ``schema_version`` 3 is current; older files are migrated on load
(:func:`migrate`): schema 1 (flat SLO targets, no SLO classes, a single ``gamma``) and
schema 2 (the regime's measurement fields named ``latency_*``, and regime sections read by
the fields they set, :func:`legacy_regime_values`). A document without a
``schema_version`` is read as schema 1.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tailwise.scorer.step_time import H100_LLAMA3_8B, StepTimeModel, StepTimeModelError

SCHEMA_VERSION = 3


class PolicyError(ValueError):
    """A policy failed validation; the message names the field and the value."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


class Mode(StrEnum):
    FCFS = "fcfs"
    EWSJF = "ewsjf"
    BOOST = "boost"
    KAIROS = "kairos"
    TAILWISE = "tailwise"


class Source(StrEnum):
    BASELINE = "baseline"
    LEARNED = "learned"
    FROZEN = "frozen"


class BoostVariant(StrEnum):
    UNI = "uni"  # UniBoost: one fixed γ
    DIST = "dist"  # DistBoost: γ from the fitted job-size distribution
    ADA = "ada"  # γ-Ada: γ adapted from measured tail latency


class PreemptMode(StrEnum):
    RECOMPUTE = "recompute"
    SWAP = "swap"


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """One EWSJF queue: the interval ``[lo, hi)`` of the routing feature and its weights.

    ``mean_len`` is the queue's mean routing feature (b̄) and ``density`` its share of
    recent requests per token of interval width (ρ); both come from Refine-and-Prune.
    """

    lo: float
    hi: float
    mean_len: float
    density: float
    w_base: float = 1.0
    w_urg: float = 1.0
    w_fair: float = 0.5


@dataclass(frozen=True, slots=True)
class LinearWeight:
    """A weight linear in the queue's mean length: ``w(b̄) = a + c·b̄`` (EWSJF)."""

    a: float
    c: float = 0.0

    def at(self, mean_len: float) -> float:
        return max(self.a + self.c * mean_len, 0.0)


@dataclass(frozen=True, slots=True)
class EwsjfParams:
    base: LinearWeight = LinearWeight(1.0, 0.0)
    urg: LinearWeight = LinearWeight(1.0, 0.0)
    fair: LinearWeight = LinearWeight(0.5, 0.0)
    #: Refine splits where adjacent k-means centres are more than alpha × mean gap apart
    alpha: float = 1.5
    max_queues: int = 32
    #: refresh the partition every N finished requests or T engine seconds
    refresh_requests: int = 2000
    refresh_s: float = 600.0
    reservoir_size: int = 4096
    #: weights of the bubble queue (requests falling between queue intervals)
    bubble: QueueSpec = QueueSpec(0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.5)


@dataclass(frozen=True, slots=True)
class BoostParams:
    variant: BoostVariant = BoostVariant.UNI
    #: γ in 1/s: b_γ(w) = (1/γ)·ln(1/(1 − e^{−γw})); a job k× smaller gets ≈ ln(k)/γ s
    gamma: float = 0.1
    gamma_min: float = 0.01
    gamma_max: float = 50.0
    #: γ-Ada: target tail TTLT (s) at quantile ``ada_quantile`` over ``ada_window`` requests
    ada_target_s: float = 30.0
    ada_quantile: float = 0.99
    ada_window: int = 500
    ada_step: float = 1.25
    #: MemGuard: priority changes only when w crosses θ·r^k
    memguard_theta_s: float = 0.05
    memguard_ratio: float = 2.0
    #: tailwise mode: committed prompt work from the partition queue's mean length (True) or
    #: the request's own prompt (False; measured better on the Azure traces)
    partition_aware: bool = False


@dataclass(frozen=True, slots=True)
class PreemptionParams:
    #: rank victims by re-admission cost (uncached tokens to recompute) after priority
    cache_aware: bool = True
    mode: PreemptMode = PreemptMode.RECOMPUTE
    #: a request restored after preemption is protected until its next MemGuard level
    anti_thrash: bool = True
    #: priority keys within the same band of this many seconds count as equal priority,
    #: so re-admission cost decides between them
    priority_band_s: float = 600.0


@dataclass(frozen=True, slots=True)
class SloClass:
    name: str
    ttft_s: float
    tpot_s: float


@dataclass(frozen=True, slots=True)
class SloParams:
    ttft_s: float = 8.0
    tpot_s: float = 0.05
    classes: tuple[SloClass, ...] = (
        SloClass("interactive", 2.0, 0.05),
        SloClass("batch", 60.0, 0.2),
    )
    #: Kairos slack-guided decode batch cap
    decode_cap: bool = False
    #: tailwise mode: add SLO urgency to the ordering (EDF on TTFT deadlines, boosted:
    #: the key counts from ``arrival + the class's TTFT target``). Requests without a
    #: class all get the default target: their waiting order is the boost's (only where
    #: the preemption order's priority bands fall moves with the offset)
    urgency: bool = True
    #: tailwise mode: a waiting request that can no longer meet its TTFT target (it has
    #: waited longer than the target minus its own prefill time) goes behind every one
    #: that still can (Kairos's demotion); the waiting envelope still bounds its wait
    demote_late: bool = False
    #: Kairos scores at most this many of the oldest waiting requests per step
    window: int = 64

    def targets(self, slo_class: str) -> tuple[float, float]:
        """(TTFT, TPOT) targets of a class; unknown or empty class → the defaults."""
        for c in self.classes:
            if c.name == slo_class:
                return c.ttft_s, c.tpot_s
        return self.ttft_s, self.tpot_s


@dataclass(frozen=True, slots=True)
class SafetyParams:
    #: cap on any boost (s): a later arrival can overtake by at most this much
    max_boost_s: float = 120.0
    #: no request waits longer than this behind later arrivals (s)
    aging_s: float = 240.0


@dataclass(frozen=True, slots=True)
class RegimeParams:
    """tailwise mode's mechanisms for bursts, KV pressure and overload; each one a switch.

    ``T`` below is the policy's own measured service-time scale: the
    ``scale_quantile`` of how long recently finished requests took from their first
    token to their last (engine time only; no output length is ever predicted). It
    leaves out the wait before the first token, so it does not grow with the admission
    queueing the policy itself causes (a latency reference feeds back: a longer tail
    widens the envelope, which lengthens the tail). With ``scale_excludes_requeue`` it
    also leaves out the waits after preemptions (from each preemption to the next
    admission), the other queueing the policy causes: included, it closed the loop.
    Measured on code-reasoning-slo after its 1.15-load reasoning phase (seed 3): demoted
    victims' re-waits of 150-180 s entered ``T`` as they finished, ``T`` rose from 26 s to
    183 s within 200 s and ``E = 2T`` with it, faster than the victims' clocks ran, so
    they waited until the queue drained (P99 TTLT 261 s against FCFS's 147 s in that
    phase, ``benchmarks/online_targets.py`` phase table).
    """

    #: ``T``: the ``scale_quantile`` of first-to-last-token times (less the waits after
    #: preemptions, ``scale_excludes_requeue``) of the last ``scale_window`` finished
    #: requests, refreshed every ``scale_update_every`` finishes. The same window and
    #: quantile measure FCFS's drain time ``D`` and the residual-life curve. Named
    #: ``latency_*`` up to schema 2 (renamed on load): ``T`` is a service time, not a
    #: latency, since it leaves the queueing out
    scale_quantile: float = 0.9
    scale_window: int = 512
    scale_update_every: int = 32
    #: scale boosts with the measured service time: boost time-scale 1/γ ≥
    #: ``horizon_factor·T``, boosts capped at ``envelope_cap_s`` instead of ``max_boost_s``
    #: (the waiting bound is the envelope below, so the cap no longer flattens the order)
    adaptive_horizon: bool = True
    horizon_factor: float = 2.0
    #: the envelope relative to measured service time: the oldest waiting request is
    #: served first once it has waited ``E = clip(aging_factor·T, aging_floor_s,
    #: envelope_cap_s)`` (before ``T`` is measured: ``safety.aging_s``)
    relative_aging: bool = True
    aging_factor: float = 2.0
    aging_floor_s: float = 30.0
    envelope_cap_s: float = 3600.0
    #: admission pacing under KV pressure: admit the waiting head only if
    #: ``pacing_blocks`` free blocks per decoding request remain after its own blocks
    #: (1 block = ``block_size`` decode steps of headroom for each of them)
    admission_pacing: bool = True
    pacing_blocks: float = 1.0
    #: live prefix re-keying: each scheduling round, re-probe ``prefix_rekey_k`` waiting
    #: requests (round-robin) with the engine's read-only prefix-cache lookup and re-key
    #: those whose uncached prompt shrank (an earlier turn of the same session got cached
    #: while they waited; an eviction never demotes). Without it a request keeps the
    #: uncached length it had when queued. Cost per round: ``prefix_rekey_k`` lookups
    prefix_rekey: bool = True
    prefix_rekey_k: int = 8
    #: queue-relative aging floor: once measured, ``queue_floor_factor·D`` replaces the
    #: fixed ``aging_floor_s``, ``D`` = the ``scale_quantile`` over the last
    #: ``scale_window`` admissions of FCFS's drain time (waiting uncached prompt tokens ÷
    #: recently admitted prefill tokens per second: the wait FCFS would impose on an
    #: arrival): ``E = min(max(aging_factor·T, min(aging_floor_s, f·D), f·D₇₅),
    #: envelope_cap_s)`` with ``f = queue_floor_factor`` and ``D₇₅`` the drain times'
    #: upper quartile. A fixed floor neither holds a request back longer than FCFS's queue
    #: would, nor turns the boost into FCFS when queueing outgrows the service time
    queue_floor: bool = True
    queue_floor_factor: float = 1.0
    #: queue-relative boost horizon: once FCFS's drain time is measured, the horizon is at
    #: least ``T + D₇₅`` (``max(horizon_factor·T, T + D₇₅)``): a short request's head
    #: start covers the queueing a long one ahead of it would impose anyway, plus a
    #: service time. With the horizon tied to ``T`` alone, a prefill-bound queue longer
    #: than ``T`` (long prompts, prefix reuse) reorders only partly; a KV-bound one
    #: (long decodes, ``D`` small next to ``T``) is left as it is. Same drain samples as
    #: ``queue_floor`` (measured with either switch on)
    queue_horizon: bool = True
    #: victims by residual life: among running requests of equal protection, the one with
    #: the longest expected remaining output, given what it has generated, is evicted
    #: first; the expectation is the mean residual of the output lengths of the last
    #: ``scale_window`` finished requests (:class:`~tailwise.scorer.residual.ResidualLife`;
    #: no request's own length is predicted). Heavy tails: long runners are evicted, their
    #: KV goes to arrivals; light tails: the newest, as vLLM does
    residual_victims: bool = True
    #: a preempted request whose expected remaining output exceeds a fresh request's
    #: re-enters the waiting queue as if it arrived when it was preempted, so the arrivals
    #: it made room for are admitted first; its aging clock restarts then (it waits at
    #: most ``E`` again, from its preemption)
    demote_preempted: bool = True
    #: a demoted victim is keyed as a fresh request of θ work (MemGuard's first threshold,
    #: boosted by the horizon) arriving ``demote_delay_factor·T`` after its preemption:
    #: behind the short requests waiting then and arriving within that delay (those it
    #: made room for, while the room is used), ahead of later ones, and in preemption order
    #: among victims. Off (and before ``T`` is measured): keyed from its preemption with
    #: the boost of its attained work, which puts it behind every arrival of about the
    #: next horizon (``2T``) and orders victims least-served first, so the longest runners
    #: wait longest. A policy file or wire message that sets ``tail_protect_factor`` but
    #: not this switch predates it and keeps the old key (its factor was chosen for it)
    demote_as_arrival: bool = True
    demote_delay_factor: float = 2.0
    #: tail candidates are evicted last: a request that has produced a token and arrived
    #: more than ``tail_protect_factor·T`` ago (its completion sets the tail TTLT) ranks
    #: above every other running request in the preemption order
    tail_protect: bool = True
    tail_protect_factor: float = 0.15
    #: ``T`` leaves out each wait from a preemption to the next admission (see the class
    #: docstring): the scale measures service, not the re-queueing the policy causes.
    #: Off: first-to-last-token times as they are (a policy written before the switch
    #: keeps this, with ``demote_delay_factor`` 1 unless it set one)
    scale_excludes_requeue: bool = True


#: tailwise's regime mechanisms, each a boolean switch of :class:`RegimeParams` (validated
#: here, searched by the tuner, ablated by ``benchmarks/regime_ablation.py``)
REGIME_SWITCHES = ("adaptive_horizon", "relative_aging", "admission_pacing", "prefix_rekey",
                   "queue_floor", "residual_victims", "demote_preempted", "tail_protect",
                   "queue_horizon", "demote_as_arrival", "scale_excludes_requeue")


@dataclass(frozen=True, slots=True)
class Policy:
    """Everything an engine needs to schedule; immutable and versioned."""

    mode: Mode = Mode.FCFS
    version: int = 0
    created_at: float = 0.0
    source: Source = Source.BASELINE
    schema_version: int = SCHEMA_VERSION
    #: EWSJF / tailwise partition over the routing feature (uncached prompt tokens)
    queues: tuple[QueueSpec, ...] = ()
    ewsjf: EwsjfParams = EwsjfParams()
    boost: BoostParams = BoostParams()
    preemption: PreemptionParams = PreemptionParams()
    slo: SloParams = SloParams()
    safety: SafetyParams = SafetyParams()
    regime: RegimeParams = RegimeParams()
    step_time: StepTimeModel = H100_LLAMA3_8B
    #: free-form provenance (study name, trial number, ...)
    note: str = ""
    extra: tuple[tuple[str, str], ...] = field(default=())

    def replace(self, **changes: Any) -> Policy:
        """A copy with ``changes`` applied, validated."""
        p = dataclasses.replace(self, **changes)
        p.validate()
        return p

    def waiting_bound(self) -> str:
        """The safety envelope in words, for operators (``tailwise policy validate``).

        >>> print(Policy(mode=Mode.BOOST).waiting_bound())
        no request waits more than 240 s behind a later arrival (safety.aging_s)
        """
        if self.mode is Mode.FCFS:
            return "FCFS: no request is ever overtaken by a later arrival"
        if self.mode is Mode.KAIROS:
            return ("none: Kairos orders by SLO slack; a request past its SLO is demoted, "
                    "not dropped, and can wait behind later arrivals without bound")
        fixed = (f"no request waits more than {self.safety.aging_s:g} s behind a later arrival "
                 f"(safety.aging_s)")
        g = self.regime
        if self.mode is not Mode.TAILWISE or not g.relative_aging:
            return fixed
        return (f"no request waits more than E behind a later arrival, E = clip("
                f"{g.aging_factor:g} x T, {g.aging_floor_s:g} s, {g.envelope_cap_s:g} s) where T "
                f"is the measured p{100 * g.scale_quantile:g} first-to-last-token time of the "
                f"last {g.scale_window} requests (E = {min(self.safety.aging_s, g.envelope_cap_s):g} s"
                f" until measured); never more than {g.envelope_cap_s:g} s"
                + (f"; once FCFS's drain time is measured, E = max({g.aging_factor:g} x T, "
                   f"min({g.aging_floor_s:g} s, {g.queue_floor_factor:g} x D), "
                   f"{g.queue_floor_factor:g} x D75) instead, capped, D being its "
                   f"p{100 * g.scale_quantile:g} and D75 its upper quartile "
                   "(regime.queue_floor)" if g.queue_floor else "")
                + ("; a preempted request with a long expected remainder waits at most E again, "
                   "counted from its preemption (regime.demote_preempted)"
                   if g.demote_preempted else ""))

    # -- validation ----------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`PolicyError` naming the first bad field."""
        _check_enum("mode", self.mode, Mode)
        _check_enum("source", self.source, Source)
        if not isinstance(self.version, int) or self.version < 0:
            raise PolicyError("version", f"must be an integer >= 0, got {self.version!r}")
        if self.schema_version != SCHEMA_VERSION:
            raise PolicyError(
                "schema_version", f"must be {SCHEMA_VERSION} after loading, got {self.schema_version!r}"
            )
        _finite("created_at", self.created_at, lo=0.0)
        self._validate_queues()
        e = self.ewsjf
        for name in ("base", "urg", "fair"):
            w: LinearWeight = getattr(e, name)
            _finite(f"ewsjf.{name}.a", w.a, lo=0.0)
            _finite(f"ewsjf.{name}.c", w.c)
        _finite("ewsjf.alpha", e.alpha, lo=0.0, hi=100.0)
        _int_range("ewsjf.max_queues", e.max_queues, 1, 256)
        _int_range("ewsjf.refresh_requests", e.refresh_requests, 1, 10_000_000)
        _finite("ewsjf.refresh_s", e.refresh_s, lo=0.0)
        _int_range("ewsjf.reservoir_size", e.reservoir_size, 16, 10_000_000)
        _validate_queue_weights("ewsjf.bubble", e.bubble)
        b = self.boost
        _check_enum("boost.variant", b.variant, BoostVariant)
        _finite("boost.gamma_min", b.gamma_min, lo=1e-6)
        _finite("boost.gamma_max", b.gamma_max, lo=b.gamma_min)
        _finite("boost.gamma", b.gamma, lo=b.gamma_min, hi=b.gamma_max)
        _finite("boost.ada_target_s", b.ada_target_s, lo=1e-3)
        _finite("boost.ada_quantile", b.ada_quantile, lo=0.5, hi=0.9999)
        _int_range("boost.ada_window", b.ada_window, 10, 1_000_000)
        _finite("boost.ada_step", b.ada_step, lo=1.0001, hi=10.0)
        _finite("boost.memguard_theta_s", b.memguard_theta_s, lo=1e-6, hi=3600.0)
        _finite("boost.memguard_ratio", b.memguard_ratio, lo=1.0001, hi=100.0)
        _check_enum("preemption.mode", self.preemption.mode, PreemptMode)
        _finite("preemption.priority_band_s", self.preemption.priority_band_s, lo=0.0, hi=3600.0)
        if 0 < self.preemption.priority_band_s < 1e-3:
            raise PolicyError("preemption.priority_band_s",
                              f"must be 0 (exact priorities) or >= 0.001, got "
                              f"{self.preemption.priority_band_s!r}")
        s = self.slo
        _finite("slo.ttft_s", s.ttft_s, lo=1e-3, hi=86400.0)
        _finite("slo.tpot_s", s.tpot_s, lo=1e-4, hi=3600.0)
        seen: set[str] = set()
        for i, c in enumerate(s.classes):
            if not c.name or c.name in seen:
                raise PolicyError(f"slo.classes[{i}].name", f"must be unique and non-empty, got {c.name!r}")
            seen.add(c.name)
            _finite(f"slo.classes[{i}].ttft_s", c.ttft_s, lo=1e-3, hi=86400.0)
            _finite(f"slo.classes[{i}].tpot_s", c.tpot_s, lo=1e-4, hi=3600.0)
        _int_range("slo.window", s.window, 1, 100_000)
        _finite("safety.max_boost_s", self.safety.max_boost_s, lo=0.0, hi=86400.0)
        _finite("safety.aging_s", self.safety.aging_s, lo=0.0, hi=86400.0)
        if self.safety.max_boost_s > self.safety.aging_s:
            raise PolicyError(
                "safety.max_boost_s",
                f"must not exceed safety.aging_s ({self.safety.aging_s}), got {self.safety.max_boost_s}",
            )
        g = self.regime
        for flag in REGIME_SWITCHES:
            if not isinstance(getattr(g, flag), bool):
                raise PolicyError(f"regime.{flag}", f"must be true or false, got {getattr(g, flag)!r}")
        _finite("regime.scale_quantile", g.scale_quantile, lo=0.5, hi=0.999)
        _int_range("regime.scale_window", g.scale_window, 16, 1_000_000)
        _int_range("regime.scale_update_every", g.scale_update_every, 1, 1_000_000)
        _finite("regime.horizon_factor", g.horizon_factor, lo=0.01, hi=1000.0)
        _finite("regime.pacing_blocks", g.pacing_blocks, lo=0.0, hi=1024.0)
        _finite("regime.aging_factor", g.aging_factor, lo=0.1, hi=1000.0)
        _finite("regime.aging_floor_s", g.aging_floor_s, lo=0.0, hi=86400.0)
        _finite("regime.envelope_cap_s", g.envelope_cap_s, lo=max(g.aging_floor_s, 1e-3), hi=86400.0)
        _int_range("regime.prefix_rekey_k", g.prefix_rekey_k, 1, 4096)
        _finite("regime.queue_floor_factor", g.queue_floor_factor, lo=0.1, hi=1000.0)
        _finite("regime.tail_protect_factor", g.tail_protect_factor, lo=0.01, hi=1000.0)
        _finite("regime.demote_delay_factor", g.demote_delay_factor, lo=0.0, hi=1000.0)
        if not isinstance(self.step_time, StepTimeModel):
            raise PolicyError("step_time", "must be a StepTimeModel")

    def _validate_queues(self) -> None:
        if len(self.queues) > self.ewsjf.max_queues:
            raise PolicyError(
                "queues", f"{len(self.queues)} queues exceed ewsjf.max_queues={self.ewsjf.max_queues}"
            )
        check_intervals(self.queues, lo=0.0)
        for i, q in enumerate(self.queues):
            _finite(f"queues[{i}].mean_len", q.mean_len, lo=0.0)
            _finite(f"queues[{i}].density", q.density, lo=0.0)
            _validate_queue_weights(f"queues[{i}]", q)

    # -- (de)serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Policy:
        """Build and validate a policy from plain data (any supported schema version)."""
        if not isinstance(data, dict):
            raise PolicyError("policy", f"must be an object, got {type(data).__name__}")
        data = migrate(dict(data))
        try:
            p = _from_plain(cls, data, "")
        except StepTimeModelError as exc:
            raise PolicyError("step_time", str(exc)) from exc
        assert isinstance(p, Policy)
        p.validate()
        return p


def check_intervals(queues: Any, lo: float | None = None) -> None:
    """Raise :class:`PolicyError` unless the queues' ``[lo, hi)`` are finite, non-empty,
    sorted and disjoint (and, if given, no bound is below ``lo``).

    >>> try:
    ...     check_intervals((QueueSpec(0, 10, 5, 0.1), QueueSpec(5, 20, 12, 0.1)))
    ... except ValueError as exc:
    ...     print(exc)
    queues[1].lo: boundaries must be sorted and disjoint: 5 < previous hi 10
    """
    prev_hi = -math.inf
    for i, q in enumerate(queues):
        _finite(f"queues[{i}].lo", q.lo, lo=lo)
        _finite(f"queues[{i}].hi", q.hi, lo=lo)
        if not q.hi > q.lo:
            raise PolicyError(f"queues[{i}].hi", f"must be > lo ({q.lo}), got {q.hi}")
        if q.lo < prev_hi:
            raise PolicyError(
                f"queues[{i}].lo",
                f"boundaries must be sorted and disjoint: {q.lo} < previous hi {prev_hi}",
            )
        prev_hi = q.hi


def canonical_json(data: Any) -> str:
    """Deterministic JSON: sorted keys, compact, NaN/inf refused."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


# -- schema migration ----------------------------------------------------------------------
def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Bring a policy dict of an older schema up to :data:`SCHEMA_VERSION`.

    * 1 → 2: schema 1 has ``"slo": {"ttft_s", "tpot_s"}`` only, ``"boost": {"gamma",
      "memguard_*"}`` only, no ``extra``/``note``; missing keys take today's defaults.
    * 2 → 3: the regime's ``latency_quantile``/``latency_window``/``latency_update_every``
      are renamed ``scale_*`` (a section setting both names is refused), and a regime
      section is read by the fields it sets (:func:`legacy_regime_values`): in schema 2
      the defaults changed under files that did not say their age. From schema 3 on a
      missing field is today's default, whatever else the section sets.

    A document older than schema 3 (or without ``schema_version``, read as schema 1) that
    uses a name renamed in schema 3 (``scale_quantile``, ``scale_window``,
    ``scale_update_every``) is refused, naming the field: it was written for schema 3, and
    reading it as older would apply the old rules to it silently.

    >>> migrate({"schema_version": 2, "regime": {"latency_window": 64}})
    {'schema_version': 3, 'regime': {'scale_window': 64}}
    >>> migrate({"schema_version": 3, "regime": {"tail_protect_factor": 0.5}})["regime"]
    {'tail_protect_factor': 0.5}
    """
    version = data.get("schema_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise PolicyError("schema_version", f"must be a positive integer, got {version!r}")
    if version > SCHEMA_VERSION:
        raise PolicyError(
            "schema_version",
            f"{version} is newer than this tailwise understands ({SCHEMA_VERSION}); upgrade tailwise",
        )
    if version == SCHEMA_VERSION:
        return data
    given, data = data, {**data, "schema_version": SCHEMA_VERSION}
    regime = data.get("regime")
    if isinstance(regime, dict):
        regime = dict(regime)
        for old, new in RENAMED_REGIME_FIELDS.items():
            if old in regime and new in regime:
                raise PolicyError(f"regime.{old}", f"is {new} from schema 3 on; set one, not both")
            if new in regime:
                said = ("has no schema_version (read as schema 1)" if "schema_version" not in given
                        else f"says schema_version {version}")
                raise PolicyError(f"regime.{new}", f"is a schema-3 name, but the document {said}; "
                                  f"write \"schema_version\": {SCHEMA_VERSION}")
            if old in regime:
                regime[new] = regime.pop(old)
        data["regime"] = {**regime, **legacy_regime_values(regime.keys())}
    return data


#: regime fields renamed in schema 3: schema 2 name → today's
RENAMED_REGIME_FIELDS = {
    "latency_quantile": "scale_quantile",
    "latency_window": "scale_window",
    "latency_update_every": "scale_update_every",
}


def legacy_regime_values(present: Collection[str]) -> dict[str, Any]:
    """What a schema-2 regime section that sets only the fields ``present`` (a policy file,
    or a wire message's set fields) means where the defaults changed under it; missing
    fields otherwise take today's defaults. Schema 2 did not date its sections, so two
    rules go by the fields a section of each age sets (schema 3 and later: none):

    * ``tail_protect_factor`` without ``demote_as_arrival``: it predates that switch, and
      its factor was chosen for the old demotion key, which it keeps;
    * any of ``tail_protect_factor``, ``demote_as_arrival``, ``demote_delay_factor``
      without ``scale_excludes_requeue``: it predates that switch and keeps ``T`` with
      the re-queue waits in it, and the delay factor chosen for that ``T`` (1) unless it
      set one.

    >>> legacy_regime_values({"tail_protect_factor"})
    {'demote_as_arrival': False, 'scale_excludes_requeue': False, 'demote_delay_factor': 1.0}
    >>> legacy_regime_values({"demote_as_arrival", "demote_delay_factor"}), legacy_regime_values(set())
    ({'scale_excludes_requeue': False}, {})
    """
    out: dict[str, Any] = {}
    if "tail_protect_factor" in present and "demote_as_arrival" not in present:
        out["demote_as_arrival"] = False
    if "scale_excludes_requeue" not in present and any(
            k in present for k in ("tail_protect_factor", "demote_as_arrival",
                                   "demote_delay_factor")):
        out["scale_excludes_requeue"] = False
        if "demote_delay_factor" not in present:
            out["demote_delay_factor"] = 1.0
    return out


# -- helpers ------------------------------------------------------------------------------
def _finite(name: str, v: Any, lo: float | None = None, hi: float | None = None) -> None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise PolicyError(name, f"must be a finite number, got {v!r}")
    if lo is not None and v < lo:
        raise PolicyError(name, f"must be >= {lo}, got {v!r}")
    if hi is not None and v > hi:
        raise PolicyError(name, f"must be <= {hi}, got {v!r}")


def _int_range(name: str, v: Any, lo: int, hi: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise PolicyError(name, f"must be an integer in [{lo}, {hi}], got {v!r}")


def _check_enum(name: str, v: Any, enum: type[StrEnum]) -> None:
    if not isinstance(v, enum):
        raise PolicyError(name, f"must be one of {[e.value for e in enum]}, got {v!r}")


def _validate_queue_weights(prefix: str, q: QueueSpec) -> None:
    for w in ("w_base", "w_urg", "w_fair"):
        _finite(f"{prefix}.{w}", getattr(q, w), lo=0.0)


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, StrEnum):
        return obj.value
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [_to_plain(x) for x in obj]
    return obj


def _from_plain(tp: Any, data: Any, path: str) -> Any:
    """Rebuild dataclass ``tp`` from plain data, rejecting unknown fields by name."""
    name = path or "policy"
    if not isinstance(data, dict):
        raise PolicyError(name, f"must be an object, got {type(data).__name__}")
    flds = {f.name: f for f in dataclasses.fields(tp)}
    unknown = sorted(set(data) - set(flds))
    if unknown:
        raise PolicyError(f"{path + '.' if path else ''}{unknown[0]}", "unknown field")
    kwargs: dict[str, Any] = {}
    hints = _HINTS[tp]
    for key, value in data.items():
        sub = f"{path}.{key}" if path else key
        kwargs[key] = _convert(hints[key], value, sub)
    try:
        return tp(**kwargs)
    except TypeError as exc:
        raise PolicyError(name, str(exc)) from exc


def _convert(tp: Any, value: Any, path: str) -> Any:
    if tp in _DATACLASSES:
        return _from_plain(tp, value, path)
    if isinstance(tp, type) and issubclass(tp, StrEnum):
        try:
            return tp(value)
        except ValueError:
            raise PolicyError(path, f"must be one of {[e.value for e in tp]}, got {value!r}") from None
    if tp is _QUEUES or tp is _SLO_CLASSES:
        if not isinstance(value, list | tuple):
            raise PolicyError(path, f"must be a list, got {type(value).__name__}")
        elem = QueueSpec if tp is _QUEUES else SloClass
        return tuple(_from_plain(elem, v, f"{path}[{i}]") for i, v in enumerate(value))
    if tp is _EXTRA:
        if not isinstance(value, list | tuple) or not all(
            isinstance(kv, list | tuple) and len(kv) == 2 and all(isinstance(s, str) for s in kv)
            for kv in value
        ):
            raise PolicyError(path, "must be a list of [key, value] string pairs")
        return tuple((str(k), str(v)) for k, v in value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PolicyError(path, f"must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise PolicyError(path, f"must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise PolicyError(path, f"must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise PolicyError(path, f"must be a string, got {value!r}")
        return value
    raise PolicyError(path, f"unsupported type {tp!r}")  # pragma: no cover


_QUEUES = "queues"
_SLO_CLASSES = "slo_classes"
_EXTRA = "extra"
_DATACLASSES = {
    Policy,
    QueueSpec,
    LinearWeight,
    EwsjfParams,
    BoostParams,
    PreemptionParams,
    SloClass,
    SloParams,
    SafetyParams,
    RegimeParams,
    StepTimeModel,
}


def _resolve_hints() -> dict[Any, dict[str, Any]]:
    import typing

    out: dict[Any, dict[str, Any]] = {}
    for dc in _DATACLASSES:
        hints = typing.get_type_hints(dc)
        resolved: dict[str, Any] = {}
        for k, v in hints.items():
            if dc is Policy and k == "queues":
                resolved[k] = _QUEUES
            elif dc is SloParams and k == "classes":
                resolved[k] = _SLO_CLASSES
            elif dc is Policy and k == "extra":
                resolved[k] = _EXTRA
            else:
                resolved[k] = v
        out[dc] = resolved
    return out


_HINTS = _resolve_hints()


def neutral_policy() -> Policy:
    """The kill-switch / no-sidecar baseline: FCFS, exactly stock vLLM behaviour."""
    return Policy(mode=Mode.FCFS, source=Source.BASELINE)

"""Conversion between :class:`tailwise.scorer.policy.Policy` and the wire messages.

The codec is the validation boundary of the wire: :func:`policy_from_proto` and
:func:`decode_update` build every nested dataclass field by field and finish with
``Policy.validate()``, so whatever arrives (NaN, negative sizes, non-monotone queues,
an unspecified enum, a missing sub-message, truncated bytes) raises
:class:`~tailwise.scorer.policy.PolicyError` naming the field and value instead of reaching a
scheduler. Encoding validates first, so a sender cannot put a bad policy on the wire by
accident (the sidecar's testing hook uses ``check=False`` deliberately).

Events: :func:`request_event` / :func:`step_event` build telemetry messages from plain
values (used by the engine-side emitter), :func:`step_stats_from_proto` goes back
(and is the one check of a step record: the sidecar's window and the fleet's hints use it).

>>> from tailwise.scorer.policy import neutral_policy
>>> p = neutral_policy().replace(version=3)
>>> policy_from_proto(policy_to_proto(p)) == p
True
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, TypeVar

from google.protobuf.message import DecodeError

from tailwise.scorer.hooks import StepStats
from tailwise.scorer.policy import (
    SCHEMA_VERSION,
    BoostParams,
    BoostVariant,
    EwsjfParams,
    LinearWeight,
    Mode,
    Policy,
    PolicyError,
    PreemptionParams,
    PreemptMode,
    QueueSpec,
    RegimeParams,
    SafetyParams,
    SloClass,
    SloParams,
    Source,
    legacy_regime_values,
)
from tailwise.scorer.step_time import StepTimeModel, StepTimeModelError
from tailwise.wire.v1 import policy_pb2 as pb

__all__ = [
    "MAX_ENGINE_TIME",
    "MAX_KV_USAGE",
    "MAX_STEPS_PER_RECORD",
    "StepEventError",
    "decode_update",
    "engine_time_ok",
    "policy_from_bytes",
    "policy_from_proto",
    "policy_to_proto",
    "request_event",
    "step_event",
    "step_stats_from_proto",
]

_E = TypeVar("_E")

_MODE_TO: dict[Mode, pb.Mode] = {
    Mode.FCFS: pb.MODE_FCFS,
    Mode.EWSJF: pb.MODE_EWSJF,
    Mode.BOOST: pb.MODE_BOOST,
    Mode.KAIROS: pb.MODE_KAIROS,
    Mode.TAILWISE: pb.MODE_TAILWISE,
}
_SOURCE_TO: dict[Source, pb.Source] = {
    Source.BASELINE: pb.SOURCE_BASELINE,
    Source.LEARNED: pb.SOURCE_LEARNED,
    Source.FROZEN: pb.SOURCE_FROZEN,
}
_VARIANT_TO: dict[BoostVariant, pb.BoostVariant] = {
    BoostVariant.UNI: pb.BOOST_VARIANT_UNI,
    BoostVariant.DIST: pb.BOOST_VARIANT_DIST,
    BoostVariant.ADA: pb.BOOST_VARIANT_ADA,
}
_PREEMPT_TO: dict[PreemptMode, pb.PreemptMode] = {
    PreemptMode.RECOMPUTE: pb.PREEMPT_MODE_RECOMPUTE,
    PreemptMode.SWAP: pb.PREEMPT_MODE_SWAP,
}


def _inverse(table: Mapping[_E, int]) -> dict[int, _E]:
    return {int(v): k for k, v in table.items()}


_MODE_FROM = _inverse(_MODE_TO)
_SOURCE_FROM = _inverse(_SOURCE_TO)
_VARIANT_FROM = _inverse(_VARIANT_TO)
_PREEMPT_FROM = _inverse(_PREEMPT_TO)


# -- encode ---------------------------------------------------------------------------------
def _queue_to_proto(q: QueueSpec) -> pb.QueueSpec:
    return pb.QueueSpec(lo=q.lo, hi=q.hi, mean_len=q.mean_len, density=q.density,
                        w_base=q.w_base, w_urg=q.w_urg, w_fair=q.w_fair)


def _weight_to_proto(w: LinearWeight) -> pb.LinearWeight:
    return pb.LinearWeight(a=w.a, c=w.c)


def policy_to_proto(policy: Policy, *, check: bool = True) -> pb.Policy:
    """Encode ``policy``; validates it first unless ``check=False`` (testing hook only)."""
    if check:
        policy.validate()
    e, b, s, st = policy.ewsjf, policy.boost, policy.slo, policy.step_time
    return pb.Policy(
        schema_version=policy.schema_version,
        version=policy.version,
        created_at=policy.created_at,
        source=_SOURCE_TO[policy.source],
        mode=_MODE_TO[policy.mode],
        queues=[_queue_to_proto(q) for q in policy.queues],
        ewsjf=pb.EwsjfParams(
            base=_weight_to_proto(e.base), urg=_weight_to_proto(e.urg),
            fair=_weight_to_proto(e.fair), alpha=e.alpha, max_queues=e.max_queues,
            refresh_requests=e.refresh_requests, refresh_s=e.refresh_s,
            reservoir_size=e.reservoir_size, bubble=_queue_to_proto(e.bubble),
        ),
        boost=pb.BoostParams(
            variant=_VARIANT_TO[b.variant], gamma=b.gamma, gamma_min=b.gamma_min,
            gamma_max=b.gamma_max, ada_target_s=b.ada_target_s, ada_quantile=b.ada_quantile,
            ada_window=b.ada_window, ada_step=b.ada_step, memguard_theta_s=b.memguard_theta_s,
            memguard_ratio=b.memguard_ratio, partition_aware=b.partition_aware,
        ),
        preemption=pb.PreemptionParams(
            cache_aware=policy.preemption.cache_aware, mode=_PREEMPT_TO[policy.preemption.mode],
            anti_thrash=policy.preemption.anti_thrash,
        ),
        slo=pb.SloParams(
            ttft_s=s.ttft_s, tpot_s=s.tpot_s,
            classes=[pb.SloClass(name=c.name, ttft_s=c.ttft_s, tpot_s=c.tpot_s)
                     for c in s.classes],
            decode_cap=s.decode_cap, urgency=s.urgency, window=s.window,
            demote_late=s.demote_late,
        ),
        safety=pb.SafetyParams(max_boost_s=policy.safety.max_boost_s,
                               aging_s=policy.safety.aging_s),
        regime=pb.RegimeParams(**{f.name: getattr(policy.regime, f.name)
                                  for f in dataclasses.fields(RegimeParams)}),
        step_time=pb.StepTimeModel(
            name=st.name, prefill_fixed_ms=st.prefill_fixed_ms,
            prefill_per_token_ms=st.prefill_per_token_ms, prefill_quad_ms=st.prefill_quad_ms,
            decode_fixed_ms=st.decode_fixed_ms, decode_per_req_ms=st.decode_per_req_ms,
            decode_per_ctx_ms=st.decode_per_ctx_ms, provenance=st.provenance,
        ),
        note=policy.note,
        extra=[pb.KeyValue(key=k, value=v) for k, v in policy.extra],
    )


# -- decode ---------------------------------------------------------------------------------
def _enum(name: str, value: int, table: Mapping[int, _E]) -> _E:
    try:
        return table[value]
    except KeyError:
        raise PolicyError(name, f"unspecified or unknown enum value {value}") from None


def _need(present: bool, path: str) -> None:
    if not present:
        raise PolicyError(path, "missing (required sub-message)")


def _queue_from_proto(q: pb.QueueSpec) -> QueueSpec:
    return QueueSpec(lo=q.lo, hi=q.hi, mean_len=q.mean_len, density=q.density,
                     w_base=q.w_base, w_urg=q.w_urg, w_fair=q.w_fair)


def _weight_from_proto(w: pb.LinearWeight) -> LinearWeight:
    return LinearWeight(a=w.a, c=w.c)


def policy_from_proto(msg: pb.Policy) -> Policy:
    """Decode and validate; raises :class:`PolicyError` naming the first bad field."""
    _need(msg.HasField("ewsjf"), "ewsjf")
    _need(msg.HasField("boost"), "boost")
    _need(msg.HasField("preemption"), "preemption")
    _need(msg.HasField("slo"), "slo")
    _need(msg.HasField("safety"), "safety")
    _need(msg.HasField("step_time"), "step_time")
    _need(msg.ewsjf.HasField("base"), "ewsjf.base")
    _need(msg.ewsjf.HasField("urg"), "ewsjf.urg")
    _need(msg.ewsjf.HasField("fair"), "ewsjf.fair")
    _need(msg.ewsjf.HasField("bubble"), "ewsjf.bubble")
    e, b, s = msg.ewsjf, msg.boost, msg.slo
    st = msg.step_time
    try:
        step_time = StepTimeModel(
            name=st.name, prefill_fixed_ms=st.prefill_fixed_ms,
            prefill_per_token_ms=st.prefill_per_token_ms, prefill_quad_ms=st.prefill_quad_ms,
            decode_fixed_ms=st.decode_fixed_ms, decode_per_req_ms=st.decode_per_req_ms,
            decode_per_ctx_ms=st.decode_per_ctx_ms, provenance=st.provenance,
        )
    except StepTimeModelError as exc:
        raise PolicyError("step_time", str(exc)) from exc
    if not 1 <= msg.schema_version <= SCHEMA_VERSION:
        raise PolicyError(
            "schema_version", f"must be in [1, {SCHEMA_VERSION}] (a newer sender: upgrade "
            f"this tailwise first), got {msg.schema_version}")
    policy = Policy(
        mode=_enum("mode", msg.mode, _MODE_FROM),
        version=msg.version,
        created_at=msg.created_at,
        source=_enum("source", msg.source, _SOURCE_FROM),
        # fields are matched by number, so an older sender's message reads as today's
        # schema (renamed fields included); only its regime section needs its age
        schema_version=SCHEMA_VERSION,
        queues=tuple(_queue_from_proto(q) for q in msg.queues),
        ewsjf=EwsjfParams(
            base=_weight_from_proto(e.base), urg=_weight_from_proto(e.urg),
            fair=_weight_from_proto(e.fair), alpha=e.alpha, max_queues=e.max_queues,
            refresh_requests=e.refresh_requests, refresh_s=e.refresh_s,
            reservoir_size=e.reservoir_size, bubble=_queue_from_proto(e.bubble),
        ),
        boost=BoostParams(
            variant=_enum("boost.variant", b.variant, _VARIANT_FROM), gamma=b.gamma,
            gamma_min=b.gamma_min, gamma_max=b.gamma_max, ada_target_s=b.ada_target_s,
            ada_quantile=b.ada_quantile, ada_window=b.ada_window, ada_step=b.ada_step,
            memguard_theta_s=b.memguard_theta_s, memguard_ratio=b.memguard_ratio,
            partition_aware=b.partition_aware,
        ),
        preemption=PreemptionParams(
            cache_aware=msg.preemption.cache_aware,
            mode=_enum("preemption.mode", msg.preemption.mode, _PREEMPT_FROM),
            anti_thrash=msg.preemption.anti_thrash,
        ),
        slo=SloParams(
            ttft_s=s.ttft_s, tpot_s=s.tpot_s,
            classes=tuple(SloClass(name=c.name, ttft_s=c.ttft_s, tpot_s=c.tpot_s)
                          for c in s.classes),
            decode_cap=s.decode_cap, urgency=s.urgency, window=s.window,
            demote_late=s.demote_late,
        ),
        safety=SafetyParams(max_boost_s=msg.safety.max_boost_s, aging_s=msg.safety.aging_s),
        regime=_regime_from_pb(msg) if msg.HasField("regime") else RegimeParams(),
        step_time=step_time,
        note=msg.note,
        extra=tuple((kv.key, kv.value) for kv in msg.extra),
    )
    policy.validate()
    return policy


def policy_from_bytes(data: bytes) -> Policy:
    """Parse a serialized ``tailwise.v1.Policy``; truncated or garbage bytes → PolicyError."""
    msg = pb.Policy()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise PolicyError("policy", f"not a valid tailwise.v1.Policy message ({exc})") from exc
    return policy_from_proto(msg)


def decode_update(update: pb.PolicyUpdate) -> Policy:
    """The validated policy of an update; its version must match the envelope's."""
    if not update.nonce:
        raise PolicyError("nonce", "missing")
    if not update.HasField("policy"):
        raise PolicyError("policy", "missing")
    policy = policy_from_proto(update.policy)
    if policy.version != update.version:
        raise PolicyError(
            "version", f"envelope version {update.version} != policy.version {policy.version}"
        )
    return policy


# -- telemetry ------------------------------------------------------------------------------
def request_event(
    kind: pb.RequestEventKind,
    request_id: str,
    time: float,
    *,
    arrival_time: float = 0.0,
    prompt_tokens: int = 0,
    cached_tokens: int = 0,
    slo_class: str = "",
    priority: int = 0,
    output_tokens: int = 0,
    num_preemptions: int = 0,
    first_token_time: float = 0.0,
) -> pb.RequestEvent:
    """One per-request telemetry event (engine timestamps in seconds)."""
    return pb.RequestEvent(
        kind=kind, request_id=request_id, time=time, arrival_time=arrival_time,
        prompt_tokens=prompt_tokens, cached_tokens=cached_tokens, slo_class=slo_class,
        priority=priority, output_tokens=output_tokens, num_preemptions=num_preemptions,
        first_token_time=first_token_time,
    )


def step_event(stats: StepStats, batch_size: int | None = None) -> pb.StepEvent:
    """A per-step event from the engine's :class:`StepStats`."""
    return pb.StepEvent(
        time=stats.now, step_time_s=stats.step_time_s, prefill_tokens=stats.prefill_tokens,
        decode_requests=stats.decode_requests, running=stats.running, waiting=stats.waiting,
        kv_usage=stats.kv_usage, preempted=stats.preempted,
        policy_version=stats.policy_version,
        batch_size=stats.running if batch_size is None else batch_size,
        steps=stats.steps,
    )


#: engine timestamps later than this (seconds) are refused: no engine clock is that far
#: along, and one bogus stamp would otherwise fast-forward a consumer's engine clock
MAX_ENGINE_TIME = 1e11
#: the most iterations one step record may say it covers (a skip-ahead over a decode run)
MAX_STEPS_PER_RECORD = 1_000_000
#: KV usage is a fraction of the cache; above this it is no usage (vLLM reports at most 1;
#: the headroom tolerates an engine that counts blocks it is about to free)
MAX_KV_USAGE = 1.5
_STEP_COUNTS = ("prefill_tokens", "decode_requests", "running", "waiting", "preempted", "steps")


def engine_time_ok(t: float) -> bool:
    """Whether ``t`` is an engine timestamp a consumer takes: finite, in
    [0, :data:`MAX_ENGINE_TIME`].

    >>> engine_time_ok(12.5), engine_time_ok(float("nan")), engine_time_ok(-1.0)
    (True, False, False)
    """
    return math.isfinite(t) and 0 <= t <= MAX_ENGINE_TIME


class StepEventError(ValueError):
    """A step record cannot be taken. ``reason`` is its short code (what a consumer
    counts: ``bad_time``, ``bad_step_time``, ``bad_kv_usage``, ``negative_count``,
    ``bad_steps``); the message names the field and value."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def step_stats_from_proto(ev: pb.StepEvent) -> StepStats:
    """Back to :class:`StepStats`, the one check of a step record for every consumer (the
    sidecar's window, the fleet's hints): raises :class:`StepEventError` on a time that is
    not a finite engine time in [0, :data:`MAX_ENGINE_TIME`], a negative or non-finite step
    time, a KV usage outside [0, :data:`MAX_KV_USAGE`], a negative count, or more than
    :data:`MAX_STEPS_PER_RECORD` iterations. ``steps`` 0 (an adapter older than the field)
    reads as 1."""
    if not engine_time_ok(ev.time):
        raise StepEventError("bad_time", f"step.time: must be a finite engine time in "
                                         f"[0, {MAX_ENGINE_TIME:g}], got {ev.time!r}")
    if not math.isfinite(ev.step_time_s) or ev.step_time_s < 0:
        raise StepEventError("bad_step_time", f"step.step_time_s: must be a finite number "
                                              f">= 0, got {ev.step_time_s!r}")
    if not math.isfinite(ev.kv_usage) or not 0 <= ev.kv_usage <= MAX_KV_USAGE:
        raise StepEventError("bad_kv_usage", f"step.kv_usage: must be in [0, {MAX_KV_USAGE:g}],"
                                             f" got {ev.kv_usage!r}")
    for name in _STEP_COUNTS:
        if getattr(ev, name) < 0:
            raise StepEventError("negative_count",
                                 f"step.{name}: must be >= 0, got {getattr(ev, name)}")
    if ev.steps > MAX_STEPS_PER_RECORD:
        raise StepEventError("bad_steps", f"step.steps: must be <= {MAX_STEPS_PER_RECORD:,}, "
                                          f"got {ev.steps}")
    return StepStats(
        now=ev.time, step_time_s=ev.step_time_s, prefill_tokens=ev.prefill_tokens,
        decode_requests=ev.decode_requests, running=ev.running, waiting=ev.waiting,
        kv_usage=ev.kv_usage, preempted=ev.preempted, policy_version=ev.policy_version,
        steps=max(ev.steps, 1),
    )


def _regime_from_pb(msg: pb.Policy) -> RegimeParams:
    """RegimeParams from the wire; an ``optional`` field the sender left unset (it
    predates the field) takes the dataclass default instead of proto3's zero."""
    g, default = msg.regime, RegimeParams()
    values: dict[str, Any] = {}
    present: set[str] = set()
    for f in dataclasses.fields(RegimeParams):
        desc = g.DESCRIPTOR.fields_by_name[f.name]
        unset = desc.has_presence and not g.HasField(f.name)
        values[f.name] = getattr(default if unset else g, f.name)
        if desc.has_presence and not unset:
            present.add(f.name)
    # a schema-2 sender that predates a field reads as a policy file of that age does
    if msg.schema_version < 3:
        values.update(legacy_regime_values(present))
    return RegimeParams(**values)


"""Policy <-> protobuf codec: lossless round trip of valid policies, named rejections."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tailwise.scorer.hooks import StepStats
from tailwise.scorer.policy import (
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
    SafetyParams,
    SloClass,
    SloParams,
    Source,
    neutral_policy,
)
from tailwise.scorer.step_time import StepTimeModel
from tailwise.wire import codec
from tailwise.wire.v1 import policy_pb2 as pb

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


def fl(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


nonneg = fl(0.0, 1e6)
weights = st.builds(QueueSpec, lo=st.just(0.0), hi=st.just(0.0), mean_len=st.just(0.0),
                    density=st.just(0.0), w_base=fl(0, 50), w_urg=fl(0, 50), w_fair=fl(0, 50))


@st.composite
def queues(draw: Any) -> tuple[QueueSpec, ...]:
    n = draw(st.integers(0, 8))
    out, lo = [], draw(fl(0, 100))
    for _ in range(n):
        hi = lo + draw(fl(0.5, 5000))
        out.append(QueueSpec(lo, hi, draw(fl(lo, hi)), draw(fl(0, 1)), draw(fl(0, 50)),
                             draw(fl(0, 50)), draw(fl(0, 50))))
        lo = hi + draw(fl(0, 100))
    return tuple(out)


@st.composite
def policies(draw: Any) -> Policy:
    qs = draw(queues())
    gmin = draw(fl(1e-6, 1.0))
    gmax = draw(fl(gmin, 100.0))
    names = draw(st.lists(text.filter(bool), max_size=4, unique=True))
    aging = draw(fl(0, 86400))
    step = StepTimeModel(draw(text), *(draw(fl(0, 100)) for _ in range(6)), provenance=draw(text))
    return Policy(
        mode=draw(st.sampled_from(Mode)),
        version=draw(st.integers(0, 2**62)),
        created_at=draw(fl(0, 2e9)),
        source=draw(st.sampled_from(Source)),
        queues=qs,
        ewsjf=EwsjfParams(
            base=LinearWeight(draw(fl(0, 10)), draw(fl(-1, 1))),
            urg=LinearWeight(draw(fl(0, 10)), draw(fl(-1, 1))),
            fair=LinearWeight(draw(fl(0, 10)), draw(fl(-1, 1))),
            alpha=draw(fl(0, 100)), max_queues=draw(st.integers(max(len(qs), 1), 256)),
            refresh_requests=draw(st.integers(1, 10_000_000)), refresh_s=draw(nonneg),
            reservoir_size=draw(st.integers(16, 10_000_000)), bubble=draw(weights)),
        boost=BoostParams(
            variant=draw(st.sampled_from(BoostVariant)), gamma=draw(fl(gmin, gmax)),
            gamma_min=gmin, gamma_max=gmax, ada_target_s=draw(fl(1e-3, 1e4)),
            ada_quantile=draw(fl(0.5, 0.9999)), ada_window=draw(st.integers(10, 1_000_000)),
            ada_step=draw(fl(1.0001, 10)), memguard_theta_s=draw(fl(1e-6, 3600)),
            memguard_ratio=draw(fl(1.0001, 100)), partition_aware=draw(st.booleans())),
        preemption=PreemptionParams(draw(st.booleans()), draw(st.sampled_from(PreemptMode)),
                                    draw(st.booleans())),
        slo=SloParams(
            ttft_s=draw(fl(1e-3, 86400)), tpot_s=draw(fl(1e-4, 3600)),
            classes=tuple(SloClass(n, draw(fl(1e-3, 86400)), draw(fl(1e-4, 3600)))
                          for n in names),
            decode_cap=draw(st.booleans()), urgency=draw(st.booleans()),
            window=draw(st.integers(1, 100_000)), demote_late=draw(st.booleans())),
        safety=SafetyParams(max_boost_s=draw(fl(0, aging)), aging_s=aging),
        step_time=step,
        note=draw(text),
        extra=tuple(draw(st.lists(st.tuples(text, text), max_size=3))),
    )


@settings(max_examples=200, deadline=None)
@given(policies())
def test_round_trip_is_lossless(p: Policy) -> None:
    p.validate()
    msg = codec.policy_to_proto(p)
    assert codec.policy_from_proto(msg) == p
    assert codec.policy_from_bytes(msg.SerializeToString()) == p


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_decode_to_a_valid_policy_or_a_policy_error(data: bytes) -> None:
    try:
        p = codec.policy_from_bytes(data)
    except PolicyError:
        return
    p.validate()


def _good() -> pb.Policy:
    p = neutral_policy().replace(
        version=7, mode=Mode.EWSJF,
        queues=(QueueSpec(0, 100, 50, 0.01), QueueSpec(100, 1000, 400, 0.001)),
        ewsjf=EwsjfParams(max_queues=4))
    return codec.policy_to_proto(p)


def _set_nan_gamma(m: pb.Policy) -> None:
    m.boost.gamma = math.nan


def _non_monotone(m: pb.Policy) -> None:
    m.queues[1].lo, m.queues[1].hi = 50.0, 200.0


def _neg_weight(m: pb.Policy) -> None:
    m.queues[0].w_base = -1.0


def _inf_aging(m: pb.Policy) -> None:
    m.safety.aging_s = math.inf


def _no_boost(m: pb.Policy) -> None:
    m.ClearField("boost")


def _mode_unspecified(m: pb.Policy) -> None:
    m.mode = pb.MODE_UNSPECIFIED


def _mode_unknown(m: pb.Policy) -> None:
    m.mode = 99  # type: ignore[assignment]


def _schema_newer(m: pb.Policy) -> None:
    m.schema_version = 4


def _neg_step_time(m: pb.Policy) -> None:
    m.step_time.decode_fixed_ms = -1.0


def _too_many_queues(m: pb.Policy) -> None:
    m.ewsjf.max_queues = 1


def _dup_slo_class(m: pb.Policy) -> None:
    m.slo.classes.add(name="batch", ttft_s=1.0, tpot_s=0.1)


def _boost_over_aging(m: pb.Policy) -> None:
    m.safety.max_boost_s = m.safety.aging_s + 1


@pytest.mark.parametrize(("corrupt", "field"), [
    (_set_nan_gamma, "boost.gamma"),
    (_non_monotone, "queues[1].lo"),
    (_neg_weight, "queues[0].w_base"),
    (_inf_aging, "safety.aging_s"),
    (_no_boost, "boost"),
    (_mode_unspecified, "mode"),
    (_mode_unknown, "mode"),
    (_schema_newer, "schema_version"),
    (_neg_step_time, "step_time"),
    (_too_many_queues, "queues"),
    (_dup_slo_class, "slo.classes[2].name"),
    (_boost_over_aging, "safety.max_boost_s"),
])
def test_invalid_wire_policies_are_rejected_naming_the_field(corrupt: Any, field: str) -> None:
    msg = _good()
    codec.policy_from_proto(msg)  # the uncorrupted message is fine
    corrupt(msg)
    with pytest.raises(PolicyError) as exc:
        codec.policy_from_proto(msg)
    assert exc.value.field == field
    assert str(exc.value).startswith(field)


def test_truncated_bytes_are_a_policy_error() -> None:
    data = _good().SerializeToString()
    with pytest.raises(PolicyError) as exc:
        codec.policy_from_bytes(data[: len(data) // 2])
    assert exc.value.field == "policy"


def test_encoding_refuses_an_invalid_policy_unless_unchecked() -> None:
    import dataclasses

    bad = dataclasses.replace(neutral_policy(), boost=BoostParams(gamma=math.inf))
    with pytest.raises(PolicyError, match=r"boost\.gamma"):
        codec.policy_to_proto(bad)
    assert math.isinf(codec.policy_to_proto(bad, check=False).boost.gamma)


def test_update_envelope_checks() -> None:
    msg = _good()
    ok = pb.PolicyUpdate(version=7, nonce="n1", policy=msg)
    assert codec.decode_update(ok).version == 7
    with pytest.raises(PolicyError, match=r"^version"):
        codec.decode_update(pb.PolicyUpdate(version=8, nonce="n1", policy=msg))
    with pytest.raises(PolicyError, match=r"^nonce"):
        codec.decode_update(pb.PolicyUpdate(version=7, policy=msg))
    with pytest.raises(PolicyError, match=r"^policy"):
        codec.decode_update(pb.PolicyUpdate(version=7, nonce="n"))


def test_step_event_round_trip_and_rejects() -> None:
    s = StepStats(12.5, 0.02, 512, 30, 31, 4, 0.75, 1, 9)
    ev = codec.step_event(s, batch_size=33)
    assert ev.batch_size == 33
    assert codec.step_stats_from_proto(ev) == s
    ev.kv_usage = math.nan
    with pytest.raises(ValueError, match="kv_usage"):
        codec.step_stats_from_proto(ev)
    ev = codec.step_event(s)
    ev.waiting = -1
    with pytest.raises(ValueError, match="waiting"):
        codec.step_stats_from_proto(ev)
    # a record covering several iterations (the simulator skipping ahead) says how many;
    # an older adapter's 0 reads as one
    jump = dataclasses.replace(s, steps=7)
    ev = codec.step_event(jump)
    assert ev.steps == 7 and codec.step_stats_from_proto(ev) == jump
    ev.steps = 0
    assert codec.step_stats_from_proto(ev).steps == 1
    ev.steps = -2
    with pytest.raises(ValueError, match="steps"):
        codec.step_stats_from_proto(ev)


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("time", math.inf, "bad_time"), ("time", -1.0, "bad_time"),
    ("time", codec.MAX_ENGINE_TIME * 2, "bad_time"),
    ("step_time_s", math.nan, "bad_step_time"),
    ("kv_usage", codec.MAX_KV_USAGE + 0.1, "bad_kv_usage"), ("kv_usage", -0.1, "bad_kv_usage"),
    ("running", -1, "negative_count"), ("steps", codec.MAX_STEPS_PER_RECORD + 1, "bad_steps"),
])
def test_step_record_check_names_a_reason_and_the_field(field: str, value: float,
                                                         reason: str) -> None:
    """One check of a step record for every consumer: the window counts ``reason``, the
    message names the field."""
    ev = codec.step_event(StepStats(12.5, 0.02, 512, 30, 31, 4, 0.75, 1, 9))
    setattr(ev, field, value)
    with pytest.raises(codec.StepEventError, match=f"^step.{field}") as info:
        codec.step_stats_from_proto(ev)
    assert info.value.reason == reason


def test_request_event_helper() -> None:
    ev = codec.request_event(pb.REQUEST_EVENT_KIND_FINISHED, "r1", 3.0, arrival_time=1.0,
                             prompt_tokens=10, output_tokens=5, slo_class="batch")
    assert (ev.kind, ev.request_id, ev.time, ev.output_tokens) == (
        pb.REQUEST_EVENT_KIND_FINISHED, "r1", 3.0, 5)

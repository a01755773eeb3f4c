"""tailwise's preemption mechanisms: residual-life victims, demotion, tail protection."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tailwise.scorer.policy import (
    RENAMED_REGIME_FIELDS,
    Mode,
    Policy,
    PolicyError,
    RegimeParams,
)
from tailwise.scorer.registry import build_scheduler
from tailwise.scorer.request import ReqInfo
from tailwise.scorer.residual import ResidualLife
from tailwise.scorer.tailwise import TailwisePolicy
from tailwise.wire import codec
from tailwise.wire.v1 import policy_pb2 as pb

NEW_FIELDS = ("residual_victims", "demote_preempted", "tail_protect", "tail_protect_factor",
              "demote_as_arrival", "demote_delay_factor", "scale_excludes_requeue")


def tailwise(**regime: object) -> TailwisePolicy:
    p = Policy(mode=Mode.TAILWISE, regime=dataclasses.replace(RegimeParams(), **regime))
    sched = build_scheduler(p)
    assert isinstance(sched, TailwisePolicy)
    return sched


def finish_history(sched: TailwisePolicy, outputs: list[int], service_s: float = 10.0) -> None:
    """Feed finished requests: their outputs shape the residual curve, their first-to-last
    token times (``service_s``) set ``T``."""
    for i, n in enumerate(outputs):
        r = ReqInfo(f"done{i}", 0.0, 100, num_output_tokens=n, first_token_time=0.0)
        sched.on_finish(r, service_s)


#: heavy-tailed: most outputs short, a few very long (reasoning)
HEAVY = ([100] * 12 + [2_000, 4_000, 8_000, 16_000]) * 4
#: light-tailed: every output between 100 and 200 tokens (chat)
LIGHT = [100 + 2 * i for i in range(64)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 50_000), min_size=1, max_size=64), st.integers(0, 60_000))
def test_residual_life_is_the_mean_excess_over_the_window(xs: list[int], a: int) -> None:
    life = ResidualLife(window=64, update_every=1, min_samples=1)
    for x in xs:
        life.observe(x)
    beyond = [x - a for x in xs if x > a]
    expect = sum(beyond) / len(beyond) if beyond else 0.0
    assert life.residual(a) == pytest.approx(expect, rel=1e-9, abs=1e-9)


def test_the_residual_curve_rises_for_heavy_tails_and_falls_for_light_ones() -> None:
    heavy, light = ResidualLife(64, 1, 1), ResidualLife(64, 1, 1)
    for x in HEAVY:
        heavy.observe(x)
    for x in LIGHT:
        light.observe(x)
    assert heavy.residual(1_000) > heavy.residual(0)
    assert light.residual(150) < light.residual(0)
    assert heavy.residual(16_000) == 0.0  # beyond every finished request


def running(now: float) -> tuple[ReqInfo, ReqInfo]:
    """A long runner (3,000 tokens out) and a request admitted a moment ago."""
    old = ReqInfo("old", 0.0, 500, num_computed_tokens=3_500, num_output_tokens=3_000,
                  prefill_tokens_done=500, first_token_time=1.0, last_admit_time=0.0)
    new = ReqInfo("new", now - 1.0, 500, num_computed_tokens=510, num_output_tokens=10,
                  prefill_tokens_done=500, first_token_time=now - 0.5, last_admit_time=now - 1.0)
    return old, new


@pytest.mark.parametrize(("history", "on", "victim"), [
    (HEAVY, True, "old"),    # heavy tail: the long runner holds KV longest
    (LIGHT, True, "new"),    # light tail: the newest is expected to run longest
    (HEAVY, False, "new"),   # switch off: γ-boost's order (bands, then cheapest to redo)
])
def test_the_victim_is_the_request_with_the_longest_expected_remainder(
        history: list[int], on: bool, victim: str) -> None:
    sched = tailwise(residual_victims=on, tail_protect=False, demote_preempted=False)
    finish_history(sched, history, service_s=10_000.0)
    old, new = running(now=30.0)
    order = sched.order_running([old, new], 30.0)
    assert order[-1].request_id == victim


def test_a_tail_candidate_is_evicted_last() -> None:
    """With T = 10 s and factor 0.5, a request that arrived 30 s ago is kept even
    though its expected remainder is the longest; off, it is the victim."""
    victims = {}
    for on in (True, False):
        sched = tailwise(tail_protect=on, tail_protect_factor=0.5)
        finish_history(sched, HEAVY, service_s=10.0)
        assert sched.service_scale == pytest.approx(10.0)
        old, new = running(now=30.0)
        victims[on] = sched.order_running([old, new], 30.0)[-1].request_id
    assert victims == {True: "new", False: "old"}


def test_among_tail_candidates_the_oldest_is_evicted_last_whatever_its_remainder() -> None:
    """Under overload every running request can be older than the cap; protection must
    still mean something. Two tail candidates: the older has the longer expected
    remainder (residual-life would evict it) and is kept; the younger goes first."""
    sched = tailwise(tail_protect=True, tail_protect_factor=0.5)
    finish_history(sched, HEAVY, service_s=10.0)
    older = ReqInfo("older", 0.0, 500, num_computed_tokens=4_500, num_output_tokens=4_000,
                    prefill_tokens_done=500, first_token_time=1.0, last_admit_time=0.0)
    younger = ReqInfo("younger", 10.0, 500, num_computed_tokens=3_500, num_output_tokens=3_000,
                      prefill_tokens_done=500, first_token_time=11.0, last_admit_time=10.0)
    assert sched.life.residual(4_000) > sched.life.residual(3_000)
    order = sched.order_running([older, younger], 30.0)
    assert [r.request_id for r in order] == ["older", "younger"]


def test_a_demoted_victim_lets_later_arrivals_in_first_and_waits_at_most_the_envelope_again() -> None:
    got = {}
    for on in (True, False):
        sched = tailwise(demote_preempted=on)
        finish_history(sched, HEAVY, service_s=10.0)
        e = sched.envelope_s()
        old, _ = running(now=100.0)
        sched.on_preempt(old, 100.0)
        old.num_computed_tokens = 0
        sched.requeue(old, 100.0)
        fresh = ReqInfo("fresh", 101.0, 500)
        sched.add(fresh, 101.0)
        got[on] = sched.peek(101.5).request_id
        if on:
            # the restarted clock: served first once it has waited E since its preemption
            assert sched.peek(100.0 + e - 0.01) is fresh
            assert sched.peek(100.0 + e + 0.01) is old
    assert got == {True: "fresh", False: "old"}


def test_a_demoted_victim_re_enters_as_an_arrival_one_service_time_after_its_preemption() -> None:
    """With T = 10 s and ``demote_delay_factor`` 1 a victim preempted at t = 100 s is
    keyed as a fresh request of θ work arriving at 110 s: a request of θ work that
    arrives at 105 s goes first, one arriving at 115 s after it. Off, the victim is keyed
    from 100 s with the boost of its attained work, behind both."""
    got = {}
    for on in (True, False):
        sched = tailwise(demote_as_arrival=on, demote_delay_factor=1.0)
        finish_history(sched, HEAVY, service_s=10.0)
        assert sched.service_scale == pytest.approx(10.0)
        theta_tokens = int(sched.params.memguard_theta_s / sched.cp) + 1  # θ work, a bit more
        old, _ = running(now=100.0)
        sched.on_preempt(old, 100.0)
        old.num_computed_tokens = 0
        sched.requeue(old, 100.0)
        for name, t in (("early", 105.0), ("late", 115.0)):
            sched.add(ReqInfo(name, t, theta_tokens), t)
        got[on] = [sched.pop(116.0).request_id for _ in range(3)]
    assert got == {True: ["early", "old", "late"], False: ["early", "late", "old"]}


def test_before_t_is_measured_a_victim_is_keyed_by_its_attained_work() -> None:
    """Demotion starts once the residual curve is ready (16 finished requests), ``T``
    after 32: in between there is no service time to delay the re-entry by, and keying
    the victim as an arrival at its preemption would put it back ahead of the arrivals it
    made room for. It is keyed as with the switch off."""
    got = {}
    for on in (True, False):
        sched = tailwise(demote_as_arrival=on)
        finish_history(sched, HEAVY[:20], service_s=10.0)
        assert sched.life.ready and sched.service_scale == 0.0
        theta_tokens = int(sched.params.memguard_theta_s / sched.cp) + 1
        old, _ = running(now=100.0)
        sched.on_preempt(old, 100.0)
        old.num_computed_tokens = 0
        sched.requeue(old, 100.0)
        assert sched.counters["demoted"] == 1
        sched.add(ReqInfo("fresh", 100.5, theta_tokens), 100.5)
        got[on] = sched.peek(101.0).request_id
    assert got == {True: "fresh", False: "fresh"}


def test_a_demoted_victims_re_entry_is_fixed_at_its_preemption() -> None:
    """``T`` moves while the victim waits (a refresh every 32 finishes); a later re-key
    (a prefix re-probe, a put-back) must not move its re-entry instant with it."""
    sched = tailwise()
    finish_history(sched, HEAVY, service_s=10.0)
    old, _ = running(now=100.0)
    sched.on_preempt(old, 100.0)
    old.num_computed_tokens = 0
    sched.requeue(old, 100.0)
    key = old.sched_key
    finish_history(sched, HEAVY, service_s=40.0)
    assert sched.service_scale == pytest.approx(40.0)
    sched.rekey(old, 120.0)
    delay = sched.regime.demote_delay_factor * 10.0  # T at the preemption
    assert old.sched_key == pytest.approx(  # SLO urgency: + its class's TTFT target
        100.0 + delay + sched.deadline_offset(old) - sched.boost_of(sched.params.memguard_theta_s))
    assert sched._horizon_set is not None and key != old.sched_key  # only the boost moved


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["arrive", "preempt", "pop"]),
                          st.floats(0.0, 5.0), st.integers(1, 3_000)),
                min_size=1, max_size=60),
       st.floats(0.0, 4.0))
def test_every_pop_honours_the_envelope_with_demotion(
        events: list[tuple[str, float, int]], delay: float) -> None:
    """Arrivals, demoting preemptions and pops at random instants: whenever a waiting
    request has waited ``E`` (from its arrival, or from its preemption if demoted), the
    one popped is the request with the oldest aging clock, whatever the demotion keys."""
    sched = tailwise(demote_delay_factor=delay)
    finish_history(sched, HEAVY, service_s=2.0)
    e = sched.envelope_s()
    now = 0.0
    waiting: set[ReqInfo] = set()
    for n, (kind, dt, size) in enumerate(events):
        now += dt
        if kind == "arrive":
            r = ReqInfo(f"a{n}", now, size)
            sched.add(r, now)
            waiting.add(r)
        elif kind == "preempt":
            r = ReqInfo(f"p{n}", now - 1.0, 500, num_computed_tokens=size + 500,
                        num_output_tokens=size + 2_000, prefill_tokens_done=500,
                        first_token_time=now - 0.5, last_admit_time=now - 1.0)
            sched.on_preempt(r, now)
            r.num_computed_tokens = 0
            sched.requeue(r, now)
            waiting.add(r)
        elif waiting:
            oldest = min(sched.wait_origin(r) for r in waiting)
            got = sched.pop(now)
            waiting.discard(got)
            if now - oldest >= e:
                assert sched.wait_origin(got) == oldest


def test_demoted_victims_re_enter_in_preemption_order() -> None:
    """Two victims of a heavy-tailed workload: the one preempted first is re-admitted
    first, however much service each has had. Keyed by attained work instead (the switch
    off), the less-served one goes first and the long runner waits longest."""
    got = {}
    for on in (True, False):
        sched = tailwise(demote_as_arrival=on)
        finish_history(sched, HEAVY, service_s=10.0)
        long_runner = ReqInfo("long", 0.0, 500, num_computed_tokens=8_500,
                              num_output_tokens=8_000, prefill_tokens_done=500,
                              first_token_time=1.0, last_admit_time=0.0)
        shorter = ReqInfo("shorter", 20.0, 500, num_computed_tokens=3_500,
                          num_output_tokens=3_000, prefill_tokens_done=500,
                          first_token_time=21.0, last_admit_time=20.0)
        for r, t in ((long_runner, 100.0), (shorter, 101.0)):
            sched.on_preempt(r, t)
            r.num_computed_tokens = 0
            sched.requeue(r, t)
        assert sched.counters["demoted"] == 2
        got[on] = [sched.pop(102.0).request_id for _ in range(2)]
    assert got == {True: ["long", "shorter"], False: ["shorter", "long"]}


def test_a_victim_expected_to_finish_sooner_than_a_fresh_request_is_not_demoted() -> None:
    sched = tailwise()
    finish_history(sched, LIGHT, service_s=10.0)
    old = ReqInfo("old", 0.0, 500, num_output_tokens=150, first_token_time=1.0)
    sched.on_preempt(old, 50.0)
    sched.requeue(old, 50.0)
    fresh = ReqInfo("fresh", 51.0, 500)
    sched.add(fresh, 51.0)
    assert sched.peek(51.5) is old
    assert sched.counters["demoted"] == 0


@pytest.mark.parametrize(("field", "value"), [
    ("tail_protect_factor", 0.0), ("tail_protect_factor", float("nan")),
    ("residual_victims", 1), ("demote_preempted", "no"), ("tail_protect", None),
    ("demote_as_arrival", "yes"), ("demote_delay_factor", -1.0),
    ("demote_delay_factor", float("inf")), ("scale_excludes_requeue", 0),
])
def test_bad_values_are_refused_by_name(field: str, value: object) -> None:
    with pytest.raises(PolicyError, match=rf"^regime\.{field}"):
        Policy(mode=Mode.TAILWISE, regime=dataclasses.replace(RegimeParams(), **{field: value})
               ).validate()


def schema2(p: Policy, *dropped: str) -> tuple[dict[str, object], pb.Policy]:
    """``p`` as a schema-2 file and a schema-2 sender wrote it: the measurement fields
    named ``latency_*``, and without the regime fields in ``dropped`` (their age)."""
    data = p.to_dict()
    data["schema_version"] = 2
    regime = data["regime"]
    for old, new in RENAMED_REGIME_FIELDS.items():
        regime[old] = regime.pop(new)
    msg = codec.policy_to_proto(p)
    msg.schema_version = 2
    for name in dropped:
        del regime[name]
        msg.regime.ClearField(name)  # type: ignore[arg-type]
    return data, msg


def test_a_policy_that_predates_demotion_as_an_arrival_keeps_the_old_key() -> None:
    """A schema-2 frozen file or sender from before the switch sets
    ``tail_protect_factor`` (0.5 then) for the old demotion key: read now, it keeps that
    key, not the new one with a factor chosen for the other."""
    p = Policy(mode=Mode.TAILWISE, regime=RegimeParams(tail_protect_factor=0.5))
    data, msg = schema2(p, "demote_as_arrival", "demote_delay_factor")
    old = Policy.from_dict(data)
    assert (old.regime.demote_as_arrival, old.regime.tail_protect_factor) == (False, 0.5)
    assert codec.policy_from_proto(msg).regime.demote_as_arrival is False
    # without a factor either, today's defaults (a consistent pair)
    data, msg = schema2(p, "demote_as_arrival", "demote_delay_factor", "tail_protect_factor")
    assert Policy.from_dict(data).regime == RegimeParams()
    assert codec.policy_from_proto(msg).regime == RegimeParams()
    assert codec.policy_from_proto(codec.policy_to_proto(p)).regime == p.regime


def test_a_policy_that_predates_the_requeue_free_scale_keeps_its_scale_and_delay() -> None:
    """A schema-2 file or sender from before ``scale_excludes_requeue`` sets the demotion
    fields of its day: it keeps ``T`` with the re-queue waits in it, and the delay factor
    chosen for that ``T`` (its own, or 1), not today's 2 with a ``T`` about half as long."""
    p = Policy(mode=Mode.TAILWISE, regime=RegimeParams())
    data, msg = schema2(p, "scale_excludes_requeue", "demote_delay_factor")
    old = Policy.from_dict(data).regime
    assert (old.scale_excludes_requeue, old.demote_delay_factor, old.demote_as_arrival) == (
        False, 1.0, True)
    data["regime"]["demote_delay_factor"] = 1.5  # type: ignore[index]
    assert Policy.from_dict(data).regime.demote_delay_factor == 1.5
    got = codec.policy_from_proto(msg).regime
    assert (got.scale_excludes_requeue, got.demote_delay_factor) == (False, 1.0)
    # today's policy, both ways: unchanged
    assert Policy.from_dict(p.to_dict()).regime == RegimeParams()
    assert codec.policy_from_proto(codec.policy_to_proto(p)).regime == RegimeParams()


def test_from_schema_3_a_partial_regime_section_means_todays_defaults() -> None:
    """The legacy rules are schema 2's: an operator's schema-3 section that sets only
    ``tail_protect_factor`` keeps today's demotion key, ``T`` and delay (before schema 3
    it silently got the old ones), in a file and from a sender."""
    p = Policy(mode=Mode.TAILWISE, regime=RegimeParams(tail_protect_factor=0.3))
    data = p.to_dict()
    data["regime"] = {"tail_protect_factor": 0.3}
    want = RegimeParams(tail_protect_factor=0.3)
    assert Policy.from_dict(data).regime == want
    msg = codec.policy_to_proto(p)
    for name in ("demote_as_arrival", "demote_delay_factor", "scale_excludes_requeue"):
        msg.regime.ClearField(name)  # type: ignore[arg-type]
    assert msg.schema_version == 3 and codec.policy_from_proto(msg).regime == want
    # a schema-2 sender with the same fields gets the old meaning, as before
    msg.schema_version = 2
    got = codec.policy_from_proto(msg)
    assert got.schema_version == 3
    assert (got.regime.demote_as_arrival, got.regime.scale_excludes_requeue) == (False, False)


def test_schema_2_measurement_fields_are_renamed_on_load() -> None:
    """A schema-2 file's ``latency_*`` fields load as ``scale_*`` (values kept, the
    wire's field numbers unchanged); a file setting both names is refused by name."""
    p = Policy(mode=Mode.TAILWISE, regime=RegimeParams(
        scale_quantile=0.8, scale_window=64, scale_update_every=4))
    data, msg = schema2(p)
    assert "latency_window" in data["regime"]  # type: ignore[operator]
    assert Policy.from_dict(data) == p
    assert codec.policy_from_proto(msg) == p
    # renamed, not renumbered: the bytes an older sender writes decode into them
    fields = pb.RegimeParams.DESCRIPTOR.fields_by_name
    assert [(fields[n].number, fields[n].type) for n in RENAMED_REGIME_FIELDS.values()] == [
        (1, fields["aging_factor"].type), (2, fields["prefix_rekey_k"].type),
        (3, fields["prefix_rekey_k"].type)]  # double, uint32, uint32 as in schema 2
    data["regime"]["scale_window"] = 32  # type: ignore[index]
    with pytest.raises(PolicyError, match=r"^regime\.latency_window: is scale_window"):
        Policy.from_dict(data)


@pytest.mark.parametrize("version", [None, 1, 2])
def test_a_schema_3_name_in_an_older_document_is_refused(version: int | None) -> None:
    """A hand-written section with a ``scale_*`` name was written for schema 3; read as
    schema 1 or 2 (no ``schema_version`` means 1) it would silently get the legacy rules
    (here: the old demotion key and ``T`` with the re-queue waits). Refused by name."""
    data: dict[str, object] = {"mode": "tailwise", "regime": {"scale_window": 64,
                                                              "tail_protect_factor": 0.5}}
    if version is not None:
        data["schema_version"] = version
    said = "has no schema_version" if version is None else f"says schema_version {version}"
    with pytest.raises(PolicyError, match=rf"^regime\.scale_window: is a schema-3 name, but "
                                          rf"the document {said}.*\"schema_version\": 3"):
        Policy.from_dict(data)
    data["schema_version"] = 3
    got = Policy.from_dict(data).regime
    assert got.scale_window == 64 and got.demote_as_arrival == RegimeParams().demote_as_arrival


@pytest.mark.parametrize("on", [True, False])
def test_the_service_scale_leaves_out_the_waits_after_preemptions(on: bool) -> None:
    """Each request: first token at 0 s, preempted at 4 s, re-admitted at 24 s, finished at
    30 s. Its service is 10 s; the 20 s it waited again is queueing the policy caused
    (``scale_excludes_requeue``), which would otherwise raise ``T`` and the envelope
    with it. A preemption before the first token is TTFT, never in ``T`` either way."""
    sched = tailwise(scale_excludes_requeue=on)
    for i in range(32):
        r = ReqInfo(f"r{i}", 0.0, 100, num_output_tokens=100, first_token_time=0.0)
        sched.on_admit(r, 0.0)
        sched.on_preempt(r, 4.0)
        sched.on_admit(r, 24.0)
        sched.on_finish(r, 30.0)
    assert sched.service_scale == pytest.approx(10.0 if on else 30.0)
    assert not sched._requeue  # nothing kept for the finished
    # a victim aborted while it waits leaves nothing behind either
    r = ReqInfo("gone", 0.0, 100, num_output_tokens=5, first_token_time=0.0)
    sched.on_admit(r, 0.0)
    sched.on_preempt(r, 1.0)
    sched.requeue(r, 1.0)
    assert sched.remove(r)
    assert not sched._requeue


def test_the_new_fields_travel_and_an_older_sender_gets_the_defaults() -> None:
    p = Policy(mode=Mode.TAILWISE, regime=RegimeParams(
        residual_victims=False, demote_preempted=False, tail_protect=False,
        tail_protect_factor=2.5, demote_as_arrival=False, demote_delay_factor=3.0,
        scale_excludes_requeue=False))
    msg = codec.policy_to_proto(p)
    assert codec.policy_from_proto(msg) == p
    for name in NEW_FIELDS:
        msg.regime.ClearField(name)
    assert codec.policy_from_proto(msg).regime == RegimeParams()


def test_a_policy_swap_keeps_the_measured_residual_curve() -> None:
    old = tailwise()
    finish_history(old, HEAVY)
    new = tailwise(tail_protect_factor=1.0)
    new.carry_over(old)
    assert new.life.ready and new.life.residual(1_000) == old.life.residual(1_000)


def test_only_a_preemption_demotes_a_request_put_back_unadmitted_keeps_its_clock() -> None:
    """vLLM puts back requests it popped but skipped (``prepend_requests``) with
    ``requeue`` and no ``on_preempt``: their aging clock must not restart."""
    sched = tailwise()
    finish_history(sched, HEAVY, service_s=10.0)
    old, _ = running(now=100.0)
    sched.on_preempt(old, 100.0)
    sched.requeue(old, 100.0)
    assert sched.wait_origin(old) == 100.0
    assert sched.pop(150.0) is old  # popped, then skipped by the engine
    sched.requeue(old, 150.0)
    assert sched.wait_origin(old) == 100.0
    sched.pop(151.0)
    sched.on_admit(old, 151.0)
    assert sched.wait_origin(old) == old.arrival_time


def test_a_policy_swap_keeps_a_demoted_request_behind_the_arrivals_it_made_room_for() -> None:
    old = tailwise()
    finish_history(old, HEAVY, service_s=10.0)
    victim, _ = running(now=100.0)
    old.on_preempt(victim, 100.0)
    old.requeue(victim, 100.0)
    for keep in (True, False):
        new = tailwise(demote_preempted=keep)
        new.carry_over(old)
        new.requeue(victim, 100.5)  # the engine hands the waiting request over
        fresh = ReqInfo("fresh", 101.0, 500)
        new.add(fresh, 101.0)
        assert new.peek(101.5) is (fresh if keep else victim)


def test_a_swap_keeps_what_was_measured_and_recomputes_the_envelope_with_new_parameters(
) -> None:
    old = tailwise()
    finish_history(old, HEAVY, service_s=10.0)
    for t in range(10):  # admissions: FCFS's drain rate and its reference D
        r = ReqInfo(f"a{t}", float(t), 1_000)
        old.add(r, float(t))
        old.pop(float(t))
        old.on_admit(r, float(t))
    new = tailwise(aging_factor=4.0)
    new.carry_over(old)
    assert new.service_scale == old.service_scale == pytest.approx(10.0)
    assert new.fcfs_drain_s() == old.fcfs_drain_s()
    assert new._drain_ref == old._drain_ref
    assert new.life.residual(1_000) == old.life.residual(1_000)
    # the envelope follows the new version's parameters (E = 4·T = 40 s; the old one's
    # 2·T = 20 s is below the 30 s floor), not the old value
    assert old.envelope_s() <= 30.0
    assert new.envelope_s() == pytest.approx(40.0)


def test_the_envelope_report_counts_a_victims_wait_from_its_preemption() -> None:
    """What the adapter's gauges read: E, the oldest wait as the envelope counts it, T,
    D₇₅ (not measured here) and the demoted victims waiting."""
    sched = tailwise()
    env0 = sched.envelope(0.0)
    assert env0 is not None and env0.oldest_wait_s is None and env0.service_scale_s is None
    assert env0.bound_s == Policy().safety.aging_s  # before T is measured
    finish_history(sched, HEAVY, service_s=10.0)
    old, _ = running(now=100.0)
    sched.on_preempt(old, 100.0)
    old.num_computed_tokens = 0
    sched.requeue(old, 100.0)
    sched.add(ReqInfo("fresh", 95.0, 500), 95.0)  # arrived before the preemption
    env = sched.envelope(104.0)
    assert env is not None
    assert (env.bound_s, env.service_scale_s, env.drain_s) == (sched.envelope_s(), 10.0, None)
    assert env.oldest_wait_s == pytest.approx(9.0)  # the arrival at 95 s, not the victim
    assert env.demoted_waiting == 1
    fresh = sched.pop(104.0)
    assert fresh.request_id == "fresh"
    sched.on_admit(fresh, 104.0)
    env = sched.envelope(104.0)
    assert env is not None and env.oldest_wait_s == pytest.approx(4.0)  # since 100 s
    sched.on_admit(sched.pop(104.0), 104.0)
    env = sched.envelope(104.0)
    assert env is not None and (env.oldest_wait_s, env.demoted_waiting) == (None, 0)


def test_queues_without_an_envelope_report_none() -> None:
    for mode in (Mode.FCFS, Mode.KAIROS, Mode.EWSJF):
        assert build_scheduler(Policy(mode=mode)).envelope(0.0) is None


def test_a_boost_policy_reports_its_fixed_aging_bound() -> None:
    sched = build_scheduler(Policy(mode=Mode.BOOST))
    sched.add(ReqInfo("a", 10.0, 100), 10.0)
    env = sched.envelope(25.0)
    assert env is not None
    assert (env.bound_s, env.oldest_wait_s) == (Policy().safety.aging_s, 15.0)
    assert (env.service_scale_s, env.drain_s, env.demoted_waiting) == (None, None, 0)


def test_an_aborted_victim_the_engine_held_elsewhere_is_not_counted_nor_kept() -> None:
    """vLLM can pop a victim and hold it outside the policy's queue (KV loading); if it
    is aborted there, remove() still forgets it and the report never counts it."""
    sched = tailwise()
    finish_history(sched, HEAVY, service_s=10.0)
    old, _ = running(now=100.0)
    sched.on_preempt(old, 100.0)
    sched.requeue(old, 100.0)
    env = sched.envelope(100.0)
    assert env is not None and env.demoted_waiting == 1
    assert sched.pop(100.0) is old  # the engine takes it and holds it elsewhere
    env = sched.envelope(100.0)
    assert env is not None and env.demoted_waiting == 0  # not waiting here
    assert sched.remove(old) is False  # aborted there: not live, still forgotten
    assert not sched.is_demoted(old)

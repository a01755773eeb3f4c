"""Hand-computed examples and properties of the scheduling algorithms."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tailwise.scorer.boost import BoostPolicy, boost
from tailwise.scorer.ewsjf import EwsjfPolicy, queue_factor, score
from tailwise.scorer.kairos import KairosPolicy
from tailwise.scorer.policy import BoostParams, Mode, Policy, QueueSpec, SafetyParams, SloClass, SloParams
from tailwise.scorer.preemption import memguard_level
from tailwise.scorer.registry import POLICY_NAMES, build_scheduler, make_named
from tailwise.scorer.request import ReqInfo
from tailwise.scorer.step_time import StepTimeModel
from tailwise.scorer.tailwise import TailwisePolicy

# prefill 1 ms + 0.1 ms/token; decode 2 ms + 0.5 ms/request — easy to do by hand
TOY = StepTimeModel(name="toy", prefill_fixed_ms=1.0, prefill_per_token_ms=0.1,
                    prefill_quad_ms=0.0, decode_fixed_ms=2.0, decode_per_req_ms=0.5,
                    decode_per_ctx_ms=0.0)


def req(rid: str, arrival: float = 0.0, prompt: int = 100, **kw: object) -> ReqInfo:
    return ReqInfo(rid, arrival, prompt, **kw)  # type: ignore[arg-type]


# -- γ-boost ------------------------------------------------------------------------------
def test_boost_values_by_hand() -> None:
    # b_γ(w) = (1/γ)·ln(1/(1 − e^{−γw}))
    assert boost(1.0, 1.0, 100) == pytest.approx(math.log(1 / (1 - math.exp(-1))))
    assert boost(2.0, 0.5, 100) == pytest.approx(2 * math.log(1 / (1 - math.exp(-1))))
    assert boost(0.01, 0.1, 100) == pytest.approx(10 * math.log(1 / (1 - math.exp(-0.001))))
    assert boost(0.0, 0.1, 30.0) == 30.0  # b(0) = ∞, clipped by the safety envelope
    assert boost(1e-9, 0.1, 30.0) == 30.0
    assert boost(1e6, 0.1, 30.0) == 0.0


def test_memguard_levels_by_hand() -> None:
    assert [memguard_level(w, 0.05, 2.0) for w in (0, 0.049, 0.05, 0.1, 0.19, 0.2, 0.4)] == \
        [0, 0, 1, 2, 2, 3, 4]


@given(w1=st.floats(0, 10), w2=st.floats(0, 10), gamma=st.floats(0.01, 10))
def test_shorter_attained_work_ranks_first_under_equal_wait(w1: float, w2: float,
                                                           gamma: float) -> None:
    p = Policy(mode=Mode.BOOST, boost=BoostParams(gamma=gamma, memguard_theta_s=1e-6,
                                                  memguard_ratio=1.0001))
    pol = BoostPolicy(p)
    cd = p.step_time.decode_token_s
    a = req("a", prompt=1, num_output_tokens=round(w1 / cd))
    b = req("b", prompt=1, num_output_tokens=round(w2 / cd))
    if pol.effective_work(a) < pol.effective_work(b):
        assert pol.priority_key(a) <= pol.priority_key(b)


def test_memguard_priority_changes_only_at_thresholds() -> None:
    p = Policy(mode=Mode.BOOST, boost=BoostParams(memguard_theta_s=0.05, memguard_ratio=2.0))
    pol = BoostPolicy(p)
    cd = p.step_time.decode_token_s
    keys = [pol.priority_key(req("a", prompt=1, num_output_tokens=n)) for n in range(0, 2000)]
    changes = sum(1 for x, y in itertools.pairwise(keys) if x != y)
    assert changes <= math.ceil(math.log2(2000 * cd / 0.05)) + 2


def test_restored_request_is_protected_until_its_next_threshold() -> None:
    p = Policy(mode=Mode.BOOST)
    pol = BoostPolicy(p)
    r = req("r", prompt=10, num_output_tokens=400, num_preemptions=1)
    pol.on_admit(r, 0.0)
    assert pol.protected(r)
    r.num_output_tokens *= 3  # crosses the next MemGuard threshold (ratio 2)
    assert not pol.protected(r)


# -- victims ------------------------------------------------------------------------------
@given(st.lists(st.tuples(st.floats(0, 100), st.integers(1, 4000), st.integers(0, 3000),
                          st.integers(0, 2000), st.booleans()), min_size=1, max_size=30),
       st.one_of(st.just(0.0), st.floats(0.001, 1000.0)))
def test_victim_order_never_ranks_a_lower_priority_request_above_a_higher(
        rows: list[tuple[float, int, int, int, bool]], band: float) -> None:
    p = Policy(mode=Mode.TAILWISE)
    p = dataclasses.replace(p, preemption=dataclasses.replace(p.preemption, priority_band_s=band))
    pol = TailwisePolicy(p)
    running = []
    for i, (arr, prompt, out, cached, restored) in enumerate(rows):
        r = req(str(i), arr, prompt, num_output_tokens=out, num_computed_tokens=prompt + out,
                cached_tokens=min(cached, prompt), num_preemptions=int(restored))
        if restored:
            pol.on_admit(r, 0.0)
        running.append(r)
    order = pol.order_running(running, 0.0)
    assert sorted(map(id, order)) == sorted(map(id, running))

    def rank(r: ReqInfo) -> tuple[bool, float]:
        k = pol.priority_key(r)
        return (not pol.protected(r), math.floor(k / band) if band > 0 else k)

    # the engine evicts from the tail: everything after position i ranks no higher
    for i in range(len(order) - 1):
        assert rank(order[i]) <= rank(order[i + 1])


def test_cache_aware_victim_is_the_cheapest_to_readmit() -> None:
    pol = TailwisePolicy(Policy(mode=Mode.TAILWISE))
    a = req("a", 0.0, 2000, num_output_tokens=10, num_computed_tokens=2009)
    b = req("b", 0.5, 2000, num_output_tokens=10, num_computed_tokens=2009, cached_tokens=1900)
    c = req("c", 1.0, 300, num_output_tokens=10, num_computed_tokens=309)
    order = pol.order_running([a, b, c], 2.0)
    assert order[-1] is b  # 109 uncached tokens to recompute: cheapest
    assert order[0] is a


# -- EWSJF --------------------------------------------------------------------------------
def test_ewsjf_score_by_hand() -> None:
    # qf=1.2, weights (1, 2, 0.5), waited 3 s, prefill 0.5 s → cs=6, backlog 4
    assert score(1.2, 1.0, 2.0, 0.5, 3.0, 0.5, 4) == pytest.approx(1.2 * (1 + 12 + 0.5 * math.log(5)))


@given(st.floats(0, 10), st.floats(0, 10), st.floats(0.01, 10), st.floats(0, 1e5),
       st.floats(0, 1e5), st.floats(1, 1e4))
def test_queue_factor_monotonicity(d1: float, d2: float, dmax: float, l1: float, l2: float,
                                   ref: float) -> None:
    dmax = max(dmax, d1, d2)
    if d1 <= d2:  # denser ranks higher (same length)
        assert queue_factor(d1, dmax, l1, ref) <= queue_factor(d2, dmax, l1, ref)
    if l1 <= l2:  # shorter ranks higher (same density)
        assert queue_factor(d1, dmax, l1, ref) >= queue_factor(d1, dmax, l2, ref)


def test_ewsjf_serves_the_best_queue_head() -> None:
    queues = (QueueSpec(0, 500, 200, 0.002), QueueSpec(500, 10000, 4000, 0.0001))
    p = Policy(mode=Mode.EWSJF, queues=queues, step_time=TOY)
    pol = EwsjfPolicy(p)
    long_old = req("L", 0.0, 5000)
    short_new = req("S", 1.0, 100)
    pol.add(long_old, 0.0)
    pol.add(short_new, 1.0)
    # at t=2: long waited 2 s over 501 ms prefill; short waited 1 s over 11 ms → short wins
    assert pol.peek(2.0) is short_new
    ref = (200 + 4000) / 2
    qf_short = queue_factor(0.002, 0.002, 200, ref)
    qf_long = queue_factor(0.0001, 0.002, 4000, ref)
    phi_s = score(qf_short, 1, 1, 0.5, 1.0, 0.011, 1)
    phi_l = score(qf_long, 1, 1, 0.5, 2.0, 0.501, 1)
    assert phi_s > phi_l
    assert pol.pop(2.0) is short_new and pol.pop(2.0) is long_old and len(pol) == 0


# -- Kairos -------------------------------------------------------------------------------
def test_kairos_urgency_by_hand_and_demotion() -> None:
    slo = SloParams(ttft_s=10.0, classes=(SloClass("interactive", 1.0, 0.05),), window=8)
    pol = KairosPolicy(Policy(mode=Mode.KAIROS, slo=slo, step_time=TOY))
    a = req("a", 0.0, 1000)                            # default class, SLO 10 s
    b = req("b", 0.5, 100, slo_class="interactive")    # SLO 1 s
    pol.add(a, 0.0)
    pol.add(b, 0.5)
    # at t=0.6 FCFS prediction: a finishes at prefill(1000)=101 ms, b at prefill(1100)=111 ms
    # u_a = ((10 − 0.6 − 0.101)/10)/1000 = 9.299e-4; u_b = ((1 − 0.1 − 0.111)/1)/100 = 7.89e-3
    assert pol.urgency(a, 0.6, 0.101) == pytest.approx(9.299e-4)
    assert pol.urgency(b, 0.1, 0.111) == pytest.approx(7.89e-3)
    assert pol.peek(0.6) is a  # lowest u first
    # at t=1.45 b can no longer make its 1 s TTFT: it is demoted, a is still served first
    assert pol.peek(1.45) is a
    pol.pop(1.45)
    assert pol.peek(1.45) is b  # demoted, not dropped


def test_kairos_decode_cap_by_hand() -> None:
    slo = SloParams(tpot_s=0.01, decode_cap=True)
    pol = KairosPolicy(Policy(mode=Mode.KAIROS, slo=slo, step_time=TOY))
    now = 10.0
    running = []
    for i in range(6):  # decoders with 1 output token, first token at t=9.99
        r = req(str(i), 0.0, 10, num_output_tokens=1, num_computed_tokens=10,
                first_token_time=9.99 + 0.001 * i)
        running.append(r)
    # slack_i = 0.01·2 − (10 − t_first) − step(1) = 0.02 − (0.01 − 0.001 i) − 0.0025
    slacks = [pol.decode_slack(r, now) for r in running]
    assert slacks[0] == pytest.approx(0.0075)
    # step(B) = 2 + 0.5B ms ≤ 7.5 ms  ⇒  B ≤ 11 → all 6 fit: no cap
    assert pol.decode_cap(running, now) is None
    tight = dataclasses.replace(slo, tpot_s=0.0075)
    pol2 = KairosPolicy(Policy(mode=Mode.KAIROS, slo=tight, step_time=TOY))
    # slack_0 = 0.015 − 0.01 − 0.0025 = 0.0025 → step(B) ≤ 2.5 ms ⇒ B = 1
    assert pol2.decode_cap(running, now) == 1


def test_kairos_window_bounds_the_work_and_counts_overflow() -> None:
    pol = KairosPolicy(Policy(mode=Mode.KAIROS, slo=SloParams(window=4), step_time=TOY))
    for i in range(10):
        pol.add(req(str(i), float(i), 100), float(i))
    pol.peek(10.0)
    assert pol.counters["window_overflow"] == 1


# -- tailwise ------------------------------------------------------------------------------
def test_tailwise_slo_urgency_is_edf_on_ttft_deadlines() -> None:
    slo = SloParams(urgency=True, classes=(SloClass("interactive", 1.0, 0.05),
                                           SloClass("batch", 60.0, 0.5)))
    p = Policy(mode=Mode.TAILWISE, slo=slo, safety=SafetyParams(max_boost_s=0.0, aging_s=600))
    pol = TailwisePolicy(p)
    batch = req("b", 0.0, 100, slo_class="batch")
    inter = req("i", 30.0, 100, slo_class="interactive")
    pol.add(batch, 30.0)
    pol.add(inter, 30.0)
    assert pol.peek(30.0) is inter  # deadline 31 s beats 60 s


def test_tailwise_late_demotion_puts_hopeless_requests_behind_on_time_ones() -> None:
    """EDF under overload serves the deadline already missed; with ``demote_late`` a
    request whose TTFT target is out of reach (waited > target − own prefill) goes behind
    every request that can still meet its own, keeps its order among the late, and the
    waiting envelope still serves it once it has waited ``aging_s``."""
    slo = SloParams(urgency=True, classes=(SloClass("interactive", 1.0, 0.05),))

    def make(demote: bool) -> TailwisePolicy:
        s = dataclasses.replace(slo, demote_late=demote)
        return TailwisePolicy(Policy(mode=Mode.TAILWISE, slo=s, step_time=TOY,
                                     safety=SafetyParams(max_boost_s=0.0, aging_s=20.0)))

    for demote in (False, True):
        pol = make(demote)
        late1 = req("l1", 0.0, 100, slo_class="interactive")
        late2 = req("l2", 0.1, 100, slo_class="interactive")
        fresh = req("f", 1.5, 100, slo_class="interactive")
        for r in (late1, late2, fresh):
            pol.add(r, r.arrival_time)
        order = [pol.pop(2.0).request_id for _ in range(3)]
        # deadlines 1.0, 1.1, 2.5: at t = 2 the first two are missed
        assert order == (["f", "l1", "l2"] if demote else ["l1", "l2", "f"])
        assert pol.counters["late_demotions"] == (2 if demote else 0)
    pol = make(True)
    late = req("l", 0.0, 100, slo_class="interactive")
    pol.add(late, 0.0)
    assert pol.peek(5.0) is late  # nothing on time: the late one is served
    for i in range(30):
        t = 5.0 + i
        pol.add(req(f"n{i}", t, 100, slo_class="interactive"), t)
        assert (pol.peek(t) is late) == (t >= 20.0)  # the envelope: once it waited 20 s


def _late_policy() -> TailwisePolicy:
    slo = SloParams(urgency=True, demote_late=True,
                    classes=(SloClass("interactive", 1.0, 0.05),))
    return TailwisePolicy(Policy(mode=Mode.TAILWISE, slo=slo, step_time=TOY,
                                 safety=SafetyParams(max_boost_s=0.0, aging_s=20.0)))


def test_late_demotion_survives_skips() -> None:
    """A request an engine pops and puts back unadmitted (vLLM's skipped requests) stays
    demoted, is counted once, and its check is not scheduled again (bounded heap)."""
    pol = _late_policy()
    late = req("l", 0.0, 100, slo_class="interactive")
    fresh = req("f", 1.5, 100, slo_class="interactive")
    pol.add(late, 0.0)
    pol.add(fresh, 1.5)
    assert pol.peek(1.2) is fresh  # l's deadline (1.0) passed: demoted
    for t in (1.2, 1.3, 1.4):  # each round both are popped and put back unadmitted
        skipped = pol.pop(t)
        pol.requeue(skipped, t)
        other = pol.pop(t)
        pol.requeue(other, t)
        assert pol.peek(t) is fresh  # the late one put back is still behind
    assert pol.counters["late_demotions"] == 1 and len(pol._slack_heap) <= 2


def test_late_demotion_checks_a_requeued_request_at_its_new_instant() -> None:
    """Re-queued with a shorter prefill (a prefix hit), a request is checked at its new,
    later instant, not at the one of its earlier wait."""
    pol = _late_policy()
    a = req("a", 0.0, 5000, slo_class="interactive")  # prefill 0.5 s: late after 0.5 s
    pol.add(a, 0.0)
    assert pol.pop(0.1) is a
    pol.on_admit(a, 0.1)
    a.cached_tokens = 4900  # preempted before its first token; now 100 uncached tokens
    pol.on_preempt(a, 0.2)
    pol.requeue(a, 0.2)
    b = req("b", 0.3, 100, slo_class="interactive")
    pol.add(b, 0.3)
    assert pol.peek(0.6) is a and pol.counters["late_demotions"] == 0  # can make 1.0 s


def test_aging_guard_serves_the_overdue_oldest_first() -> None:
    # γ=0.1: the 8000-token prompt's boost is ≈39.5 s, a 10-token prompt's is capped at 50 s
    p = Policy(mode=Mode.TAILWISE, safety=SafetyParams(max_boost_s=50.0, aging_s=60.0))
    pol = TailwisePolicy(p)
    old_long = req("old", 0.0, 8000)
    pol.add(old_long, 0.0)
    for i in range(5):
        pol.add(req(f"s{i}", 1.0 + i, 10), 1.0 + i)
    assert pol.peek(5.0) is not old_long  # short ones overtake while within the envelope
    assert pol.peek(59.9) is not old_long
    assert pol.peek(60.0) is old_long     # waited aging_s: served next
    pol.pop(60.0)
    assert pol.counters["aging_promotions"] == 1


def test_every_named_policy_builds() -> None:
    for name in POLICY_NAMES:
        assert make_named(name).name in (name, "fcfs") or name == "fcfs"
    for mode in Mode:
        build_scheduler(Policy(mode=mode))


@given(st.lists(st.tuples(st.floats(0, 100), st.integers(1, 4000), st.integers(0, 3000),
                          st.integers(0, 2000), st.integers(0, 3000), st.booleans()),
                min_size=1, max_size=40),
       st.sampled_from([0.0, 2.0, 600.0]), st.booleans(), st.booleans(), st.booleans())
def test_fast_ranking_equals_the_reference_ranking(
        rows: list[tuple[float, int, int, int, int, bool]], band: float, swap: bool,
        urgency: bool, cache_aware: bool) -> None:
    from tailwise.scorer.policy import PreemptMode
    from tailwise.scorer.preemption import rank_running

    p = Policy(mode=Mode.TAILWISE)
    p = dataclasses.replace(
        p, preemption=dataclasses.replace(p.preemption, priority_band_s=band,
                                          mode=PreemptMode.SWAP if swap else PreemptMode.RECOMPUTE,
                                          cache_aware=cache_aware),
        slo=dataclasses.replace(p.slo, urgency=urgency))
    pol = TailwisePolicy(p)
    running = []
    for i, (arr, prompt, out, cached, done, restored) in enumerate(rows):
        r = req(str(i), arr, prompt, num_output_tokens=out, num_computed_tokens=prompt + out,
                cached_tokens=min(cached, prompt), prefill_tokens_done=done,
                num_preemptions=int(restored), slo_class="interactive" if i % 2 else "")
        r.last_admit_time = float(i % 7)
        if restored:
            pol.on_admit(r, 0.0)
        running.append(r)
    reference = rank_running(running, pol.priority_key, pol.victim_cost, pol.protected, band)
    assert [r.request_id for r in pol.order_running(running, 0.0)] == \
        [r.request_id for r in reference]


@given(st.floats(0, 1e4), st.floats(1e-4, 10), st.floats(1.01, 10))
def test_bisect_level_equals_memguard_level(w: float, theta: float, ratio: float) -> None:
    p = Policy(mode=Mode.BOOST, boost=BoostParams(memguard_theta_s=theta, memguard_ratio=ratio))
    pol = BoostPolicy(p)
    r = req("a", prompt=1, prefill_tokens_done=0, num_output_tokens=0)
    r.prefill_tokens_done = 0
    # drive attained work to w through decode tokens, then compare both level functions
    r.num_output_tokens = int(w / pol.cd)
    assert pol.level(r) == memguard_level(r.attained_s(pol.cp, pol.cd), theta, ratio)

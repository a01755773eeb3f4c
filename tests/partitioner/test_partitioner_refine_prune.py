"""Refine-and-Prune: hand-worked splits and merges, refresh triggers, reservoir bounds."""

from __future__ import annotations

import dataclasses
import doctest
import math
from typing import Any

import pytest

import tailwise.partitioner.drift
import tailwise.partitioner.interface
import tailwise.partitioner.refine_prune
from tailwise.partitioner import BUBBLE, Partitioner, RefinePrune
from tailwise.partitioner.refine_prune import Span, prune_score, prune_spans
from tailwise.scorer.policy import EwsjfParams, LinearWeight, Policy, PolicyError

P = EwsjfParams(refresh_requests=1_000, refresh_s=600.0, reservoir_size=64)


def bounds(rp: RefinePrune) -> list[tuple[float, float]]:
    return [(q.lo, q.hi) for q in rp.partition()]


def seeded(params: EwsjfParams, queues: list[tuple[float, float]], values: list[float]) -> RefinePrune:
    """A partitioner whose current partition is ``queues`` and reservoir ``values``."""
    state: dict[str, Any] = RefinePrune(params).to_state()
    state["queues"] = [{"lo": lo, "hi": hi, "mean_len": lo, "density": 0.0} for lo, hi in queues]
    state["reservoir"] = values
    return RefinePrune.from_state(state)


@pytest.mark.parametrize("module", [tailwise.partitioner.interface, tailwise.partitioner.refine_prune,
                                    tailwise.partitioner.drift])
def test_doctests(module: Any) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0


def test_is_a_partitioner_and_starts_empty() -> None:
    rp = RefinePrune(P)
    assert isinstance(rp, Partitioner)
    assert rp.partition() == ()
    assert rp.refresh(0.0, force=True) is False  # no data: still empty
    assert rp.partition() == ()


# -- refine ---------------------------------------------------------------------------------
def test_bootstrap_splits_three_tight_modes_exactly() -> None:
    """One group, 3 distinct values: the centres are the values; split at every gap."""
    rp = RefinePrune(P)
    for x in [100] * 10 + [1000] * 6 + [10_000] * 4:
        rp.learn_one(x)
    assert rp.refresh(0.0, force=True) is True
    assert bounds(rp) == [(100, 101), (1000, 1001), (10_000, 10_001)]
    assert [q.mean_len for q in rp.partition()] == [100, 1000, 10_000]
    assert [q.density for q in rp.partition()] == pytest.approx([0.5, 0.3, 0.2])
    # each group now has one distinct value: nothing to split, so nothing changes
    assert rp.refresh(1.0, force=True) is False
    assert bounds(rp) == [(100, 101), (1000, 1001), (10_000, 10_001)]


def test_bootstrap_bimodal_puts_the_cut_between_the_modes() -> None:
    rp = RefinePrune(P)
    for x in list(range(100, 120)) * 2 + list(range(5000, 5020)):
        rp.learn_one(x)
    rp.refresh(0.0, force=True)
    spans = bounds(rp)
    # k-means (k=3) splits one mode in two; whatever it does, no queue straddles the modes
    assert all(hi <= 120 or lo >= 5000 for lo, hi in spans)
    assert spans[0][0] == 100 and spans[-1] == (5000, 5020)


# Two queues A = {10, 20, 40} and B = {1000, 1100, 8000}: <= 3 distinct values each, so
# the centres are exactly log1p of the values and the pooled mean gap is computable by hand.
A, B = [10.0, 20.0, 40.0], [1000.0, 1100.0, 8000.0]


def hand_gaps() -> list[float]:
    """Adjacent centre gaps in log1p space: two in A, two in B."""
    u = [math.log1p(x) for x in A + B]
    return [u[1] - u[0], u[2] - u[1], u[4] - u[3], u[5] - u[4]]


def test_hand_computed_gaps() -> None:
    gaps = hand_gaps()
    assert gaps == pytest.approx([0.646627, 0.669050, 0.095219, 1.983348], abs=1e-6)
    mean_gap = sum(gaps) / 4  # pooled over both queues
    assert mean_gap == pytest.approx(0.848561, abs=1e-6)
    assert 1.5 * mean_gap < gaps[3]
    assert gaps[0] < 0.775 * mean_gap < gaps[1]
    assert gaps[2] < 0.7 * mean_gap < gaps[0]
    assert 3.0 * mean_gap > max(gaps)


@pytest.mark.parametrize(
    ("alpha", "expected"),
    [
        # threshold 1.273: only B's 1100 -> 8000 gap (1.983) splits
        (1.5, [(10, 41), (1000, 1101), (8000, 8001)]),
        # threshold 0.658: 20 -> 40 (0.669) splits, 10 -> 20 (0.647) does not
        (0.775, [(10, 21), (40, 41), (1000, 1101), (8000, 8001)]),
        # threshold 0.594: every gap but 1000 -> 1100 (0.095)
        (0.7, [(10, 11), (20, 21), (40, 41), (1000, 1101), (8000, 8001)]),
        # threshold 2.55: nothing splits; intervals shrink to their members
        (3.0, [(10, 41), (1000, 8001)]),
    ],
)
def test_refine_splits_where_gap_exceeds_alpha_times_pooled_mean_gap(
    alpha: float, expected: list[tuple[float, float]]
) -> None:
    rp = seeded(dataclasses.replace(P, alpha=alpha), [(0, 50), (900, 9000)], A + B)
    rp.refresh(0.0, force=True)
    assert bounds(rp) == expected


def test_gap_values_join_the_nearest_queue_and_empty_queues_vanish() -> None:
    # 60 is nearer [10, 41) than [1000, 8001) (cut at 520.5); 700 is nearer the upper queue;
    # [20000, 30000) has no members left and disappears
    rp = seeded(
        dataclasses.replace(P, alpha=100.0),
        [(10, 41), (1000, 8001), (20_000, 30_000)],
        [10, 20, 40, 60, 700, 1000, 1100, 8000],
    )
    rp.refresh(0.0, force=True)
    assert bounds(rp) == [(10, 61), (700, 8001)]


def test_fractional_values_get_disjoint_intervals() -> None:
    rp = RefinePrune(P)
    for x in (1.25, 1.5, 1.75):
        rp.learn_one(x)
    rp.refresh(0.0, force=True)
    assert bounds(rp) == [(1.25, 1.5), (1.5, 1.75), (1.75, 2.75)]
    assert [rp.predict_one(x) for x in (1.25, 1.5, 1.75)] == [0, 1, 2]


# -- prune ----------------------------------------------------------------------------------
# ρ: A 0.04, B 0.04, C 0.001, D 0.0001 (share per token)
SA, SB = Span(0, 10, 0.4, 5), Span(10, 20, 0.4, 15)
SC, SD = Span(100, 200, 0.1, 150), Span(1000, 2000, 0.1, 1500)


def test_prune_scores_by_hand() -> None:
    assert prune_score(SA, SB) == pytest.approx(0.08 / 11)
    assert prune_score(SB, SC) == pytest.approx(0.041 / 136)
    assert prune_score(SC, SD) == pytest.approx(0.0011 / 1351)


def test_prune_merges_the_lowest_scoring_pair_first() -> None:
    three = prune_spans([SA, SB, SC, SD], max_queues=3)
    # C+D: [100, 2000), share 0.2, mean 825, ρ = 0.2 / 1900
    assert three == [SA, SB, Span(100, 2000, pytest.approx(0.2), pytest.approx(825.0))]
    two = prune_spans([SA, SB, SC, SD], max_queues=2)
    # next: B + CD scores (0.04 + 1.05e-4) / 811 = 4.9e-5 < A + B's 7.3e-3
    assert [(s.lo, s.hi) for s in two] == [(0, 10), (10, 2000)]
    assert two[1].share == pytest.approx(0.6)
    assert two[1].mean == pytest.approx((0.4 * 15 + 0.1 * 150 + 0.1 * 1500) / 0.6)
    assert prune_spans([SA, SB, SC, SD], max_queues=4) == [SA, SB, SC, SD]


def test_prune_end_to_end_respects_max_queues() -> None:
    # alpha 0.7 refines A+B into 5 queues (see above); max_queues=4 merges the pair with the
    # smallest score: [1000, 1101) + [8000, 8001), (ρ 0.0033 + 0.1667) / 6951 = 2.4e-5
    params = dataclasses.replace(P, alpha=0.7, max_queues=4)
    rp = seeded(params, [(0, 50), (900, 9000)], A + B)
    rp.refresh(0.0, force=True)
    assert bounds(rp) == [(10, 11), (20, 21), (40, 41), (1000, 8001)]
    last = rp.partition()[-1]
    assert last.mean_len == pytest.approx((1000 + 1100 + 8000) / 3)
    assert last.density == pytest.approx(0.5 / 7001)


# -- weights --------------------------------------------------------------------------------
def test_weights_are_linear_in_mean_len_and_follow_update_params() -> None:
    params = dataclasses.replace(
        P, base=LinearWeight(2.0, 0.001), urg=LinearWeight(1.0, -0.01), fair=LinearWeight(0.5)
    )
    rp = RefinePrune(params)
    for x in [100] * 3 + [1000] * 3:
        rp.learn_one(x)
    rp.refresh(0.0, force=True)
    q0, q1 = rp.partition()
    assert (q0.w_base, q0.w_urg, q0.w_fair) == pytest.approx((2.1, 0.0, 0.5))
    assert (q1.w_base, q1.w_urg, q1.w_fair) == pytest.approx((3.0, 0.0, 0.5))  # clamped at 0
    assert rp.update_params(dataclasses.replace(params, urg=LinearWeight(1.0, 0.01))) is True
    assert [q.w_urg for q in rp.partition()] == pytest.approx([2.0, 11.0])
    assert bounds(rp) == [(100, 101), (1000, 1001)]


def test_update_params_prunes_at_once_when_max_queues_shrinks() -> None:
    rp = RefinePrune(P)
    for x in [100] * 5 + [1000] * 3 + [10_000] * 2:
        rp.learn_one(x)
    rp.refresh(0.0, force=True)
    assert len(rp.partition()) == 3
    assert rp.update_params(dataclasses.replace(P, max_queues=2)) is True
    # 1000 + 10000 merge: (0.3 + 0.2) / 9001 < (0.5 + 0.3) / 901
    assert bounds(rp) == [(100, 101), (1000, 10_001)]
    Policy(queues=rp.partition(), ewsjf=rp.params).validate()


def test_bad_params_are_rejected_naming_the_field() -> None:
    with pytest.raises(PolicyError, match=r"^ewsjf\.alpha:"):
        RefinePrune(dataclasses.replace(P, alpha=-1.0))
    with pytest.raises(ValueError, match="seed"):
        RefinePrune(P, seed=-1)


# -- reservoir ------------------------------------------------------------------------------
def test_reservoir_is_a_bounded_window_of_the_most_recent_values() -> None:
    rp = RefinePrune(P)  # reservoir_size 64
    for x in range(10 * 64):
        rp.learn_one(x)
    window = rp.to_state()["reservoir"]
    assert window == [float(x) for x in range(9 * 64, 10 * 64)]
    rp.update_params(dataclasses.replace(P, reservoir_size=16))
    assert rp.to_state()["reservoir"] == [float(x) for x in range(10 * 64 - 16, 10 * 64)]


def test_bad_values_are_skipped_and_counted() -> None:
    rp = RefinePrune(P)
    bad: list[Any] = [math.nan, math.inf, -1.0, 1e13, True, "12", None]
    for x in bad:
        rp.learn_one(x)
    rp.learn_one(5)
    assert rp.skipped == len(bad)
    assert rp.to_state()["reservoir"] == [5.0]
    assert rp.to_state()["since_refresh"] == 1


# -- refresh trigger ------------------------------------------------------------------------
def test_refresh_triggers_on_count() -> None:
    rp = RefinePrune(dataclasses.replace(P, refresh_requests=20, refresh_s=1e9))
    for x in range(19):
        rp.learn_one(100 + x)
    assert not rp.due(0.0)
    assert rp.refresh(0.0) is False and rp.refreshes == 0
    rp.learn_one(5000)
    assert rp.due(0.0)
    assert rp.refresh(0.0) is True and rp.refreshes == 1
    assert rp.partition() != ()
    assert not rp.due(0.0)  # counter restarted


def test_refresh_triggers_on_engine_time() -> None:
    rp = RefinePrune(dataclasses.replace(P, refresh_requests=1_000, refresh_s=10.0))
    assert rp.refresh(100.0) is False  # first call starts the clock
    rp.learn_one(7)
    assert rp.refresh(109.99) is False
    assert rp.refresh(110.0) is True and rp.refreshes == 1
    assert bounds(rp) == [(7, 8)]
    # nothing new learned: no recomputation however long the engine idles
    assert rp.refresh(1e6) is False and rp.refreshes == 1
    rp.learn_one(8)
    assert rp.refresh(110.0 + 9.0) is False  # the clock counts from the last refresh
    assert rp.refresh(120.0) is True and rp.refreshes == 2


def test_clock_going_backwards_restarts_the_timer() -> None:
    rp = RefinePrune(dataclasses.replace(P, refresh_requests=1_000, refresh_s=10.0))
    rp.refresh(5_000.0)
    rp.learn_one(7)
    assert rp.refresh(3.0) is False  # engine restarted: clock now starts at 3
    assert rp.refresh(12.9) is False
    assert rp.refresh(13.0) is True


def test_force_and_bad_now() -> None:
    rp = RefinePrune(P)
    rp.learn_one(7)
    assert rp.refresh(0.0, force=True) is True
    with pytest.raises(ValueError, match="now"):
        rp.refresh(math.nan)


def test_reservoir_values_route_to_queues_after_refresh_and_new_gap_values_to_bubble() -> None:
    rp = RefinePrune(P)
    for x in [100] * 10 + [1000] * 6:
        rp.learn_one(x)
    rp.refresh(0.0, force=True)
    assert rp.predict_one(100) == 0 and rp.predict_one(1000) == 1
    assert rp.predict_one(500) == BUBBLE

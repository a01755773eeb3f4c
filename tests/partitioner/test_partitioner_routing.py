"""Routing is the partitioner's ``predict_one``: bisection against a linear-scan oracle,
bubble semantics, validation, and the same answer as the engine's EWSJF queue."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tailwise.partitioner import BUBBLE, PartitionerStateError, RefinePrune
from tailwise.scorer.ewsjf import EwsjfPolicy
from tailwise.scorer.policy import Mode, Policy, QueueSpec


def q(lo: float, hi: float) -> QueueSpec:
    return QueueSpec(lo=lo, hi=hi, mean_len=(lo + hi) / 2, density=0.001)


def with_queues(queues: tuple[QueueSpec, ...]) -> RefinePrune:
    """A partitioner whose current partition is ``queues`` (through its state codec)."""
    state: dict[str, Any] = RefinePrune().to_state()
    state["queues"] = Policy(queues=queues).to_dict()["queues"]
    return RefinePrune.from_state(state)


def test_hand_example_routes_inside_intervals_and_bubbles_the_rest() -> None:
    r = with_queues((q(0, 100), q(100, 150), q(400, 1000)))
    assert [r.predict_one(x) for x in (0, 50, 99.999)] == [0, 0, 0]
    assert [r.predict_one(x) for x in (100, 149)] == [1, 1]
    assert [r.predict_one(x) for x in (150, 399.5)] == [BUBBLE, BUBBLE]  # the gap
    assert [r.predict_one(x) for x in (400, 999)] == [2, 2]
    assert [r.predict_one(x) for x in (1000, 1e9, -1, math.nan, math.inf)] == [BUBBLE] * 5


def test_empty_partition_routes_everything_to_bubble() -> None:
    r = RefinePrune()
    assert r.predict_one(0) == BUBBLE
    assert r.predict_one(12345) == BUBBLE


@pytest.mark.parametrize(
    ("queues", "field"),
    [
        ((q(0, 10), q(5, 20)), "queues[1].lo"),  # overlap
        ((q(20, 30), q(0, 10)), "queues[1].lo"),  # unsorted
        ((q(0, 10), q(10, 10)), "queues[1].hi"),  # empty interval
        ((q(0, math.nan),), "queues[0].hi"),
        ((q(-math.inf, 3),), "queues[0].lo"),
    ],
)
def test_invalid_partitions_are_rejected_naming_the_index(queues: tuple[QueueSpec, ...], field: str) -> None:
    state: dict[str, Any] = RefinePrune().to_state()
    state["queues"] = [{"lo": s.lo, "hi": s.hi, "mean_len": 1.0, "density": 0.0} for s in queues]
    with pytest.raises(PartitionerStateError) as info:
        RefinePrune.from_state(state)
    assert info.value.field == field
    assert str(info.value).startswith(field + ":")


@st.composite
def partitions(draw: st.DrawFn) -> tuple[QueueSpec, ...]:
    """Sorted, disjoint intervals with random (possibly empty) gaps."""
    cuts = sorted(set(draw(st.lists(st.integers(0, 10_000), min_size=0, max_size=40))))
    keep = draw(st.lists(st.booleans(), min_size=len(cuts), max_size=len(cuts)))
    return tuple(q(float(a), float(b)) for a, b, k in zip(cuts, cuts[1:], keep, strict=False) if k)


@given(partitions(), st.lists(st.floats(-10, 11_000, allow_nan=False), max_size=50))
def test_predict_one_agrees_with_a_linear_scan_and_with_the_engine_queue(
    queues: tuple[QueueSpec, ...], xs: list[float]
) -> None:
    r = with_queues(queues)
    engine = EwsjfPolicy(Policy(mode=Mode.EWSJF, queues=queues))
    for x in xs:
        expected = next((i for i, s in enumerate(queues) if s.lo <= x < s.hi), BUBBLE)
        assert r.predict_one(x) == expected
        assert engine.route(x) == expected  # the engine routes exactly as the learner does
    for i, s in enumerate(queues):  # boundaries: lo is inside, hi is not
        assert r.predict_one(s.lo) == i
        assert r.predict_one(s.hi) != i


@given(st.lists(st.integers(0, 50_000), min_size=1, max_size=200), st.integers(0, 2**16))
def test_routing_is_consistent_across_learning_and_restore(xs: list[int], seed: int) -> None:
    """Between refreshes learning never moves a value to another queue, and a restored
    partitioner routes every value as the original does."""
    rp = RefinePrune(seed=seed)
    for x in xs:
        rp.learn_one(x)
    rp.refresh(0.0, force=True)
    before = [rp.predict_one(x) for x in range(0, 50_001, 97)]
    for x in xs[::-1]:
        rp.learn_one(x)  # learning alone does not change routing
    assert [rp.predict_one(x) for x in range(0, 50_001, 97)] == before
    again = RefinePrune.from_state(rp.to_state())
    assert [again.predict_one(x) for x in range(0, 50_001, 97)] == before
    assert all(rp.predict_one(x) != BUBBLE for x in xs)

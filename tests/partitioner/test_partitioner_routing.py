"""Router: bisection routing against a linear-scan oracle, bubble semantics, validation."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tailwise.partitioner import BUBBLE, Router
from tailwise.scorer.policy import PolicyError, QueueSpec


def q(lo: float, hi: float) -> QueueSpec:
    return QueueSpec(lo=lo, hi=hi, mean_len=(lo + hi) / 2, density=0.0)


def test_hand_example_routes_inside_intervals_and_bubbles_the_rest() -> None:
    r = Router((q(0, 100), q(100, 150), q(400, 1000)))
    assert [r.route(x) for x in (0, 50, 99.999)] == [0, 0, 0]
    assert [r.route(x) for x in (100, 149)] == [1, 1]
    assert [r.route(x) for x in (150, 399.5)] == [BUBBLE, BUBBLE]  # the gap
    assert [r.route(x) for x in (400, 999)] == [2, 2]
    assert [r.route(x) for x in (1000, 1e9, -1, math.nan, math.inf)] == [BUBBLE] * 5
    assert len(r) == 3


def test_empty_partition_routes_everything_to_bubble() -> None:
    r = Router(())
    assert r.route(0) == BUBBLE
    assert r.route(12345) == BUBBLE


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
    with pytest.raises(PolicyError) as info:
        Router(queues)
    assert info.value.field == field
    assert str(info.value).startswith(field + ":")
    assert isinstance(info.value, ValueError)


@st.composite
def partitions(draw: st.DrawFn) -> tuple[QueueSpec, ...]:
    """Sorted, disjoint intervals with random (possibly empty) gaps."""
    cuts = sorted(set(draw(st.lists(st.integers(0, 10_000), min_size=0, max_size=40))))
    keep = draw(st.lists(st.booleans(), min_size=len(cuts), max_size=len(cuts)))
    return tuple(q(float(a), float(b)) for a, b, k in zip(cuts, cuts[1:], keep, strict=False) if k)


@given(partitions(), st.lists(st.floats(-10, 11_000, allow_nan=False), max_size=50))
def test_route_agrees_with_a_linear_scan(queues: tuple[QueueSpec, ...], xs: list[float]) -> None:
    r = Router(queues)
    for x in xs:
        expected = next((i for i, s in enumerate(queues) if s.lo <= x < s.hi), BUBBLE)
        assert r.route(x) == expected
    for i, s in enumerate(queues):  # boundaries: lo is inside, hi is not
        assert r.route(s.lo) == i
        assert r.route(s.hi) != i

"""Routers: each picks what its definition says, checked against direct computations."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tailwise.scorer.hints import ReplicaHints
from tailwise.simulator.routers import (
    KvAware,
    LeastLoaded,
    PrefixAffinity,
    RouteRequest,
    UnknownRouterError,
    make_router,
)


def _h(depth: int = 0, qtok: int = 0, running: int = 0, kv_blocks: int = 0) -> ReplicaHints:
    return ReplicaHints(replica="r", queue_depth=depth, queue_tokens=qtok, queue_s=qtok * 1e-5,
                        running=running, kv_pressure=kv_blocks / 1000, kv_used_blocks=kv_blocks,
                        kv_total_blocks=1000, admission_horizon_s=0.0, policy_version=0,
                        policy_mode="fcfs", at=0.0)


hint_lists = st.lists(st.builds(_h, st.integers(0, 20), st.integers(0, 50_000),
                                st.integers(0, 64), st.integers(0, 1000)),
                      min_size=1, max_size=12)


@given(hint_lists)
def test_least_loaded_picks_a_shortest_queue(hints: list[ReplicaHints]) -> None:
    i = LeastLoaded().pick(RouteRequest(100), hints)
    assert hints[i].queue_depth == min(h.queue_depth for h in hints)


def test_least_loaded_rotates_among_equals() -> None:
    r = LeastLoaded()
    picks = [r.pick(RouteRequest(10), [_h(), _h(), _h()]) for _ in range(6)]
    assert picks == [0, 1, 2, 0, 1, 2]


@given(hint_lists, st.integers(1, 20_000), st.floats(0.0, 4.0))
def test_kv_aware_picks_minimal_dynamo_cost(hints: list[ReplicaHints], prompt: int,
                                            w: float) -> None:
    r = KvAware(len(hints), overlap_weight=w, block_size=16)
    i = r.pick(RouteRequest(prompt), hints)
    # independent computation: no cached prefix anywhere, so prefill blocks are the
    # request's blocks; decode blocks = used + queued prompt blocks + the request's
    req = -(-prompt // 16)
    cost = [w * req + h.kv_used_blocks + -(-h.queue_tokens // 16) + req for h in hints]
    assert cost[i] == pytest.approx(min(cost))


def test_kv_aware_prefers_a_cached_prefix_until_load_outweighs_it() -> None:
    r = KvAware(2, overlap_weight=1.0, block_size=16, hash_block_tokens=512)
    req = RouteRequest(2048, (1, 2, 3, 4))
    assert r.pick(req, [_h(kv_blocks=100), _h(kv_blocks=0)]) == 1  # lighter replica
    # replica 1 now holds the prefix: 128 prefill blocks saved beats 50 extra decode blocks
    assert r.pick(req, [_h(kv_blocks=0), _h(kv_blocks=50)]) == 1
    # ...but not 200 extra decode blocks
    assert r.pick(req, [_h(kv_blocks=0), _h(kv_blocks=200)]) == 0


def test_prefix_affinity_follows_prefix_within_the_load_cap() -> None:
    r = PrefixAffinity(3, load_cap=2, hash_block_tokens=512)
    req = RouteRequest(2048, (7, 8))
    first = r.pick(req, [_h(depth=1), _h(depth=0), _h(depth=1)])
    assert first == 1
    # the prefix holder is within the cap: it wins over a less loaded replica
    assert r.pick(req, [_h(depth=0), _h(depth=2), _h(depth=0)]) == 1
    # beyond the cap it does not
    assert r.pick(req, [_h(depth=0), _h(depth=3), _h(depth=0)]) in (0, 2)


@given(hint_lists, st.integers(0, 5))
def test_prefix_affinity_never_exceeds_the_cap(hints: list[ReplicaHints], cap: int) -> None:
    r = PrefixAffinity(len(hints), load_cap=cap)
    for k in range(len(hints)):  # every replica has seen the prefix at some point
        r.index.record(k, (1, 2))
    i = r.pick(RouteRequest(1024, (1, 2)), hints)
    assert hints[i].queue_depth <= min(h.queue_depth for h in hints) + cap


def test_unknown_router_is_named() -> None:
    with pytest.raises(UnknownRouterError, match="'nope'"):
        make_router("nope", 2)

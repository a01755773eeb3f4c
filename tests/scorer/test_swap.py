"""The one policy-swap routine (:mod:`tailwise.scorer.swap`): what replaces the policy in
force, and that a swap forgets per-request scheduling state in the simulator too."""

from __future__ import annotations

import math

from support.swap import SENTINEL, Source, live, mark, sched_state, small_sim

from tailwise.scorer.policy import Mode, Policy
from tailwise.scorer.request import ReqInfo
from tailwise.scorer.swap import PolicySwap, Swap, SwapFailed, reset_sched_state


def test_offer_same_equal_new_and_unbuildable() -> None:
    built: list[int] = []

    def build(p: Policy) -> int:
        if p.note == "bad":
            raise ValueError("cannot build")
        built.append(p.version)
        return p.version

    swap: PolicySwap[int] = PolicySwap(build)
    v1 = Policy(mode=Mode.BOOST, version=1)
    first = swap.offer(v1)
    assert isinstance(first, Swap) and first.first and first.built == 1
    assert swap.offer(v1) is None  # the same object
    assert swap.offer(v1.replace()) is None  # equal content re-sent: no rebuild
    bad = Policy(mode=Mode.BOOST, version=2, note="bad")
    failed = swap.offer(bad)
    assert isinstance(failed, SwapFailed) and swap.in_force is v1
    assert swap.offer(bad) is None  # not retried
    v3 = Policy(mode=Mode.EWSJF, version=3)
    second = swap.offer(v3)
    assert isinstance(second, Swap) and not second.first and swap.in_force is v3
    assert built == [1, 3]


def test_reset_sched_state_matches_a_fresh_request() -> None:
    info = ReqInfo(request_id="r", arrival_time=0.0, prompt_tokens=10)
    fresh = sched_state(info)
    mark(info)
    reset_sched_state(info)
    assert sched_state(info) == fresh


def test_simulator_swap_forgets_state_and_equal_push_keeps_it() -> None:
    v1 = Policy(mode=Mode.BOOST, version=1)
    source = Source(v1)
    sim = small_sim(source)
    assert sim.running and list(sim.policy.waiting())
    running = list(sim.running)
    for info in running:
        mark(info)
    swaps = sim.counters["policy_swaps"]
    source.policy = v1.replace()  # the same version re-sent (a reconnect)
    sim.advance(sim.now + 1e-9)
    assert sim.counters["policy_swaps"] == swaps
    assert all(sched_state(r) == SENTINEL for r in running if r in sim.running)
    for info in live(sim):
        mark(info)
    source.policy = Policy(mode=Mode.EWSJF, version=2)
    sim.advance(sim.now + 1e-9)
    assert sim.counters["policy_swaps"] == swaps + 1
    assert sim.running and all(r.sched_protect_level == -1 for r in sim.running)
    assert all(sched_state(r) != SENTINEL for r in live(sim))
    assert not math.isnan(sim.now)

"""One policy-swap routine: the vLLM adapter and the simulator leave the same
per-request scheduling state after a swap, both ignore an equal re-push, and both go
through :class:`~tailwise.scorer.swap.PolicySwap` (tests that fail if either bypasses it).

Before, the adapter reset per-request state and skipped equal pushes while the simulator
did neither, so MemGuard protection survived a swap in simulation but not in vLLM.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (pip install 'tailwise[vllm]')")

from support.swap import SENTINEL, Source, live, mark, sched_state, small_sim

from tailwise.scorer.policy import Mode, Policy
from tailwise.scorer.swap import PolicySwap

pytestmark = pytest.mark.vllm


def _adapter(make_scheduler: Any, vh: Any, source: Any) -> Any:
    s = make_scheduler("tailwise", max_num_seqs=3, policy_source=source)
    reqs = [vh.make_request(str(i), 400, max_tokens=300, arrival_time=i * 1e-3, ignore_eos=True)
            for i in range(6)]
    vh.add_all(s, reqs)
    for _ in range(3):
        vh.step(s)
    return s


def _running_states(pairs: list[tuple[str, Any]]) -> dict[str, tuple[float, int, int, int]]:
    return {rid: sched_state(info) for rid, info in pairs}


def test_swap_leaves_the_same_state_in_adapter_and_simulator(make_scheduler: Any,
                                                              vh: Any) -> None:
    v1 = Policy(mode=Mode.BOOST, version=1)
    sim_source, vllm_source = Source(v1), vh.MutableSource(v1)
    sim = small_sim(sim_source)
    s = _adapter(make_scheduler, vh, vllm_source)

    def sim_running() -> list[tuple[str, Any]]:
        return [(r.request_id, r) for r in sim.running]

    def vllm_running() -> list[tuple[str, Any]]:
        return [(r.request_id, s._tw_live[r.request_id][1]) for r in s.running]

    # (the simulator skips ahead over decode runs, so which requests run may differ)
    assert len(sim_running()) == len(vllm_running()) == 3
    for _, info in [*sim_running(), *vllm_running()]:
        mark(info)
    # an equal push (the same version re-sent after a reconnect): nothing is reset
    sim_source.policy = vllm_source.policy = v1.replace()
    sim.advance(sim.now + 1e-9)
    vh.step(s)
    assert set(_running_states(sim_running()).values()) == {SENTINEL}
    assert set(_running_states(vllm_running()).values()) == {SENTINEL}
    # a real swap: both forget the old policy's per-request state, identically
    sim_source.policy = vllm_source.policy = Policy(mode=Mode.EWSJF, version=2)
    sim.advance(sim.now + 1e-9)
    vh.step(s)
    after_sim, after_vllm = _running_states(sim_running()), _running_states(vllm_running())
    assert sorted(after_sim.values()) == sorted(after_vllm.values())
    assert SENTINEL not in after_sim.values()
    assert s.tailwise_counters["policy_swaps"] == sim.counters["policy_swaps"] == 1


def _both(make_scheduler: Any, vh: Any) -> tuple[Any, Any, Source, Any]:
    """A simulator and an adapter under BOOST v1, three requests running in each."""
    v1 = Policy(mode=Mode.BOOST, version=1)
    sim_source, vllm_source = Source(v1), vh.MutableSource(v1)
    return small_sim(sim_source), _adapter(make_scheduler, vh, vllm_source), sim_source, vllm_source


def test_both_engines_ask_the_one_routine_which_pushes_swap(
        make_scheduler: Any, vh: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A routine that refuses version 2 keeps version 1 in force in both engines: an
    engine deciding swaps by itself would install version 2 here."""
    sim, s, sim_source, vllm_source = _both(make_scheduler, vh)
    asked: list[tuple[int, int]] = []
    offer = PolicySwap.offer

    def veto_v2(self: PolicySwap[Any], policy: Policy) -> Any:
        asked.append((id(self), policy.version))
        return None if policy.version == 2 else offer(self, policy)

    monkeypatch.setattr(PolicySwap, "offer", veto_v2)
    sim_source.policy = vllm_source.policy = Policy(mode=Mode.EWSJF, version=2)
    sim.advance(sim.now + 1e-9)
    vh.step(s)
    assert (id(sim._swap), 2) in asked and (id(s._tw_swap), 2) in asked
    assert s.tailwise_policy is not None and s.tailwise_policy.version == 1
    assert sim.policy_timeline[-1][1].version == 1
    assert s.tailwise_counters["policy_swaps"] == sim.counters["policy_swaps"] == 0
    # once the routine lets it through, both engines swap
    monkeypatch.setattr(PolicySwap, "offer", offer)
    sim_source.policy = vllm_source.policy = Policy(mode=Mode.EWSJF, version=3)
    sim.advance(sim.now + 1e-9)
    vh.step(s)
    assert s.tailwise_policy.version == sim.policy_timeline[-1][1].version == 3
    assert s.tailwise_counters["policy_swaps"] == sim.counters["policy_swaps"] == 1


def test_both_engines_reset_state_only_through_the_routine(
        make_scheduler: Any, vh: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the routine's reset switched off, a swap leaves the running requests' old
    state in both engines (nothing else resets it), and each engine handed the routine
    every live request it holds."""
    sim, s, sim_source, vllm_source = _both(make_scheduler, vh)
    forgotten: list[set[str]] = []

    def record_only(live: Any) -> None:
        forgotten.append({info.request_id for info in live})

    monkeypatch.setattr(PolicySwap, "forget", staticmethod(record_only))
    for info in [*sim.running, *(s._tw_live[r.request_id][1] for r in s.running)]:
        mark(info)
    sim_live = {r.request_id for r in live(sim)}
    vllm_live = set(s._tw_live)
    sim_source.policy = vllm_source.policy = Policy(mode=Mode.EWSJF, version=2)
    sim.advance(sim.now + 1e-9)
    s._tw_refresh_policy(s._tw_clock())  # the swap alone, before a step rewrites state
    assert s.tailwise_counters["policy_swaps"] == sim.counters["policy_swaps"] == 1
    assert {sched_state(r) for r in sim.running} == {SENTINEL}
    assert {sched_state(s._tw_live[r.request_id][1]) for r in s.running} == {SENTINEL}
    # the simulator forgets its running then its waiting requests; the adapter all at once
    assert len(forgotten) == 3
    assert forgotten[0] | forgotten[1] == sim_live and forgotten[2] == vllm_live

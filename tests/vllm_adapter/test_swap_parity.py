"""One policy-swap routine: the vLLM adapter and the simulator leave the same
per-request scheduling state after a swap, and both ignore an equal re-push.

Before, the adapter reset per-request state and skipped equal pushes while the simulator
did neither, so MemGuard protection survived a swap in simulation but not in vLLM.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (pip install 'tailwise[vllm]')")

from support.swap import SENTINEL, Source, mark, sched_state, small_sim

from tailwise.scorer.policy import Mode, Policy

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

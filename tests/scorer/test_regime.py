"""tailwise's regime mechanisms (scorer.policy.RegimeParams): each property could fail."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tailwise.scorer.boost import boost
from tailwise.scorer.policy import Mode, Policy, PolicyError, RegimeParams, SafetyParams
from tailwise.scorer.registry import build_scheduler
from tailwise.scorer.request import ReqInfo
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.scorer.tailwise import TailwisePolicy, gamma_for_boost
from tailwise.simulator.engine import EngineConfig, simulate
from tailwise.simulator.workload import LengthClass, generate


def tailwise(**regime: object) -> TailwisePolicy:
    p = Policy(mode=Mode.TAILWISE, regime=dataclasses.replace(RegimeParams(), **regime))
    sched = build_scheduler(p)
    assert isinstance(sched, TailwisePolicy)
    return sched


def finish(sched: TailwisePolicy, n: int, service_s: float, t0: float = 0.0) -> None:
    """``n`` requests that took ``service_s`` from first to last token."""
    for i in range(n):
        r = ReqInfo(f"f{i}", arrival_time=t0, prompt_tokens=10)
        r.first_token_time = t0 + 1.0
        sched.on_finish(r, t0 + 1.0 + service_s)


@given(st.floats(1.0, 5000.0), st.floats(1e-3, 1.0))
def test_gamma_for_boost_hits_the_horizon(horizon: float, work: float) -> None:
    g = gamma_for_boost(horizon, work)
    assert boost(work, g, math.inf) == pytest.approx(horizon, rel=1e-6)
    assert gamma_for_boost(2 * horizon, work) < g  # a longer horizon needs a smaller γ


@pytest.mark.parametrize("service", [1.0, 40.0, 500.0, 10_000.0])
def test_envelope_follows_measured_service_time(service: float) -> None:
    sched = tailwise()
    g = sched.regime
    assert sched.envelope_s() == Policy().safety.aging_s  # nothing measured yet
    finish(sched, g.scale_update_every, service)
    expect = min(g.envelope_cap_s, max(g.aging_floor_s, g.aging_factor * service))
    assert sched.service_scale == pytest.approx(service)
    assert sched.envelope_s() == pytest.approx(expect)
    assert sched.envelope_s() <= g.envelope_cap_s


def test_envelope_is_fixed_without_relative_aging() -> None:
    sched = tailwise(relative_aging=False)
    finish(sched, 64, 500.0)
    assert sched.envelope_s() == Policy().safety.aging_s


def test_adaptive_horizon_widens_boosts_with_service_time() -> None:
    """Under long services a fresh request overtakes more: its boost over a request that
    already had 100 s of service grows with T. The horizon only widens boosts: never
    below what the policy's own γ gives."""
    gaps = []
    for service in (10.0, 100.0, 1000.0):
        sched = tailwise()
        finish(sched, 32, service)
        fresh, served = sched.boost_of(0.05), sched.boost_of(100.0)
        floor = boost(0.05, Policy().boost.gamma, math.inf)
        assert fresh == pytest.approx(max(sched.regime.horizon_factor * service, floor), rel=1e-6)
        gaps.append(fresh - served)
    assert gaps[0] < gaps[1] < gaps[2]
    off = tailwise(adaptive_horizon=False)
    finish(off, 32, 1000.0)
    assert off.gamma == Policy().boost.gamma


def test_waiting_order_respects_the_envelope_in_force() -> None:
    """A request that waited E is served before a fresher, higher-priority one; one that
    waited less than E is not."""
    sched = tailwise()
    finish(sched, 32, 100.0)
    e = sched.envelope_s()
    old = ReqInfo("old", arrival_time=0.0, prompt_tokens=4000, num_output_tokens=5000,
                  prefill_tokens_done=4000)
    new = ReqInfo("new", arrival_time=1.0, prompt_tokens=10)
    sched.add(old, 0.0)
    sched.add(new, 1.0)
    assert sched.peek(e - 1.0) is new
    assert sched.peek(e + 1e-6) is old


@given(free=st.integers(0, 10_000), head=st.integers(1, 50_000),
       decoding=st.integers(0, 256), per=st.floats(0.0, 4.0))
def test_admission_pacing_keeps_headroom_per_decoding_request(free: int, head: int,
                                                              decoding: int, per: float) -> None:
    sched = tailwise(pacing_blocks=per)
    need = -(-head // 16)
    allowed = sched.admission_allowed(free, head, decoding, 16)
    assert allowed == (free - need >= math.ceil(decoding * per))
    assert tailwise(admission_pacing=False).admission_allowed(free, head, decoding, 16)


def _kv_pressure_trace() -> tuple[object, EngineConfig]:
    cls = (LengthClass("short", 0.5, 300, 100, 0.5, 0.5, 2000, 400),
           LengthClass("long", 0.5, 300, 1500, 0.5, 0.5, 2000, 3000))
    return generate(300, 6.0, classes=cls, arrival="gamma", cv=2.0, seed=3), \
        EngineConfig(num_gpu_blocks=1200, max_num_seqs=64)


def test_admission_pacing_cuts_preemptions_and_wasted_recompute() -> None:
    trace, cfg = _kv_pressure_trace()
    runs = {}
    for pacing in (False, True):
        p = Policy(mode=Mode.TAILWISE, regime=RegimeParams(admission_pacing=pacing))
        res = simulate(trace, build_scheduler(p), cfg, H100_LLAMA3_8B, debug=True)  # type: ignore[arg-type]
        assert np.isfinite(res.records.finish).all()
        runs[pacing] = (int(res.records.preemptions.sum()), int(res.records.wasted_tokens.sum()))
    assert runs[False][0] > 0, "the workload must put the KV cache under pressure"
    assert runs[True][0] < runs[False][0]
    assert runs[True][1] < runs[False][1]


@pytest.mark.parametrize(("field", "value"), [
    ("aging_factor", math.nan), ("aging_factor", 0.0), ("horizon_factor", -1.0),
    ("scale_quantile", 1.5), ("scale_window", 3), ("pacing_blocks", -0.5),
    ("envelope_cap_s", 10.0), ("relative_aging", 1),
])
def test_bad_regime_values_are_refused_by_name(field: str, value: object) -> None:
    with pytest.raises(PolicyError, match=rf"^regime\.{field}"):
        Policy(mode=Mode.TAILWISE, regime=dataclasses.replace(RegimeParams(), **{field: value})
               ).validate()


def test_regime_round_trips_through_dict_and_wire() -> None:
    from tailwise.wire import codec
    from tailwise.wire.v1 import policy_pb2 as pb

    p = Policy(mode=Mode.TAILWISE, safety=SafetyParams(max_boost_s=10.0, aging_s=20.0),
               regime=RegimeParams(aging_factor=3.0, pacing_blocks=0.5, adaptive_horizon=False))
    assert Policy.from_dict(p.to_dict()) == p
    assert codec.policy_from_proto(codec.policy_to_proto(p)) == p
    old = codec.policy_to_proto(p)
    old.ClearField("regime")  # a sender from before the field existed
    assert isinstance(old, pb.Policy)
    assert codec.policy_from_proto(old).regime == RegimeParams()


def test_tuner_space_reaches_the_regime_parameters() -> None:
    from optuna.trial import FixedTrial

    from tailwise.bayes_opt.space import SpaceConfig, suggest_policy

    base = Policy(mode=Mode.TAILWISE)
    cfg = SpaceConfig(mode=Mode.TAILWISE, search_switches=True, search_partition=False)
    params = {"boost.gamma": 0.1, "boost.memguard_theta_s": 0.05, "boost.memguard_ratio": 2.0,
              "safety.max_boost_frac": 0.5, "preemption.priority_band_s": 600.0,
              "safety.aging_s": 240.0, "boost.partition_aware": False,
              "preemption.cache_aware": True, "preemption.anti_thrash": True,
              "slo.urgency": False, "slo.demote_late": True, "slo.decode_cap": False,
              "regime.aging_factor": 4.0,
              "regime.horizon_factor": 1.5,
              "regime.pacing_blocks": 2.0, "regime.adaptive_horizon": True,
              "regime.relative_aging": False, "regime.admission_pacing": True,
              "regime.queue_floor_factor": 2.0, "regime.prefix_rekey_k": 16,
              "regime.prefix_rekey": False, "regime.queue_floor": True,
              "regime.tail_protect_factor": 0.4, "regime.residual_victims": True,
              "regime.demote_preempted": False, "regime.tail_protect": True,
              "regime.queue_horizon": False, "regime.demote_as_arrival": False,
              "regime.demote_delay_factor": 3.0, "regime.scale_excludes_requeue": False}
    p = suggest_policy(FixedTrial(params), base, (), cfg)
    assert (p.regime.aging_factor, p.regime.horizon_factor, p.regime.pacing_blocks) == (4.0, 1.5, 2.0)
    assert p.regime.relative_aging is False
    assert (p.regime.queue_floor_factor, p.regime.prefix_rekey_k, p.regime.prefix_rekey) == (
        2.0, 16, False)
    assert (p.regime.tail_protect_factor, p.regime.demote_preempted) == (0.4, False)
    assert p.regime.queue_horizon is False
    assert (p.regime.demote_as_arrival, p.regime.demote_delay_factor) == (False, 3.0)
    assert p.regime.scale_excludes_requeue is False
    assert p.slo.demote_late is True


def test_waiting_bound_states_the_envelope_in_force() -> None:
    tw = Policy(mode=Mode.TAILWISE)
    assert "clip(2 x T, 30 s, 3600 s)" in tw.waiting_bound()
    assert "never more than 3600 s" in tw.waiting_bound()
    fixed = dataclasses.replace(tw, regime=RegimeParams(relative_aging=False))
    assert fixed.waiting_bound().startswith("no request waits more than 240 s")
    assert Policy(mode=Mode.KAIROS).waiting_bound().startswith("none")


@given(st.lists(st.tuples(st.integers(1, 4000), st.integers(1, 3000), st.floats(0.0, 60.0),
                          st.sampled_from(["", "interactive", "batch"])), min_size=1, max_size=40),
       st.floats(0.0, 100.0))
def test_tailwise_budget_shaping_is_kairos_decode_cap(reqs: list[tuple[int, int, float, str]],
                                                      extra: float) -> None:
    """``slo.decode_cap`` in tailwise mode is Kairos's slack-guided cap, the same code."""
    from tailwise.scorer.kairos import KairosPolicy

    running = []
    for i, (prompt, out, started, cls) in enumerate(reqs):
        r = ReqInfo(f"r{i}", arrival_time=0.0, prompt_tokens=prompt, slo_class=cls,
                    num_output_tokens=out, num_computed_tokens=prompt + out - 1)
        r.first_token_time = started
        running.append(r)
    now = max(s for _, _, s, _ in reqs) + extra
    slo = dataclasses.replace(Policy().slo, decode_cap=True)
    tw = build_scheduler(Policy(mode=Mode.TAILWISE, slo=slo))
    kairos = KairosPolicy(Policy(mode=Mode.KAIROS, slo=slo))
    assert tw.caps_decode
    assert tw.decode_cap(running, now) == kairos.decode_cap(running, now)
    assert not tailwise().caps_decode and tailwise().decode_cap(running, now) is None


def test_a_policy_swap_keeps_the_measured_service_scale() -> None:
    """Engines call ``carry_over`` on a swap: a new version (here a partition refresh)
    starts from the old one's measurement, not from the unmeasured default."""
    old = tailwise()
    finish(old, 32, 500.0)
    new = tailwise()
    assert new.envelope_s() == Policy().safety.aging_s
    new.carry_over(old)
    assert new.service_scale == old.service_scale == pytest.approx(500.0)
    assert new.envelope_s() == old.envelope_s()
    assert new.gamma == old.gamma
    fcfs = build_scheduler(Policy())
    fresh = tailwise()
    fresh.carry_over(fcfs)  # nothing to keep from a queue that measures nothing
    assert fresh.service_scale == 0.0

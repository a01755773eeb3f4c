"""The search space yields valid policies or fails cleanly (PolicyError), never otherwise."""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import numpy as np
import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optuna.trial import FixedTrial

from tailwise.bayes_opt.space import (
    SpaceConfig,
    SpaceError,
    params_to_policy,
    policy_to_params,
    suggest_params,
    suggest_policy,
)
from tailwise.scorer.policy import BoostParams, BoostVariant, Mode, Policy, PolicyError, QueueSpec

MODES = (Mode.TAILWISE, Mode.EWSJF, Mode.BOOST, Mode.KAIROS)
PARTITION = (QueueSpec(0, 512, 200, 0.002), QueueSpec(512, 4096, 1500, 0.0001),
             QueueSpec(4096, 40000, 9000, 1e-6))


@functools.cache
def names_of(mode: Mode, base: Policy | None = None) -> dict[str, optuna.distributions.BaseDistribution]:
    """Every distribution the space may ask for in ``mode`` (both branches of each switch)."""
    study = optuna.create_study()
    out: dict[str, optuna.distributions.BaseDistribution] = {}
    for aware in (False, True):
        study.enqueue_trial({"boost.partition_aware": aware})
        trial = study.ask()
        suggest_params(trial, base or Policy(), SpaceConfig(mode=mode, search_switches=True))
        out.update(trial.distributions)
    return out


def in_range(dist: optuna.distributions.BaseDistribution) -> st.SearchStrategy[Any]:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return st.sampled_from(list(dist.choices))
    if isinstance(dist, optuna.distributions.IntDistribution):
        return st.integers(dist.low, dist.high)
    assert isinstance(dist, optuna.distributions.FloatDistribution)
    return st.floats(dist.low, dist.high)


def anything() -> st.SearchStrategy[Any]:
    return st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6),
                     st.booleans(), st.text(max_size=3), st.none())


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_in_range_params_always_give_a_valid_policy(mode: Mode, data: st.DataObject) -> None:
    dists = names_of(mode)
    params = {n: data.draw(in_range(d), label=n) for n, d in dists.items()}
    p = suggest_policy(FixedTrial(params), Policy(), PARTITION, SpaceConfig(mode=mode))
    p.validate()
    assert p.mode is mode
    assert p.safety.max_boost_s <= p.safety.aging_s
    # queue weights follow the linear weights at each queue's mean length
    for q in p.queues:
        assert q.w_base == pytest.approx(p.ewsjf.base.at(q.mean_len))
        assert q.w_fair == pytest.approx(p.ewsjf.fair.at(q.mean_len))


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_arbitrary_params_give_a_valid_policy_or_a_policy_error(mode: Mode, data: st.DataObject) -> None:
    dists = names_of(mode)
    params: dict[str, Any] = {}
    for n, d in dists.items():
        choice = data.draw(st.sampled_from(["ok", "junk", "missing"]), label=f"{n}?")
        if choice == "ok":
            params[n] = data.draw(in_range(d), label=n)
        elif choice == "junk":
            params[n] = data.draw(anything(), label=n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna warns about out-of-range fixed values
        try:
            p = suggest_policy(FixedTrial(params), Policy(), PARTITION, SpaceConfig(mode=mode))
        except PolicyError as exc:
            assert str(exc)  # names a field
            return
    p.validate()
    assert p.safety.max_boost_s <= p.safety.aging_s


def test_nan_and_out_of_range_values_fail_naming_the_field() -> None:
    dists = names_of(Mode.BOOST)
    ok = {n: (d.choices[0] if isinstance(d, optuna.distributions.CategoricalDistribution)
              else d.low) for n, d in dists.items()}
    cfg = SpaceConfig(mode=Mode.BOOST)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(PolicyError, match=r"safety\.aging_s"):
            suggest_policy(FixedTrial({**ok, "safety.aging_s": math.nan}), Policy(), (), cfg)
        with pytest.raises(PolicyError, match=r"boost\.gamma"):
            suggest_policy(FixedTrial({**ok, "boost.gamma": -1.0}), Policy(), (), cfg)
        with pytest.raises(PolicyError, match="max_boost_frac"):
            suggest_policy(FixedTrial({**ok, "safety.max_boost_frac": 1.5}), Policy(), (), cfg)
        with pytest.raises(SpaceError):
            suggest_policy(FixedTrial({}), Policy(), (), cfg)  # missing parameters


def test_partition_larger_than_max_queues_fails_cleanly() -> None:
    params = {"ewsjf.max_queues": 2}  # params_to_policy itself does not prune
    with pytest.raises(PolicyError, match="queues"):
        params_to_policy(params, Policy(), PARTITION, Mode.EWSJF)


def test_define_by_run_asks_only_what_the_mode_uses() -> None:
    boost = names_of(Mode.BOOST)
    assert {"boost.gamma", "boost.memguard_theta_s", "preemption.priority_band_s",
            "safety.max_boost_frac", "safety.aging_s"} <= set(boost)
    assert not any(n.startswith("ewsjf.") for n in boost)
    ewsjf = names_of(Mode.EWSJF)
    assert "ewsjf.urg.c_per_1k" in ewsjf and "ewsjf.alpha" in ewsjf
    assert not any(n.startswith(("boost.", "preemption.")) for n in ewsjf)
    assert "safety.max_boost_frac" not in ewsjf  # EWSJF does not boost
    tail = names_of(Mode.TAILWISE)
    assert set(boost) <= set(tail) and {"boost.partition_aware", "slo.urgency"} <= set(tail)
    assert "ewsjf.base.a" not in tail  # tailwise does not score with EWSJF weights
    kairos = names_of(Mode.KAIROS)
    assert set(kairos) == {"slo.window", "slo.decode_cap"}
    dist = names_of(Mode.BOOST, Policy(boost=BoostParams(variant=BoostVariant.DIST)))
    assert "boost.gamma" not in dist  # DistBoost fits γ itself
    # tailwise asks for α / max_queues only when its boosts use the partition
    cfg = SpaceConfig(search_switches=True)
    aware = policy_to_params(Policy(boost=BoostParams(partition_aware=True)), cfg)
    plain = policy_to_params(Policy(boost=BoostParams(partition_aware=False)), cfg)
    assert "ewsjf.alpha" in aware and "ewsjf.max_queues" in aware
    assert "ewsjf.alpha" not in plain and "ewsjf.max_queues" not in plain
    no_part = policy_to_params(Policy(), SpaceConfig(mode=Mode.EWSJF, search_partition=False))
    assert "ewsjf.alpha" not in no_part
    # switches off (default): booleans keep the base's values, not searched, but for the
    # three TTFT-vs-tail trade-off switches in tailwise mode (search_tradeoffs, default on)
    assert not any(isinstance(v, bool) for v in policy_to_params(
        Policy(), SpaceConfig(mode=Mode.BOOST)).values())
    tw = Policy(mode=Mode.TAILWISE)
    on = {k for k, v in policy_to_params(tw, SpaceConfig()).items() if isinstance(v, bool)}
    assert on == {"slo.urgency", "slo.decode_cap", "regime.tail_protect"}
    assert not any(isinstance(v, bool) for v in policy_to_params(
        tw, SpaceConfig(search_tradeoffs=False)).values())


@pytest.mark.filterwarnings("ignore:The value 2 of the parameter")
def test_partition_aware_candidates_get_their_own_pruned_partition() -> None:
    cfg = SpaceConfig()
    aware = Policy(boost=BoostParams(partition_aware=True))
    params = {**policy_to_params(aware, cfg), "ewsjf.max_queues": 2}
    p = suggest_policy(FixedTrial(params), aware, PARTITION, cfg)
    assert len(p.queues) == 2 and p.queues[0].lo == PARTITION[0].lo
    # a base that does not use the partition keeps the learner's as it is
    plain = suggest_policy(FixedTrial(params), Policy(), PARTITION, cfg)
    assert [q.lo for q in plain.queues] == [q.lo for q in PARTITION]


def test_fcfs_has_nothing_to_tune() -> None:
    with pytest.raises(SpaceError, match="fcfs"):
        SpaceConfig(mode=Mode.FCFS)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("around", [4.0, None])
def test_sampled_trials_from_a_real_study_are_valid(mode: Mode, around: float | None) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    cfg = SpaceConfig(mode=mode, around_base=around, search_switches=True)
    base = Policy(boost=BoostParams(partition_aware=True))
    for _ in range(25):
        t = study.ask()
        p = suggest_policy(t, base, PARTITION, cfg, values=np.arange(1, 5000, 7.0))
        p.validate()
        assert p.mode is mode and len(p.queues) <= p.ewsjf.max_queues
        study.tell(t, 0.0)


def test_policy_to_params_roundtrips_in_range_values() -> None:
    cfg = SpaceConfig(mode=Mode.TAILWISE, search_switches=True)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    study.enqueue_trial({"boost.partition_aware": True})
    t = study.ask()
    p = suggest_policy(t, Policy(), (), cfg)
    assert "ewsjf.alpha" in t.params
    params = policy_to_params(p, cfg, Policy())
    for name, value in t.params.items():
        assert params[name] == pytest.approx(value, rel=1e-9), name
    again = params_to_policy(params, Policy(), (), cfg.mode)
    assert again.boost == p.boost and again.ewsjf == p.ewsjf


def test_policy_to_params_clips_into_the_space() -> None:
    cfg = SpaceConfig(mode=Mode.BOOST, aging_s=(5.0, 100.0))
    p = Policy(boost=BoostParams(gamma=0.5)).replace(
        safety=Policy().safety.__class__(max_boost_s=30.0, aging_s=600.0))
    params = policy_to_params(p, cfg)
    assert params["safety.aging_s"] == 100.0
    assert params["safety.max_boost_frac"] == 0.1  # 30/600 = 0.05, below the range
    # ranges come from the base: a champion far from it is clipped into its box
    far = Policy(boost=BoostParams(gamma=5.0))
    assert policy_to_params(far, SpaceConfig(mode=Mode.BOOST), Policy())["boost.gamma"] == 0.4
    assert policy_to_params(far, SpaceConfig(mode=Mode.BOOST))["boost.gamma"] == 5.0

"""DistBoost's online size fit and γ-Ada's steering (learner/estimators.py), against
closed-form oracles: M/M/1's tail decay rate γ* = μ − λ and the deterministic-size root."""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path

import pytest

from tailwise.learner.config import LoopConfig
from tailwise.learner.estimators import BoostEstimator, GammaAda, JobSizeFit, fit_gamma
from tailwise.learner.local import LocalLearner
from tailwise.learner.loop import LearningLoop
from tailwise.learner.metrics import SidecarMetrics
from tailwise.learner.publisher import PolicyStore
from tailwise.learner.state import StateFile
from tailwise.learner.window import TelemetryWindow
from tailwise.scorer.policy import BoostParams, BoostVariant, Mode, Policy, Source
from tailwise.scorer.request import ReqInfo
from tailwise.wire.v1 import policy_pb2 as pb


def test_fit_gamma_solves_the_cramer_equation() -> None:
    # deterministic sizes S=1 at rate 0.5: 0.5(e^γ − 1) = γ  ⇒ γ ≈ 1.2564
    g = fit_gamma([1.0] * 50, 0.5, 1e-3, 100.0)
    assert 0.5 * (math.exp(g) - 1) == pytest.approx(g, rel=1e-6)
    assert fit_gamma([1.0] * 50, 2.0, 0.01, 100.0) == 0.01  # overload: no positive root
    # weights are multiplicities
    assert fit_gamma([1.0, 3.0], 0.2, 1e-3, 100.0, weights=[3, 1]) == pytest.approx(
        fit_gamma([1.0, 1.0, 1.0, 3.0], 0.2, 1e-3, 100.0), rel=1e-9)


def stream(fit: JobSizeFit, n: int, rate: float, mean_size: float, rng: random.Random,
           t0: float = 0.0) -> float:
    t = t0
    for _ in range(n):
        t += rng.expovariate(rate)
        fit.learn_one({"size_s": rng.expovariate(1.0 / mean_size), "arrival_s": t})
    return t


@pytest.mark.parametrize("seed", range(3))
def test_size_fit_converges_to_the_mm1_tail_rate(seed: int) -> None:
    """Exponential sizes (μ = 1/s) at Poisson rate λ = 0.6: γ* = μ − λ = 0.4 exactly.
    (γ* moves one for one with the rate estimate, so its tolerance is the rate's.)"""
    rng = random.Random(seed)
    fit = JobSizeFit(1e-3, 100.0)
    stream(fit, 2000, 0.6, 1.0, rng)
    early = fit.predict_one()
    stream(fit, 30_000, 0.6, 1.0, rng, t0=1e6)
    g = fit.predict_one()
    assert fit.restarts == 0  # a stationary stream never restarts the fit
    assert g is not None and early is not None
    assert g == pytest.approx(0.4, abs=0.04)
    assert float(fit.mean.get()) == pytest.approx(1.0, rel=0.05)
    r = fit.rate()
    assert r is not None and r == pytest.approx(0.6, rel=0.07)


def test_size_fit_is_exact_for_deterministic_sizes() -> None:
    fit = JobSizeFit(1e-3, 100.0)
    for i in range(200):
        fit.learn_one({"size_s": 1.0, "arrival_s": 2.0 * i})  # λ = 0.5
    assert fit.predict_one() == pytest.approx(fit_gamma([1.0], 0.5, 1e-3, 100.0), rel=1e-6)


def test_size_fit_restarts_on_a_size_shift_and_follows_the_new_sizes() -> None:
    rng = random.Random(7)
    fit = JobSizeFit(1e-3, 100.0)
    t = stream(fit, 8000, 1.2, 0.5, rng)  # γ* = 2 − 1.2 = 0.8
    assert fit.restarts == 0
    assert fit.predict_one() == pytest.approx(0.8, rel=0.15)
    stream(fit, 8000, 0.6, 1.0, rng, t0=t)  # sizes ×2, same load: γ* = 1 − 0.6 = 0.4
    assert fit.restarts >= 1
    assert float(fit.mean.get()) == pytest.approx(1.0, rel=0.1)  # old sizes forgotten
    assert fit.predict_one() == pytest.approx(0.4, rel=0.15)


def test_overload_and_too_little_data() -> None:
    fit = JobSizeFit(0.01, 100.0)
    assert fit.predict_one() is None
    for i in range(100):
        fit.learn_one({"size_s": 1.0, "arrival_s": 0.5 * i})  # λ·E[S] = 2
    assert fit.predict_one() == 0.01
    fit.learn_one({"size_s": math.nan, "arrival_s": math.inf})  # skipped
    assert fit.n == 100


def test_gamma_ada_moves_gamma_toward_the_target() -> None:
    params = BoostParams(gamma=1.0, ada_target_s=10.0, ada_window=10, ada_step=2.0)
    ada = GammaAda(params)
    changed = [ada.learn_one(100.0) for _ in range(10)]
    assert changed[-1] and not any(changed[:-1]) and ada.gamma == 2.0  # tail too high
    for _ in range(10):
        ada.learn_one(1.0)
    assert ada.gamma == 1.0  # tail well below target → favour short jobs again


def boost_policy(variant: BoostVariant) -> Policy:
    p = Policy(mode=Mode.BOOST)
    return dataclasses.replace(p, boost=dataclasses.replace(p.boost, variant=variant, gamma=5.0))


def test_boost_estimator_proposes_the_fitted_gamma_every_refit() -> None:
    pol = boost_policy(BoostVariant.DIST)
    est = BoostEstimator(pol, refit_every=100)
    cp, cd = pol.step_time.prefill_token_s, pol.step_time.decode_token_s
    proposals = []
    for i in range(300):  # every request: 1000 prompt tokens, 100 output, 1 every 2 s
        proposals.append(est.learn_one({"arrival_s": 2.0 * i, "finish_s": 2.0 * i + 1.0,
                                        "prompt_tokens": 1000, "output_tokens": 100}))
    size = 1000 * cp + 100 * cd
    expect = fit_gamma([size], 0.5, pol.boost.gamma_min, pol.boost.gamma_max)
    got = [(i, g) for i, g in enumerate(proposals) if g is not None]
    assert got and got[0][0] == 99 and got[0][1] == pytest.approx(expect, rel=1e-6)
    assert len(got) == 1  # unchanged fit: no further proposals
    assert est.apply(pol, got[0][1]).boost.gamma == got[0][1]


def test_boost_estimator_is_inert_for_other_policies() -> None:
    for pol in (boost_policy(BoostVariant.UNI), Policy(mode=Mode.EWSJF)):
        est = BoostEstimator(pol)
        assert not est.active and est.matches(pol)
        assert all(est.learn_one({"arrival_s": i, "finish_s": i + 50.0, "prompt_tokens": 10,
                                  "output_tokens": 10}) is None for i in range(500))
    assert not BoostEstimator(boost_policy(BoostVariant.UNI)).matches(
        boost_policy(BoostVariant.ADA))


# -- one estimator, two learners ---------------------------------------------------------------
def test_sidecar_loop_and_local_learner_adapt_gamma_identically(tmp_path: Path) -> None:
    """The same finished requests through the sidecar's telemetry window and learning loop,
    and through the in-process LocalLearner: the same γ values are published."""
    pol = boost_policy(BoostVariant.DIST)
    metrics = SidecarMetrics()
    state = StateFile(tmp_path)
    store = PolicyStore(state, metrics, pol)
    window = TelemetryWindow()
    loop = LearningLoop(window, store, state, metrics,
                        loop_cfg=LoopConfig(round_every_s=1e9, n_trials=1))
    local = LocalLearner(pol)
    rng = random.Random(3)
    t, rid = 0.0, 0
    for _batch in range(12):
        b = pb.EngineEvent(engine_id="e")
        for _ in range(100):
            t += rng.expovariate(2.0)
            prompt, output = rng.randint(50, 4000), rng.randint(1, 600)
            finish = t + 1.0
            b.requests.add(kind=pb.REQUEST_EVENT_KIND_FINISHED, request_id=f"r{rid}",
                           time=finish, arrival_time=t, prompt_tokens=prompt,
                           output_tokens=output)
            r = ReqInfo(request_id=f"r{rid}", arrival_time=t, prompt_tokens=prompt)
            r.num_output_tokens = output
            local.on_finish(r, finish)
            rid += 1
        window.apply(b)
        loop.step()
    published = store.last_good()
    assert local.versions >= 1  # the fit moved γ away from 5.0
    assert published.boost.gamma == pytest.approx(local.current().boost.gamma, rel=1e-12)
    assert published.source is Source.LEARNED and published.boost.gamma != pol.boost.gamma

"""Drift detection with river's ADWIN: fires on a shifted stream, not on a stationary one
(fixed seeds), and makes Refine-and-Prune refresh early after a workload shift."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tailwise.partitioner import BUBBLE, DriftDetector, RefinePrune
from tailwise.scorer.policy import EwsjfParams

SEEDS = range(5)
N, SHIFT_AT = 6000, 3000


def lengths(seed: int, shift: float) -> np.ndarray:
    """Lognormal prompt lengths (median ~400 tokens); from SHIFT_AT on, log-median + shift."""
    rng = np.random.default_rng(seed)
    mu = np.where(np.arange(N) < SHIFT_AT, 6.0, 6.0 + shift)
    return np.round(rng.lognormal(mu, 1.2))


def detections(xs: np.ndarray) -> list[int]:
    d = DriftDetector(("prompt",))
    return [i for i, x in enumerate(xs) if d.learn_one({"prompt": float(x)})]


@pytest.mark.parametrize("seed", SEEDS)
def test_no_drift_on_a_stationary_stream(seed: int) -> None:
    assert detections(lengths(seed, 0.0)) == []


@pytest.mark.parametrize("seed", SEEDS)
def test_drift_on_a_shifted_stream_soon_after_the_shift(seed: int) -> None:
    hits = detections(lengths(seed, 1.0))  # median length x e (400 -> ~1100 tokens)
    assert hits, "shift not detected"
    assert SHIFT_AT <= hits[0] <= SHIFT_AT + 200  # never before the shift, within 200 requests


def test_detector_skips_bad_values_and_validates() -> None:
    d = DriftDetector(("a", "b"))
    assert d.learn_one({"a": float("nan"), "b": -1.0}) is False
    assert d.width("a") == d.width("b") == 0
    with pytest.raises(ValueError, match="delta"):
        DriftDetector(("a",), delta=0.0)
    with pytest.raises(ValueError, match="features"):
        DriftDetector(("a", "a"))


P = EwsjfParams(refresh_requests=5000, refresh_s=1e9, reservoir_size=1024, max_queues=8)


def primed(seed: int, shift: float) -> tuple[RefinePrune, np.ndarray]:
    xs = lengths(seed, shift)
    rp = RefinePrune(P, seed=seed)
    for x in xs[:SHIFT_AT]:
        rp.learn_one(float(x))
    rp.refresh(0.0, force=True)
    return rp, xs[SHIFT_AT:]


@pytest.mark.parametrize("seed", SEEDS)
def test_refine_prune_refreshes_early_after_a_shift_only(seed: int) -> None:
    calm, rest = primed(seed, 0.0)
    for x in rest:
        calm.learn_one(float(x))
        assert not calm.due(1.0)  # 3000 values < refresh_requests, no drift: not due
    shifted, rest = primed(seed, 1.0)
    n = 0
    for x in rest:
        shifted.learn_one(float(x))
        n += 1
        if shifted.due(1.0):
            break
    assert shifted.drift_pending and n <= 200
    shifted.refresh(1.0)
    assert not shifted.drift_pending and shifted.refreshes == 2


def bubble_share(rp: RefinePrune, xs: np.ndarray) -> float:
    """Share of arrivals that route to the bubble (no fitted queue) when they arrive."""
    bubbled = 0
    for x in xs:
        bubbled += rp.predict_one(float(x)) == BUBBLE
        rp.learn_one(float(x))
        rp.refresh(1.0)
    return bubbled / len(xs)


@pytest.mark.parametrize("seed", range(3))
def test_drift_refresh_keeps_shifted_traffic_out_of_the_bubble(seed: int) -> None:
    """Differential: after a x20 shift, the same partitioner without the drift trigger
    keeps its stale partition for all 3000 requests; with it, far fewer arrivals fall
    outside every queue."""
    with_drift, rest = primed(seed, 3.0)
    state = with_drift.to_state()
    state["drift_delta"] = None
    without = RefinePrune.from_state(state)
    shared_on, shared_off = bubble_share(with_drift, rest), bubble_share(without, rest)
    assert without.refreshes == 1 and with_drift.refreshes >= 2
    assert shared_on < 0.5 * shared_off


def test_pending_drift_survives_a_restore() -> None:
    rp, rest = primed(1, 1.0)
    for x in rest[:400]:
        rp.learn_one(float(x))
    assert rp.drift_pending
    again = RefinePrune.from_state(json.loads(json.dumps(rp.to_state())))
    assert again.drift_pending and again.due(1.0)
    assert again.to_state() == rp.to_state()
    for x in rest[400:900]:  # the warmed-up detectors see the same future identically
        for p in (rp, again):
            p.learn_one(float(x))
            p.refresh(2.0)
        assert rp.to_state() == again.to_state()

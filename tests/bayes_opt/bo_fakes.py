"""Fakes and builders shared by the bayes_opt tests (imported by name: no package)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from tailwise.scorer.policy import Policy
from tailwise.simulator.traces import Trace


def make_trace(n: int = 200, seed: int = 0, long_share: float = 0.2, rate: float = 10.0,
               name: str = "t") -> Trace:
    """Poisson arrivals, short/long log-normal lengths, built directly as arrays."""
    rng = np.random.default_rng(seed)
    arr = np.cumsum(rng.exponential(1.0 / rate, n))
    arr -= arr[0]
    long = rng.random(n) < long_share
    prompt = np.where(long, rng.lognormal(np.log(3000), 0.4, n), rng.lognormal(np.log(200), 0.5, n))
    output = np.where(long, rng.lognormal(np.log(500), 0.4, n), rng.lognormal(np.log(60), 0.5, n))
    return Trace(name, arr, np.maximum(prompt, 1).astype(np.int64),
                 np.maximum(output, 1).astype(np.int64))


def summary(ttlt_mean: float | None, ttlt_p99: float | None = None, *,
            slo: float = 1.0, q99: float = 1.0) -> dict[str, Any]:
    return {"overall": {"slo_attainment": slo,
                        "ttlt": {"mean": ttlt_mean,
                                 "p99": ttlt_p99 if ttlt_p99 is not None else (
                                     None if ttlt_mean is None else 3 * ttlt_mean)},
                        "queue_delay": {"p99": q99}, "goodput_rps": 1.0,
                        "throughput_rps": 1.0}}


class FakeEvaluator:
    """Latency as a function of the policy: ``mean TTLT = 1 + (ln γ − ln γ*)²``, γ* = 0.3.

    The default γ (0.1) is off the optimum but inside the space's box around it, so a
    sampler finds better policies quickly; ``nan_if`` marks policies whose replay
    produces no finite metric.
    """

    OPTIMUM = 0.3

    def __init__(self, nan_if: Callable[[Policy], bool] | None = None) -> None:
        self.nan_if = nan_if
        self.windows: list[int] = []
        self.policies: list[Policy] = []
        self.baselines = 0

    def latency(self, p: Policy) -> float:
        return 1.0 + (math.log(p.boost.gamma) - math.log(self.OPTIMUM)) ** 2

    def run(self, window: Trace, policy: Policy) -> Mapping[str, Any]:
        self.windows.append(len(window))
        self.policies.append(policy)
        if self.nan_if is not None and self.nan_if(policy):
            return summary(None)
        return summary(self.latency(policy))

    def baseline(self, window: Trace) -> Mapping[str, Any]:
        self.baselines += 1
        return summary(4.0)

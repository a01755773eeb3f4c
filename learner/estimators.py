"""DistBoost's and γ-Ada's estimators, in one place for the in-process learner and the sidecar.

Both are river-style streaming estimators fed one finished request at a time
(``learn_one``), with bounded memory and O(bins) work per request:

* :class:`JobSizeFit` (DistBoost) fits the job-size distribution online — a
  :class:`river.sketch.Histogram` of sizes in engine seconds and a rolling arrival rate
  (:class:`river.stats.RollingMin` / ``RollingMax`` over the latest arrival times) — and
  ``predict_one`` returns γ*, the root of the Cramér–Lundberg equation
  ``λ·(E[e^{γS}] − 1) = γ`` with the moment generating function taken from the histogram
  (each bin as a uniform piece). Old traffic ages out through drift: when river's ADWIN
  (:class:`~tailwise.partitioner.drift.DriftDetector` on ``log1p`` size) fires, the
  histogram restarts, so after a shift the fit describes the new sizes only.
* :class:`GammaAda` steers γ from the measured tail TTLT of the latest ``ada_window``
  finished requests (:class:`river.stats.RollingQuantile`).

:class:`BoostEstimator` picks the one a policy needs (``distboost`` / ``gamma-ada``) and
turns its output into a proposed γ; :class:`~tailwise.learner.local.LocalLearner` and the
sidecar's :class:`~tailwise.learner.loop.LearningLoop` both call it the same way, so
simulation and production adapt γ identically.

>>> import random
>>> rng = random.Random(1)
>>> fit = JobSizeFit(1e-3, 100.0)
>>> t = 0.0
>>> for _ in range(20_000):  # M/M/1: exponential sizes (mean 1 s), Poisson rate 0.6/s
...     t += rng.expovariate(0.6)
...     fit.learn_one({"size_s": rng.expovariate(1.0), "arrival_s": t})
>>> round(fit.predict_one(), 1)  # exact: γ* = μ − λ = 0.4
0.4
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from river import sketch, stats
from scipy.optimize import brentq

from tailwise.partitioner.drift import DriftDetector
from tailwise.scorer.policy import BoostParams, BoostVariant, Mode, Policy

#: histogram bins of the size fit (river's Histogram merges the closest bins beyond this)
SIZE_BINS = 128
#: finished requests whose arrival times give the arrival rate
RATE_WINDOW = 2000
#: a γ is only predicted from at least this many sizes since the last restart
MIN_SIZES = 50


def fit_gamma(sizes_s: Sequence[float], rate_rps: float, lo: float, hi: float,
              weights: Sequence[float] | None = None) -> float:
    """Decay rate of the FCFS response-time tail for this workload, clipped to [lo, hi].

    γ-Boost (Yu & Scully) sets γ to the tail decay rate γ*, the positive root of the
    Cramér–Lundberg equation ``λ·(E[e^{γS}] − 1) = γ`` for arrival rate λ and job size S
    (engine seconds), with the moment generating function estimated from the (weighted)
    sizes. Under overload (λ·E[S] ≥ 1) there is no positive root; the lower bound is
    returned, making boosts large (favouring short jobs, which is what overload calls for).

    >>> round(fit_gamma([1.0] * 100, 0.5, 1e-3, 100.0), 3)  # 0.5(e^γ − 1) = γ
    1.256
    """
    w = [1.0] * len(sizes_s) if weights is None else list(weights)
    pts = [(s, c) for s, c in zip(sizes_s, w, strict=True)
           if math.isfinite(s) and s >= 0 and math.isfinite(c) and c > 0]
    if not pts or rate_rps <= 0 or not math.isfinite(rate_rps):
        return lo
    total = sum(c for _, c in pts)
    if rate_rps * sum(s * c for s, c in pts) / total >= 1.0:
        return lo
    smax = max(s for s, _ in pts)

    def f(g: float) -> float:
        # λ(E[e^{gS}] − 1) − g, computed with the max factored out to avoid overflow
        m = sum(c * math.exp(g * (s - smax)) for s, c in pts) / total
        log_mgf = g * smax + math.log(m)
        if log_mgf > 700:
            return math.inf
        return rate_rps * (math.exp(log_mgf) - 1.0) - g

    # f < 0 just above 0 (load < 1) and f → ∞: one sign change on [lo, hi]
    if f(lo) >= 0:
        return lo
    if f(hi) < 0:
        return hi
    return float(brentq(lambda g: min(f(g), 1e300), lo, hi, xtol=1e-12, rtol=1e-9))


class JobSizeFit:
    """DistBoost's online job-size fit and arrival rate; ``predict_one()`` is γ*."""

    def __init__(self, gamma_min: float, gamma_max: float, *, bins: int = SIZE_BINS,
                 rate_window: int = RATE_WINDOW, min_sizes: int = MIN_SIZES) -> None:
        if not 0 < gamma_min <= gamma_max:
            raise ValueError(f"gamma_min: must be in (0, gamma_max], got {gamma_min!r}")
        self.gamma_min, self.gamma_max = float(gamma_min), float(gamma_max)
        self.bins, self.min_sizes = bins, min_sizes
        self.hist = sketch.Histogram(max_bins=bins)
        self.mean = stats.Mean()
        self._first = stats.RollingMin(rate_window)
        self._last = stats.RollingMax(rate_window)
        self._n_arrivals = 0
        self._rate_window = rate_window
        self.drift = DriftDetector(("size",))
        #: histogram restarts caused by a detected size drift
        self.restarts = 0

    def learn_one(self, x: Mapping[str, float]) -> None:
        """One finished request: ``{"size_s": engine seconds, "arrival_s": its arrival}``."""
        s, a = x.get("size_s"), x.get("arrival_s")
        if s is not None and math.isfinite(s) and s >= 0:
            if self.drift.learn_one({"size": s * 1e3}):  # ms: log1p is then ~relative
                self.hist = sketch.Histogram(max_bins=self.bins)
                self.mean = stats.Mean()
                self.restarts += 1
            self.hist.update(float(s))
            self.mean.update(float(s))
        if a is not None and math.isfinite(a):
            self._first.update(float(a))
            self._last.update(float(a))
            self._n_arrivals += 1

    @property
    def n(self) -> int:
        """Sizes in the current fit."""
        return int(self.hist.n)

    def rate(self) -> float | None:
        """Arrivals per second over the latest ``rate_window`` finished requests."""
        k = min(self._n_arrivals, self._rate_window)
        span = float(self._last.get() or 0.0) - float(self._first.get() or 0.0)
        return (k - 1) / span if k > 1 and span > 0 else None

    def log_mgf(self, g: float) -> float:
        """``ln E[e^{gS}]`` under the fitted distribution (bins uniform on [left, right]),
        summed in log space so large ``g·S`` does not overflow."""
        logs, weights = [], []
        for b in self.hist:
            width = b.right - b.left
            gw = g * width
            # ln of the mean of e^{gS} over a uniform bin: g·left + ln(expm1(gw)/gw)
            piece = g * b.left + (math.log(math.expm1(gw) / gw) if gw > 1e-9 else 0.5 * gw)
            logs.append(piece)
            weights.append(float(b.count))
        if not logs:
            return 0.0
        top = max(logs)
        acc = sum(w * math.exp(v - top) for v, w in zip(logs, weights, strict=True))
        return float(top + math.log(acc / sum(weights)))

    def predict_one(self) -> float | None:
        """γ* for the fitted sizes and rate, clipped to [gamma_min, gamma_max]; None until
        ``min_sizes`` sizes and a rate are known."""
        rate = self.rate()
        if self.n < self.min_sizes or rate is None:
            return None
        if rate * float(self.mean.get()) >= 1.0:
            return self.gamma_min  # overload: no positive root
        lo, hi = self.gamma_min, self.gamma_max

        def f(g: float) -> float:
            lm = self.log_mgf(g)
            return rate * math.expm1(lm) - g if lm < 700 else math.inf

        if f(lo) >= 0:
            return lo
        if f(hi) < 0:
            return hi
        return float(brentq(lambda g: min(f(g), 1e300), lo, hi, xtol=1e-12, rtol=1e-9))


class GammaAda:
    """γ-Ada: steer γ so the measured tail TTLT meets a target (river-style estimator).

    Larger γ decays boosts faster (closer to FCFS, which protects the tail); smaller γ
    favours short jobs. After every ``ada_window`` finished requests: if the
    ``ada_quantile`` TTLT of the latest ``ada_window`` exceeds the target, γ ← γ·step; if it
    is below half the target, γ ← γ/step.
    """

    def __init__(self, params: BoostParams) -> None:
        self.p = params
        self.gamma = params.gamma
        self._tail = stats.RollingQuantile(params.ada_quantile, params.ada_window)
        self._seen = 0
        self._since = 0
        self.last_tail: float | None = None

    def learn_one(self, ttlt_s: float) -> bool:
        """Observe one finished request; True when γ changed."""
        if not math.isfinite(ttlt_s) or ttlt_s < 0:
            return False
        self._tail.update(float(ttlt_s))
        self._seen += 1
        self._since += 1
        if self._since < self.p.ada_window or self._seen < self.p.ada_window:
            return False
        self._since = 0
        got = self._tail.get()
        if got is None:
            return False
        tail = float(got)
        self.last_tail = tail
        old = self.gamma
        if tail > self.p.ada_target_s:
            self.gamma = min(self.gamma * self.p.ada_step, self.p.gamma_max)
        elif tail < 0.5 * self.p.ada_target_s:
            self.gamma = max(self.gamma / self.p.ada_step, self.p.gamma_min)
        return self.gamma != old


class BoostEstimator:
    """The γ loop a policy needs: DistBoost's fit or γ-Ada's steering (else inert).

    ``learn_one`` takes one finished request (``arrival_s``, ``finish_s``,
    ``prompt_tokens``, ``output_tokens``) and returns a new γ when the policy should change
    (DistBoost: every ``refit_every`` requests, if γ* moved by more than 5%).
    """

    def __init__(self, policy: Policy, *, refit_every: int = 200) -> None:
        self.variant = policy.boost.variant if policy.mode is Mode.BOOST else None
        self.cp = policy.step_time.prefill_token_s
        self.cd = policy.step_time.decode_token_s
        self.refit_every = refit_every
        self.gamma = policy.boost.gamma
        b = policy.boost
        self.fit = JobSizeFit(b.gamma_min, b.gamma_max) if self.variant is BoostVariant.DIST \
            else None
        self.ada = GammaAda(b) if self.variant is BoostVariant.ADA else None
        self._n = 0

    @property
    def name(self) -> str:
        """The policy name of the loop this runs (``distboost``, ``gamma-ada`` or ``""``)."""
        return {BoostVariant.DIST: "distboost", BoostVariant.ADA: "gamma-ada"}.get(
            self.variant, "") if self.variant is not None else ""

    @property
    def active(self) -> bool:
        return self.fit is not None or self.ada is not None

    def matches(self, policy: Policy) -> bool:
        """Whether this estimator serves ``policy``'s variant (else build a new one)."""
        variant = policy.boost.variant if policy.mode is Mode.BOOST else None
        return variant is self.variant

    def learn_one(self, x: Mapping[str, float], current_gamma: float | None = None) -> float | None:
        if current_gamma is not None:
            self.gamma = current_gamma
            if self.ada is not None:
                self.ada.gamma = current_gamma
        self._n += 1
        size = x.get("prompt_tokens", 0.0) * self.cp + x.get("output_tokens", 0.0) * self.cd
        arrival = x.get("arrival_s", math.nan)
        if self.ada is not None:
            if self.ada.learn_one(x.get("finish_s", math.nan) - arrival):
                self.gamma = self.ada.gamma
                return self.gamma
            return None
        if self.fit is None:
            return None
        self.fit.learn_one({"size_s": size, "arrival_s": arrival})
        if self._n % self.refit_every:
            return None
        g = self.fit.predict_one()
        if g is None or math.isclose(g, self.gamma, rel_tol=0.05):
            return None
        self.gamma = g
        return g

    def apply(self, policy: Policy, gamma: float) -> Policy:
        """``policy`` with the new γ (version and source are the publisher's)."""
        return dataclasses.replace(policy, boost=dataclasses.replace(policy.boost, gamma=gamma))

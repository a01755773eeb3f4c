"""γ-Boost soft priority boosting (seeds 000/001): prediction-free, tail-aware.

Priority key (lower is served first)::

    key = arrival − min(b_γ(w), max_boost_s),    b_γ(w) = (1/γ)·ln(1 / (1 − e^{−γ·w}))

where ``w`` is attained service in engine seconds (:meth:`ReqInfo.attained_s`). A request
that has received little service gets a large boost (LAS/SRPT-like for short jobs); as
``w`` grows the boost decays to 0 and long requests fall back to FCFS order, which
bounds their tail. Intuition: a job ``k``× smaller than another is served as if it had
arrived ``ln(k)/γ`` seconds earlier.

Our resolution of w for requests that have not run yet: ``w = max(attained, committed)``
where committed work is the uncached prompt's prefill work, known at arrival (no output
length is predicted). Without the floor every new request has ``b_γ(0) = ∞``, clipped to
``max_boost_s``, while a preempted request falls to ``b_γ(w)``: it would then wait behind
every arrival of the next ``max_boost_s − b_γ(w)`` seconds — measured on the Azure
conversation trace under KV pressure, P99 TTLT 4× FCFS. With the floor the boost is
continuous from arrival through preemption and re-admission.

MemGuard: ``w`` only enters the key through its MemGuard level (thresholds ``θ·r^k``), so
a request's priority changes a handful of times, not every step, and a request restored
after preemption is protected until its next threshold (anti-thrash, see
:mod:`tailwise.scorer.preemption`).

Variants differ only in where γ comes from: UniBoost uses the policy's γ; DistBoost's γ
is fitted from the job-size distribution and γ-Ada's is steered from measured tail
latency, by the estimators in :mod:`tailwise.learner.estimators`; the learner (sidecar,
or the in-process loop for simulation) runs them and pushes the new γ as a new policy
version.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence

from tailwise.scorer.interface import KeyedQueue
from tailwise.scorer.policy import BoostParams, Policy, PreemptMode
from tailwise.scorer.preemption import SWAP_S_PER_TOKEN, memguard_level, quantized_work, readmission_cost_s
from tailwise.scorer.request import ReqInfo


def boost(w: float, gamma: float, cap: float) -> float:
    """``min(b_γ(w), cap)``; ``b_γ(0) = ∞``.

    >>> round(boost(1.0, 1.0, 100.0), 6)  # ln(1/(1-e^-1))
    0.458675
    >>> boost(0.0, 0.5, 30.0)
    30.0
    """
    if w <= 0.0:
        return cap
    x = gamma * w
    # ln(1/(1 − e^{−x})) = −log1p(−e^{−x}); stable for small and large x
    b = -math.log1p(-math.exp(-x)) / gamma if x < 700 else 0.0
    return min(b, cap)


class BoostPolicy(KeyedQueue):
    """UniBoost / DistBoost / γ-Ada with MemGuard and cache-aware victims."""

    name = "boost"

    def __init__(self, policy: Policy) -> None:
        super().__init__(aging_s=policy.safety.aging_s)
        self.params: BoostParams = policy.boost
        self.gamma = policy.boost.gamma
        self.max_boost = policy.safety.max_boost_s
        self.cp = policy.step_time.prefill_token_s
        self.cd = policy.step_time.decode_token_s
        self.mode = policy.preemption.mode
        self.cache_aware = policy.preemption.cache_aware
        self.anti_thrash = policy.preemption.anti_thrash
        self.band_s = policy.preemption.priority_band_s
        theta, ratio = policy.boost.memguard_theta_s, policy.boost.memguard_ratio
        #: MemGuard thresholds θ·r^k; the level of w is the number of thresholds <= w
        self._thr: list[float] = []
        while len(self._thr) < 4096 and theta * ratio ** len(self._thr) < 1e7:
            self._thr.append(theta * ratio ** len(self._thr))
        self._qw = [quantized_work(k, theta, ratio) for k in range(len(self._thr) + 1)]
        self._bcache: dict[float, float] = {}
        self.name = {"uni": "uniboost", "dist": "distboost", "ada": "gamma-ada"}[
            policy.boost.variant.value]

    # -- priority -------------------------------------------------------------------------
    def level(self, req: ReqInfo) -> int:
        """MemGuard level of the attained work (== :func:`memguard_level`, by bisection)."""
        w = req.attained_s(self.cp, self.cd)
        if w >= self._thr[-1]:  # beyond the table (absurd work values): exact formula
            return min(memguard_level(w, self._thr[0], self.params.memguard_ratio),
                       len(self._qw) - 1)
        return bisect_right(self._thr, w)

    def committed_work(self, req: ReqInfo) -> float:
        """Work the engine is committed to before the first token: the uncached prompt."""
        return req.uncached_prompt_tokens * self.cp

    def effective_work(self, req: ReqInfo) -> float:
        """``max(quantised attained work, committed prompt work)``: what the boost uses."""
        return max(self._qw[self.level(req)], self.committed_work(req))

    def boost_of(self, w: float) -> float:
        """``boost(w, γ, max_boost)``, memoised (a running set has few distinct values)."""
        b = self._bcache.get(w)
        if b is None:
            if len(self._bcache) > 8192:
                self._bcache.clear()
            b = self._bcache[w] = boost(w, self.gamma, self.max_boost)
        return b

    def deadline_offset(self, req: ReqInfo) -> float:
        """Added to the arrival time before subtracting the boost (tailwise SLO urgency)."""
        return 0.0

    def priority_key(self, req: ReqInfo) -> float:
        return self.wait_origin(req) + self.deadline_offset(req) - self.boost_of(
            self.effective_work(req))

    def waiting_key(self, req: ReqInfo, now: float) -> float:
        return self.priority_key(req)

    # -- running order / victims --------------------------------------------------------
    def protected(self, req: ReqInfo) -> bool:
        return self.anti_thrash and req.sched_protect_level >= 0 and \
            self.level(req) <= req.sched_protect_level

    def victim_cost(self, req: ReqInfo) -> float:
        """What evicting ``req`` costs (higher = keep longer). Cache-aware: re-admission
        cost. Otherwise vLLM's default rule within a priority band: the most recently
        admitted is evicted first."""
        if self.cache_aware:
            return readmission_cost_s(req, self.cp, self.mode)
        return -(req.last_admit_time or 0.0)

    def order_running(self, running: Sequence[ReqInfo], now: float) -> list[ReqInfo]:
        """:func:`tailwise.scorer.preemption.rank_running` with this policy's key, cost and
        protection, computed in one pass (it runs every engine step in the adapter)."""
        return [running[t[4]] for t in self.running_ranks(running)]

    def running_ranks(self, running: Sequence[ReqInfo]
                     ) -> list[tuple[bool, float, float, float, int]]:
        """``(not protected, priority band, −cost, key, index into running)`` per running
        request, sorted: :meth:`order_running`'s ranks, for policies that re-rank."""
        cp, cd, thr, qw, band = self.cp, self.cd, self._thr, self._qw, self.band_s
        swap = self.mode is PreemptMode.SWAP
        ranked = []
        for i, r in enumerate(running):
            lvl = bisect_right(thr, r.prefill_tokens_done * cp + r.num_output_tokens * cd)
            if lvl == len(thr):
                lvl = self.level(r)
            w = qw[lvl]
            cw = self.committed_work(r)
            key = r.arrival_time + self.deadline_offset(r) - self.boost_of(w if w > cw else cw)
            prot = self.anti_thrash and r.sched_protect_level >= 0 and lvl <= r.sched_protect_level
            if not self.cache_aware:
                cost = -(r.last_admit_time or 0.0)
            elif swap:
                cost = r.num_computed_tokens * 2.0 * SWAP_S_PER_TOKEN
            else:
                cost = max(r.num_computed_tokens - r.cached_tokens, 0) * cp
            ranked.append((not prot, math.floor(key / band) if band > 0 else key, -cost, key, i))
        ranked.sort()
        return ranked

    def on_admit(self, req: ReqInfo, now: float) -> None:
        if req.num_preemptions > 0 and self.anti_thrash:
            req.sched_protect_level = self.level(req)
            self.counters["protected_restores"] += 1

    def on_preempt(self, req: ReqInfo, now: float) -> None:
        req.sched_protect_level = -1

"""tailwise mode: the combination we ship as default.

* Partition-aware γ-boost. As in boost mode the boost uses ``max(attained, committed)``
  work, but the committed work is the prefill work of the request's partition queue's
  mean length (``b̄`` of the Refine-and-Prune queue its uncached prompt routes to; its own
  prompt if it falls in the bubble)::

      b = min(b_γ(max(w_q, b̄·c_p)), max_boost_s)

  Prompt lengths are known at arrival, so this stays prediction-free: short-prompt
  queues get a head start of about ``ln(b̄_long/b̄_short)/γ`` seconds over long ones, and
  the head start fades as a request accumulates service (long decodes fall back to FCFS,
  bounding the tail). Routing by queue rather than by exact length makes the order
  robust to small length differences and lets the learner move boundaries.
* Optional SLO urgency (``slo.urgency``): the key is measured from the TTFT deadline of
  the request's SLO class (``arrival + TTFT_SLO``), i.e. EDF on TTFT deadlines, boosted.
* Cache-aware preemption with MemGuard hysteresis and anti-thrash (as boost mode).

Regime mechanisms (:class:`~tailwise.scorer.policy.RegimeParams`, each a switch). A fixed
envelope (boosts capped at 120 s, aging at 240 s) turns any boost into FCFS once queueing
exceeds it, which is exactly where bursts and overload put an engine. So the scales come
from measurement: ``T``, a quantile of recent first-to-last-token times (a service time,
so it does not grow with the queueing the policy causes):

* adaptive horizon: γ is set so that a request with θ (MemGuard's first threshold) of
  service is boosted ``horizon_factor·T``; boosts decay with attained service as in
  γ-boost, so long requests fall back to FCFS order after about ``T`` of service;
* relative envelope: the oldest waiting request is served first once it has waited
  ``E = clip(aging_factor·T, aging_floor_s, envelope_cap_s)``;
* admission pacing: the waiting head is admitted only if ``pacing_blocks`` free blocks
  per decoding request remain after its own, so it is not evicted a few steps later.

Safety bound an operator can read: no request waits longer than ``E`` behind a later
arrival, and ``E ≤ envelope_cap_s`` (default 3600 s) always; ``E`` is reported by
:meth:`TailwisePolicy.envelope_s`. With ``relative_aging`` off, ``E = safety.aging_s``.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Sequence

from tailwise.scorer.boost import BoostPolicy, boost
from tailwise.scorer.interface import QueueDiscipline
from tailwise.scorer.kairos import slack_decode_cap
from tailwise.scorer.policy import Policy
from tailwise.scorer.request import ReqInfo

BUBBLE = -1


def gamma_for_boost(horizon_s: float, work_s: float) -> float:
    """The γ at which a request with ``work_s`` of service gets a boost of ``horizon_s``.

    ``b_γ(w)`` falls in γ, so bisection on log γ; a request with less work than
    ``work_s`` is boosted a little more (logarithmically), one with more, less.

    >>> from tailwise.scorer.boost import boost
    >>> g = gamma_for_boost(100.0, 0.05)
    >>> round(boost(0.05, g, 1e9), 3)
    100.0
    """
    lo, hi = 1e-9, 1e9
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if boost(work_s, mid, math.inf) > horizon_s:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1.0 + 1e-9:
            break
    return math.sqrt(lo * hi)


class TailwisePolicy(BoostPolicy):
    """The shipped default: γ-boost + the regime mechanisms of :class:`RegimeParams`."""

    def __init__(self, policy: Policy) -> None:
        super().__init__(policy)
        self.name = "tailwise"
        self.queues = policy.queues
        self._los = [q.lo for q in policy.queues]
        self._his = [q.hi for q in policy.queues]
        self.partition_aware = policy.boost.partition_aware
        self.slo = policy.slo
        self.regime = policy.regime
        self.base_gamma = policy.boost.gamma
        self.base_aging = policy.safety.aging_s
        #: measured service-time scale T (s); 0 until enough requests finished
        self.service_scale = 0.0
        self._recent: deque[float] = deque(maxlen=policy.regime.latency_window)
        self._since_update = 0
        if policy.regime.relative_aging:
            self.time_dependent = True
        #: budget shaping: Kairos's slack-guided decode cap (``slo.decode_cap``)
        self.caps_decode = policy.slo.decode_cap
        self.model = policy.step_time
        self._tpots: dict[str, float] = {}
        self._apply_envelope(0.0)

    def decode_cap(self, running: Sequence[ReqInfo], now: float) -> int | None:
        """With ``slo.decode_cap``: decode only as many requests per step as their TPOT
        slack needs (Kairos's rule), leaving step time and budget to prefills."""
        if not self.caps_decode:
            return None
        cap = slack_decode_cap(running, now, self.model, self.slo, self._tpots)
        if cap is not None:
            self.counters["decode_capped_steps"] += 1
        return cap

    # -- the envelope and boost horizon relative to measured service time ---------------
    def envelope_s(self) -> float:
        """The waiting bound in force: the oldest waiting request is served first once it
        has waited this long (never more than ``regime.envelope_cap_s``)."""
        return self.aging_s if self.aging_s is not None else self.base_aging

    def _apply_envelope(self, scale: float) -> None:
        g = self.regime
        aging = self.base_aging
        if g.relative_aging:
            aging = min(g.envelope_cap_s,
                        max(g.aging_floor_s, g.aging_factor * scale) if scale > 0 else aging)
        self.aging_s = aging
        if g.adaptive_horizon and scale > 0:
            # a request with θ of service is boosted by horizon_factor·T; less work, a bit
            # more (logarithmically); the envelope, not a flat cap, bounds the waiting
            self.gamma = min(self.base_gamma, gamma_for_boost(
                g.horizon_factor * scale, self.params.memguard_theta_s))
            self.max_boost = g.envelope_cap_s
        self._bcache.clear()

    def carry_over(self, old: QueueDiscipline) -> None:
        """A new policy version keeps the measured service times (a partition refresh or
        a tuned parameter must not send the envelope back to its unmeasured default)."""
        if isinstance(old, TailwisePolicy):
            self._recent.extend(old._recent)
            if old.service_scale > 0:
                self.service_scale = old.service_scale
                self._apply_envelope(self.service_scale)

    def on_finish(self, req: ReqInfo, now: float) -> None:
        super().on_finish(req, now)
        g = self.regime
        if not (g.relative_aging or g.adaptive_horizon):
            return
        start = req.first_token_time if req.first_token_time is not None else now
        self._recent.append(max(now - start, 0.0))
        self._since_update += 1
        if self._since_update >= g.latency_update_every and len(self._recent) >= 16:
            self._since_update = 0
            data = sorted(self._recent)
            self.service_scale = data[min(int(g.latency_quantile * len(data)), len(data) - 1)]
            self._apply_envelope(self.service_scale)

    # -- admission pacing -----------------------------------------------------------------
    def admission_allowed(self, free_blocks: int, head_tokens: int, decoding: int,
                          block_size: int) -> bool:
        """Admit only if ``pacing_blocks`` blocks per decoding request stay free after the
        head's own blocks, so what is admitted now is not evicted again within the next
        few steps (a decode claims a block every ``block_size`` steps). Without pacing
        vLLM admits whatever fits now and evicts it soon after under KV pressure."""
        g = self.regime
        if not g.admission_pacing:
            return True
        reserve = math.ceil(decoding * g.pacing_blocks)
        return free_blocks - -(-head_tokens // block_size) >= reserve

    # -- partition routing ----------------------------------------------------------------
    def route(self, x: float) -> int:
        i = bisect_right(self._los, x) - 1
        if i >= 0 and x < self._his[i]:
            return i
        return BUBBLE

    def committed_work(self, req: ReqInfo) -> float:
        """Prefill work of the request's partition queue's mean length (b̄·c_p); its own
        uncached prompt when it falls in the bubble or partitioning is off."""
        if not self.partition_aware:
            return super().committed_work(req)
        q = req.sched_queue
        if q < 0 or q >= len(self.queues):
            q = self.route(float(req.uncached_prompt_tokens))
            req.sched_queue = q
        if q == BUBBLE:
            return super().committed_work(req)
        return self.queues[q].mean_len * self.cp

    def deadline_offset(self, req: ReqInfo) -> float:
        return self.slo.targets(req.slo_class)[0] if self.slo.urgency else 0.0

    def add(self, req: ReqInfo, now: float) -> None:
        req.sched_queue = self.route(float(req.uncached_prompt_tokens))
        super().add(req, now)

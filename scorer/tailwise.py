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
* Safety envelope, always on: boosts are capped at ``max_boost_s`` and the oldest
  request is served first once it has waited ``aging_s``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Sequence

from tailwise.scorer.boost import BoostPolicy
from tailwise.scorer.policy import Policy
from tailwise.scorer.request import ReqInfo

BUBBLE = -1


class TailwisePolicy(BoostPolicy):
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
        self.base_max_boost = policy.safety.max_boost_s
        self.base_aging = policy.safety.aging_s
        #: streaming tail-latency scale (s): a quantile of recent TTLTs
        self.latency_scale = 0.0
        self._recent: deque[float] = deque(maxlen=policy.regime.latency_window)
        self._since_update = 0
        if policy.regime.relative_aging or policy.regime.adaptive_horizon:
            self.time_dependent = True
        if policy.regime.strict_victims:
            self.band_s = 0.0
        self._apply_envelope(0.0)

    # -- queue-relative envelope ------------------------------------------------------------
    def envelope_s(self) -> float:
        """The waiting bound in force: the oldest request is served first once it has
        waited this long, and (tail guard) a running request this old is not a victim."""
        return self.aging_s if self.aging_s is not None else self.base_aging

    def _apply_envelope(self, scale: float) -> None:
        g = self.regime
        aging = self.base_aging
        if g.relative_aging:
            aging = min(g.envelope_cap_s, max(g.aging_floor_s, g.aging_factor * scale)
                        if scale > 0 else aging)
        self.aging_s = aging
        if g.adaptive_horizon and scale > 0:
            self.gamma = min(self.base_gamma, 1.0 / (g.horizon_factor * scale))
            import os
            self.max_boost = aging * float(os.environ.get('TW_CAPF', '1e9')) if os.environ.get('TW_CAPF') else g.envelope_cap_s
        self._bcache.clear()

    def admission_reserve(self, decoding: int, block_size: int) -> int:
        """Admission pacing: keep the blocks the decoding requests will claim over the
        next ``pacing_steps`` steps free, so an admission is not evicted again within
        them (each decode claims a block every ``block_size`` steps)."""
        steps = self.regime.pacing_steps
        if not self.regime.admission_pacing or steps <= 0:
            return 0
        return -(-decoding * steps // block_size)

    def on_finish(self, req: ReqInfo, now: float) -> None:
        super().on_finish(req, now)
        g = self.regime
        start = req.first_token_time if req.first_token_time is not None else now
        self._recent.append(max(now - start, 0.0))
        self._since_update += 1
        if self._since_update >= g.latency_update_every and len(self._recent) >= 16:
            self._since_update = 0
            data = sorted(self._recent)
            self.latency_scale = data[min(int(g.latency_quantile * len(data)), len(data) - 1)]
            self._apply_envelope(self.latency_scale)

    def order_running(self, running: Sequence[ReqInfo], now: float) -> list[ReqInfo]:
        ranked = super().order_running(running, now)
        if not self.regime.tail_guard:
            return ranked
        import os
        limit = self.envelope_s() * float(os.environ.get('TW_GUARDF', '1'))
        old = [r for r in ranked if now - r.arrival_time >= limit]
        if not old:
            return ranked
        old.sort(key=lambda r: r.arrival_time)
        return old + [r for r in ranked if now - r.arrival_time < limit]

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

    def requeue(self, req: ReqInfo, now: float) -> None:
        import os
        if os.environ.get("TW_KEEP"):
            old = req.sched_key
            self.add(req, now)
            if old < req.sched_key:
                self._reprioritise(req, old)
            return
        self.add(req, now)

    def add(self, req: ReqInfo, now: float) -> None:
        req.sched_queue = self.route(float(req.uncached_prompt_tokens))
        super().add(req, now)

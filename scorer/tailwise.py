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

"""EWSJF (seed 003): length-interval queues, density-weighted scoring of queue heads.

Requests are routed by their routing feature (uncached prompt tokens) into the policy's
queues ``[lo, hi)``; values in gaps go to a bubble queue. Each pick scores only the
*oldest* request of every non-empty queue::

    Φ_i = qf_i · (w_base_i + w_urg_i·cs + w_fair_i·ln(b_i + 1))

with ``cs`` = wait time / estimated prefill time of that request (urgency grows faster for
short requests), ``b_i`` the queue's backlog, and per-queue weights linear in the queue's
mean length (``LinearWeight``, tuned by Bayesian optimisation; the partition supplies
them per queue). The highest Φ is served. Cost per pick: O(queues + log n).

Queue factor (the paper leaves its direction open). We define::

    qf_i = (1 + ρ_i/ρ_max) / (1 + b̄_i/L_ref)

where ρ_i is the queue's density (share of requests per token of interval width), ρ_max
the largest density, b̄_i the queue's mean length and L_ref the median of the queues'
mean lengths. So ``qf`` increases with density and decreases with mean length: short,
busy queues rank higher (tested as monotonicity properties), and the factor stays within
(0, 2] so urgency and fairness terms can still overtake it. The bubble queue uses the
bubble weights, the minimum density, and the mean length of its current members.
"""

from __future__ import annotations

import heapq
import math
import statistics
from bisect import bisect_right

from tailwise.scorer.interface import LazyHeapQueue
from tailwise.scorer.policy import Policy, QueueSpec
from tailwise.scorer.request import ReqInfo

BUBBLE = -1


def queue_factor(density: float, max_density: float, mean_len: float, ref_len: float) -> float:
    """``(1 + ρ/ρ_max) / (1 + b̄/L_ref)``; see the module docstring.

    >>> queue_factor(1.0, 1.0, 100.0, 100.0)
    1.0
    >>> queue_factor(0.5, 1.0, 100.0, 100.0) < 1.0 < queue_factor(1.0, 1.0, 50.0, 100.0)
    True
    """
    rho = density / max_density if max_density > 0 else 0.0
    return (1.0 + rho) / (1.0 + max(mean_len, 0.0) / max(ref_len, 1.0))


def score(qf: float, w_base: float, w_urg: float, w_fair: float, wait_s: float,
          prefill_s: float, backlog: int) -> float:
    """Φ for one queue head.

    >>> round(score(1.0, 1.0, 1.0, 0.5, wait_s=2.0, prefill_s=0.5, backlog=3), 6)
    5.693147
    """
    cs = wait_s / max(prefill_s, 1e-6)
    return qf * (w_base + w_urg * cs + w_fair * math.log(backlog + 1))


class EwsjfPolicy(LazyHeapQueue):
    """Score the oldest request of each queue; serve the best."""

    name = "ewsjf"
    time_dependent = True

    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.queues: tuple[QueueSpec, ...] = policy.queues
        self._los = [q.lo for q in self.queues]
        self._his = [q.hi for q in self.queues]
        self.model = policy.step_time
        self.bubble_spec = policy.ewsjf.bubble
        self.aging_s = policy.safety.aging_s
        n = len(self.queues)
        densities = [q.density for q in self.queues]
        self.max_density = max(densities, default=0.0)
        self.min_density = min(densities, default=0.0)
        self.ref_len = statistics.median([q.mean_len for q in self.queues]) if n else 1024.0
        self.qf = [queue_factor(q.density, self.max_density, q.mean_len, self.ref_len)
                   for q in self.queues]
        # per-queue heaps of (arrival, seq, req); index n is the bubble queue
        self._heaps: list[list[tuple[float, int, ReqInfo]]] = [[] for _ in range(n + 1)]
        self._count = [0] * (n + 1)
        self._bubble_len_sum = 0.0
        self._fifo: list[tuple[float, int, ReqInfo]] = []
        self._choice: tuple[float, ReqInfo | None] | None = None

    def route(self, x: float) -> int:
        i = bisect_right(self._los, x) - 1
        if i >= 0 and x < self._his[i]:
            return i
        return BUBBLE

    def _slot(self, q: int) -> int:
        return len(self.queues) if q == BUBBLE else q

    # -- queue ops -------------------------------------------------------------------------
    def add(self, req: ReqInfo, now: float) -> None:
        q = self.route(float(req.uncached_prompt_tokens))
        req.sched_queue = q
        seq = self._enqueue(req)
        slot = self._slot(q)
        heapq.heappush(self._heaps[slot], (req.arrival_time, seq, req))
        heapq.heappush(self._fifo, (req.arrival_time, seq, req))
        self._count[slot] += 1
        if q == BUBBLE:
            self._bubble_len_sum += req.uncached_prompt_tokens
        self._choice = None

    def peek(self, now: float) -> ReqInfo | None:
        if self._choice is not None and self._choice[0] == now:
            return self._choice[1]
        best: ReqInfo | None = None
        oldest = self._top(self._fifo)
        if oldest is not None and now - oldest.arrival_time >= self.aging_s:
            best = oldest  # safety envelope: nobody waits longer than aging_s behind others
        else:
            best_phi = -math.inf
            n = len(self.queues)
            for slot, heap in enumerate(self._heaps):
                if not self._count[slot]:
                    continue
                head = self._top(heap)
                if head is None:
                    continue
                if slot < n:
                    spec = self.queues[slot]
                    qf = self.qf[slot]
                    wb, wu, wf = spec.w_base, spec.w_urg, spec.w_fair
                else:
                    mean = self._bubble_len_sum / self._count[slot]
                    qf = queue_factor(self.min_density, self.max_density, mean, self.ref_len)
                    b = self.bubble_spec
                    wb, wu, wf = b.w_base, b.w_urg, b.w_fair
                prefill_s = self.model.prefill_ms(max(head.uncached_prompt_tokens, 1)) / 1000.0
                phi = score(qf, wb, wu, wf, now - head.arrival_time, prefill_s,
                            self._count[slot])
                if phi > best_phi:
                    best_phi, best = phi, head
        self._choice = (now, best)
        return best

    def remove(self, req: ReqInfo) -> bool:
        if not super().remove(req):
            return False
        slot = self._slot(req.sched_queue)
        self._count[slot] -= 1
        if req.sched_queue == BUBBLE:
            self._bubble_len_sum -= req.uncached_prompt_tokens
        self._choice = None
        return True


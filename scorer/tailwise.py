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
* SLO urgency (``slo.urgency``, on by default): the key is measured from the TTFT
  deadline of the request's SLO class (``arrival + TTFT_SLO``), i.e. EDF on TTFT
  deadlines, boosted. Untagged requests all get the default target, so their order is
  the boost's. Measured (``benchmarks/kairos_parts.py``, seeds 0-4, 120-s phases) with
  ``T`` free of re-queue waits: whole-run objective +0.05 to +0.23 on code-reasoning-slo
  and +0.00 to +0.06 on slo-flip on every seed, chat-longdoc-burst (untagged) identical;
  with 180-s phases mixed (means +0.025 and -0.008, README "Online learning").
* Optional late demotion (``slo.demote_late``): a waiting request without a first token
  that can no longer meet its TTFT target (``now > arrival + TTFT_SLO − its own prefill
  time``, a lower bound on its TTFT) is re-keyed behind every request that still can,
  keeping its order among the late ones. EDF alone collapses under overload: once the
  queue is longer than the target, the earliest deadline is always one already missed,
  and serving it makes the next one late too; Kairos (seed 002) demotes the hopeless,
  and so does this. Each waiting request is checked once, when its slack runs out
  (a heap on that instant), so the cost is O(log n) per request. The waiting envelope
  ``E`` is untouched: a demoted request is still served first once it has waited ``E``.
* Cache-aware preemption with MemGuard hysteresis and anti-thrash (as boost mode).

Regime mechanisms (:class:`~tailwise.scorer.policy.RegimeParams`, each a switch). A fixed
envelope (boosts capped at 120 s, aging at 240 s) turns any boost into FCFS once queueing
exceeds it, which is exactly where bursts and overload put an engine. So the scales come
from measurement: ``T``, a quantile of recent first-to-last-token times less the waits
after preemptions (it leaves out the queueing the policy causes, before the first token
and after a preemption, so it does not feed on itself; see
:class:`~tailwise.scorer.policy.RegimeParams`):

* adaptive horizon: γ is set so that a request with θ (MemGuard's first threshold) of
  service is boosted ``horizon_factor·T``; boosts decay with attained service as in
  γ-boost, so long requests fall back to FCFS order after about ``T`` of service;
* queue-relative horizon: once FCFS's drain time is measured (as for the queue floor
  below), the horizon is at least ``T + D₇₅``: a short request's head start covers the
  wait FCFS would impose anyway plus a service time. Tied to ``T`` alone, a prefill-bound
  queue longer than ``T`` reorders only partly (long-context-chat, held-out seeds 1 and
  2: mean TTFT 1.33x / 1.23x HRRN's with ``2T``, 1.09x / 1.03x with ``T + D₇₅``); where
  the queue is KV-bound, ``D`` is small next to ``T`` and nothing changes
  (bursty-reasoning's ``D₇₅`` ~3 s against ``T`` ~90 s);
* relative envelope: the oldest waiting request is served first once it has waited
  ``E = clip(aging_factor·T, aging_floor_s, envelope_cap_s)``;
* admission pacing: the waiting head is admitted only if ``pacing_blocks`` free blocks
  per decoding request remain after its own, so it is not evicted a few steps later.
* live prefix re-keying: a request is keyed by its uncached prompt when it is queued; if
  an earlier turn of its session is computed while it waits, most of that prompt becomes
  a cache hit. Each round ``prefix_rekey_k`` waiting requests (round-robin) are re-probed
  with the engine's read-only lookup (``uses_prefix_probe``) and re-keyed when their
  uncached length shrank: bounded cost per round, every waiting request re-probed within
  ``len(waiting)/k`` rounds (HRRN/LPM re-probe all of them, up to 128, every round). Keys
  only improve while a request waits (an eviction does not push it back).
* queue-relative floor: once FCFS's drain time is measured, the envelope's fixed floor
  ``aging_floor_s`` gives way to it: ``E = max(aging_factor·T, min(aging_floor_s, f·D),
  f·D₇₅)``, capped (``f = queue_floor_factor``). FCFS drain times are sampled at recent
  admissions (waiting uncached prompt tokens ÷ prefill tokens/s admitted lately: the
  wait FCFS would impose on an arrival then); ``D`` is their ``scale_quantile`` (a
  high quantile, because the tail FCFS imposes is set by its longest recent queues) and
  lowers the floor, ``D₇₅`` their upper quartile (``RAISE_QUANTILE``) and raises it.
  Both ways: (1) a fixed floor must not hold a request back longer than FCFS's whole
  queue would (measured on azure-conv at 1.1 load: the P99 TTLT was long prompts aged
  out at 30 s while FCFS's P99 wait was 21 s); (2) under overload queueing outgrows the
  service time, and an envelope of ``2T`` (or 30 s) turns the boost into FCFS as soon as
  the queue is longer than that, which is the collapse the relative envelope exists to
  prevent (measured on slo-flip's interactive flood at 1.1 load, seeds 0 and 2: mean
  TTFT 60.5 s and 53.9 s with ``E`` floored at 30 s, 48.5 s and 34.6 s with ``E ≥ D₇₅``;
  P99 TTLT 111.4 / 90.4 s → 111.7 / 92.9 s, FCFS 105.5 / 91.8 s). Letting a request be
  overtaken for about as long as FCFS would have made it wait anyway is what keeps the
  tail near FCFS's.
* residual-life victims: under KV pressure the running request with the longest expected
  remaining output is evicted first (:class:`~tailwise.scorer.residual.ResidualLife`: the
  mean residual of recently finished requests' output lengths at what the request has
  generated; its own length is never predicted). Its KV would be held longest, and what
  re-admitting it costs (its context) is what it frees. Measured on bursty-reasoning:
  vLLM's rule (evict the newest) keeps long decoders resident through a burst, and the
  arrivals wait on KV, not on the order of the queue (``benchmarks/ttft_cause.py``).
* demotion: a victim whose expected remainder exceeds a fresh request's re-enters the
  queue behind the arrivals it made room for, so they use the room (otherwise, being old,
  it takes the blocks straight back). Its aging clock restarts at its preemption: each
  wait is bounded by ``E``. With ``demote_as_arrival`` it is keyed as a fresh request of
  θ work (boost ``b(θ)``: the horizon, or more where γ is capped at the base γ) arriving
  ``demote_delay_factor·T`` after its preemption (the instant fixed then): behind the
  requests of up to θ work waiting then and arriving within about two service times
  (``T`` without re-queue waits is about half what it is with them), ahead of later
  ones, and in preemption order among victims. Before ``T`` is measured it is
  keyed as with the switch off. Keyed instead from its preemption with
  the boost of its attained work (the switch off), a victim goes behind every arrival of
  about the next horizon (``2T``, or ``T + D₇₅``) and victims are re-admitted least-served
  first, so a long runner preempted under sustained load waits for a lull. Measured on
  bursty-reasoning seeds 0-7 (``benchmarks/regime_ablation.py --seed S``, README): mean
  TTFT 1.1-3.4x oracle SRPT's with the old key and ``tail_protect_factor`` 0.5, 0.55-1.06x
  with this key and 0.15 (victims come back sooner, so protection must start earlier).
  With ``T`` free of re-queue waits the delay factor is 2: 1 put victims back too soon
  (bursty-reasoning seeds 0-7, static, ``--sweep demote_delay_factor=1,2``: mean TTFT
  0.73-2.55x SRPT's with 1, 0.58-0.99x with 2).
* tail protection: a request that has produced a token and arrived more than
  ``tail_protect_factor·T`` ago is evicted only after every other running request, and
  among such requests the oldest is evicted last: the oldest requests are the ones whose
  completion sets the tail TTLT, and delaying them adds directly to it. Age, not time
  since the first token: measured on bursty-reasoning seeds 0-3, counting from the first
  token gave 0.7-5.6% worse P99 TTLT (for 2-42% better mean TTFT), the queueing before
  the first token being part of the TTLT. Oldest last, not longest remainder first:
  under sustained overload every running request is past the cap, and ranking them by
  remainder evicted the same long runner again and again, each time demoted behind the
  arrivals for up to ``E`` (code-reasoning-slo's reasoning phase at 1.15 load, seed 0: a
  10k-token request preempted 5 times, P99 TTLT 313 s against FCFS's 154 s; by age
  165 s).

Safety bound an operator can read: no request waits longer than ``E`` behind a later
arrival, and ``E ≤ envelope_cap_s`` (default 3600 s) always; ``E`` is reported by
:meth:`TailwisePolicy.envelope_s`. With ``relative_aging`` off, ``E = safety.aging_s``.
With the queue-relative floor, ``E = min(max(aging_factor·T, min(aging_floor_s, f·D),
f·D₇₅), envelope_cap_s)`` once FCFS's drain time is measured: it follows FCFS's own
queueing delay, and the cap holds with it on or off.
With demotion, a preempted request's wait is counted from its preemption: each wait is
bounded by ``E``, and tail protection keeps an old request from being evicted while any
other running request can be.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections import deque
from collections.abc import Sequence

from tailwise.scorer.boost import BoostPolicy, boost
from tailwise.scorer.interface import Envelope, QueueDiscipline
from tailwise.scorer.kairos import slack_decode_cap
from tailwise.scorer.policy import Policy
from tailwise.scorer.request import ReqInfo
from tailwise.scorer.residual import ResidualLife

BUBBLE = -1
#: the quantile of FCFS drain times that may RAISE the envelope above ``aging_floor_s``
#: (``scale_quantile``, p90, lowers it): raising follows the wait FCFS imposes on most
#: arrivals, not its longest recent queues. Measured (``benchmarks/policy_compare.py``):
#: raising to the p90 put conversation at 1.1 load with 3,000 KV blocks at 1.06x FCFS's
#: P99 TTLT (0.99x with the fixed floor), the upper quartile at 0.98x; on slo-flip's
#: interactive flood (seeds 0, 2) mean TTFT 60.5 / 53.9 s fixed floor, 35.1 / 31.3 s p90,
#: 48.5 / 34.6 s upper quartile, P99 TTLT within 6% of FCFS's for all three
RAISE_QUANTILE = 0.75
#: added to the key of a request demoted by ``slo.demote_late``: behind every on-time key
#: (keys are engine seconds; no engine clock comes near it)
LATE_OFFSET_S = 1e9


def quantile(data: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``data`` (sorted, non-empty) by the nearest rank below.

    >>> quantile([1.0, 2.0, 3.0, 4.0], 0.9), quantile([1.0, 2.0, 3.0, 4.0], 0.5)
    (4.0, 3.0)
    """
    return data[min(int(q * len(data)), len(data) - 1)]


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
        self._recent: deque[float] = deque(maxlen=policy.regime.scale_window)
        self._since_update = 0
        if policy.regime.relative_aging:
            self.time_dependent = True
        #: budget shaping: Kairos's slack-guided decode cap (``slo.decode_cap``)
        self.caps_decode = policy.slo.decode_cap
        self.model = policy.step_time
        self._tpots: dict[str, float] = {}
        #: live prefix re-keying: the engine installs its probe when this is set
        self.uses_prefix_probe = policy.regime.prefix_rekey
        self._ring: deque[ReqInfo] = deque()
        self._round: float | None = None
        #: uncached prompt tokens of each waiting request as last probed, and their sum
        self._uncached: dict[ReqInfo, int] = {}
        self._backlog_tokens = 0
        #: popped this round and not yet admitted: their uncached tokens (see fcfs_drain_s)
        self._popped: dict[ReqInfo, int] = {}
        #: (time, uncached prefill tokens) of recent admissions: FCFS's drain rate
        self._admits: deque[tuple[float, int]] = deque(maxlen=64)
        self._admit_sum = 0
        #: ``D`` seen at recent admissions, and their ``scale_quantile`` (the reference)
        self._drains: deque[float] = deque(maxlen=policy.regime.scale_window)
        self._drain_ref: float | None = None
        #: the ``RAISE_QUANTILE`` of the same samples: how far ``D`` may raise ``E``
        self._drain_raise: float | None = None
        self._drain_n = 0
        #: ``clip(aging_factor·T, aging_floor_s, envelope_cap_s)`` before the queue floor
        self._service_env: float | None = None
        g = policy.regime
        #: output lengths of finished requests: victims and demotion by residual life
        self.life = ResidualLife(g.scale_window, g.scale_update_every)
        #: demoted waiting requests: (when their aging clock and key restarted, the
        #: instant they re-enter as an arrival for ``demote_as_arrival``: the preemption +
        #: ``demote_delay_factor·T``, fixed then; ``None`` before ``T`` is measured, when
        #: the victim is keyed from its preemption by its attained work)
        self._demoted: dict[ReqInfo, tuple[float, float | None]] = {}
        #: ``scale_excludes_requeue``, per request preempted after its first token: (its
        #: waits from a preemption to the re-admission so far, left out of its
        #: first-to-last-token time when it finishes; when it was preempted if it waits
        #: now, else ``None``)
        self._requeue: dict[ReqInfo, tuple[float, float | None]] = {}
        #: the horizon γ was last solved for (``None``: not yet)
        self._horizon_set: float | None = None
        #: late demotion: (when its TTFT target becomes unreachable, seq, request) of the
        #: waiting requests, lazy: an entry counts only while it matches ``_slack_at``, the
        #: instant in force per request (waiting, or popped this round and not admitted)
        self._slack_heap: list[tuple[float, int, ReqInfo]] = []
        self._slack_at: dict[ReqInfo, float] = {}
        self._slack_seq = 0
        #: demoted requests, waiting or popped this round (a request an engine puts back
        #: unadmitted stays demoted)
        self._late: set[ReqInfo] = set()
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
        self._service_env = None
        if g.relative_aging:
            aging = min(g.envelope_cap_s,
                        max(g.aging_floor_s, g.aging_factor * scale) if scale > 0 else aging)
            if scale > 0:
                self._service_env = aging
        self.aging_s = aging
        self._queue_floor()
        self._set_horizon()

    def envelope(self, now: float) -> Envelope | None:
        """``E`` and the oldest wait, with ``T``, ``D₇₅`` and the demoted victims waiting."""
        env = super().envelope(now)
        if env is None:
            return None
        live = self._live  # a demoted request an engine holds elsewhere is not waiting here
        return Envelope(env.bound_s, env.oldest_wait_s,
                        self.service_scale if self.service_scale > 0 else None,
                        self._drain_raise, sum(1 for r in self._demoted if r in live))

    def drain_upper(self) -> float | None:
        """``D₇₅``, the upper quartile of FCFS's recent drain times (``None``: not yet)."""
        return self._drain_raise

    def is_demoted(self, req: ReqInfo) -> bool:
        """Whether waiting ``req`` is a demoted victim (``regime.demote_preempted``)."""
        return req in self._demoted

    def horizon_s(self) -> float | None:
        """The boost a request with θ of service gets: ``horizon_factor·T``, at least
        ``T + D₇₅`` with ``queue_horizon`` once FCFS's drain time is measured (``None``
        before ``T`` is measured or with ``adaptive_horizon`` off)."""
        g, scale = self.regime, self.service_scale
        if not g.adaptive_horizon or scale <= 0:
            return None
        h = g.horizon_factor * scale
        if g.queue_horizon and self._drain_raise is not None:
            h = max(h, scale + self._drain_raise)
        return h

    def _set_horizon(self) -> None:
        h = self.horizon_s()
        if h is None or h == self._horizon_set:
            return  # γ and the cap unchanged: the memoised boosts stay valid
        self._horizon_set = h
        # a request with θ of service is boosted by the horizon; less work, a bit
        # more (logarithmically); the envelope, not a flat cap, bounds the waiting
        gamma = min(self.base_gamma, gamma_for_boost(h, self.params.memguard_theta_s))
        cap = self.regime.envelope_cap_s
        if (gamma, cap) != (self.gamma, self.max_boost):
            self.gamma, self.max_boost = gamma, cap
            self._bcache.clear()

    def carry_over(self, old: QueueDiscipline) -> None:
        """A new policy version keeps everything measured about the workload: service
        times and the scale ``T`` (with its refresh counter), the residual-life curve, and
        FCFS's drain rate and reference ``D``; the envelope and horizon are then recomputed
        with the new version's parameters. A partition refresh or a tuned parameter must
        not send them back to unmeasured defaults: measured on bursty-reasoning, two swaps
        to an identical policy moved P99 TTLT by 1.7% when only ``T`` and the curve's
        window were kept, and not at all with everything kept."""
        if not isinstance(old, TailwisePolicy):
            return
        self._recent.extend(old._recent)
        self._since_update = old._since_update
        self.life.extend(old.life)
        if self.regime.demote_preempted:
            # a demoted request keeps its place behind the arrivals it made room for
            self._demoted.update(old._demoted)
        if self.regime.scale_excludes_requeue:
            self._requeue.update(old._requeue)
        self._admits.extend(old._admits)
        self._admit_sum = sum(t for _, t in self._admits)
        self._drains.extend(old._drains)
        self._drain_ref, self._drain_n = old._drain_ref, old._drain_n
        self._drain_raise = old._drain_raise
        if old.service_scale > 0:
            self.service_scale = old.service_scale
        self._apply_envelope(self.service_scale)

    def on_finish(self, req: ReqInfo, now: float) -> None:
        super().on_finish(req, now)
        g = self.regime
        if g.residual_victims or g.demote_preempted:
            self.life.observe(req.num_output_tokens)
        requeued = self._requeue.pop(req, (0.0, None))[0]
        if not (g.relative_aging or g.adaptive_horizon or g.tail_protect or
                (g.demote_preempted and g.demote_as_arrival)):
            return  # nothing reads T
        start = req.first_token_time if req.first_token_time is not None else now
        self._recent.append(max(now - start - requeued, 0.0))
        self._since_update += 1
        if self._since_update >= g.scale_update_every and len(self._recent) >= 16:
            self._since_update = 0
            data = sorted(self._recent)
            self.service_scale = quantile(data, g.scale_quantile)
            self._apply_envelope(self.service_scale)

    # -- queue-relative floor -------------------------------------------------------------
    def fcfs_drain_s(self) -> float | None:
        """``D``: waiting uncached prompt tokens ÷ recently admitted prefill tokens per
        second (``None`` until two admissions are seen, or if time has not moved)."""
        if len(self._admits) < 2:
            return None
        span = self._admits[-1][0] - self._admits[0][0]
        admitted = self._admit_sum - self._admits[0][1]  # tokens admitted within the span
        if span <= 0.0 or admitted <= 0:
            return None
        # a request popped for admission this round still counts as waiting until its
        # on_admit: the simulator admits each request as it pops it, vLLM pops the whole
        # round first, and both must sample the same D (same code, same results)
        backlog = self._backlog_tokens + sum(self._popped.values())
        return backlog * span / admitted

    def _queue_floor(self) -> None:
        """``E = max(aging_factor·T, min(aging_floor_s, f·D), f·D₇₅)``, capped, once FCFS's
        drain time is measured (``f = queue_floor_factor``; ``D`` its ``scale_quantile``,
        ``D₇₅`` its upper quartile): ``D`` lowers the fixed floor, ``D₇₅`` raises it."""
        g = self.regime
        env = self._service_env
        if not g.queue_floor or env is None:
            return
        d, up = self._drain_ref, self._drain_raise
        if d is None or up is None:
            self.aging_s = env
            return
        f = g.queue_floor_factor
        self.aging_s = min(g.envelope_cap_s, max(g.aging_factor * self.service_scale,
                                                 min(g.aging_floor_s, f * d), f * up))

    def on_admit(self, req: ReqInfo, now: float) -> None:
        super().on_admit(req, now)
        self._demoted.pop(req, None)  # the wait it was demoted for is over
        self._popped.pop(req, None)
        rq = self._requeue.get(req)
        if rq is not None and rq[1] is not None:  # a re-queue wait ends: left out of T
            self._requeue[req] = (rq[0] + now - rq[1], None)
        self._untrack_late(req)
        if self.regime.queue_floor or self.regime.queue_horizon:
            if len(self._admits) == self._admits.maxlen:
                self._admit_sum -= self._admits[0][1]
            tokens = req.uncached_prompt_tokens
            self._admits.append((now, tokens))
            self._admit_sum += tokens
            d = self.fcfs_drain_s()
            if d is not None:
                self._drains.append(d)
                self._drain_n += 1
                if self._drain_n % self.regime.scale_update_every == 0 or \
                        self._drain_ref is None:
                    data = sorted(self._drains)
                    self._drain_ref = quantile(data, self.regime.scale_quantile)
                    self._drain_raise = quantile(data, RAISE_QUANTILE)
                    if self.regime.queue_horizon:
                        self._set_horizon()

    # -- live prefix re-keying ------------------------------------------------------------
    def _reprobe(self, now: float) -> None:
        """Once per round: re-probe up to ``prefix_rekey_k`` waiting requests (round-robin)
        and re-key those whose uncached prompt length moved."""
        if self._round == now:
            return
        self._round = now
        for r in self._popped:  # popped in an earlier round and never admitted: gone
            self._untrack_late(r)
        self._popped.clear()
        self._queue_floor()
        self._demote_late(now)
        if self.prefix_probe is None or not self.regime.prefix_rekey:
            return
        ring, live, k = self._ring, self._live, self.regime.prefix_rekey_k
        probed = seen = 0
        while ring and probed < k and seen < 4 * k:
            seen += 1
            r = ring.popleft()
            if r not in live:
                continue  # left the queue (or a duplicate from a requeue)
            ring.append(r)
            probed += 1
            unc = r.prompt_tokens - self.cached_now(r)
            old = self._uncached.get(r, unc)
            if unc >= old:
                continue  # keys only improve while waiting: an eviction does not demote
            self._uncached[r] = unc
            self._backlog_tokens += unc - old
            r.sched_queue = self.route(float(unc))
            self._track_slack(r, unc, now)
            if self.rekey(r, now):
                self.counters["prefix_rekeys"] += 1

    def peek(self, now: float) -> ReqInfo | None:
        self._reprobe(now)
        return super().peek(now)

    def pop(self, now: float) -> ReqInfo:
        req = super().pop(now)
        self._popped[req] = self._uncached.get(req, 0)
        self._left(req)
        return req

    def remove(self, req: ReqInfo) -> bool:
        removed = super().remove(req)
        if removed:
            self._left(req)
        # also when it is not waiting here (popped, or held by the engine elsewhere): an
        # aborted request leaves no per-request state behind
        self._popped.pop(req, None)
        self._demoted.pop(req, None)
        self._requeue.pop(req, None)
        self._untrack_late(req)
        return removed

    def _left(self, req: ReqInfo) -> None:
        self._backlog_tokens -= self._uncached.pop(req, 0)

    # -- late demotion ----------------------------------------------------------------------
    def _demote_late(self, now: float) -> None:
        """Once per round: re-key behind the on-time requests every waiting request whose
        TTFT target became unreachable since the last round (``slo.demote_late``)."""
        heap, at = self._slack_heap, self._slack_at
        while heap and heap[0][0] < now:
            t, _, r = heapq.heappop(heap)
            if at.get(r) != t or r in self._late:
                continue  # out of date (its instant moved), or already demoted
            if self._live.get(r) is None:  # not waiting: a re-add tracks it afresh
                del at[r]
                continue
            self._late.add(r)
            if self.rekey(r, now):
                self.counters["late_demotions"] += 1
        if len(heap) > 2 * len(at) + 64:  # out-of-date entries dominate: compact
            self._slack_heap = [e for e in heap if at.get(e[2]) == e[0]]
            heapq.heapify(self._slack_heap)

    def _untrack_late(self, req: ReqInfo) -> None:
        """``req`` left for good (admitted, aborted, gone): no late state, no check."""
        self._late.discard(req)
        self._slack_at.pop(req, None)

    def _track_slack(self, req: ReqInfo, uncached: int, now: float) -> None:
        """(Re)schedule ``req``'s late check at ``arrival + TTFT − its prefill time``;
        a demoted request whose prefill shrank enough (a prefix hit) is on time again."""
        if not self.slo.demote_late or req.first_token_time is not None:
            return
        t = req.arrival_time + self.slo.targets(req.slo_class)[0] - uncached * self.cp
        if self._slack_at.get(req) == t:
            return
        self._slack_at[req] = t
        if req in self._late and t >= now:
            self._late.discard(req)
        self._slack_seq += 1
        heapq.heappush(self._slack_heap, (t, self._slack_seq, req))

    # -- preemption: residual-life victims, demotion, tail protection ----------------------
    def wait_origin(self, req: ReqInfo) -> float:
        d = self._demoted.get(req)
        return req.arrival_time if d is None else d[0]

    def priority_key(self, req: ReqInfo) -> float:
        """γ-boost's key; a demoted victim's (``regime.demote_as_arrival``) is that of a
        fresh request of θ work arriving ``demote_delay_factor·T`` after its preemption
        (the instant fixed at the preemption, so a later re-key keeps it)."""
        d = self._demoted.get(req)
        t = None if d is None else d[1]
        if t is None or not self.regime.demote_as_arrival:
            return super().priority_key(req)
        return t + self.deadline_offset(req) - self.boost_of(self.params.memguard_theta_s)

    def on_preempt(self, req: ReqInfo, now: float) -> None:
        """A victim expected to run longer than a fresh request goes behind the arrivals it
        made room for: keyed, and aged, from its preemption (``regime.demote_preempted``).
        Only a preemption demotes: a request an engine pops and puts back unadmitted (vLLM's
        skipped requests, a policy swap) keeps its clock."""
        super().on_preempt(req, now)
        if self.regime.scale_excludes_requeue and req.first_token_time is not None:
            self._requeue[req] = (self._requeue.get(req, (0.0, None))[0], now)
        life = self.life
        if self.regime.demote_preempted and life.ready and \
                life.residual(req.num_output_tokens) > life.residual(0.0):
            scale = self.service_scale
            self._demoted[req] = (
                now, now + self.regime.demote_delay_factor * scale if scale > 0 else None)
            self.counters["demoted"] += 1
        else:
            self._demoted.pop(req, None)

    def order_running(self, running: Sequence[ReqInfo], now: float) -> list[ReqInfo]:
        """γ-boost's order (bands, cache-aware cost), re-ranked for eviction: tail
        candidates first (kept), oldest first; then the others by anti-thrash protection,
        then the shortest expected remaining output (the longest is evicted first), then
        γ-boost's order."""
        ranks = self.running_ranks(running)
        g = self.regime
        life = self.life if g.residual_victims and self.life.ready else None
        cap = g.tail_protect_factor * self.service_scale \
            if g.tail_protect and self.service_scale > 0 else None
        if life is None and cap is None:
            return [running[t[4]] for t in ranks]
        ranked = []
        for pos, t in enumerate(ranks):
            r = running[t[4]]
            if cap is not None and r.first_token_time is not None and \
                    now - r.arrival_time > cap:
                # tail candidates: the oldest is kept longest, whatever its remainder
                ranked.append((False, t[0], r.arrival_time, pos, r))
            elif life is None:
                ranked.append((True, False, 0.0, pos, r))
            else:  # t[0]: not protected (anti-thrash), as γ-boost's rank computed it
                ranked.append((True, t[0], life.residual(r.num_output_tokens), pos, r))
        ranked.sort(key=lambda x: x[:4])
        return [x[4] for x in ranked]

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
        uncached prompt (as last probed, while it waits) when it falls in the bubble or
        partitioning is off."""
        unc = self._uncached.get(req)
        if unc is None:
            unc = req.uncached_prompt_tokens
        if not self.partition_aware:
            return unc * self.cp
        q = req.sched_queue
        if q < 0 or q >= len(self.queues):
            q = self.route(float(unc))
            req.sched_queue = q
        if q == BUBBLE:
            return unc * self.cp
        return self.queues[q].mean_len * self.cp

    def deadline_offset(self, req: ReqInfo) -> float:
        off = self.slo.targets(req.slo_class)[0] if self.slo.urgency else 0.0
        return off + LATE_OFFSET_S if req in self._late else off

    def add(self, req: ReqInfo, now: float) -> None:
        self._popped.pop(req, None)  # popped and put back (vLLM's skipped requests)
        unc = req.uncached_prompt_tokens
        self._backlog_tokens += unc - self._uncached.get(req, 0)
        self._uncached[req] = unc
        req.sched_queue = self.route(float(unc))
        if self.uses_prefix_probe:
            self._ring.append(req)
        self._track_slack(req, unc, now)
        super().add(req, now)

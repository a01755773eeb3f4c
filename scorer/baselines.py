"""Baseline policies: the yardsticks every tailwise policy is measured against.

* ``fcfs`` — vLLM's default (:class:`~tailwise.scorer.interface.FcfsQueue`).
* ``vllm-priority`` — vLLM 0.32's ``--scheduling-policy priority``
  (``vllm/v1/core/sched/request_queue.py`` ``PriorityRequestQueue``, victim rule in
  ``vllm/v1/core/sched/scheduler.py``): see :class:`VllmPriority`.
* ``hrrn``, ``lpm`` — SGLang's highest-response-ratio-next and longest-prefix-match
  (``python/sglang/srt/managers/schedule_policy.py``): see :class:`SglangHRRN`,
  :class:`SglangLPM`.
* ``las`` — least attained service, the prediction-free classic: see
  :class:`LeastAttainedService`.
* ``sjf-oracle`` — non-preemptive shortest job first on the *true* job size.
* ``srpt-oracle`` — shortest remaining processing time on the true size, preemptive via
  ordering: running requests are ranked by remaining work, so budget goes to the shortest
  and KV pressure evicts the longest.
* ``predicted-sjf`` — SJF on a noisy prediction of the output length (log-normal error
  with configurable σ, deterministic per request id and seed).

Job size is engine work in seconds, with the same conversion as γ-boost's attained work
(:meth:`tailwise.scorer.request.ReqInfo.attained_s`, :attr:`StepTimeModel.prefill_token_s`,
:attr:`StepTimeModel.decode_token_s`): uncached prompt tokens at their marginal prefill
cost plus output tokens at their batched decode cost (≈ 6 prefill tokens each on H100).
"""

from __future__ import annotations

import hashlib
import heapq
import math
from abc import abstractmethod
from collections.abc import Iterator, Sequence

from tailwise.scorer.interface import FcfsQueue, KeyedQueue, LazyHeapQueue, QueueDiscipline
from tailwise.scorer.request import ReqInfo
from tailwise.scorer.step_time import H100_LLAMA3_8B, StepTimeModel


class OracleError(ValueError):
    """An oracle policy was given a request without its true output length."""


def _true_output(req: ReqInfo) -> int:
    if req.true_output_tokens is None:
        raise OracleError(
            f"request {req.request_id!r}: oracle policies need true_output_tokens "
            "(only the simulator knows them)"
        )
    return req.true_output_tokens


class _SizeAware(KeyedQueue):
    def __init__(self, model: StepTimeModel = H100_LLAMA3_8B) -> None:
        super().__init__()
        self.cp = model.prefill_token_s
        self.cd = model.decode_token_s

    def job_size_s(self, req: ReqInfo, output_tokens: int) -> float:
        return req.uncached_prompt_tokens * self.cp + output_tokens * self.cd

    def attained(self, req: ReqInfo) -> float:
        return req.attained_s(self.cp, self.cd)


class VllmPriority(LazyHeapQueue):
    """vLLM 0.32's priority scheduling (``--scheduling-policy priority``).

    Waiting: ``PriorityRequestQueue``, a heap ordered by ``Request.__lt__`` — priority
    (lower first), then arrival time, then request id; ``prepend_request`` (preempted
    requests) is an ordinary push, so a victim re-enters at its (priority, arrival) place.
    Victim: ``max(running, key=(priority, arrival_time))``; with equal keys Python's
    ``max`` keeps the first in running order. The running order returned here is
    ascending (priority, arrival), equal keys in reverse running order, so the engine's
    evict-from-the-end picks exactly vLLM's victim. Difference, by design of our engine
    interface: vLLM serves token budget in admission order, we serve it in this order
    (they coincide unless a re-admitted request runs beside later arrivals).
    """

    name = "vllm-priority"

    def __init__(self) -> None:
        super().__init__()
        self._heap: list[tuple[int, float, str, int, ReqInfo]] = []

    def add(self, req: ReqInfo, now: float) -> None:
        seq = self._enqueue(req)
        heapq.heappush(self._heap, (req.priority, req.arrival_time, req.request_id, seq, req))

    def peek(self, now: float) -> ReqInfo | None:
        return self._top(self._heap)

    def order_running(self, running: Sequence[ReqInfo], now: float) -> list[ReqInfo]:
        pos = {id(r): i for i, r in enumerate(running)}
        return sorted(running, key=lambda r: (r.priority, r.arrival_time, -pos[id(r)]))


#: SGLang sorts the waiting queue only while at most this many requests wait
#: (``SchedulePolicy._determine_active_policy``: above it, LPM and HRRN act as FCFS)
SGLANG_SORT_LIMIT = 128


class _SglangQueue(QueueDiscipline):
    """SGLang's waiting list: sorted once per scheduling round by the policy's key
    (``SchedulePolicy.calc_priority``), then admitted front to back. With more than
    :data:`SGLANG_SORT_LIMIT` waiting the sort is skipped ("turn off the expensive prefix
    matching and sorting when the queue is large"): the list keeps its current order,
    arrivals and retracted requests appended (``_extend_requests_to_queue``).

    Not modelled: SGLang's in-batch prefix deprioritisation (a waiting request sharing
    ≥ 32 uncached prefix tokens with an earlier waiting one is moved to the back), which
    needs token ids that neither engine hands to policies.
    """

    uses_prefix_probe = True

    def __init__(self, sort_limit: int = SGLANG_SORT_LIMIT) -> None:
        super().__init__()
        if sort_limit < 0:
            raise ValueError(f"{self.name}: sort_limit must be >= 0, got {sort_limit}")
        self.sort_limit = sort_limit
        self._q: list[ReqInfo] = []
        self._round: float | None = None

    @abstractmethod
    def _sort(self, now: float) -> None:
        """Sort ``self._q`` in place (stable), best first."""

    def add(self, req: ReqInfo, now: float) -> None:
        self._q.append(req)

    def requeue(self, req: ReqInfo, now: float) -> None:
        self.add(req, now)  # SGLang appends retracted requests to the waiting queue

    def _prepare(self, now: float) -> None:
        if self._round == now:
            return
        self._round = now
        if len(self._q) > self.sort_limit:
            self.counters["fcfs_fallback_rounds"] += 1
        elif len(self._q) > 1:
            self._sort(now)

    def peek(self, now: float) -> ReqInfo | None:
        self._prepare(now)
        return self._q[0] if self._q else None

    def pop(self, now: float) -> ReqInfo:
        self._prepare(now)
        if not self._q:
            raise IndexError("pop from an empty waiting queue")
        req = self._q.pop(0)
        self._left(req)
        return req

    def _left(self, req: ReqInfo) -> None:
        """``req`` left the waiting queue."""

    def remove(self, req: ReqInfo) -> bool:
        try:
            self._q.remove(req)
        except ValueError:
            return False
        self._left(req)
        return True

    def __len__(self) -> int:
        return len(self._q)

    def waiting(self) -> Iterator[ReqInfo]:
        return iter(list(self._q))


class SglangLPM(_SglangQueue):
    """SGLang's longest prefix match (``--schedule-policy lpm``).

    Each round, waiting requests are stably sorted by their matched prefix length in the
    prefix cache, longest first (``_sort_by_longest_prefix``), so requests that reuse the
    most cached KV go first and ties keep queue order. More than 128 waiting: FCFS (no
    sort). The match is the engine's live lookup (:meth:`cached_now`).
    """

    name = "lpm"

    def _sort(self, now: float) -> None:
        hit = {id(r): self.cached_now(r) for r in self._q}
        self._q.sort(key=lambda r: -hit[id(r)])


class SglangHRRN(_SglangQueue):
    """SGLang's highest response ratio next (``--schedule-policy hrrn``), sgl-project/
    sglang PR #32911 (upstream reported −69% mean TTFT vs FCFS on production traffic).

    Response ratio = (wait + expected service) / expected service, with SGLang's choices:
    expected service is the *uncached prompt length* (prompt − live prefix-cache hit; the
    output length is not predicted), and wait is counted in prefill tokens the engine
    processed since the request entered the queue ("token-based aging", equal to wall
    time at constant prefill throughput). Sorted by ratio, highest first; a request with
    nothing to prefill goes first; more than 128 waiting: FCFS (no sort).

    Our token clock advances by each admitted request's uncached prompt tokens when it is
    admitted (SGLang adds each forward pass's extend tokens: the same tokens, counted at
    scheduling instead of per chunk); the snapshot is taken at every enqueue, requeues
    included. Ties: SGLang breaks them by request id (random UUIDs); we break them by
    arrival, the deterministic equivalent of no preference.
    """

    name = "hrrn"

    def __init__(self, sort_limit: int = SGLANG_SORT_LIMIT) -> None:
        super().__init__(sort_limit)
        #: prefill tokens admitted so far (SGLang's ``processed_tokens``)
        self.processed_tokens = 0
        self._entered: dict[ReqInfo, int] = {}

    def add(self, req: ReqInfo, now: float) -> None:
        super().add(req, now)
        self._entered[req] = self.processed_tokens

    def _left(self, req: ReqInfo) -> None:
        self._entered.pop(req, None)

    def response_ratio(self, req: ReqInfo) -> float:
        """1 + waited tokens / uncached prompt tokens (``inf`` with nothing to prefill)."""
        uncached = req.prompt_tokens - self.cached_now(req)
        if uncached <= 0:
            return math.inf
        waited = max(self.processed_tokens - self._entered.get(req, self.processed_tokens), 0)
        return 1.0 + waited / uncached

    def _sort(self, now: float) -> None:
        ratio = {id(r): self.response_ratio(r) for r in self._q}
        self._q.sort(key=lambda r: (-ratio[id(r)], r.arrival_time))

    def on_admit(self, req: ReqInfo, now: float) -> None:
        self.processed_tokens += req.uncached_prompt_tokens


class LeastAttainedService(KeyedQueue):
    """Least attained service (LAS / foreground-background), prediction-free.

    Priority = attained service in engine seconds (prefill tokens run, recomputation
    included, plus decode tokens; :meth:`ReqInfo.attained_s`), lowest first; new
    requests (0 attained) in arrival order. A preempted request keeps its attained
    service, so it re-enters behind newer, less-served ones. Preemptive through the running
    order: running requests are ranked by attained service, so token budget goes to the
    least served and KV pressure evicts the most served (Nuyens & Wierman, "The
    Foreground–Background queue: a survey", Perf. Eval. 2008; Rai et al., SIGMETRICS
    2003). Known weakness, kept: the most-served request is evicted again and again.
    """

    name = "las"

    def __init__(self, model: StepTimeModel = H100_LLAMA3_8B) -> None:
        super().__init__()
        self.cp = model.prefill_token_s
        self.cd = model.decode_token_s

    def attained(self, req: ReqInfo) -> float:
        return req.attained_s(self.cp, self.cd)

    def waiting_key(self, req: ReqInfo, now: float) -> float:
        return self.attained(req)

    def order_running(self, running: Sequence[ReqInfo], now: float) -> list[ReqInfo]:
        return sorted(running, key=self.attained)


class OracleSJF(_SizeAware):
    """Non-preemptive SJF on the true job size; running requests keep admission order."""

    name = "sjf-oracle"

    def waiting_key(self, req: ReqInfo, now: float) -> float:
        return self.job_size_s(req, _true_output(req))


class OracleSRPT(_SizeAware):
    """SRPT on true remaining work, preemptive through the running order. Work counts
    the uncached prompt only (a prefix-cache hit is work the engine does not do), as the
    oracle SJF's job size does; before this the oracle was blind to prefix hits."""

    name = "srpt-oracle"

    def remaining_s(self, req: ReqInfo) -> float:
        total = self.job_size_s(req, _true_output(req))
        return max(total - self.attained(req), 0.0)

    def waiting_key(self, req: ReqInfo, now: float) -> float:
        return self.remaining_s(req)

    def order_running(self, running: Sequence[ReqInfo], now: float) -> list[ReqInfo]:
        return sorted(running, key=self.remaining_s)


def noisy_prediction(true_tokens: int, request_id: str, sigma: float, seed: int) -> int:
    """A deterministic log-normal prediction ``true·exp(σ·z)``, at least 1 token.

    >>> noisy_prediction(100, "r1", 0.0, 0)
    100
    >>> noisy_prediction(100, "r1", 1.0, 0) == noisy_prediction(100, "r1", 1.0, 0)
    True
    """
    if sigma <= 0:
        return max(int(true_tokens), 1)
    digest = hashlib.blake2b(f"{seed}:{request_id}".encode(), digest_size=16).digest()
    u1 = (int.from_bytes(digest[:8], "little") + 0.5) / 2.0**64
    u2 = (int.from_bytes(digest[8:], "little") + 0.5) / 2.0**64
    z = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
    return max(round(true_tokens * math.exp(sigma * z)), 1)


class PredictedSJF(_SizeAware):
    """SJF on a predicted output length (``predicted_output_tokens``, or a noisy oracle)."""

    name = "predicted-sjf"

    def __init__(
        self, model: StepTimeModel = H100_LLAMA3_8B, sigma: float = 0.5, seed: int = 0
    ) -> None:
        super().__init__(model)
        if not math.isfinite(sigma) or sigma < 0:
            raise ValueError(f"predicted-sjf: sigma must be finite and >= 0, got {sigma!r}")
        self.sigma = sigma
        self.seed = seed

    def waiting_key(self, req: ReqInfo, now: float) -> float:
        if req.predicted_output_tokens is None:
            req.predicted_output_tokens = noisy_prediction(
                _true_output(req), req.request_id, self.sigma, self.seed
            )
        return self.job_size_s(req, req.predicted_output_tokens)


class Fcfs(FcfsQueue):
    """vLLM's default FCFS order (alias kept for the registry)."""

    name = "fcfs"

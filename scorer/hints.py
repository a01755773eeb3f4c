"""Per-replica router hints: what a gateway needs to know to pick a replica (pure).

One :class:`HintTracker` per engine replica follows the engine's own telemetry (the
same events the sidecar ingests: arrival, first token, preemption, finish, step) and
answers :meth:`HintTracker.hints`. The sidecar serves these hints over gRPC and
HTTP/JSON; the fleet simulator's ``least-loaded`` and ``kv-aware`` routers read the very
same object, so what is simulated is what a gateway scorer would see.

Definitions (our choices; the router papers leave them open):

* ``queue_depth`` — requests in the engine's waiting queue: the count the last step
  reported plus the arrivals after that step's start (the engine admits only at step
  starts, so this is exact between steps). Arrivals are matched to steps by time, not
  by event order, because a telemetry batch carries request and step events in two
  separate lists.
* ``queue_tokens`` / ``queue_s`` — prompt tokens of the requests that have not produced
  their first token yet (waiting or still in prefill; a preempted request's recompute
  is not counted), and the engine-seconds to prefill them: chunks of the step token
  budget, each priced by the step-time model's prefill formula. Decode interference is
  ignored, so ``queue_s`` is a lower bound of the wait.
* ``kv_pressure`` — the KV-cache usage fraction of the last step, in [0, 1];
  ``kv_used_blocks`` is that fraction times the replica's block count (Dynamo's
  "active blocks").
* ``admission_horizon_s`` — how long the policy in force may hold a request back
  behind later arrivals: 0 under FCFS, else the safety envelope's ``aging_s``. A
  request sent here starts within roughly ``queue_s + admission_horizon_s``.

>>> from tailwise.scorer.step_time import H100_LLAMA3_8B
>>> t = HintTracker("r0", H100_LLAMA3_8B, kv_total_blocks=1000, step_budget=8192)
>>> t.arrival("a", 8192, now=0.0); t.arrival("b", 100, now=0.0)
>>> h = t.hints()
>>> h.queue_depth, round(h.queue_s, 4)
(2, 0.2054)
>>> t.first_token("a", now=0.2); t.hints().queue_tokens
100
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, NamedTuple

from tailwise.scorer.hooks import StepStats
from tailwise.scorer.policy import Mode, Policy
from tailwise.scorer.request import ReqInfo
from tailwise.scorer.step_time import StepTimeModel

#: most requests a tracker follows; beyond it new arrivals are counted, not tracked
MAX_TRACKED = 200_000


class ReplicaHints(NamedTuple):
    """One replica's routing hints (times in engine seconds); a tuple, cheap to build."""

    replica: str
    queue_depth: int
    queue_tokens: int
    queue_s: float
    running: int
    kv_pressure: float
    kv_used_blocks: int
    kv_total_blocks: int
    admission_horizon_s: float
    policy_version: int
    policy_mode: str
    #: engine time of the newest event the hints reflect
    at: float

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()


def queue_seconds(tokens: int, model: StepTimeModel, step_budget: int) -> float:
    """Engine-seconds to prefill ``tokens`` in chunks of ``step_budget`` tokens.

    >>> from tailwise.scorer.step_time import H100_LLAMA3_8B
    >>> queue_seconds(0, H100_LLAMA3_8B, 8192)
    0.0
    """
    if tokens <= 0:
        return 0.0
    full, rest = divmod(tokens, step_budget)
    return (full * model.prefill_ms(step_budget) + model.prefill_ms(rest)) / 1000.0


def admission_horizon(policy: Policy | None) -> float:
    """0 under FCFS (no reordering), else the policy's aging bound ``aging_s``."""
    if policy is None or policy.mode == Mode.FCFS:
        return 0.0
    return float(policy.safety.aging_s)


class HintTracker:
    """Follows one replica's telemetry and computes its :class:`ReplicaHints`.

    Also a :class:`~tailwise.scorer.hooks.TelemetrySink`, so a simulated engine can
    feed it directly; the sidecar feeds it from decoded telemetry through the
    plain-value methods (``arrival``/``first_token``/``preempt``/``finish``/``step``).
    """

    def __init__(self, replica: str, model: StepTimeModel, *, kv_total_blocks: int,
                 step_budget: int = 8192, policy: Policy | None = None) -> None:
        if kv_total_blocks < 1:
            raise ValueError(f"kv_total_blocks must be >= 1, got {kv_total_blocks!r}")
        if step_budget < 1:
            raise ValueError(f"step_budget must be >= 1, got {step_budget!r}")
        self.replica = replica
        self.model = model
        self.kv_total_blocks = kv_total_blocks
        self.step_budget = step_budget
        self.policy = policy
        #: request id -> prompt tokens, for requests without a first token yet
        self._unstarted: dict[str, int] = {}
        self._queue_tokens = 0
        self._step_waiting = 0
        #: arrival times not yet covered by a step's waiting count (nondecreasing)
        self._recent: deque[float] = deque()
        self.preemptions = 0
        self._running = 0
        self._kv = 0.0
        self._at = -math.inf
        self.untracked = 0
        self._cached: ReplicaHints | None = None

    # ------------------------------------------------------------ plain-value feed
    def arrival(self, rid: str, prompt_tokens: int, now: float, cached_tokens: int = 0) -> None:
        self._cached = None
        self._recent.append(now)
        self._at = max(self._at, now)
        if len(self._unstarted) >= MAX_TRACKED or rid in self._unstarted:
            self.untracked += 1
            return
        tokens = max(int(prompt_tokens) - max(int(cached_tokens), 0), 0)
        self._unstarted[rid] = tokens
        self._queue_tokens += tokens

    def first_token(self, rid: str, now: float) -> None:
        self._cached = None
        self._started(rid)
        self._at = max(self._at, now)

    def preempt(self, rid: str, now: float) -> None:
        self._cached = None
        self.preemptions += 1
        self._at = max(self._at, now)

    def finish(self, rid: str, now: float) -> None:
        self._cached = None
        self._started(rid)
        self._at = max(self._at, now)

    def step(self, stats: StepStats) -> None:
        self._cached = None
        self._running = stats.running
        self._step_waiting = stats.waiting
        start = stats.now - stats.step_time_s + 1e-9  # arrivals up to here are counted
        recent = self._recent
        while recent and recent[0] <= start:
            recent.popleft()
        self._kv = min(max(stats.kv_usage, 0.0), 1.0) if math.isfinite(stats.kv_usage) else 0.0
        self._at = max(self._at, stats.now)

    def set_policy(self, policy: Policy) -> None:
        self._cached = None
        self.policy = policy

    def _started(self, rid: str) -> None:
        tokens = self._unstarted.pop(rid, None)
        if tokens is not None:
            self._queue_tokens -= tokens

    # ------------------------------------------------------------ TelemetrySink
    def on_arrival(self, req: ReqInfo, now: float) -> None:
        self.arrival(req.request_id, req.prompt_tokens, now, req.cached_tokens)

    def on_first_token(self, req: ReqInfo, now: float) -> None:
        self.first_token(req.request_id, now)

    def on_preempt(self, req: ReqInfo, now: float) -> None:
        self.preempt(req.request_id, now)

    def on_finish(self, req: ReqInfo, now: float) -> None:
        self.finish(req.request_id, now)

    def on_step(self, stats: StepStats) -> None:
        self.step(stats)

    # ------------------------------------------------------------ answer
    @property
    def queue_depth(self) -> int:
        return self._step_waiting + len(self._recent)

    @property
    def queue_tokens(self) -> int:
        return self._queue_tokens

    def hints(self) -> ReplicaHints:
        """The current hints (recomputed only after an event changed them)."""
        if self._cached is not None:
            return self._cached
        pol = self.policy
        self._cached = ReplicaHints(
            replica=self.replica, queue_depth=self.queue_depth,
            queue_tokens=self._queue_tokens,
            queue_s=queue_seconds(self._queue_tokens, self.model, self.step_budget),
            running=self._running, kv_pressure=self._kv,
            kv_used_blocks=round(self._kv * self.kv_total_blocks),
            kv_total_blocks=self.kv_total_blocks,
            admission_horizon_s=admission_horizon(pol),
            policy_version=pol.version if pol is not None else 0,
            policy_mode=str(pol.mode) if pol is not None else "fcfs",
            at=self._at if math.isfinite(self._at) else 0.0)
        return self._cached

"""The one interface an engine calls every iteration: :class:`QueueDiscipline`.

Words: a :class:`~tailwise.scorer.policy.Policy` is the *settings* (what the sidecar
tunes, pushes and freezes); a :class:`QueueDiscipline` is the *queue* an engine builds
from them (:func:`tailwise.scorer.registry.build_scheduler`) and calls every step.

Contract (what the simulator and the vLLM adapter rely on):

* The policy owns the *waiting* queue. The engine ``add``\\ s arrivals, ``requeue``\\ s
  preempted requests, and only ever looks at the head: ``peek(now)`` then ``pop(now)``
  with the same ``now`` return the same request. ``remove`` handles aborts.
* ``order_running(running, now)`` returns the running requests highest-priority first.
  The engine serves token budget in that order and, when KV blocks run out, preempts
  from the *end* of the list (vLLM semantics: the last one is the first victim, and a
  request never evicts one ranked above it).
* ``decode_cap`` may bound how many decode requests run this step (Kairos); ``None``
  means no cap.
* Hooks (``on_admit``, ``on_preempt``, ``on_first_token``, ``on_finish``) let adaptive
  policies learn; they must be cheap.
* Per-iteration cost is bounded: ``peek``/``pop`` are O(log waiting + queues);
  ``order_running`` is O(running log running). When a policy hits an internal bound it
  falls back to FCFS order and increments a counter in :attr:`counters`.
* Everything is pure: plain values in, decisions out, time passed in as ``now``.
* Prefix-cache lookups: a policy that ranks *waiting* requests by their live cache hit
  (SGLang's LPM, HRRN) sets ``uses_prefix_probe``; the engine then installs a read-only
  lookup with ``set_prefix_probe`` (``probe(req)`` = prompt tokens a prefix-cache lookup
  would hit now, touching nothing). Without one, :meth:`QueueDiscipline.cached_now`
  falls back to ``req.cached_tokens``, the hit the engine last recorded.
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tailwise.scorer.request import ReqInfo

#: read-only prefix-cache lookup: prompt tokens of ``req`` a lookup would hit now
PrefixProbe = Callable[[ReqInfo], int]


@dataclass(frozen=True, slots=True)
class Envelope:
    """A queue's waiting envelope as it stands (engine seconds), for operators' gauges.

    ``bound_s``: the oldest waiting request is served first once it has waited this long
    (tailwise's ``E`` as of its last scheduling round, a boost policy's
    ``safety.aging_s``). ``oldest_wait_s``: how long the longest-waiting request has
    waited, counted as the bound counts it: from its arrival (a preempted request that was
    not demoted keeps its arrival, so this includes the time it ran) or a demoted victim's
    preemption; ``None`` when nothing waits. tailwise adds the scales the bound is computed
    from (``None`` until measured) and how many waiting requests are demoted victims."""

    bound_s: float
    oldest_wait_s: float | None
    service_scale_s: float | None = None
    drain_s: float | None = None
    demoted_waiting: int = 0


class QueueDiscipline(ABC):
    """The queue: orders waiting requests and ranks running ones; see the module
    docstring. Built from a :class:`~tailwise.scorer.policy.Policy` (the settings)."""

    #: CLI / report name
    name: str = "abstract"
    #: True when the waiting order can change with time alone (no arrival, admission or
    #: finish in between); engines must then not skip ahead over idle decode runs while
    #: requests wait.
    time_dependent: bool = False
    #: True when ``decode_cap`` can return a cap (engines then evaluate it every step).
    caps_decode: bool = False
    #: True when the policy reads live prefix-cache hits of waiting requests; engines then
    #: call :meth:`set_prefix_probe` with their read-only lookup.
    uses_prefix_probe: bool = False
    #: the engine's lookup (``None``: fall back to ``ReqInfo.cached_tokens``)
    prefix_probe: PrefixProbe | None = None

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()

    def set_prefix_probe(self, probe: PrefixProbe | None) -> None:
        """Install the engine's read-only prefix-cache lookup."""
        self.prefix_probe = probe

    def cached_now(self, req: ReqInfo) -> int:
        """Prompt tokens of ``req`` in the prefix cache now: the engine's probe when one
        is installed, else the hit the engine last recorded (``req.cached_tokens``)."""
        if self.prefix_probe is None:
            return min(req.cached_tokens, req.prompt_tokens)
        return max(min(int(self.prefix_probe(req)), req.prompt_tokens), 0)

    # -- waiting queue -------------------------------------------------------------------
    @abstractmethod
    def add(self, req: ReqInfo, now: float) -> None:
        """Enqueue a newly arrived request."""

    def requeue(self, req: ReqInfo, now: float) -> None:
        """Put a preempted request back (vLLM: ``prepend_request``)."""
        self.add(req, now)

    @abstractmethod
    def peek(self, now: float) -> ReqInfo | None:
        """The request the engine should try to admit next, or ``None`` if empty."""

    def pop(self, now: float) -> ReqInfo:
        """Remove and return ``peek(now)``."""
        req = self.peek(now)
        if req is None:
            raise IndexError("pop from an empty waiting queue")
        self.remove(req)
        return req

    @abstractmethod
    def remove(self, req: ReqInfo) -> bool:
        """Drop a waiting request (abort); ``False`` if it was not waiting."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def waiting(self) -> Iterator[ReqInfo]:
        """All waiting requests, in no particular order."""

    # -- running set ---------------------------------------------------------------------
    def order_running(self, running: Sequence[ReqInfo], now: float) -> list[ReqInfo]:
        """Highest priority first; the engine evicts from the end. Default: as given
        (admission order, so the most recently admitted is the victim — vLLM's FCFS)."""
        return list(running)

    def decode_cap(self, running: Sequence[ReqInfo], now: float) -> int | None:
        """Maximum number of decode requests to run this step, or ``None``."""
        return None

    def admission_allowed(self, free_blocks: int, head_tokens: int, decoding: int,
                          block_size: int) -> bool:
        """Whether the engine may try to admit the waiting head (``head_tokens`` long) with
        ``free_blocks`` free KV blocks while ``decoding`` requests decode; asked before the
        engine's own fit check, only while something runs. ``True`` = vLLM's rule.
        Admission pacing (tailwise) says no when admitting would leave too little room
        for the running requests' growth."""
        return True

    def envelope(self, now: float) -> Envelope | None:
        """The waiting envelope in force at ``now``; ``None`` for a queue without one
        (FCFS, Kairos, EWSJF, the baselines). Read-only but for dropping stale heap
        entries; O(1) amortised."""
        return None

    def carry_over(self, old: QueueDiscipline) -> None:
        """Called by an engine when this queue replaces ``old`` on a policy swap, before
        any request is handed over: keep what ``old`` measured about the workload (not
        per-request state, which a swap resets). Default: nothing."""

    # -- feedback hooks ------------------------------------------------------------------
    def on_admit(self, req: ReqInfo, now: float) -> None:
        """``req`` moved from waiting to running."""

    def on_preempt(self, req: ReqInfo, now: float) -> None:
        """``req`` was evicted; ``requeue`` follows."""

    def on_first_token(self, req: ReqInfo, now: float) -> None:
        """``req`` produced its first output token."""

    def on_finish(self, req: ReqInfo, now: float) -> None:
        """``req`` finished (or was aborted while running)."""


class FcfsQueue(QueueDiscipline):
    """vLLM's default: a deque, arrivals appended, preempted requests put back in front."""

    name = "fcfs"

    def __init__(self) -> None:
        super().__init__()
        self._q: deque[ReqInfo] = deque()

    def add(self, req: ReqInfo, now: float) -> None:
        self._q.append(req)

    def requeue(self, req: ReqInfo, now: float) -> None:
        self._q.appendleft(req)

    def peek(self, now: float) -> ReqInfo | None:
        return self._q[0] if self._q else None

    def pop(self, now: float) -> ReqInfo:
        return self._q.popleft()

    def remove(self, req: ReqInfo) -> bool:
        try:
            self._q.remove(req)
        except ValueError:
            return False
        return True

    def __len__(self) -> int:
        return len(self._q)

    def waiting(self) -> Iterator[ReqInfo]:
        return iter(self._q)


class LazyHeapQueue(QueueDiscipline):
    """Bookkeeping of the heap-backed queues: ``_live`` maps each waiting request to its
    enqueue number; heap entries are tuples ending in ``(seq, req)``; removal only forgets
    the request and stale entries are dropped when they reach a heap's top, so every
    operation is O(log n) amortised."""

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[ReqInfo, int] = {}
        self._seq = 0

    def _enqueue(self, req: ReqInfo) -> int:
        """Make ``req`` live; returns the enqueue number its heap entries must carry."""
        self._seq += 1
        self._live[req] = self._seq
        return self._seq

    def _top(self, heap: list[Any]) -> ReqInfo | None:
        """The live request at the top of ``heap`` (stale entries above it are popped)."""
        live = self._live
        while heap:
            entry = heap[0]
            req: ReqInfo = entry[-1]
            if live.get(req) == entry[-2]:
                return req
            heapq.heappop(heap)
        return None

    def remove(self, req: ReqInfo) -> bool:
        return self._live.pop(req, None) is not None

    def __len__(self) -> int:
        return len(self._live)

    def waiting(self) -> Iterator[ReqInfo]:
        return iter(list(self._live))


class KeyedQueue(LazyHeapQueue):
    """A waiting queue ordered by a per-request key fixed when the request is enqueued.

    Keys may depend on anything that does not change while a request waits (arrival,
    prompt, attained work). Lower keys are served first; ties go to the earlier enqueue.
    With ``aging_s`` set, the oldest waiting request is served first as soon as it has
    waited ``aging_s`` (the safety envelope: no request waits longer than that behind
    later arrivals; waiting is counted from :meth:`wait_origin`). Removal is lazy, so
    every operation is O(log n) amortised.
    """

    def __init__(self, aging_s: float | None = None) -> None:
        super().__init__()
        self.aging_s = aging_s
        self._heap: list[tuple[float, int, ReqInfo]] = []
        self._fifo: list[tuple[float, int, ReqInfo]] = []
        if aging_s is not None:
            self.time_dependent = True

    @abstractmethod
    def waiting_key(self, req: ReqInfo, now: float) -> float:
        """Sort key of a waiting request (lower = sooner)."""

    def wait_origin(self, req: ReqInfo) -> float:
        """When the aging clock of a waiting request started: its arrival (tailwise's
        demotion restarts it at a preemption)."""
        return req.arrival_time

    def add(self, req: ReqInfo, now: float) -> None:
        seq = self._enqueue(req)
        key = self.waiting_key(req, now)
        req.sched_key = key
        heapq.heappush(self._heap, (key, seq, req))
        if self.aging_s is not None:
            heapq.heappush(self._fifo, (self.wait_origin(req), seq, req))

    def rekey(self, req: ReqInfo, now: float) -> bool:
        """Recompute the key of a waiting request whose inputs changed while it waited
        (e.g. its live prefix-cache hit); ``True`` if the key moved. O(log n): the old
        heap entries become stale and are dropped lazily (compacted when they dominate)."""
        if req not in self._live:
            return False
        key = self.waiting_key(req, now)
        if key == req.sched_key:
            return False
        seq = self._enqueue(req)
        req.sched_key = key
        heapq.heappush(self._heap, (key, seq, req))
        if self.aging_s is not None:
            heapq.heappush(self._fifo, (self.wait_origin(req), seq, req))
        if len(self._heap) > 2 * len(self._live) + 64:
            live = self._live
            self._heap = [e for e in self._heap if live.get(e[2]) == e[1]]
            heapq.heapify(self._heap)
            self._fifo = [e for e in self._fifo if live.get(e[2]) == e[1]]
            heapq.heapify(self._fifo)
        return True

    def peek(self, now: float) -> ReqInfo | None:
        best = self._top(self._heap)
        if best is None or self.aging_s is None:
            return best
        oldest = self._top(self._fifo)
        if (
            oldest is not None
            and oldest is not best
            and now - self.wait_origin(oldest) >= self.aging_s
        ):
            return oldest
        return best

    def envelope(self, now: float) -> Envelope | None:
        if self.aging_s is None:
            return None
        oldest = self._top(self._fifo)
        return Envelope(self.aging_s,
                        None if oldest is None else max(now - self.wait_origin(oldest), 0.0))

    def pop(self, now: float) -> ReqInfo:
        req = self.peek(now)
        if req is None:
            raise IndexError("pop from an empty waiting queue")
        if req is not self._top(self._heap):
            self.counters["aging_promotions"] += 1
        del self._live[req]
        return req

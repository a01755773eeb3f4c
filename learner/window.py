"""The recent-telemetry window and its reconstruction into a replayable Trace.

The window is keyed on ENGINE time: every event carries the engine's own timestamp
(virtual time in the simulator, wall/monotonic time in vLLM), and :meth:`engine_now`
is the latest one seen. Nothing here reads a clock, so a simulator can replay an hour
of telemetry in seconds and the learning loop sees exactly the timeline of the engine.

Reconstruction (:meth:`TelemetryWindow.trace`): every FINISHED request whose arrival
lies in ``[now − span, now]`` becomes one trace row (arrival time, prompt tokens, output
tokens, SLO class; cached prompt tokens go to ``meta["cached_tokens"]``). FINISHED events
repeat the arrival fields, so a dropped ARRIVAL event costs nothing. Requests still
running at ``now`` are left out (their length is unknown), which under-represents the
longest requests of the last few seconds of the window — a right-censoring bias. Under
load it does NOT vanish: with a 60-s span at 90% load a fifth of the arrivals are still
queued or decoding, mostly the long ones, and a tuner replaying such a window sees a
lighter, shorter workload than the engine serves (measured on the code→conversation
scenario: every challenger it promoted was worse on the complete window). So the loop
replays a *settled* span (:meth:`TelemetryWindow.settled_end`): the latest span whose
arrivals have (almost) all finished, i.e. it trades a lag of about one tail latency for
an unbiased window. The alternative (``[window] impute_unfinished``, opt-in) replays the
unfinished requests too, with lengths drawn from the finished ones that outlived them
(:func:`impute_outputs`; what each has produced is counted from its engine's steps,
:func:`produced_by`), so a round can replay the latest span.

Bounds: finished requests (``max_requests``) and arrived-but-unfinished requests
(``max_pending``) are capped; evictions are counted. Malformed events are skipped and
counted by reason, never raised.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np

from tailwise.records.trace import Trace
from tailwise.scorer.hooks import StepStats
from tailwise.wire.codec import StepEventError, engine_time_ok, step_stats_from_proto
from tailwise.wire.v1 import policy_pb2 as pb

MAX_REQUEST_ID = 512
#: step records kept per engine, with ``step_counts`` (for the imputation's token counts:
#: about 11 minutes of 10-ms steps, 1 MiB; a request decoding for longer is counted
#: from the oldest kept), and engines kept (the least recently reporting goes first)
MAX_STEP_TIMES = 65_536
MAX_STEP_ENGINES = 16


@dataclass(frozen=True, slots=True)
class FinishedRequest:
    arrival_time: float
    finish_time: float
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    slo_class: str
    first_token_time: float | None
    num_preemptions: int

    @property
    def uncached_prompt_tokens(self) -> int:
        """The partition's routing feature."""
        return max(self.prompt_tokens - self.cached_tokens, 0)


@dataclass(frozen=True, slots=True)
class _Arrival:
    arrival_time: float
    prompt_tokens: int
    cached_tokens: int
    slo_class: str
    #: engine time of its first token (FIRST_TOKEN/PREEMPTED events), None before it
    first_token_time: float | None = None
    #: output tokens it is known to have produced (progress events), 0 before any, and
    #: the engine time they were reported at
    tokens: int = 0
    tokens_time: float | None = None
    #: engine time of its last preemption, None if never: its steps since the first
    #: token overstate what it produced, ``tokens`` holds what it had then
    preempted_at: float | None = None


Counter = Callable[[str, int], None]


def _noop(_: str, __: int) -> None:
    return None


def _columns(rows: list[tuple[float, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(arrival time, prompt tokens) rows as (times, prompts) arrays."""
    return (np.asarray([t for t, _ in rows], dtype=np.float64),
            np.asarray([p for _, p in rows], dtype=np.float64))


class TelemetryWindow:
    """Thread-safe: the ingest thread calls :meth:`apply`, the loop reads snapshots."""

    def __init__(self, max_requests: int = 50_000, max_pending: int = 100_000,
                 max_steps: int = 4096, *, on_reject: Counter = _noop,
                 on_evict: Counter = _noop, step_counts: bool = False) -> None:
        self._max_requests = max_requests
        self._max_pending = max_pending
        self._finished: deque[FinishedRequest] = deque()
        self._unlearned: deque[float] = deque()
        #: (arrival time, prompt tokens) of arrivals not yet taken by the loop's drift watch
        self._arrived: deque[tuple[float, int]] = deque(maxlen=max_requests)
        self._unlearned_finished: deque[FinishedRequest] = deque(maxlen=max_requests)
        self._pending: OrderedDict[tuple[str, str], _Arrival] = OrderedDict()
        self._steps: deque[StepStats] = deque(maxlen=max_steps)
        #: per engine, its latest step records as (time, iterations so far): a request
        #: decoding since its first token (not preempted since) has produced one token per
        #: iteration of its engine since. Kept only with ``step_counts`` (what
        #: ``trace(impute=True)`` counts from; without, only progress events count): the
        #: ingest path pays for it on every step event
        self._step_counts = step_counts
        self._step_times: OrderedDict[str, _StepLog] = OrderedDict()
        self._now: float | None = None
        self._first: float | None = None
        self._seq = 0
        self._cond = threading.Condition()
        self._on_reject = on_reject
        self._on_evict = on_evict
        self.accepted = 0
        self.rejected = 0

    # -- ingest side ------------------------------------------------------------------------
    def apply(self, batch: pb.EngineEvent) -> int:
        """Fold one batch in; returns the number of events accepted."""
        ok = 0
        with self._cond:
            engine = batch.engine_id[:MAX_REQUEST_ID]
            for ev in batch.requests:
                reason = self._apply_request(engine, ev)
                if reason is None:
                    ok += 1
                else:
                    self.rejected += 1
                    self._on_reject(reason, 1)
            for st in batch.steps:
                reason = self._apply_step(st)
                if reason is None:
                    ok += 1
                    if self._step_counts:
                        self._step_time(engine, st.time, max(st.steps, 1))
                else:
                    self.rejected += 1
                    self._on_reject(reason, 1)
            self.accepted += ok
            self._seq += 1
            self._cond.notify_all()
        return ok

    def _step_time(self, engine: str, t: float, k: int) -> None:
        log_ = self._step_times.get(engine)
        if log_ is None:
            if len(self._step_times) >= MAX_STEP_ENGINES:
                self._step_times.popitem(last=False)
            log_ = self._step_times[engine] = _StepLog(MAX_STEP_TIMES)
        else:
            self._step_times.move_to_end(engine)
        log_.add(t, k)

    def _learn(self, x: float) -> None:
        self._unlearned.append(x)
        if len(self._unlearned) > self._max_requests:
            self._unlearned.popleft()
            self._on_evict("unlearned", 1)

    def _arrive(self, t: float, prompt: int) -> None:
        if len(self._arrived) == self._arrived.maxlen:  # nobody took them: oldest go
            self._on_evict("arrived", 1)
        self._arrived.append((t, prompt))

    def _advance(self, t: float) -> None:
        if self._now is None or t > self._now:
            self._now = t
        if self._first is None or t < self._first:
            self._first = t

    def _apply_request(self, engine: str, ev: pb.RequestEvent) -> str | None:
        t = ev.time
        if not engine_time_ok(t):
            return "bad_time"
        if not ev.request_id or len(ev.request_id) > MAX_REQUEST_ID:
            return "bad_request_id"
        if ev.prompt_tokens < 0 or ev.cached_tokens < 0 or ev.output_tokens < 0 \
                or ev.num_preemptions < 0:
            return "negative_count"
        kind = ev.kind
        key = (engine, ev.request_id)
        if kind == pb.REQUEST_EVENT_KIND_ARRIVAL:
            if ev.prompt_tokens < 1:
                return "bad_prompt_tokens"
            arrival = ev.arrival_time if ev.arrival_time > 0 else t
            if not engine_time_ok(arrival):
                return "bad_time"
            prev = self._pending.get(key)
            if prev is None:  # a repeated ARRIVAL is one arrival
                self._arrive(arrival, ev.prompt_tokens)
            self._pending[key] = _Arrival(arrival, ev.prompt_tokens, ev.cached_tokens,
                                          ev.slo_class[:64]) if prev is None else replace(
                prev, arrival_time=arrival, prompt_tokens=ev.prompt_tokens,
                cached_tokens=ev.cached_tokens, slo_class=ev.slo_class[:64])
            self._pending.move_to_end(key)
            if len(self._pending) > self._max_pending:
                self._pending.popitem(last=False)
                self._on_evict("pending", 1)
            self._learn(float(max(ev.prompt_tokens - ev.cached_tokens, 0)))
        elif kind == pb.REQUEST_EVENT_KIND_FINISHED:
            pend = self._pending.pop(key, None)
            arrival = ev.arrival_time if ev.arrival_time > 0 else (
                pend.arrival_time if pend else math.nan)
            prompt = ev.prompt_tokens or (pend.prompt_tokens if pend else 0)
            cached = ev.cached_tokens or (pend.cached_tokens if pend else 0)
            slo = ev.slo_class[:64] or (pend.slo_class if pend else "")
            if not math.isfinite(arrival) or arrival > t or prompt < 1:
                return "incomplete_finish"
            ftt = ev.first_token_time if ev.first_token_time > 0 else None
            if ftt is not None and not math.isfinite(ftt):
                return "bad_time"
            rec = FinishedRequest(arrival, t, prompt, min(cached, prompt), ev.output_tokens, slo,
                                  ftt, ev.num_preemptions)
            self._finished.append(rec)
            self._unlearned_finished.append(rec)
            if len(self._finished) > self._max_requests:
                self._finished.popleft()
                self._on_evict("finished", 1)
            if pend is None:  # its arrival was never seen: learn its feature now
                self._learn(float(rec.uncached_prompt_tokens))
                self._arrive(arrival, prompt)
        elif kind in (pb.REQUEST_EVENT_KIND_FIRST_TOKEN, pb.REQUEST_EVENT_KIND_TOKENS,
                      pb.REQUEST_EVENT_KIND_PREEMPTED):
            # progress: what an unfinished request has produced bounds its imputed length
            pend = self._pending.get(key)
            if pend is not None:
                self._progress(key, pend, kind, t, ev)
        else:
            return "unknown_kind"
        self._advance(t)
        return None

    def _progress(self, key: tuple[str, str], pend: _Arrival, kind: int, t: float,
                  ev: pb.RequestEvent) -> None:
        """Fold a FIRST_TOKEN / TOKENS / PREEMPTED event into ``pend``. A first-token time
        that is not a valid engine time is ignored (as on FINISHED), never refused: these
        events only informed the engine clock before."""
        ft = pend.first_token_time
        if ft is None:
            given = ev.first_token_time
            if given > 0 and engine_time_ok(given) and given <= t:  # 0: not given
                ft = given
            elif kind == pb.REQUEST_EVENT_KIND_FIRST_TOKEN or ev.output_tokens > 0:
                ft = t  # it has produced a token by now
        tokens, when = pend.tokens, pend.tokens_time
        if ev.output_tokens > tokens:
            tokens, when = ev.output_tokens, t
        pre = pend.preempted_at
        if kind == pb.REQUEST_EVENT_KIND_PREEMPTED:
            pre = t
        new = (ft, tokens, when, pre)
        if new != (pend.first_token_time, pend.tokens, pend.tokens_time, pend.preempted_at):
            self._pending[key] = replace(pend, first_token_time=ft, tokens=tokens,
                                         tokens_time=when, preempted_at=pre)

    def _apply_step(self, st: pb.StepEvent) -> str | None:
        try:  # the codec's check, its reason code counted
            self._steps.append(step_stats_from_proto(st))
        except StepEventError as exc:
            return exc.reason
        self._advance(st.time)
        return None

    # -- loop side ------------------------------------------------------------------------
    def engine_now(self) -> float | None:
        """Latest engine timestamp seen (None before any event)."""
        with self._cond:
            return self._now

    def engine_start(self) -> float | None:
        """Earliest engine timestamp seen (None before any event)."""
        with self._cond:
            return self._first

    @property
    def seq(self) -> int:
        """Batches applied so far (a progress counter to wait on)."""
        with self._cond:
            return self._seq

    def wait_for_progress(self, seen_seq: int, timeout: float) -> int:
        """Block until a batch beyond ``seen_seq`` is applied or ``timeout`` (wall s)."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq > seen_seq, timeout=timeout)
            return self._seq

    def kick(self) -> None:
        """Wake waiters (shutdown)."""
        with self._cond:
            self._seq += 1
            self._cond.notify_all()

    def take_unlearned(self) -> list[float]:
        """Routing features (uncached prompt tokens) of requests that arrived since the
        last call — from ARRIVAL events, or from FINISHED ones whose arrival was lost."""
        with self._cond:
            out = list(self._unlearned)
            self._unlearned.clear()
            return out

    def take_arrivals(self) -> tuple[np.ndarray, np.ndarray]:
        """(arrival times, prompt tokens) of the requests reported since the last call
        (or :meth:`arrivals_from`), in arrival order — from ARRIVAL events, or FINISHED
        ones whose arrival was lost. A late report comes in a later call."""
        with self._cond:
            rows = sorted(self._arrived)
            self._arrived.clear()
        return _columns(rows)

    def arrivals_from(self, since: float) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`arrivals` from ``since`` on, and :meth:`take_arrivals` restarts after it,
        in one step: each arrival is in exactly one of the two."""
        with self._cond:
            self._arrived.clear()
            return self.arrivals(since)

    def take_finished_unlearned(self) -> list[FinishedRequest]:
        """Requests finished since the last call (for the streaming γ estimators)."""
        with self._cond:
            out = list(self._unlearned_finished)
            self._unlearned_finished.clear()
            return out

    def finished_since(self, since: float, until: float = math.inf) -> list[FinishedRequest]:
        with self._cond:
            return [r for r in self._finished if since <= r.arrival_time < until]

    def count_since(self, since: float, until: float = math.inf, *,
                    pending: bool = False, max_pending_age_s: float = math.inf) -> int:
        """Finished requests that arrived in ``[since, until)``; with ``pending``, the
        unfinished ones :meth:`trace` replays with ``impute`` and the same
        ``max_pending_age_s`` too."""
        with self._cond:
            n = sum(1 for r in self._finished if since <= r.arrival_time < until)
            if pending and self._finished:
                n += sum(1 for _ in self._unfinished_in(since, until, max_pending_age_s))
            return n

    def _unfinished_in(self, since: float, until: float, max_age_s: float
                       ) -> Iterator[tuple[str, _Arrival]]:
        """(engine, request) of the unfinished requests that arrived in ``[since, until)``
        at most ``max_age_s`` before the engine clock (older: taken for lost). Under the
        lock."""
        now = self._now if self._now is not None else since
        oldest = now - max_age_s
        for (engine, _), a in self._pending.items():
            if since <= a.arrival_time < until and oldest <= a.arrival_time <= now:
                yield engine, a

    def arrivals(self, since: float, until: float = math.inf) -> tuple[np.ndarray, np.ndarray]:
        """(arrival times, prompt tokens) of every request that arrived in ``[since,
        until)``, finished or still in the engine, in arrival order (known at arrival: no
        censoring)."""
        with self._cond:
            rows = [(r.arrival_time, r.prompt_tokens) for r in self._finished
                    if since <= r.arrival_time < until]
            rows += [(a.arrival_time, a.prompt_tokens) for a in self._pending.values()
                     if since <= a.arrival_time < until]
        rows.sort()
        return _columns(rows)

    def settled_end(self, now: float, span: float, quantile: float,
                    max_lag_s: float = math.inf) -> float:
        """The latest ``u <= now`` such that at least ``quantile`` of the requests that
        arrived in ``[u - span, u)`` have finished (a replay of that span is not biased
        toward short requests by right-censoring). Candidates are ``now`` and the arrival
        times of unfinished requests at most ``max_lag_s`` old (which also bounds the
        lag when ARRIVAL events of requests that never finish pile up); when none
        qualifies the answer is ``now - max_lag_s``.

        >>> w = TelemetryWindow()
        >>> from tailwise.wire.v1 import policy_pb2 as pb
        >>> b = pb.EngineEvent()
        >>> for i in range(10):
        ...     _ = b.requests.add(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id=f"r{i}",
        ...                        time=float(i), prompt_tokens=10)
        >>> for i in range(6):
        ...     _ = b.requests.add(kind=pb.REQUEST_EVENT_KIND_FINISHED, request_id=f"r{i}",
        ...                        time=9.5, output_tokens=5)
        >>> _ = w.apply(b)
        >>> w.settled_end(9.5, 100.0, 0.99)  # r6..r9 still run: replay arrivals before 6
        6.0
        """
        with self._cond:
            fin = np.sort(np.fromiter((r.arrival_time for r in self._finished), np.float64,
                                      count=len(self._finished)))
            pend = np.sort(np.fromiter((a.arrival_time for a in self._pending.values()),
                                       np.float64, count=len(self._pending)))
        cand = pend[(pend <= now) & (pend >= now - max_lag_s)][::-1]
        cand = np.concatenate([[now], cand])
        n_fin = np.searchsorted(fin, cand, "left") - np.searchsorted(fin, cand - span, "left")
        n_pend = np.searchsorted(pend, cand, "left") - np.searchsorted(pend, cand - span, "left")
        ok = n_pend <= (1.0 - quantile) * (n_fin + n_pend) + 1e-9
        hit = np.flatnonzero(ok)
        if hit.size:
            return float(cand[hit[0]])
        return now - max_lag_s if math.isfinite(max_lag_s) else float(cand[-1])

    def __len__(self) -> int:
        with self._cond:
            return len(self._finished)

    def recent_steps(self) -> list[StepStats]:
        with self._cond:
            return list(self._steps)

    def trace(self, since: float, name: str = "telemetry-window",
              until: float = math.inf, *, carry_in: bool = False, impute: bool = False,
              max_pending_age_s: float = math.inf) -> Trace | None:
        """The finished requests arriving in ``[since, until)`` as a Trace (None if none).

        ``carry_in``: also the requests that were in the engine at ``since`` (arrived
        before, finished after), placed at ``since`` in their arrival order — those still
        waiting with their whole work, those already decoding with the prompt (their KV)
        and the share of their output still to come (interpolated between first token and
        finish). Without them a replay of an overloaded window starts from an empty engine
        and sees none of the backlog the engine really carried: every candidate then
        replays alike (the flat trial values of issue 13).

        ``impute``: also the requests still unfinished (arrived at most
        ``max_pending_age_s`` before the engine clock), their output lengths drawn by
        :func:`impute_outputs` from the latest finished requests (of their SLO class when
        it has enough) conditioned on what they have already produced — so an overloaded
        window is replayed with the requests it has not finished yet instead of without
        them (the right-censoring bias the module docstring describes), and without
        waiting for it to settle. Deterministic for a given window.
        """
        with self._cond:
            recs = [r for r in self._finished if since <= r.arrival_time < until]
            carried = [r for r in self._finished
                       if r.arrival_time < since < r.finish_time] if carry_in else []
            now = self._now if self._now is not None else since
            pend: list[tuple[str, _Arrival]] = []
            pend_carried: list[tuple[str, _Arrival]] = []
            pool: list[FinishedRequest] = []
            steps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            if impute:
                pend = list(self._unfinished_in(since, until, max_pending_age_s))
                if carry_in:
                    pend_carried = list(self._unfinished_in(-math.inf, since,
                                                            max_pending_age_s))
                pool = [self._finished[-i] for i in
                        range(1, min(IMPUTE_POOL, len(self._finished)) + 1)]
                for engine in {e for e, _ in pend + pend_carried}:
                    log_ = self._step_times.get(engine)
                    steps[engine] = log_.counts() if log_ is not None else _NO_STEPS
        if not recs and not (pend and pool):
            return None
        if not pool:  # nothing finished to draw lengths from: the unfinished stay out
            pend, pend_carried = [], []

        def remaining(r: FinishedRequest) -> int:
            ft = r.first_token_time
            if ft is None or ft >= since or r.finish_time <= ft:
                return max(r.output_tokens, 1)
            share = (r.finish_time - since) / (r.finish_time - ft)
            return max(round(r.output_tokens * share), 1)

        # (arrival, prompt, cached, slo, output tokens to replay, engine end)
        Row = tuple[float, int, int, str, int, float]
        head: list[Row] = [(r.arrival_time, r.prompt_tokens, r.cached_tokens, r.slo_class,
                            remaining(r), r.finish_time) for r in carried]
        body: list[Row] = [(r.arrival_time, r.prompt_tokens, r.cached_tokens, r.slo_class,
                            max(r.output_tokens, 1), r.finish_time) for r in recs]
        unfinished = pend_carried + pend
        if unfinished:
            produced = [produced_by(a, steps[e], now) for e, a in unfinished]
            totals = _impute_for(pool, [a for _, a in unfinished], produced,
                                 seed=_seed_of(since))
            for (e, a), total in zip(unfinished, totals, strict=True):
                out = int(total)
                if a.arrival_time < since:  # what is left of it at ``since``
                    out = max(out - produced_by(a, steps[e], since), 1)
                    head.append((a.arrival_time, a.prompt_tokens, a.cached_tokens,
                                 a.slo_class, out, now))
                else:
                    body.append((a.arrival_time, a.prompt_tokens, a.cached_tokens,
                                 a.slo_class, out, now))
        head.sort(key=lambda row: row[0])
        body.sort(key=lambda row: row[0])
        if not body:
            return None
        t0 = since if head else body[0][0]
        rows = [(since - t0, *row[1:]) for row in head]
        rows += [(row[0] - t0, *row[1:]) for row in body]
        slo = [row[3] for row in rows]
        return Trace(
            name=name,
            arrival_s=np.asarray([row[0] for row in rows], dtype=np.float64),
            prompt_tokens=np.asarray([row[1] for row in rows], dtype=np.int64),
            output_tokens=np.asarray([row[4] for row in rows], dtype=np.int64),
            slo_classes=slo if any(slo) else None,
            meta={"format": "telemetry", "engine_t0": t0, "engine_since": since,
                  "engine_t1": max(row[5] for row in rows),
                  "engine_until": until if math.isfinite(until) else None,
                  "carried_in": len(head), "imputed": len(unfinished),
                  "cached_tokens": [min(row[2], row[1]) for row in rows]},
        )


#: imputation draws from at most this many of the latest finished requests
IMPUTE_POOL = 2000
#: an SLO class is imputed from its own finished requests once the pool holds this many
IMPUTE_MIN_CLASS = 20
#: and from the finished requests nearest in prompt length: this many of them
IMPUTE_NEIGHBOURS = 64


_LOG2 = math.log(2.0)


def _seed_of(since: float) -> int:
    return int(abs(since) * 1000.0) % (2**32)


class _StepLog:
    """One engine's latest step records in a ring of ``size``: their times and the
    iterations run by then (a record can cover several, ``StepEvent.steps``)."""

    __slots__ = ("_done", "_n", "_times", "base", "total")

    def __init__(self, size: int) -> None:
        self._times = np.empty(size, dtype=np.float64)
        self._done = np.empty(size, dtype=np.int64)
        self._n = 0
        self.total = 0  # iterations so far
        self.base = 0  # iterations before the oldest record kept

    def add(self, t: float, k: int) -> None:
        size = len(self._times)
        i = self._n % size
        if self._n and t < self._times[(self._n - 1) % size]:
            return  # a late record is dropped: times and counts stay monotone
        if self._n >= size:
            self.base = int(self._done[i])
        self.total += k
        self._times[i], self._done[i] = t, self.total
        self._n += 1

    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(times, iterations by then), oldest first, led by (−inf, ``base``)."""
        size = len(self._times)
        if self._n <= size:
            times, done = self._times[:self._n], self._done[:self._n]
        else:
            i = self._n % size
            times = np.concatenate([self._times[i:], self._times[:i]])
            done = np.concatenate([self._done[i:], self._done[:i]])
        return (np.concatenate([[-math.inf], times]),
                np.concatenate([[self.base], done]).astype(np.float64))


_NO_STEPS = (np.array([-math.inf]), np.array([0.0]))


def produced_by(a: _Arrival, steps: tuple[np.ndarray, np.ndarray], at: float) -> int:
    """Output tokens ``a`` had produced by engine time ``at``: one at its first token and
    one per iteration of its engine since (``steps``, :meth:`_StepLog.counts`), and at least
    what a progress event had reported by then. After a preemption that followed its
    first token, what it had then (when it resumed is not reported: a lower bound); before
    that preemption, at most that. 0 before its first token."""
    ft = a.first_token_time
    if ft is None or ft > at:
        return 0
    reported = a.tokens if a.tokens_time is not None and a.tokens_time <= at else 0
    pre = a.preempted_at if a.preempted_at is not None and a.preempted_at >= ft else None
    if pre is not None and at >= pre:
        return max(reported, 1)
    times, done = steps
    n = 1 + int(done[np.searchsorted(times, at, "right") - 1]
                - done[np.searchsorted(times, ft, "right") - 1])
    return min(n, max(a.tokens, 1)) if pre is not None else max(n, reported)


def _impute_for(pool: list[FinishedRequest], unfinished: list[_Arrival], produced: list[int],
                seed: int) -> np.ndarray:
    """Total output lengths for ``unfinished`` (see :func:`impute_outputs`), each from its
    SLO class's finished requests when the pool has enough of them."""
    classes: dict[str, list[int]] = {}
    for i, r in enumerate(pool):
        classes.setdefault(r.slo_class, []).append(i)
    out = np.fromiter((r.output_tokens for r in pool), np.float64, count=len(pool))
    pool_prompt = np.fromiter((r.prompt_tokens for r in pool), np.float64, count=len(pool))
    prompt = np.fromiter((a.prompt_tokens for a in unfinished), np.float64,
                         count=len(unfinished))
    tokens = np.asarray(produced, dtype=np.float64)
    totals = np.empty(len(unfinished), dtype=np.int64)
    rng = np.random.default_rng(seed)
    groups: dict[str | None, list[int]] = {}  # None: the whole pool
    for i, a in enumerate(unfinished):
        own = classes.get(a.slo_class, ())
        groups.setdefault(a.slo_class if len(own) >= IMPUTE_MIN_CLASS else None, []).append(i)
    for cls, idx in groups.items():
        sel = slice(None) if cls is None else np.asarray(classes[cls], dtype=np.int64)
        at = np.asarray(idx, dtype=np.int64)
        totals[at] = impute_outputs(out[sel], tokens[at], rng, pool_prompt=pool_prompt[sel],
                                    prompt=prompt[at], neighbours=IMPUTE_NEIGHBOURS)
    return totals


def impute_outputs(pool_out: np.ndarray, produced: np.ndarray, rng: np.random.Generator, *,
                   pool_prompt: np.ndarray | None = None, prompt: np.ndarray | None = None,
                   neighbours: int = 64) -> np.ndarray:
    """Total output lengths of requests that have not finished, drawn from those that did.

    Request ``i`` has produced ``produced[i]`` output tokens (0 while it waits for its
    first token). Its total is drawn uniformly from the finished requests that outlived
    it: more than ``produced[i]`` tokens (its survival so far is evidence of a long
    request; the unconditioned pool would impute the short ones that finish first).
    Tokens, not seconds: how fast a request decodes depends on the load it met, which
    shifts with the traffic. With prompt lengths (``pool_prompt``, ``prompt``) it draws
    from those of them within a factor of 2 of its prompt length (on ``1 + tokens``),
    else from those of them among the ``neighbours`` nearest in prompt length, else from
    any of them: output lengths follow the kind of request (a long document after a
    reasoning storm is not a reasoning request). When none
    outlived it, it is assumed to be halfway: twice what it has produced (the median
    remaining life under a Pareto-like tail).

    >>> rng = np.random.default_rng(0)
    >>> pool_out = np.array([10.0, 20.0, 400.0])
    >>> int(impute_outputs(pool_out, np.array([25.0]), rng)[0])  # past 25: the 400
    400
    >>> int(impute_outputs(pool_out, np.array([500.0]), rng)[0])  # past every one
    1000
    >>> int(impute_outputs(pool_out, np.array([0.0]), rng,
    ...                    pool_prompt=np.array([100.0, 120.0, 9000.0]),
    ...                    prompt=np.array([8000.0]))[0])  # the long prompt's
    400
    """
    res = np.empty(len(produced), dtype=np.int64)
    near_by: np.ndarray | None = None
    lp = np.zeros(0)
    if pool_prompt is not None and prompt is not None and len(pool_out):
        lp = np.log1p(np.asarray(pool_prompt, dtype=np.float64))
        near_by = np.log1p(np.asarray(prompt, dtype=np.float64))
    k_near = max(min(neighbours, len(pool_out)), 1)
    for i in range(len(produced)):
        k = produced[i]
        alive = pool_out > k
        cand = pool_out[alive]
        if near_by is not None and cand.size:
            dist = np.abs(lp - near_by[i])
            close = pool_out[alive & (dist <= _LOG2)]  # within a factor of 2 in prompt
            if not close.size:
                near = np.argpartition(dist, k_near - 1)[:k_near]
                close = pool_out[near][alive[near]]
            if close.size:
                cand = close
        if cand.size:
            res[i] = int(cand[rng.integers(cand.size)])
        else:
            res[i] = int(max(2.0 * k, k + 1.0))
    return res

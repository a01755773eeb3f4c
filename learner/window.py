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
an unbiased window.

Bounds: finished requests (``max_requests``) and arrived-but-unfinished requests
(``max_pending``) are capped; evictions are counted. Malformed events are skipped and
counted by reason, never raised.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tailwise.records.trace import Trace
from tailwise.scorer.hooks import StepStats
from tailwise.wire.v1 import policy_pb2 as pb

#: events stamped later than this (seconds) are refused: no engine clock is that far along,
#: and one bogus stamp would otherwise fast-forward the loop's engine clock
MAX_ENGINE_TIME = 1e11
MAX_REQUEST_ID = 512


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
                 on_evict: Counter = _noop) -> None:
        self._max_requests = max_requests
        self._max_pending = max_pending
        self._finished: deque[FinishedRequest] = deque()
        self._unlearned: deque[float] = deque()
        #: (arrival time, prompt tokens) of arrivals not yet taken by the loop's drift watch
        self._arrived: deque[tuple[float, int]] = deque(maxlen=max_requests)
        self._unlearned_finished: deque[FinishedRequest] = deque(maxlen=max_requests)
        self._pending: OrderedDict[tuple[str, str], _Arrival] = OrderedDict()
        self._steps: deque[StepStats] = deque(maxlen=max_steps)
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
                else:
                    self.rejected += 1
                    self._on_reject(reason, 1)
            self.accepted += ok
            self._seq += 1
            self._cond.notify_all()
        return ok

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
        if not math.isfinite(t) or t < 0 or t > MAX_ENGINE_TIME:
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
            if not math.isfinite(arrival) or arrival > MAX_ENGINE_TIME:
                return "bad_time"
            if key not in self._pending:  # a repeated ARRIVAL is one arrival
                self._arrive(arrival, ev.prompt_tokens)
            self._pending[key] = _Arrival(arrival, ev.prompt_tokens, ev.cached_tokens,
                                          ev.slo_class[:64])
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
            pass  # progress events only move the engine clock (kept for live metrics)
        else:
            return "unknown_kind"
        self._advance(t)
        return None

    def _apply_step(self, st: pb.StepEvent) -> str | None:
        if not math.isfinite(st.time) or st.time < 0 or st.time > MAX_ENGINE_TIME:
            return "bad_time"
        if not math.isfinite(st.step_time_s) or st.step_time_s < 0:
            return "bad_step_time"
        if not math.isfinite(st.kv_usage) or not 0 <= st.kv_usage <= 1.5:
            return "bad_kv_usage"
        if min(st.prefill_tokens, st.decode_requests, st.running, st.waiting, st.preempted) < 0:
            return "negative_count"
        self._steps.append(StepStats(
            now=st.time, step_time_s=st.step_time_s, prefill_tokens=st.prefill_tokens,
            decode_requests=st.decode_requests, running=st.running, waiting=st.waiting,
            kv_usage=st.kv_usage, preempted=st.preempted, policy_version=st.policy_version))
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

    def count_since(self, since: float, until: float = math.inf) -> int:
        with self._cond:
            return sum(1 for r in self._finished if since <= r.arrival_time < until)

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
              until: float = math.inf, *, carry_in: bool = False) -> Trace | None:
        """The finished requests arriving in ``[since, until)`` as a Trace (None if none).

        ``carry_in``: also the requests that were in the engine at ``since`` (arrived
        before, finished after), placed at ``since`` in their arrival order — those still
        waiting with their whole work, those already decoding with the prompt (their KV)
        and the share of their output still to come (interpolated between first token and
        finish). Without them a replay of an overloaded window starts from an empty engine
        and sees none of the backlog the engine really carried: every candidate then
        replays alike (the flat trial values of issue 13).
        """
        with self._cond:
            recs = [r for r in self._finished if since <= r.arrival_time < until]
            carried = [r for r in self._finished
                       if r.arrival_time < since < r.finish_time] if carry_in else []
        if not recs:
            return None
        recs.sort(key=lambda r: r.arrival_time)
        carried.sort(key=lambda r: r.arrival_time)

        def remaining(r: FinishedRequest) -> int:
            ft = r.first_token_time
            if ft is None or ft >= since or r.finish_time <= ft:
                return max(r.output_tokens, 1)
            share = (r.finish_time - since) / (r.finish_time - ft)
            return max(round(r.output_tokens * share), 1)

        t0 = since if carried else recs[0].arrival_time
        rows = [(since - t0, r, remaining(r)) for r in carried]
        rows += [(r.arrival_time - t0, r, max(r.output_tokens, 1)) for r in recs]
        arrival = np.asarray([a for a, _, _ in rows], dtype=np.float64)
        prompt = np.asarray([r.prompt_tokens for _, r, _ in rows], dtype=np.int64)
        output = np.asarray([o for _, _, o in rows], dtype=np.int64)
        slo = [r.slo_class for _, r, _ in rows]
        return Trace(
            name=name, arrival_s=arrival, prompt_tokens=prompt, output_tokens=output,
            slo_classes=slo if any(slo) else None,
            meta={"format": "telemetry", "engine_t0": t0, "engine_since": since,
                  "engine_t1": max(r.finish_time for _, r, _ in rows),
                  "engine_until": until if math.isfinite(until) else None,
                  "carried_in": len(carried),
                  "cached_tokens": [r.cached_tokens for _, r, _ in rows]},
        )

"""N engine replicas behind a router, on one event clock.

Each replica is an ordinary :class:`~tailwise.simulator.engine.Simulator` driven through
its step-wise API. For every arrival, in time order, all replicas first run the
iterations that start before it (:meth:`Simulator.advance`), then the router picks a
replica from the replicas' :class:`~tailwise.scorer.hints.ReplicaHints` and the request
is offered there. Decode jumps stop at the fleet's next arrival, so no replica runs
past an event that could change it. The router therefore sees each replica as of the
end of its step in flight — at most one iteration (tens of ms) fresher than a real
gateway's scrape, never staler.

Hints come from one :class:`~tailwise.scorer.hints.HintTracker` per replica fed by the
replica's own telemetry events — the code the sidecar runs to serve hints.

A one-replica fleet reproduces :func:`~tailwise.simulator.engine.simulate` exactly
(tested), so fleet numbers and single-engine numbers are comparable.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from tailwise.records.requests import RequestRecords
from tailwise.records.trace import Trace
from tailwise.scorer.hints import HintTracker
from tailwise.scorer.hooks import PolicySource, StepStats, TelemetrySink
from tailwise.scorer.interface import QueueDiscipline
from tailwise.scorer.request import ReqInfo
from tailwise.scorer.step_time import H100_LLAMA3_8B, StepTimeModel
from tailwise.simulator.engine import EngineConfig, SimResult, Simulator
from tailwise.simulator.routers import Router, RouteRequest


@dataclass
class ReplicaArm:
    """One replica's scheduler and, for adaptive policies, its learner's seams."""

    scheduler: QueueDiscipline
    source: PolicySource | None = None
    sink: TelemetrySink | None = None


class TeeSink:
    """Forwards every telemetry event to several sinks, in order."""

    def __init__(self, sinks: Sequence[TelemetrySink]) -> None:
        self.sinks = list(sinks)

    def on_arrival(self, req: ReqInfo, now: float) -> None:
        for s in self.sinks:
            s.on_arrival(req, now)

    def on_first_token(self, req: ReqInfo, now: float) -> None:
        for s in self.sinks:
            s.on_first_token(req, now)

    def on_preempt(self, req: ReqInfo, now: float) -> None:
        for s in self.sinks:
            s.on_preempt(req, now)

    def on_finish(self, req: ReqInfo, now: float) -> None:
        for s in self.sinks:
            s.on_finish(req, now)

    def on_step(self, stats: StepStats) -> None:
        for s in self.sinks:
            s.on_step(stats)


@dataclass
class FleetResult:
    """Outcome of one fleet run: per-replica results and which replica served what."""

    router: str
    policy_name: str
    trace: Trace
    replicas: list[SimResult]
    #: replica index per request of the trace
    assignment: npt.NDArray[np.int64]
    wall_s: float

    def replica(self, k: int) -> SimResult:
        """Replica ``k``'s own view: only the requests routed to it."""
        idx = np.flatnonzero(self.assignment == k)
        res = self.replicas[k]
        return SimResult(trace=self.trace.select(idx), config=res.config, model=res.model,
                         policy_name=res.policy_name, records=_select(res.records, idx),
                         timeseries=res.timeseries, counters=res.counters,
                         end_time=res.end_time, wall_s=res.wall_s,
                         policy_changes=res.policy_changes, policy_timeline=res.policy_timeline)

    def merged(self) -> SimResult:
        """The whole fleet as one result: every request's outcome from its replica."""
        first = self.replicas[0]
        rows = np.arange(len(self.trace))
        kw: dict[str, Any] = {}
        for f in fields(RequestRecords):
            v = getattr(first.records, f.name)
            if isinstance(v, np.ndarray):
                stack = np.stack([getattr(r.records, f.name) for r in self.replicas])
                kw[f.name] = stack[self.assignment, rows]
            else:
                kw[f.name] = v
        counters: dict[str, int] = {}
        for r in self.replicas:
            for key, val in r.counters.items():
                counters[key] = counters.get(key, 0) + val
        ts = {k: np.concatenate([r.timeseries[k] for r in self.replicas])
              for k in first.timeseries}
        order = np.argsort(ts["t"], kind="stable") if "t" in ts else None
        if order is not None:
            ts = {k: v[order] for k, v in ts.items()}
        return SimResult(trace=self.trace, config=first.config, model=first.model,
                         policy_name=self.policy_name, records=RequestRecords(**kw),
                         timeseries=ts, counters=counters,
                         end_time=max(r.end_time for r in self.replicas), wall_s=self.wall_s)


def _select(rec: RequestRecords, idx: npt.NDArray[np.intp]) -> RequestRecords:
    kw: dict[str, Any] = {}
    for f in fields(RequestRecords):
        v = getattr(rec, f.name)
        if isinstance(v, np.ndarray):
            kw[f.name] = v[idx]
        elif isinstance(v, list):
            kw[f.name] = [v[i] for i in idx.tolist()]
        else:
            kw[f.name] = v
    return RequestRecords(**kw)


def simulate_fleet(trace: Trace, arms: Sequence[ReplicaArm], router: Router,
                   config: EngineConfig | None = None, model: StepTimeModel = H100_LLAMA3_8B,
                   *, debug: bool = False,
                   progress: Callable[[int, int], None] | None = None) -> FleetResult:
    """Replay ``trace`` through ``len(arms)`` replicas behind ``router``."""
    if not arms:
        raise ValueError("replicas must be >= 1, got 0")
    cfg = config or EngineConfig()
    t0 = time.perf_counter()
    trackers: list[HintTracker] = []
    sims: list[Simulator] = []
    for k, arm in enumerate(arms):
        tracker = HintTracker(f"replica-{k}", model, kv_total_blocks=cfg.num_gpu_blocks,
                              step_budget=cfg.max_num_batched_tokens)
        sink: TelemetrySink = tracker if arm.sink is None else TeeSink([arm.sink, tracker])
        sims.append(Simulator(trace, arm.scheduler, cfg, model, source=arm.source, sink=sink,
                              debug=debug))
        trackers.append(tracker)
    n = len(trace)
    arr = trace.arrival_s.tolist()
    prm = trace.prompt_tokens.tolist()
    hashes = trace.hash_ids if cfg.enable_prefix_caching and trace.hash_ids is not None else None
    assignment = np.zeros(n, np.int64)
    report_every = max(n // 100, 1)
    for i in range(n):
        t = arr[i]
        for s in sims:
            s.advance(t, t)
        for s, tr in zip(sims, trackers, strict=True):
            pol = s.policy_in_force
            if pol is not None and pol is not tr.policy:  # the policy in force sets the horizon
                tr.set_policy(pol)
        hints = [tr.hints() for tr in trackers]
        k = router.pick(RouteRequest(prm[i], tuple(hashes[i]) if hashes is not None else ()),
                        hints)
        if not 0 <= k < len(sims):
            raise AssertionError(f"router {router.name} picked replica {k} of {len(sims)}")
        assignment[i] = k
        sims[k].offer(i)
        if progress is not None and i % report_every == 0:
            progress(i, n)
    for s in sims:
        s.advance(math.inf, math.inf)
    wall = time.perf_counter() - t0
    results = [s.result(wall) for s in sims]
    if progress is not None:
        progress(n, n)
    return FleetResult(router=router.name, policy_name=sims[0].policy.name, trace=trace,
                       replicas=results, assignment=assignment, wall_s=wall)

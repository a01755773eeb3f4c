"""A simulator engine running in wall time beside the test, for reliability tests.

:class:`EngineLoop` replays a trace back to back in a background thread (each run's
arrivals shifted so the engine clock keeps increasing, as one long-running engine's
would) with a given policy source and telemetry sink, until stopped. :class:`StepClock`
wraps the sink and records, for every engine step, the wall-clock time it was reported
and the policy version in force, so a test can measure the longest wall-clock gap between
two engine steps (a stall) in any interval and which policy the engine applied when.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from array import array
from collections.abc import Callable

import numpy as np

from tailwise.scorer.hooks import PolicySource, StepStats, TelemetrySink
from tailwise.scorer.registry import build_scheduler
from tailwise.scorer.request import ReqInfo
from tailwise.scorer.step_time import H100_LLAMA3_8B, StepTimeModel
from tailwise.simulator.engine import EngineConfig, SimResult, simulate
from tailwise.simulator.traces import Trace


class StepClock:
    """TelemetrySink forwarding to ``inner`` and recording (wall time, policy version)
    per engine step in compact arrays. They only grow (an append is atomic under the
    GIL); readers take copies (``arr[:]``, never a buffer export, which would make the
    engine thread's next append fail)."""

    def __init__(self, inner: TelemetrySink | None = None,
                 on_step: Callable[[StepStats], None] | None = None) -> None:
        self.inner = inner
        self.hook = on_step
        self.walls = array("d")
        self.versions = array("q")
        self.engine_times = array("d")
        self._progress = threading.Condition()

    def on_arrival(self, req: ReqInfo, now: float) -> None:
        if self.inner is not None:
            self.inner.on_arrival(req, now)

    def on_first_token(self, req: ReqInfo, now: float) -> None:
        if self.inner is not None:
            self.inner.on_first_token(req, now)

    def on_preempt(self, req: ReqInfo, now: float) -> None:
        if self.inner is not None:
            self.inner.on_preempt(req, now)

    def on_finish(self, req: ReqInfo, now: float) -> None:
        if self.inner is not None:
            self.inner.on_finish(req, now)

    def on_step(self, stats: StepStats) -> None:
        self.walls.append(time.monotonic())
        self.versions.append(stats.policy_version)
        self.engine_times.append(stats.now)
        if self.inner is not None:
            self.inner.on_step(stats)
        if self.hook is not None:
            self.hook(stats)
        if len(self.walls) % 64 == 0:
            with self._progress:
                self._progress.notify_all()

    @property
    def steps(self) -> int:
        return len(self.walls)

    def wait_steps(self, n: int, timeout: float) -> bool:
        """Block until at least ``n`` steps have been reported."""
        with self._progress:
            return self._progress.wait_for(lambda: len(self.walls) >= n, timeout=timeout)

    def max_gap(self, t0: float = -np.inf, t1: float = np.inf) -> float:
        """Longest wall-clock gap between consecutive steps reported in ``[t0, t1]``
        (including the gap into the first one of them)."""
        w = np.asarray(self.walls[:])
        if w.size < 2:
            return 0.0
        i0 = max(int(np.searchsorted(w, t0)) - 1, 0)
        i1 = int(np.searchsorted(w, t1, side="right"))
        seg = w[i0:i1]
        return float(np.diff(seg).max()) if seg.size >= 2 else 0.0

    def versions_between(self, t0: float, t1: float) -> set[int]:
        """Policy versions the engine applied in steps reported in ``[t0, t1]``."""
        w = np.asarray(self.walls[:])
        i0, i1 = int(np.searchsorted(w, t0)), int(np.searchsorted(w, t1, side="right"))
        return set(self.versions[i0:i1].tolist())


class EngineLoop:
    """The simulator as a long-running engine thread (see the module docstring)."""

    def __init__(self, trace: Trace, source: PolicySource, sink: StepClock, *,
                 config: EngineConfig | None = None,
                 model: StepTimeModel = H100_LLAMA3_8B) -> None:
        self.trace = trace
        self.source = source
        self.sink = sink
        self.config = config or EngineConfig()
        self.model = model
        self.results: list[SimResult] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-engine", daemon=True)

    def start(self) -> EngineLoop:
        self._thread.start()
        return self

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "engine thread did not stop"
        if self.error is not None:
            raise AssertionError(f"engine thread failed: {self.error!r}") from self.error

    def _run(self) -> None:
        offset = 0.0
        try:
            while not self._stop.is_set():
                tr = dataclasses.replace(self.trace, arrival_s=self.trace.arrival_s + offset)
                res = simulate(tr, build_scheduler(self.source.current()), self.config,
                               self.model, source=self.source, sink=self.sink)
                self.results.append(res)
                offset = res.end_time + 1.0
        except BaseException as exc:  # reported by stop()
            self.error = exc

"""Replay evaluation: run a candidate policy over a window on the simulator.

:class:`Evaluator` is the seam the tuner scores through: ``run(window, policy)`` returns a
metrics summary in the stable ``results.json`` schema and ``baseline(window)`` the summary
of the reference policy (FCFS, vLLM's default) on the same window. :class:`ReplayEvaluator`
implements it with :func:`tailwise.simulator.engine.simulate` and
:func:`tailwise.simulator.metrics.summarize`; the baseline is computed once per window (keyed
by its fingerprint) and cached. Tests
inject a cheap fake with the same two methods.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from tailwise.bayes_opt.window import fingerprint
from tailwise.records.summary import summarize as summarize_records
from tailwise.records.trace import Trace
from tailwise.scorer.baselines import Fcfs
from tailwise.scorer.interface import QueueDiscipline
from tailwise.scorer.policy import Policy
from tailwise.scorer.registry import build_scheduler
from tailwise.scorer.step_time import StepTimeModel
from tailwise.simulator.engine import EngineConfig, SimResult, simulate
from tailwise.simulator.metrics import MetricsConfig, engine_stats

Summary = Mapping[str, Any]


class Evaluator(Protocol):
    """Scores policies on windows; see the module docstring. An evaluator may also offer
    ``envelope(window, policy) -> float | None`` (:meth:`ReplayEvaluator.envelope`), which
    the tuner's envelope narrowing uses when present."""

    def run(self, window: Trace, policy: Policy) -> Summary: ...

    def baseline(self, window: Trace) -> Summary: ...


def metrics_config(policy: Policy, short_threshold: int = 1024) -> MetricsConfig:
    """SLO targets of ``policy`` (fixed for the whole study: candidates cannot move them)."""
    return MetricsConfig(
        short_threshold=short_threshold,
        ttft_slo_s=policy.slo.ttft_s,
        tpot_slo_s=policy.slo.tpot_s,
        slo_classes={c.name: (c.ttft_s, c.tpot_s) for c in policy.slo.classes},
    )


class ReplayEvaluator:
    """Simulate a window with a policy; FCFS baseline cached per window fingerprint.

    ``continuation``: the window's traffic is repeated this many times after it (its
    carried-in backlog once, at the start) and only the window's own requests are
    scored. A window replayed alone ends in a drain: arrivals stop, so a policy that
    makes some requests wait for the rest is not charged for how long they would wait
    under traffic that goes on (under overload, until the phase ends). The repeat is
    the replay's guess at what comes next: more of the same, the premise of publishing
    a policy tuned on the window at all.
    """

    def __init__(
        self,
        engine: EngineConfig,
        metrics: MetricsConfig,
        model: StepTimeModel | None = None,
        *,
        builder: Callable[[Policy], QueueDiscipline] = build_scheduler,
        cache_size: int = 8,
        continuation: int = 0,
    ) -> None:
        engine.validate()
        if isinstance(continuation, bool) or not isinstance(continuation, int) \
                or continuation < 0:
            raise ValueError(f"continuation: must be an integer >= 0, got {continuation!r}")
        self.continuation = continuation
        self.engine = engine
        self.metrics = metrics
        self.model = model
        self.builder = builder
        self.cache_size = cache_size
        self._baselines: OrderedDict[str, Summary] = OrderedDict()
        #: number of baseline replays actually simulated (cache misses)
        self.baseline_runs = 0

    def run(self, window: Trace, policy: Policy) -> Summary:
        return self._replay(window, self.builder(policy), self.model or policy.step_time)

    def _simulate(self, window: Trace, sched: QueueDiscipline, model: StepTimeModel
                  ) -> SimResult:
        """Simulate ``window`` continued by ``continuation`` repeats of its traffic (see
        the class docstring)."""
        trace = window.continued(self.continuation, int(window.meta.get("carried_in", 0)))
        return simulate(trace, sched, self.engine, model)

    def _replay(self, window: Trace, sched: QueueDiscipline, model: StepTimeModel) -> Summary:
        """:meth:`_simulate`, summarised over the window's own requests."""
        res = self._simulate(window, sched, model)
        return summarize_records(res.records.head(len(window)), engine_stats(res),
                                 self.metrics)

    def envelope(self, window: Trace, policy: Policy) -> float | None:
        """The waiting envelope (s) ``policy``'s scheduler has in force at the end of a
        replay of ``window`` (its ``envelope_s()``): measured from all of the window's
        requests, as ``T`` is, rather than from the first few that finished (before ``T``
        is measured it is the fixed ``safety.aging_s``, not the learned envelope). None for
        a scheduler without one. One replay, not cached."""
        sched = self.builder(policy)
        env = getattr(sched, "envelope_s", None)
        if not callable(env):
            return None
        self._simulate(window, sched, self.model or policy.step_time)
        return float(env())

    def baseline(self, window: Trace) -> Summary:
        key = fingerprint(window)
        if self.continuation:  # the repeats leave the carried-in backlog out
            key += f"/{window.meta.get('carried_in', 0)}"
        hit = self._baselines.get(key)
        if hit is not None:
            self._baselines.move_to_end(key)
            return hit
        summary = self._replay(window, Fcfs(), self.model or Policy().step_time)
        self.baseline_runs += 1
        self._baselines[key] = summary
        while len(self._baselines) > self.cache_size:
            self._baselines.popitem(last=False)
        return summary

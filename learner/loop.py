"""The continuous learning loop of the sidecar, driven by ENGINE time.

Each iteration (:meth:`LearningLoop.step`) reads the engine clock from telemetry
(:meth:`TelemetryWindow.engine_now`, the latest engine timestamp seen — never the wall
clock), then:

1. feeds the routing feature (uncached prompt tokens) of every request that arrived since
   the last iteration to the Refine-and-Prune partitioner (``learn_one``) and asks it to
   ``refresh(now)`` with the engine time; a changed partition is persisted
   (``to_state``) and, optionally, triggers a round;
2. when ``round_every_s`` engine seconds have passed since the last round (or the
   partition changed) and the window holds at least ``min_requests`` finished requests
   (with ``window.impute_unfinished``, unfinished ones count too; under light traffic it
   grows back, up to ``window.max_span_factor`` trial windows),
   it rebuilds a :class:`~tailwise.simulator.traces.Trace` of ``trial_window_s`` engine seconds
   — the latest *settled* span (``window.settle_quantile`` of its arrivals finished, see
   :meth:`TelemetryWindow.settled_end`), so the replay is not biased toward the short
   requests that finish first — and calls ``tuner.tune(window, current, partition,
   n_trials)``;
3. a promoted challenger is published (new version, ``created_at``, ``source=learned``)
   only if its objective is finite, it validates, promotion is not paused (kill
   switch / manual policy), and the traffic did not move on since the window (the
   settled window lags by about one tail latency; ``loop.stale_check``: river's ADWIN
   on ``loop.drift_features`` of the window's arrivals, then of every later arrival);
4. every iteration feeds the arrivals since the last one to ADWIN watching the tuned
   policy in force (``loop.fallback_on_drift``); once it has fired, the next round
   that tunes starts from the base policy and publishes it unless it promotes a winner
   over it.

With ``loop.mode = "live"`` step 2 instead runs a live round over the same settled span
(:class:`tailwise.learner.live.LiveTrials`): the trial in flight is scored from the engine's own
measured metrics and kept or reverted, then the next Optuna trial is published for the
engine to serve. A partition change does not cut a live trial short; the next candidate
gets the new partition.

Because the schedule is in engine time, a simulator emitting virtual timestamps replays
an hour of workload through the real loop in as long as the tuning takes; the thread
only waits for *telemetry progress* (a condition variable), with a wall-clock timeout
used solely to notice shutdown. Tests call :meth:`step` directly.

The loop never dies on a tuner or partitioner exception: it counts the error
(``tailwise_loop_errors{stage}``), logs it, and tries again at the next round.

Progress in engine time (:attr:`LearningLoop.loop_engine_time`,
:meth:`LearningLoop.wait_for_iteration`): the engine time of the last *completed*
iteration, any round due at that time included. A simulated engine (``tailwise simulate
--online``) flushes its telemetry up to engine time T and waits for an iteration at T
through ``PolicyService.GetStatus`` before it steps on, so rounds happen at the engine
times they are due however slow tuning is in wall time.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from threadpoolctl import threadpool_limits  # type: ignore[import-untyped,unused-ignore]

from tailwise.learner.config import LoopConfig, WindowConfig
from tailwise.learner.estimators import BoostEstimator
from tailwise.learner.live import LiveRound, LiveTrials, LiveTunerLike
from tailwise.learner.metrics import SidecarMetrics
from tailwise.learner.publisher import PolicyStore, PromotionPaused
from tailwise.learner.state import StateFile
from tailwise.learner.window import TelemetryWindow
from tailwise.partitioner.drift import ArrivalDrift
from tailwise.records.trace import Trace
from tailwise.scorer.policy import EwsjfParams, Policy, PolicyError, QueueSpec, Source

log = logging.getLogger(__name__)


class RoundResultLike(Protocol):
    """What ``tailwise.bayes_opt.tuner.RoundResult`` provides."""

    @property
    def promoted(self) -> Policy | None: ...
    @property
    def trials(self) -> Sequence[Any]: ...
    @property
    def best_value(self) -> float | None: ...
    @property
    def drift(self) -> float | None: ...


class TunerLike(Protocol):
    """``tailwise.bayes_opt.tuner.Tuner``: one tuning round on a replay window."""

    def tune(self, window: Trace, current: Policy, partition: tuple[QueueSpec, ...],
             n_trials: int) -> RoundResultLike: ...

    @property
    def study(self) -> Any: ...


class PartitionerLike(Protocol):
    """``tailwise.partitioner.refine_prune.RefinePrune`` (river-style streaming partitioner)."""

    def learn_one(self, x: Any) -> Any: ...
    def refresh(self, now: float) -> bool: ...
    def partition(self) -> tuple[QueueSpec, ...]: ...
    def to_state(self) -> Any: ...


TunerFactory = Callable[[Policy], TunerLike]
PartitionerFactory = Callable[[EwsjfParams], PartitionerLike]


def restore_partitioner(part: PartitionerLike, state: Any) -> PartitionerLike:
    """Apply ``from_state`` whether the partitioner defines it as a classmethod
    (returns a new object) or an instance method (restores in place)."""
    attr = inspect.getattr_static(type(part), "from_state", None)
    if attr is None:
        return part
    owner: Any = type(part) if isinstance(attr, classmethod | staticmethod) else part
    fn: Callable[[Any], Any] = getattr(owner, "from_state", lambda _s: None)
    result = fn(state)
    if result is None:
        return part
    restored: PartitionerLike = result
    return restored


@dataclass(frozen=True, slots=True)
class RoundRecord:
    """One tuning round, for timelines (``LearningLoop.history``)."""

    engine_time: float
    outcome: str
    window_requests: int
    best_value: float | None
    drift: float | None
    published_version: int | None
    champion_value: float | None = None
    #: the replayed span of arrival (engine) time
    window_start: float | None = None
    window_end: float | None = None
    #: objective values of the round's trials in order (NaN: failed / no value)
    trial_values: tuple[float, ...] = ()
    #: why the round ended as it did (the gate's reason, why nothing was tuned, the error);
    #: one line of at most :data:`REASON_CHARS` characters (an error's text can be long)
    reason: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", one_line(self.reason, REASON_CHARS))


@dataclass(slots=True)
class _TunedWatch:
    """The tuned policy the loop published last, and ADWIN on the arrivals since its
    tuning window (``LoopConfig.fallback_on_drift``)."""

    version: int
    since: float
    until: float
    drift: ArrivalDrift
    #: ADWIN fired on an arrival after the window (a shift inside it is what the policy
    #: was tuned on)
    fired: bool = False


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What one loop iteration did (for tests and logs)."""

    engine_now: float | None
    learned: int = 0
    partition_changed: bool = False
    round_run: bool = False
    outcome: str = ""
    published_version: int | None = None


class LearningLoop:
    def __init__(self, window: TelemetryWindow, store: PolicyStore, state: StateFile,
                 metrics: SidecarMetrics, *, loop_cfg: LoopConfig | None = None,
                 window_cfg: WindowConfig | None = None,
                 tuner_factory: TunerFactory | None = None,
                 partitioner_factory: PartitionerFactory | None = None) -> None:
        self.window = window
        self.store = store
        self.state = state
        self.metrics = metrics
        self.cfg = loop_cfg or LoopConfig()
        self.wcfg = window_cfg or WindowConfig()
        self._tuner_factory = tuner_factory
        self._tuner: TunerLike | None = None
        self._tuner_failed = False
        self.partitioner: PartitionerLike | None = None
        if partitioner_factory is not None:
            self.partitioner = self._make_partitioner(partitioner_factory)
        self._last_round: float | None = state.state.last_round_engine_time
        #: DistBoost / γ-Ada estimator of the policy in force (the one LocalLearner runs)
        self.boost: BoostEstimator | None = None
        self._partition_dirty = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: what :func:`bound_cpu` applied in the loop thread (None before it starts)
        self.cpu_bound: dict[str, Any] | None = None
        self.rounds = state.state.rounds
        #: the tuner's result of the latest round, and a bounded history of rounds
        self.last_result: RoundResultLike | None = None
        self.history: deque[RoundRecord] = deque(maxlen=10_000)
        #: engine time of the last completed iteration (see the module docstring)
        self.loop_engine_time: float | None = None
        self._busy = False
        self._progress = threading.Condition()
        #: the tuned policy the loop published last: ``fallback_on_drift`` watches the
        #: arrivals after its window
        self._watch: _TunedWatch | None = None
        #: live mode's trials (None in replay mode)
        self.live: LiveTrials | None = None
        if self.cfg.mode == "live":
            self.live = LiveTrials(window, store, state, self.wcfg, adopt=self._adopt)

    @property
    def round_every_s(self) -> float:
        return self.cfg.round_every_s or self.wcfg.trial_window_s

    def _make_partitioner(self, factory: PartitionerFactory) -> PartitionerLike | None:
        try:
            part = factory(self.store.last_good().ewsjf)
            saved = self.state.state.partition
            if saved is not None:
                part = restore_partitioner(part, saved)
                log.info("partitioner state restored")
            return part
        except Exception:
            log.exception("partitioner unavailable; the loop tunes on the current partition")
            self.metrics.loop_errors.labels("partitioner").inc()
            return None

    # -- thread ---------------------------------------------------------------------------
    def start(self) -> None:
        if not self.cfg.enabled:
            log.info("learning loop disabled by config")
            return
        self._thread = threading.Thread(target=self._run, name="tailwise-loop", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """The loop thread is alive (started, enabled, not stopped)."""
        return self._thread is not None and not self._stop.is_set()

    @property
    def busy(self) -> bool:
        """An iteration (possibly a tuning round) is in progress."""
        with self._progress:
            return self._busy

    @property
    def last_round_engine_time(self) -> float | None:
        return self._last_round

    def next_round_engine_time(self) -> float | None:
        """Engine time at which the next round falls due (None before any telemetry)."""
        last = self._last_round
        return None if last is None else last + self.round_every_s

    def wait_for_iteration(self, engine_time: float, timeout: float) -> bool:
        """Block until an iteration at engine time >= ``engine_time`` has completed;
        False at the timeout (wall s) or at once when the loop thread is not running."""
        def done() -> bool:
            t = self.loop_engine_time
            return (t is not None and t >= engine_time) or not self.running

        with self._progress:
            ok = self._progress.wait_for(done, timeout=max(timeout, 0.0))
            t = self.loop_engine_time
            return bool(ok) and t is not None and t >= engine_time

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        with self._progress:
            self._progress.notify_all()
        self.window.kick()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        close: Callable[..., Any] | None = getattr(self._tuner, "close", None)
        if close is not None:
            try:
                if self.live is not None and self.live.trial is not None:
                    # keep the trial in flight RUNNING: a restarted sidecar tells it
                    close(fail_pending=False)
                else:
                    close()
            except Exception:
                log.exception("tuner.close() failed")

    def _run(self) -> None:
        self.cpu_bound = bound_cpu(self.cfg.nice, self.cfg.threads)
        seen = -1
        while not self._stop.is_set():
            seen = self.window.wait_for_progress(seen, timeout=self.cfg.idle_wait_s)
            if self._stop.is_set():
                return
            try:
                self.step()
            except Exception:  # pragma: no cover - step() already guards its stages
                log.exception("learning loop iteration failed")
                self.metrics.loop_errors.labels("loop").inc()

    # -- one iteration --------------------------------------------------------------------
    def step(self) -> StepOutcome:
        """One iteration (see the module docstring); records its engine time as done."""
        with self._progress:
            self._busy = True
        out = StepOutcome(None)
        try:
            out = self._step()
            return out
        finally:
            with self._progress:
                self._busy = False
                if out.engine_now is not None:
                    self.loop_engine_time = out.engine_now
                self._progress.notify_all()

    def _step(self) -> StepOutcome:
        now = self.window.engine_now()
        if now is None:
            return StepOutcome(None)
        learned, changed = self._feed_partitioner(now)
        self._feed_boost(now)
        self._feed_watch()
        if self.live is not None:
            self.live.observe(now)
        if self._last_round is None or now < self._last_round:
            # first telemetry: the period starts at the engine's first timestamp; an engine
            # clock behind the last round (a new run) restarts it from the window's start
            start = self.window.engine_start()
            self._last_round = start if start is not None and start <= now else now
            self.state.update(last_round_engine_time=self._last_round)
        due = now - self._last_round >= self.round_every_s
        eager = (self._partition_dirty and self.cfg.tune_on_partition_change
                 and self.live is None)
        if not (due or eager):
            return StepOutcome(now, learned, changed)
        if self.wcfg.settle_quantile > 0:
            until = self.window.settled_end(now, self.wcfg.trial_window_s,
                                            self.wcfg.settle_quantile,
                                            self.wcfg.max_settle_lag_s)
            since = until - self.wcfg.trial_window_s
        else:  # the latest span (right-censored)
            until, since = math.inf, now - self.wcfg.trial_window_s
        if self.live is not None:
            rnd = self._live_round(self.live, now, since, min(until, now))
            return StepOutcome(now, learned, changed, rnd.outcome not in _NOT_RUN,
                               rnd.outcome, rnd.published_version)
        imp, age = self.wcfg.impute_unfinished, self.wcfg.max_settle_lag_s
        n = self.window.count_since(since, until, pending=imp, max_pending_age_s=age)
        for k in range(2, self.wcfg.max_span_factor + 1):  # light traffic: grow the window
            if n >= self.wcfg.min_requests:
                break
            since = until - k * self.wcfg.trial_window_s
            n = self.window.count_since(since, until, pending=imp, max_pending_age_s=age)
        self.metrics.window_requests.set(n)
        if n < self.wcfg.min_requests:
            if due:
                self.history.append(RoundRecord(
                    now, "too_few_requests", n, None, None, None, window_start=since,
                    window_end=until, reason=f"the window holds {n} "
                    f"{'' if imp else 'finished '}requests, fewer than "
                    f"window.min_requests={self.wcfg.min_requests}"))
                self._finish_round(now, "too_few_requests")
                return StepOutcome(now, learned, changed, False, "too_few_requests")
            return StepOutcome(now, learned, changed)
        outcome, version = self._round(now, since, until)
        return StepOutcome(now, learned, changed, True, outcome, version)

    def _live_round(self, live: LiveTrials, now: float, since: float,
                    until: float) -> LiveRound:
        tuner = self._get_tuner()
        if tuner is None or not isinstance(tuner, LiveTunerLike):
            if tuner is not None:
                log.error("live mode needs a tuner with ask_live/tell_live")
            rnd = LiveRound("no_tuner", reason="no tuner with ask_live/tell_live")
        else:
            try:
                rnd = live.round(tuner, now, since, until, self._current_partition)
            except Exception as exc:
                log.exception("live round failed")
                self.metrics.loop_errors.labels("live").inc()
                rnd = LiveRound("error", window_start=since, window_end=until,
                                reason=f"{type(exc).__name__}: {exc}")
            self._partition_dirty = False
            self._record_study(tuner, None)
            if rnd.trial is not None:
                _hook(tuner, "record_live_outcome", rnd.trial, rnd.outcome,
                      rnd.published_version)
        self.metrics.window_requests.set(rnd.window_requests)
        vals = () if rnd.trial is None or rnd.summary is None else (
            math.nan if rnd.value is None else rnd.value,)
        self.history.append(RoundRecord(
            now, rnd.outcome, rnd.window_requests, rnd.value, None, rnd.published_version,
            champion_value=rnd.champion_value, window_start=rnd.window_start,
            window_end=rnd.window_end, trial_values=vals, reason=rnd.reason))
        self._finish_round(now, rnd.outcome)
        return rnd

    def _feed_partitioner(self, now: float) -> tuple[int, bool]:
        new = self.window.take_unlearned()
        part = self.partitioner
        if part is None:
            return len(new), False
        try:
            for x in new:
                part.learn_one(x)
            changed = bool(part.refresh(now))
        except Exception:
            log.exception("partitioner failed")
            self.metrics.loop_errors.labels("partitioner").inc()
            return len(new), False
        if changed:
            self._partition_dirty = True
            self.metrics.partition_refreshes.inc()
            try:
                self.state.update(partition=part.to_state())
            except (TypeError, ValueError) as exc:
                log.error("partition state is not JSON-serialisable (%s); not persisted", exc)
                self.metrics.loop_errors.labels("persist").inc()
        return len(new), changed

    def _feed_boost(self, now: float) -> None:
        """Finished requests to the policy's γ estimator; a new γ is published at once."""
        done = self.window.take_finished_unlearned()
        current = self.store.last_good()
        if self.boost is None or not self.boost.matches(current):
            self.boost = BoostEstimator(current)
        gamma: float | None = None
        for r in done:
            new = self.boost.learn_one(
                {"arrival_s": r.arrival_time, "finish_s": r.finish_time,
                 "prompt_tokens": float(r.prompt_tokens), "output_tokens": float(r.output_tokens)},
                current_gamma=current.boost.gamma if gamma is None else gamma)
            gamma = gamma if new is None else new
        if gamma is None or gamma == current.boost.gamma:
            return
        try:
            pub = self.store.publish(self.boost.apply(current, gamma), source=Source.LEARNED,
                                     note=f"{self.boost.name} gamma={gamma:.4g} at engine "
                                          f"t={now:.1f}", automatic=True)
        except (PromotionPaused, PolicyError) as exc:
            log.info("gamma %.4g not published: %s", gamma, exc)
            return
        if pub.policy is not None:
            self._adopt(pub.policy)

    def _current_partition(self, current: Policy) -> tuple[QueueSpec, ...]:
        if self.partitioner is None:
            return current.queues
        try:
            return tuple(self.partitioner.partition())
        except Exception:
            log.exception("tailwise.partitioner.partition() failed; using the current queues")
            self.metrics.loop_errors.labels("partitioner").inc()
            return current.queues

    def _get_tuner(self) -> TunerLike | None:
        if self._tuner is None and self._tuner_factory is not None and not self._tuner_failed:
            # live mode: the search space centres on the champion, not on a candidate that
            # happened to be in force when the sidecar restarted
            champ = self.live.champion if self.live is not None else None
            try:
                self._tuner = self._tuner_factory(
                    champ.policy if champ is not None else self.store.last_good())
            except Exception:
                log.exception("tuner unavailable; tuning disabled until restart")
                self.metrics.loop_errors.labels("tuner_init").inc()
                self._tuner_failed = True
        return self._tuner

    def _round(self, now: float, since: float, until: float) -> tuple[str, int | None]:
        tuner = self._get_tuner()
        if tuner is None:
            self.history.append(RoundRecord(now, "no_tuner", 0, None, None, None,
                                            reason="no tuner is available"))
            self._finish_round(now, "no_tuner")
            return "no_tuner", None
        trace = self.window.trace(since, name=f"window@{now:.1f}", until=until,
                                  carry_in=self.wcfg.carry_in,
                                  impute=self.wcfg.impute_unfinished,
                                  max_pending_age_s=self.wcfg.max_settle_lag_s)
        if trace is None:  # pragma: no cover - count_since said otherwise
            self._finish_round(now, "too_few_requests")
            return "too_few_requests", None
        current = self.store.last_good()
        # the traffic left the tuned policy's regime: this round tunes from the base
        # policy, which is published unless the round publishes a winner over it
        fallback = self._drift_fallback(tuner, current, now)
        if fallback is not None:
            current = fallback
        partition = self._current_partition(current)
        try:
            res = tuner.tune(trace, current, partition, self.cfg.n_trials,
                             **_span_kw(tuner, since, until))
        except Exception as exc:
            log.exception("tuning round failed")
            self.metrics.loop_errors.labels("tune").inc()
            self.history.append(RoundRecord(now, "error", len(trace), None, None, None,
                                            window_start=since, window_end=until,
                                            reason=f"{type(exc).__name__}: {exc}"))
            self._finish_round(now, "error")
            return "error", None
        self._partition_dirty = False
        self.last_result = res
        self._record_study(tuner, res)
        if res.promoted is not None and self.cfg.stale_check and self._stale(since, until, now):
            outcome, version = "stale_window", None
        else:
            outcome, version = self._maybe_publish(res, now)
        _hook(tuner, "record_publication", res, outcome, version)
        if outcome == "promoted" and version is not None:
            self._watch_tuned(version, since, min(until, now), now)  # until: inf if unsettled
        self.history.append(RoundRecord(
            now, outcome, len(trace), res.best_value, res.drift, version,
            window_start=since, window_end=until,
            champion_value=_opt_float(getattr(res, "champion_value", None)),
            trial_values=_trial_values(res.trials), reason=_round_reason(res, outcome)))
        if fallback is not None and outcome != "promoted":
            self._publish_fallback(fallback, now)
        self._finish_round(now, outcome)
        return outcome, version

    def _watch_tuned(self, version: int, since: float, until: float, now: float) -> None:
        """Start watching the arrivals after a published tuned policy's window: ADWIN
        learns the window's arrivals, then every later one (:meth:`_feed_watch`)."""
        if not self.cfg.fallback_on_drift:
            return
        drift = self._learned(since, until)
        # every arrival reported so far from the window's end; later reports come through
        # take_arrivals (each arrival once, a late one when it is reported)
        fired = drift.learn(*self.window.arrivals_from(until))
        self._watch = _TunedWatch(version, since, until, drift, fired)

    def _feed_watch(self) -> None:
        """Feed the arrivals reported since the last iteration to the watch (taken every
        iteration, watched or not; the window caps what waits while a round runs)."""
        times, prompts = self.window.take_arrivals()
        w = self._watch
        if w is not None and times.size and w.drift.learn(times, prompts):
            w.fired = True

    def _drift_fallback(self, tuner: TunerLike, current: Policy,
                        now: float) -> Policy | None:
        """``LoopConfig.fallback_on_drift``: the tuner's base policy if the policy in force
        is the tuned one the loop published last and the arrivals since its tuning window
        drifted from it (the watch's ADWIN fired), else ``None``."""
        w = self._watch
        if not self.cfg.fallback_on_drift or w is None or self.store.paused:
            return None  # paused: nothing automatic is published, so nothing to decide
        base: Policy | None = getattr(tuner, "base", None)
        if current.version != w.version or not isinstance(base, Policy):
            self._watch = None  # replaced since (an operator, a restart): not ours to undo
            return None
        if not w.fired:
            return None
        # the watch stays until the fallback or a winner is published: a round that
        # fails, or a publish that is refused, leaves it for the next round
        log.info("traffic drifted from the window [%.1f, %.1f) version %d was tuned on: "
                 "falling back to the base policy", w.since, w.until, w.version)
        return base.replace(note=f"fallback to the base policy at engine time {now:.1f}: "
                                 f"arrivals since version {w.version}'s tuning window "
                                 f"[{w.since:.1f}, {w.until:.1f}) drifted")

    def _publish_fallback(self, base: Policy, now: float) -> None:
        try:
            pub = self.store.publish(base, source=base.source, note=base.note, automatic=True)
        except (PromotionPaused, PolicyError) as exc:
            log.info("fallback to the base policy not published: %s", exc)
            return
        self._watch = None
        log.info("published the base policy as version %d (fallback on drift)", pub.version)
        self.history.append(RoundRecord(
            now, "fallback", 0, None, None, pub.version,
            reason="the traffic left the tuned policy's regime (drift); base policy published"))
        if pub.policy is not None:
            self._adopt(pub.policy)

    def _stale(self, since: float, until: float, now: float) -> bool:
        """Whether the arrivals after the replayed window drifted from it (ADWIN on
        ``loop.drift_features`` of the window's arrivals, then of every later one; see
        ``LoopConfig.stale_check``); known at arrival, so the requests still in the engine
        count too."""
        if not until < now:
            return False
        return self._learned(since, until).learn(*self.window.arrivals(until, now))

    def _learned(self, since: float, until: float) -> ArrivalDrift:
        """ADWIN on ``loop.drift_features`` that has learned the arrivals of ``[since,
        until)``: the reference both drift checks compare the later arrivals with."""
        drift = ArrivalDrift(self.cfg.drift_features)
        drift.learn(*self.window.arrivals(since, until))
        return drift

    def _maybe_publish(self, res: RoundResultLike, now: float) -> tuple[str, int | None]:
        promoted = res.promoted
        if promoted is None:
            return "kept_champion", None
        best = res.best_value
        if best is None or not isinstance(best, int | float) or not math.isfinite(best):
            log.error("tuner promoted a policy with objective %r; not publishing", best)
            self.metrics.policies_rejected.inc()
            return "rejected_nonfinite", None
        if not isinstance(promoted, Policy):
            self.metrics.policies_rejected.inc()
            return "rejected_invalid", None
        extra = dict(promoted.extra)
        extra["engine_time"] = f"{now:.3f}"
        extra["objective"] = repr(float(best))
        try:
            pub = self.store.publish(
                dataclasses.replace(promoted, extra=tuple(sorted(extra.items()))),
                source=Source.LEARNED, note=promoted.note or f"round {self.rounds + 1}",
                automatic=True)
        except PromotionPaused:
            return "paused", None
        except PolicyError as exc:
            log.error("tuner promoted an invalid policy (%s); not publishing", exc)
            self.metrics.policies_rejected.inc()
            return "rejected_invalid", None
        if pub.policy is not None:
            self._adopt(pub.policy)
        return "promoted", pub.version

    def _adopt(self, policy: Policy) -> None:
        """Tell the tuner and the partitioner about the policy now in force (optional
        hooks: ``Tuner.set_champion``, ``RefinePrune.update_params``)."""
        for target, name, arg in ((self._tuner, "set_champion", policy),
                                  (self.partitioner, "update_params", policy.ewsjf)):
            hook: Callable[[Any], Any] | None = getattr(target, name, None)
            if hook is None:
                continue
            try:
                hook(arg)
            except Exception:
                log.exception("%s(...) failed", name)
                self.metrics.loop_errors.labels(name).inc()

    def _record_study(self, tuner: TunerLike, res: RoundResultLike | None) -> None:
        if res is not None:
            best = res.best_value
            if best is not None and isinstance(best, int | float) and math.isfinite(best):
                self.metrics.best_objective.set(float(best))
            if res.drift is not None and math.isfinite(res.drift):
                self.metrics.drift.set(res.drift)
        try:
            counts: dict[str, int] = {}
            for t in tuner.study.get_trials(deepcopy=False):
                name = str(getattr(t.state, "name", t.state)).lower()
                counts[name] = counts.get(name, 0) + 1
            for name in ("complete", "fail", "pruned", "running", "waiting"):
                self.metrics.trials.labels(name).set(counts.get(name, 0))
        except Exception:
            log.debug("study trial counts unavailable", exc_info=True)

    def _finish_round(self, now: float, outcome: str) -> None:
        self._last_round = now
        self.rounds += 1
        self.metrics.rounds.labels(outcome).inc()
        self.state.update(last_round_engine_time=now, rounds=self.rounds)
        log.info("round %d at engine t=%.1f: %s", self.rounds, now, outcome)


def bound_cpu(nice: int, threads: int) -> dict[str, Any]:
    """Bound the CPU the calling thread's tuning takes (``loop.nice``/``loop.threads``):
    raise its niceness by ``nice`` (per thread on Linux, inherited by the threads it
    starts: the gRPC threads keep theirs) and cap BLAS/OpenMP (threadpoolctl) and torch
    worker threads at ``threads``. Returns what was applied (logged, shown in tests)."""
    out: dict[str, Any] = {"nice": None, "threads": threads}
    if nice > 0 and hasattr(os, "setpriority"):
        tid = threading.get_native_id()
        try:
            cur = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(cur + nice, 19))
            out["nice"] = os.getpriority(os.PRIO_PROCESS, tid)
        except OSError as exc:  # e.g. a sandbox forbidding it: tuning still runs
            log.warning("could not renice the tuning thread: %s", exc)
    threadpool_limits(limits=threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    log.info("tuning thread: nice %s, %d worker thread(s)", out["nice"], threads)
    return out


#: a round's reason is cut to this many characters (it travels in every status answer)
REASON_CHARS = 400


def one_line(text: str, limit: int) -> str:
    """``text`` as one line of at most ``limit`` characters (whitespace runs become one
    space; characters UTF-8 cannot encode, such as lone surrogates, become ``?``).

    >>> one_line("KeyError:\\n  'x'", 80)
    "KeyError: 'x'"
    >>> one_line("a" * 10, 6)
    'aaaaa…'
    """
    flat = " ".join(text.encode("utf-8", "replace").decode("utf-8").split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def _round_reason(res: RoundResultLike, outcome: str) -> str:
    """The tuner's reason for the round, and what the loop did with a promotion when it
    did not publish it."""
    why = str(getattr(res, "reason", "") or "")
    if res.promoted is None or outcome == "promoted":
        return why
    return f"{outcome}; the gate: {why}" if why else outcome


#: live outcomes in which no trial was scored or published (``StepOutcome.round_run``)
_NOT_RUN = frozenset({"too_few_requests", "live_waiting", "no_tuner", "paused"})


def _span_kw(tuner: Any, since: float, until: float) -> dict[str, Any]:
    """``window_span`` for tuners whose ``tune`` takes it (the tuning history)."""
    params = inspect.signature(tuner.tune).parameters
    return {"window_span": (since, until)} if "window_span" in params else {}


def _hook(target: Any, name: str, *args: Any) -> None:
    """Call an optional tuner hook; a failure is logged, never raised into the loop."""
    fn: Callable[..., Any] | None = getattr(target, name, None)
    if fn is None:
        return
    try:
        fn(*args)
    except Exception:
        log.exception("%s(...) failed", name)


def _opt_float(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def _trial_values(trials: Sequence[Any]) -> tuple[float, ...]:
    """Objective value of each trial (``TrialSummary.value``), NaN where there is none."""
    out: list[float] = []
    for t in trials:
        v = _opt_float(getattr(t, "value", None))
        out.append(math.nan if v is None else v)
    return tuple(out)

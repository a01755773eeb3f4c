"""Live-reward trials: score candidate policies from the engine's OWN measured metrics.

With ``loop.mode = "live"`` every due round of :class:`~tailwise.learner.loop.LearningLoop` (the
same engine-time schedule and settled span as a replay round) calls
:meth:`LiveTrials.round`, which uses Optuna's ask-and-tell interface of the tuner
(``Tuner.ask_live`` / ``Tuner.tell_live``):

1. **Score the trial in flight**, if any. The requests that arrived while its policy was
   in force (from the engine time it was published) and have settled become a
   :class:`~tailwise.records.requests.RequestRecords` built from telemetry — arrival, first-token
   and finish times, prompt/output tokens, preemptions; nothing is replayed — and go
   through :func:`tailwise.records.summary.summarize` (:func:`measured_summary`), so a live
   trial is summarised and scored by the same code as a replayed one. The summary is told
   to the tuner with the champion's measured summary as the baseline. Until
   ``window.min_requests`` of them have settled the trial keeps running (at most
   ``trial_window_s + max_settle_lag_s`` engine seconds, then it is FAILED).
2. **Gate**: the candidate stays in force and becomes the champion only if its value beats
   the champion's by more than the tuner's ``margin`` (the champion's value is its own
   summary scored against itself as the baseline, so both sides use the same objective
   and the same baseline); otherwise the champion is published again. A trial whose value
   is not finite is FAILED (by the tuner), the champion is published again and no new
   candidate is asked this round: the next round measures the champion afresh.
3. **Ask** the next candidate and publish it as a new version (``source=learned``,
   ``extra["live_trial"]`` = its trial number), unless promotion is paused (kill switch /
   manual policy): then nothing is asked and nothing is published.

With no trial in flight a round first measures the policy in force (the champion) over
the part of the settled span during which it has been in force; a champion without a
finite value gets no challenger. A trial whose policy was replaced by someone else (kill
switch, manual policy) is FAILED and nothing is re-published over the operator's policy.

Telemetry carries no "first scheduled" time, so the measured queueing delay runs to the
first token (TTFT: an upper bound that includes the prefill). Live mode therefore needs
``first_token_time`` on FINISHED events: without it the starvation term is undefined and
every trial FAILs rather than being scored on a guess.

Restart: the trial in flight (number, version, engine time it went live) is written to the
state file *before* its policy is published and the champion (policy and measured
summary) whenever it changes. A restarted sidecar tells the trial by number if its policy
is still the one in force, and otherwise — or if the study no longer has it RUNNING (a
stale heartbeat) — abandons it and, when the candidate is still in force, publishes the
champion again.

Values of live trials come from different spans of traffic; only a trial and the
champion's preceding span are compared (by the gate), never trials with each other.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard, runtime_checkable

import numpy as np
import numpy.typing as npt

from tailwise.bayes_opt.objective import ObjectiveConfig, evaluate, gain
from tailwise.learner.config import WindowConfig
from tailwise.learner.publisher import PolicyStore, PromotionPaused
from tailwise.learner.state import StateFile
from tailwise.learner.window import FinishedRequest, TelemetryWindow
from tailwise.records.requests import RequestRecords
from tailwise.records.summary import EngineStats, MetricsConfig, Summary, summarize
from tailwise.scorer.hooks import StepStats
from tailwise.scorer.policy import Policy, PolicyError, QueueSpec, Source

log = logging.getLogger(__name__)

#: ``Policy.extra`` key naming the live trial a published candidate belongs to
EXTRA_TRIAL = "live_trial"


class TrialSummaryLike(Protocol):
    """What ``tailwise.bayes_opt.tuner.TrialSummary`` provides."""

    @property
    def state(self) -> str: ...
    @property
    def value(self) -> float | None: ...


@runtime_checkable
class LiveTunerLike(Protocol):
    """``tailwise.bayes_opt.tuner.Tuner``'s ask-and-tell interface; ``cfg`` carries ``objective``
    (:class:`~tailwise.bayes_opt.objective.ObjectiveConfig`) and ``margin``."""

    def ask_live(self, current: Policy | None = None,
                 partition: tuple[QueueSpec, ...] | None = None) -> tuple[int, Policy]: ...

    def tell_live(self, trial_number: int, summary: Mapping[str, Any],
                  baseline: Mapping[str, Any] | None = None) -> TrialSummaryLike: ...

    @property
    def cfg(self) -> Any: ...


# -- measurement (pure) ---------------------------------------------------------------------
def measured_summary(requests: Sequence[FinishedRequest], steps: Sequence[StepStats],
                     cfg: MetricsConfig, *, end_time: float) -> Summary:
    """The :func:`tailwise.records.summary.summarize` summary of requests the engine
    really served (the same code that summarises a simulator run).

    First admission is not in telemetry: the first token stands in for it (queueing
    delay = TTFT). Wasted recompute tokens are unknown (0). ``steps`` give the KV usage and
    waiting figures of the ``engine`` section.

    >>> from tailwise.records.summary import MetricsConfig
    >>> r = FinishedRequest(10.0, 12.0, 100, 0, 21, "", 10.5, 0)
    >>> s = measured_summary([r], [], MetricsConfig(), end_time=12.0)
    >>> s["overall"]["ttlt"]["mean"], s["overall"]["ttft"]["p99"], s["overall"]["tpot"]["mean"]
    (2.0, 0.5, 0.075)
    """
    recs = sorted(requests, key=lambda r: r.arrival_time)
    n = len(recs)

    def floats(values: list[float]) -> npt.NDArray[np.float64]:
        return np.asarray(values, dtype=np.float64).reshape(n)

    def ints(values: list[int]) -> npt.NDArray[np.int64]:
        return np.asarray(values, dtype=np.int64).reshape(n)

    arrival = floats([r.arrival_time for r in recs])
    first_token = floats([math.nan if r.first_token_time is None else r.first_token_time
                          for r in recs])
    prompt = ints([r.prompt_tokens for r in recs])
    output = ints([r.output_tokens for r in recs])
    slo = [r.slo_class for r in recs]
    slo_classes = slo if any(slo) else None
    records = RequestRecords(
        arrival=arrival, prompt=prompt, output=output, first_scheduled=first_token.copy(),
        first_token=first_token, finish=floats([r.finish_time for r in recs]),
        preemptions=ints([r.num_preemptions for r in recs]),
        wasted_tokens=np.zeros(n, np.int64), cached_tokens=ints([r.cached_tokens for r in recs]),
        rejected=np.zeros(n, np.bool_), classes=None, slo_classes=slo_classes)
    engine = EngineStats(end_time=end_time,
                         kv_usage=np.asarray([s.kv_usage for s in steps], dtype=np.float64),
                         waiting=np.asarray([s.waiting for s in steps], dtype=np.float64))
    return summarize(records, engine, cfg)


# -- state ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LiveTrial:
    """The trial in flight: its Optuna number, the version carrying it, its start."""

    number: int
    version: int
    #: engine time its policy was published
    start: float

    def to_state(self) -> dict[str, Any]:
        return {"number": self.number, "version": self.version, "start_engine_time": self.start}

    @classmethod
    def from_state(cls, doc: Any) -> LiveTrial | None:
        if not isinstance(doc, Mapping):
            return None
        number, version, start = (doc.get(k) for k in ("number", "version",
                                                        "start_engine_time"))
        if not (_is_int(number) and _is_int(version) and _is_finite(start)):
            return None
        return cls(int(number), int(version), float(start))


@dataclass(frozen=True, slots=True)
class Champion:
    """The policy the live trials are compared with, and its measured summary."""

    policy: Policy
    #: a :class:`~tailwise.records.summary.Summary`, or one read back from the state file
    summary: Mapping[str, Any]
    #: the measured span of arrival (engine) time, and its finished requests
    since: float
    until: float
    requests: int

    def to_state(self) -> dict[str, Any]:
        return {"policy": self.policy.to_dict(), "summary": self.summary,
                "since": self.since, "until": self.until, "requests": self.requests}

    @classmethod
    def from_state(cls, doc: Any) -> Champion | None:
        if not isinstance(doc, Mapping) or not isinstance(doc.get("summary"), dict):
            return None
        since, until, requests = doc.get("since"), doc.get("until"), doc.get("requests")
        if not (_is_finite(since) and _is_finite(until) and _is_int(requests)):
            return None
        try:
            policy = Policy.from_dict(doc["policy"])
        except (PolicyError, KeyError, TypeError, ValueError):
            return None
        return cls(policy, dict(doc["summary"]), float(since), float(until), int(requests))


@dataclass(frozen=True, slots=True)
class LiveRound:
    """What one live round did (the loop records it)."""

    outcome: str
    published_version: int | None = None
    trial: int | None = None
    value: float | None = None
    champion_value: float | None = None
    window_requests: int = 0
    window_start: float | None = None
    window_end: float | None = None
    #: the summary told to the tuner (None when nothing was told)
    summary: Mapping[str, Any] | None = None
    #: why the round ended as it did
    reason: str = ""


# -- the controller -------------------------------------------------------------------------
class LiveTrials:
    """Live trials of one loop; called from the loop thread only."""

    def __init__(self, window: TelemetryWindow, store: PolicyStore, state: StateFile,
                 wcfg: WindowConfig, *, adopt: Callable[[Policy], None]) -> None:
        self.window = window
        self.store = store
        self.state = state
        self.wcfg = wcfg
        self._adopt = adopt
        st = state.state
        self.trial = LiveTrial.from_state(st.live_trial)
        if st.live_trial is not None and self.trial is None:
            log.error("persisted live trial %r is malformed; dropped", st.live_trial)
        self.champion = Champion.from_state(st.live_champion)
        if st.live_champion is not None and self.champion is None:
            log.error("persisted live champion is malformed; it will be measured again")
        #: (version in force, engine time since when); -inf: since before the window
        self._in_force: tuple[int, float] = (store.current().version, -math.inf)

    def observe(self, now: float) -> None:
        """Note the engine time at which a newly published version came into force."""
        version, since = self._in_force
        current = self.store.current().version
        if current != version:
            self._in_force = (current, now)
        elif since > now:  # a new engine run: its clock starts over
            self._in_force = (version, -math.inf)

    # -- one round ----------------------------------------------------------------------
    def round(self, tuner: LiveTunerLike, now: float, since: float, until: float,
              partition_of: Callable[[Policy], tuple[QueueSpec, ...]]) -> LiveRound:
        """One due round over the settled span ``[since, until)`` (module docstring)."""
        objective, margin = _gate_config(tuner)
        mcfg = _metrics_config(tuner, objective, self.store.last_good())
        trial = self.trial
        if trial is not None:
            cur = self.store.current()
            if cur.version != trial.version or _trial_tag(cur.policy) != trial.number:
                why = "its policy was replaced (kill switch/manual)"
                self._abandon(tuner, trial, why)
                return LiveRound("paused" if self.store.paused else "live_abandoned",
                                 trial=trial.number, reason=why)
            why = ("promotion is paused" if self.store.paused else
                   "the engine clock restarted" if trial.start > now else
                   "no champion to compare with" if self.champion is None else "")
            if why:
                self._abandon(tuner, trial, why)
                return LiveRound("paused" if self.store.paused else "live_abandoned",
                                 self._revert(now, trial, why), trial.number, reason=why)
            return self._score(tuner, trial, now, until, mcfg, objective, margin,
                               partition_of)
        if self.store.paused:
            return LiveRound("paused", reason="promotion is paused")
        champ_since, n, summary = self._measure_in_force(since, until, mcfg)
        info: dict[str, Any] = dict(window_requests=n, window_start=champ_since,
                                    window_end=until)
        if n < self.wcfg.min_requests:
            return LiveRound("too_few_requests", reason=f"the policy in force has {n} settled "
                             f"requests, fewer than window.min_requests="
                             f"{self.wcfg.min_requests}", **info)
        champ_value = _value(summary, summary, objective)
        self._set_champion(Champion(self.store.last_good(), summary, champ_since, until, n))
        if champ_value is None:
            log.warning("the policy in force has no finite value on its span; no challenger")
            return LiveRound("champion_unmeasurable", reason="the policy in force has no "
                             "finite objective on its span", **info)
        outcome, version, number = self._ask(tuner, now, partition_of)
        return LiveRound(outcome, version, number, champion_value=champ_value, **info)

    def _score(self, tuner: LiveTunerLike, trial: LiveTrial, now: float, until: float,
               mcfg: MetricsConfig, objective: ObjectiveConfig, margin: float,
               partition_of: Callable[[Policy], tuple[QueueSpec, ...]]) -> LiveRound:
        champ = self.champion
        assert champ is not None
        lo = trial.start  # every settled request it served, however long it waited
        recs = self.window.finished_since(lo, until) if lo < until else []
        n = len(recs)
        info: dict[str, Any] = dict(trial=trial.number, window_requests=n, window_start=lo,
                                    window_end=until)
        if n < self.wcfg.min_requests:
            if now - trial.start < self.wcfg.trial_window_s + self.wcfg.max_settle_lag_s:
                return LiveRound("live_waiting", reason=f"{n} of window.min_requests="
                                 f"{self.wcfg.min_requests} requests settled so far", **info)
            if n > 0:  # too few to judge: FAIL rather than score noise
                why = f"only {n} requests settled in its window"
                self._abandon(tuner, trial, why)
                return LiveRound("live_failed", self._revert(now, trial, "too few requests"),
                                 reason=why, **info)
        candidate = self.store.current().policy
        assert candidate is not None  # ours: published by this loop, validated
        summary = measured_summary(recs, self._steps(lo, until), mcfg,
                                   end_time=until)
        try:
            res = tuner.tell_live(trial.number, summary, baseline=champ.summary)
        except Exception as exc:  # e.g. failed as stale while the sidecar was down
            log.warning("live trial %d cannot be told (%s); abandoned", trial.number, exc)
            self._set_trial(None)
            return LiveRound("live_abandoned", self._revert(now, trial, "trial lost"),
                             summary=summary, reason=f"the trial cannot be told: {exc}",
                             **info)
        self._set_trial(None)
        value = _opt_float(res.value) if res.state == "COMPLETE" else None
        champ_value = _value(champ.summary, champ.summary, objective)
        info.update(value=value, champion_value=champ_value, summary=summary)
        if value is None:
            log.warning("live trial %d FAILED (%s); back to the champion", trial.number,
                        res.state)
            return LiveRound("live_failed", self._revert(now, trial, "trial failed"),
                             reason=f"the trial is {res.state}", **info)
        imp = gain(value, champ_value, objective) \
            if champ_value is not None else math.nan
        if imp > margin:
            log.info("live trial %d kept: %.4g vs champion %.4g (+%.3g > margin %g)",
                     trial.number, value, champ_value, imp, margin)
            self._set_champion(Champion(candidate, summary, lo, until, n))
            self._adopt(candidate)
            outcome, reverted = "live_kept", None
            info["reason"] = f"trial {trial.number} beats the champion by {imp:.4g} > margin {margin:g}"
        else:
            log.info("live trial %d reverted: %.4g vs champion %r (improvement %.3g, "
                     "margin %g)", trial.number, value, champ_value, imp, margin)
            outcome, reverted = "live_reverted", self._revert(now, trial, "not better")
            info["reason"] = (f"trial {trial.number} improves by {imp:.4g}, not more than the "
                              f"margin {margin:g}")
        asked, version, _ = self._ask(tuner, now, partition_of)
        if asked != "live_candidate":
            outcome = f"{outcome}+{asked}"
        info["published_version"] = version if version is not None else reverted
        return LiveRound(outcome, **info)

    # -- pieces -------------------------------------------------------------------------
    def _measure_in_force(self, since: float, until: float, mcfg: MetricsConfig
                          ) -> tuple[float, int, Summary]:
        lo = max(since, self._in_force[1])
        recs = self.window.finished_since(lo, until) if lo < until else []
        summary = measured_summary(recs, self._steps(lo, until), mcfg, end_time=until)
        return lo, len(recs), summary

    def _steps(self, lo: float, hi: float) -> list[StepStats]:
        return [s for s in self.window.recent_steps() if lo <= s.now < hi]

    def _ask(self, tuner: LiveTunerLike, now: float,
             partition_of: Callable[[Policy], tuple[QueueSpec, ...]]
             ) -> tuple[str, int | None, int | None]:
        """Ask, record (before publishing, for a restart) and publish the next candidate."""
        if self.store.paused:
            return "paused", None, None
        champ = self.champion
        assert champ is not None
        number, policy = tuner.ask_live(champ.policy, partition_of(champ.policy))
        extra = dict(policy.extra)
        extra.update({"engine_time": f"{now:.3f}", EXTRA_TRIAL: str(number)})
        candidate = dataclasses.replace(policy, extra=tuple(sorted(extra.items())))
        self._set_trial(LiveTrial(number, self.state.state.version + 1, now))
        try:
            pub = self.store.publish(candidate, source=Source.LEARNED,
                                     note=policy.note or f"live trial {number}", automatic=True)
        except (PromotionPaused, PolicyError) as exc:
            self._abandon(tuner, LiveTrial(number, -1, now), str(exc))
            if isinstance(exc, PromotionPaused):
                return "paused", None, number
            log.error("live candidate of trial %d is invalid (%s); not published", number, exc)
            return "rejected_invalid", None, number
        self._set_trial(LiveTrial(number, pub.version, now))
        self._in_force = (pub.version, now)
        return "live_candidate", pub.version, number

    def _revert(self, now: float, trial: LiveTrial, why: str) -> int | None:
        """Publish the champion again if the trial's candidate is still in force."""
        champ = self.champion
        if champ is None or self.store.current().version != trial.version:
            return None
        pol = champ.policy
        try:
            pub = self.store.publish(pol, source=pol.source,
                                     note=f"live trial {trial.number} {why}: champion again")
        except PolicyError as exc:  # pragma: no cover - the champion was validated
            log.error("cannot re-publish the champion (%s)", exc)
            return None
        self._in_force = (pub.version, now)
        return pub.version

    def _abandon(self, tuner: LiveTunerLike, trial: LiveTrial, why: str) -> None:
        """FAIL the trial in the study (an empty summary has no finite objective)."""
        log.warning("live trial %d abandoned: %s", trial.number, why)
        self._set_trial(None)
        try:
            tuner.tell_live(trial.number, {})
        except Exception as exc:  # no longer RUNNING (stale heartbeat): nothing to fail
            log.info("live trial %d not failed in the study: %s", trial.number, exc)

    def _set_trial(self, trial: LiveTrial | None) -> None:
        self.trial = trial
        self.state.update(live_trial=None if trial is None else trial.to_state())

    def _set_champion(self, champ: Champion) -> None:
        self.champion = champ
        try:
            self.state.update(live_champion=champ.to_state())
        except (TypeError, ValueError) as exc:
            log.error("live champion is not JSON-serialisable (%s); not persisted", exc)


# -- helpers --------------------------------------------------------------------------------
def _gate_config(tuner: LiveTunerLike) -> tuple[ObjectiveConfig, float]:
    cfg = tuner.cfg
    objective, margin = getattr(cfg, "objective", None), getattr(cfg, "margin", None)
    if not isinstance(objective, ObjectiveConfig) or not _is_finite(margin):
        raise TypeError("live mode needs a tuner with cfg.objective and cfg.margin")
    return objective, float(margin)


def _metrics_config(tuner: LiveTunerLike, objective: ObjectiveConfig,
                    fallback: Policy) -> MetricsConfig:
    """The tuner's replay metrics config (SLO targets fixed for the whole study), so live
    and replayed summaries measure the same thing; else the one of its base policy."""
    mc = getattr(getattr(tuner, "evaluator", None), "metrics", None)
    if isinstance(mc, MetricsConfig):
        return mc
    from tailwise.bayes_opt.replay import metrics_config

    base = getattr(tuner, "base", None)
    return metrics_config(base if isinstance(base, Policy) else fallback,
                          objective.short_threshold)


def _value(summary: Mapping[str, Any], baseline: Mapping[str, Any],
           objective: ObjectiveConfig) -> float | None:
    return _opt_float(evaluate(summary, baseline, objective)[0])


def _trial_tag(policy: Policy | None) -> int | None:
    raw = dict(policy.extra).get(EXTRA_TRIAL) if policy is not None else None
    return int(raw) if raw is not None and raw.isdigit() else None


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_finite(v: Any) -> TypeGuard[float]:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _opt_float(v: Any) -> float | None:
    return float(v) if _is_finite(v) else None

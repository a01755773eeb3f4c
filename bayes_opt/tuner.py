"""The tuner: one Optuna study, tuned round by round on replay windows (or live).

A **round** (:meth:`Tuner.tune`) scores candidate policies on one window of recent
traffic:

1. The window is capped (:func:`tailwise.bayes_opt.window.cap_window`), fingerprinted, and its
   drift from the previous round's window is judged by river's ADWIN on prompt and
   output lengths (:func:`tailwise.bayes_opt.window.drift`; the reference sketch is
   persisted in the study, so drift survives restarts).
2. The FCFS baseline is replayed once for the window (cached by the evaluator), and once
   for its stressed copy (below).
3. The **champion** — the policy in force, ``current``, exactly as given — is measured on
   the new window first and added to the study as a finished trial with its parameters
   (clipped into the space, so the sampler knows where it sits). Not enqueued: in a study
   shared by several sidecars another one's ``optimize`` would pop it.
4. ``n_trials − 1`` **challengers** are sampled by Optuna (TPE by default, seeded and
   modelling after ``n_startup_trials`` = 4 trials; the GP sampler with ``sampler="gp"``;
   never a hand-written optimizer). TPE stays the default on cost: on the operator
   objective (``benchmarks/sampler_compare.py``, 5 seeds, 10 trials) neither sampler won
   both workloads — to 95% of the available gain, bursty overload: GP median 10 trials
   (4/5 runs) vs TPE 11 (1/5); code 80/20: TPE 6 (4/5) vs GP 11 (2/5) — while a GP round
   took ~16x longer (22 s vs 1.4 s on a shared 2-core host) and the sidecar tunes at
   bounded CPU. ``sampler="gp"`` is one setting away for workloads like the first. Challengers
   come from :mod:`tailwise.bayes_opt.space` — by default a box of ×/÷4
   around ``base_policy``'s values. A challenger is ``base_policy`` + the trial's
   parameters + its partition (the learner's partition, refined once with the
   candidate's α/max_queues over the window when the space searches them; see
   :func:`tailwise.bayes_opt.space.refine_partition`). Invalid candidates raise
   :class:`~tailwise.scorer.policy.PolicyError` and the trial FAILs; an objective that is NaN or
   infinite is returned as NaN, which Optuna records as FAILED.
   With ``cfg.stress_load`` (default 1.1) each trial is also replayed on the window's
   traffic compressed in time to that load (:func:`tailwise.bayes_opt.window.stressed`;
   not when the window offers as much already, unless ``cfg.stress_rate_min`` > 1) and
   its value is the ``stress_weight``
   blend of the two, each against FCFS on the same trace: a calm window then also
   tells apart the candidates that hold up when the load rises.
   Beside them the round replays fixed **anchors** (:mod:`tailwise.bayes_opt.anchors`):
   the paper modes named in ``cfg.anchors`` built on the base policy, and the last
   ``cfg.recall`` distinct champions (a warm start when a regime comes back).
5. **Gate**: the best COMPLETE challenger or anchor is promoted only if it beats the
   champion's value on the same window by more than ``cfg.margin`` (relative, see
   :func:`tailwise.bayes_opt.objective.gain`) and, with ``cfg.confirm``, is not worse than
   the champion by more than the margin on the previous round's window (one window's win
   can be noise; skipped when ADWIN flags a length drift between the two windows) and,
   with ``cfg.reshuffles``, still beats it by more than the margin on the mean over the
   window and that many reshuffles of it (:meth:`Tuner._robust`). The
   two best winners are tried in turn. No finite champion value ⇒ no promotion.
   A promoted tailwise policy with a wider waiting envelope than the base policy's is
   published with the base's envelope when the window cannot tell the two apart
   (``cfg.narrow_envelope``, :meth:`Tuner._narrow_envelope`).

Every trial carries user attributes for optuna-dashboard: ``round``, ``window_id``,
``window_requests``, ``role`` (champion/challenger/live), the drift figures, the reward
components, headline metrics and the candidate ``policy`` (a dict, used by
:mod:`tailwise.bayes_opt.freeze`), plus the tuning history of
:mod:`tailwise.bayes_opt.history` (window range and load, ``diff_vs_champion``,
``outcome``, trial and study notes, the metric name). The study's user attributes hold the
round counter, the objective kind and the champion policy.

**Live mode** (:meth:`Tuner.ask_live` / :meth:`Tuner.tell_live`, Optuna's ask-and-tell
interface): the learner pushes the asked policy, lets the engine serve a trial window,
and tells the engine's own metrics summary; a heartbeat thread keeps the RUNNING trial
alive meanwhile, so a sidecar that dies mid-window leaves a trial that heartbeat logic
fails later.

Replay cost is bounded by ``max_window_requests`` (default 2000; ~0.1 s per trial for
1000 requests on the H100 model) and, optionally, ``round_timeout_s``. The sampler's seed
is offset by the number of trials already in the study, so a restarted sidecar does not
repeat its earlier random draws. Trial values of different rounds come from different
windows; only values within a round are compared (the gate, :mod:`tailwise.bayes_opt.freeze`).

The tuner is not thread-safe; the learner calls it from one background thread.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import statistics
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from tailwise.bayes_opt import history
from tailwise.bayes_opt.anchors import ANCHOR_NAMES, Recall, anchor_policies, same
from tailwise.bayes_opt.objective import (
    ObjectiveConfig,
    ObjectiveKind,
    evaluate,
    gain,
)
from tailwise.bayes_opt.optuna_seam import (
    BaseHeartbeat,
    is_heartbeat_enabled,
    storage_of,
    study_id_of,
    trial_id_of,
)
from tailwise.bayes_opt.replay import Evaluator, ReplayEvaluator, metrics_config
from tailwise.bayes_opt.space import SpaceConfig, policy_to_params, suggest_params, suggest_policy
from tailwise.bayes_opt.storage import DEFAULT_HEARTBEAT_S, open_storage
from tailwise.bayes_opt.window import (
    MAX_STRESS_RATE,
    Drift,
    LengthSketch,
    WindowError,
    cap_window,
    drift,
    fingerprint,
    reshuffled,
    stressed,
)
from tailwise.records.trace import Trace
from tailwise.scorer.policy import Mode, Policy, PolicyError, QueueSpec
from tailwise.scorer.step_time import StepTimeModel, StepTimeModelError
from tailwise.simulator.engine import EngineConfig

log = logging.getLogger(__name__)

ATTR_ROUND = "tailwise:round"
ATTR_OBJECTIVE = "tailwise:objective"
ATTR_CHAMPION = "tailwise:champion"
ATTR_LAST_ROUND = "tailwise:last_round"
SYS_DRIFT_REF = "tailwise:drift_ref"
ATTR_RECALL = "tailwise:recent_champions"
#: fixed-trial marker: an anchor of the round with this token (see anchors.py)
ATTR_ANCHOR_TOKEN = "anchor_token"
#: fixed-trial marker: the champion of the round with this token
ATTR_CHAMPION_TOKEN = "champion_token"
#: a fixed trial's own key, to find it among the study's trials once added
ATTR_FIXED_KEY = "fixed_key"

SAMPLERS = ("tpe", "gp", "random")

#: a round's stressed window, its FCFS baseline and its rate factor (:meth:`Tuner._stress`)
_Stress = tuple[Trace, Mapping[str, Any], float]


class TunerError(RuntimeError):
    """The tuner cannot proceed (misconfiguration, incompatible study, unknown trial)."""


class TunerConfigError(ValueError):
    """A tuner configuration value is out of range; the message names the field."""


@dataclass(frozen=True)
class TunerConfig:
    #: journal file path (default), ``sqlite:///...`` / ``postgresql://...``, or ``memory``
    storage: str = "tailwise-study.journal"
    study_name: str = "tailwise"
    #: "tpe" (default), "gp" (needs torch), "random"
    sampler: str = "tpe"
    seed: int = 0
    #: trials the sampler draws at random before modelling (Optuna's default is 10; EWSJF
    #: converges in 5-8 trials, so we start modelling early)
    n_startup_trials: int = 4
    #: relative improvement a challenger needs over the champion to be promoted. 0.10:
    #: on the three shift scenarios (5 seeds each, ``benchmarks/online_targets.py
    #: --margin``) 0.02 published window-noise wins that lost on the next window; 0.10
    #: raised the mean whole-run margin over static tailwise from −0.039 to −0.011
    margin: float = 0.10
    #: paper modes replayed every round beside the sampler's draws, each on the base
    #: policy (:mod:`tailwise.bayes_opt.anchors`); () measures none
    anchors: tuple[str, ...] = ()
    #: recent distinct champions re-measured every round (warm start after a shift back)
    recall: int = 0
    #: a candidate that wins on the round's window must also not lose to the champion by
    #: more than ``margin`` on the previous round's window (skipped when ADWIN flags a
    #: length drift between the two: then the previous window is another regime)
    confirm: bool = False
    #: a candidate that wins on the round's window must also beat the champion by more
    #: than ``margin`` on its value averaged over the window and this many reshuffles of
    #: it (:func:`tailwise.bayes_opt.window.reshuffled`: the same requests dealt to the
    #: same arrival instants in another order). One sample path can favour a candidate
    #: by which request arrived when; the mean over several paths is a steadier
    #: estimate of both values. Costs ``2 × reshuffles`` replays (with the stressed copy,
    #: twice that) per tested winner, and each reshuffle's FCFS baselines, on rounds
    #: that would promote only; a simplified or narrowed policy passes it too. 0: off (with
    #: 3, on the shift scenarios: mean whole-run margin over static tailwise +0.074 ->
    #: +0.058 and +0.085 -> +0.088, chat-longdoc-burst better, code-reasoning-slo worse;
    #: README "Online learning", ``benchmarks/online_targets.py --reshuffles 3``)
    reshuffles: int = 0
    #: parsimony: each on/off switch in which a promoted challenger departs from the base
    #: policy is put back, in turn, while the window cannot tell the difference (the
    #: reverted policy still beats the champion by more than ``margin`` and loses at most
    #: ``simplify_tol`` to the challenger as sampled). A switch the window does not
    #: exercise (tail protection in a calm window) is a coin flip in the sampler's draw,
    #: and published it rules the next regime. Costs one replay per differing switch,
    #: only on rounds that promote. Off by default: measured not better (README,
    #: ``benchmarks/online_targets.py --simplify``)
    simplify: bool = False
    simplify_tol: float = 0.02
    #: envelope parsimony (tailwise mode): a promoted policy whose waiting envelope is
    #: wider than the base policy's (``regime.aging_factor`` or
    #: ``regime.queue_floor_factor`` above the base's) is replayed once more with the
    #: base's two values; when the window cannot tell them apart (the narrowed policy
    #: still beats the champion by more than ``margin`` and loses at most ``simplify_tol``
    #: to the policy as promoted) the narrowed one is published. The envelope is the
    #: operator's starvation bound, and a window in which it never binds (a calm one)
    #: rewards a wide one by chance; published, it rules the overload that follows.
    #: Measured (README "Online learning", ``benchmarks/online_targets.py
    #: --no-narrow-envelope``): mean whole-run margin over static tailwise +0.060 ->
    #: +0.074 and +0.076 -> +0.085 on the two 120-s seed sets
    narrow_envelope: bool = True
    #: with ``narrow_envelope``: a promoted policy's wider envelope is not published when
    #: it is longer than the window (as its scheduler measured it there) or cannot be
    #: measured: a window cannot show what an envelope longer than itself costs. The
    #: base's envelope is published instead if it still beats the champion by more than
    #: the margin and passes the gate's other checks, else nothing.
    #: Off by default: measured (``benchmarks/online_targets.py
    #: --window-bounds-envelope``, README "Online learning") the mean whole-run margin over
    #: static tailwise +0.074 -> +0.094, +0.085 -> +0.062 and +0.104 -> +0.080 on the
    #: three seed sets (the worst run −0.337 -> −0.172), losing slo-flip wins where a wide
    #: envelope pays
    window_bounds_envelope: bool = False
    #: stress scoring: besides the window, each candidate is replayed on the window's own
    #: traffic compressed in time until it offers this load (× engine capacity;
    #: :func:`tailwise.bayes_opt.window.stressed`; skipped when the window offers that
    #: much already, unless ``stress_rate_min`` > 1), and its value is
    #: ``(1 − stress_weight)·window + stress_weight·stress``,
    #: each against FCFS replayed on the same trace. A calm window cannot tell a policy
    #: that holds up under congestion from one that collapses there; published, the
    #: second rules the overload that follows. 1.1: on the three shift scenarios
    #: (``benchmarks/online_targets.py --stress-load``, README "Online learning") it lifted
    #: the mean whole-run margin over static tailwise on two of three seed sets (+0.018
    #: on average) and the worst published-vs-replaced gate on five of nine scenario ×
    #: seed-set cells (worse on three). 0 (or None), or a weight of 0:
    #: the window alone. Only the operator objective is blended (its values are relative
    #: to FCFS on the same trace); the absolute kinds score the window alone
    stress_load: float | None = 1.1
    stress_weight: float = 0.5
    #: the stressed copy raises the window's arrival rate by at least this factor, so a
    #: window that already offers ``stress_load`` (the start of an overload, whose
    #: queueing a settled window has barely begun to show) is stressed too; 1: only up to
    #: ``stress_load``. At most :data:`~tailwise.bayes_opt.window.MAX_STRESS_RATE` (4), the
    #: cap on any stressed copy's rate factor. 1.25 measured worse (README "Online learning", the held-out
    #: shift: mean margin over static tailwise +0.074 -> +0.053 on the three development
    #: scenarios, seeds 0-4, and no gain on the held-out one), so off by default
    stress_rate_min: float = 1.0
    max_window_requests: int = 2000
    #: "tail" (most recent requests) or "thin" (every k-th, time-compressed)
    window_cap: str = "tail"
    #: windows with fewer requests are not tuned on (too noisy)
    min_window_requests: int = 20
    #: replay each window followed by this many repeats of its traffic, scoring only
    #: the window's requests (:class:`~tailwise.bayes_opt.replay.ReplayEvaluator`)
    continuation: int = 0
    #: wall-clock bound of one round, seconds (None: only n_trials bounds it)
    round_timeout_s: float | None = None
    heartbeat_interval: int | None = DEFAULT_HEARTBEAT_S
    grace_period: int | None = None
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    #: engine step-time model for replay; None = the base policy's
    model: StepTimeModel | None = None
    #: k-means seed of the per-candidate Refine-and-Prune pass
    partition_seed: int = 0

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, value: Any, what: str) -> None:
            if not ok:
                raise TunerConfigError(f"tuner.{name}: must be {what}, got {value!r}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        # sub-configs given as plain tables (a config file) become their dataclasses
        for name, cls in (("objective", ObjectiveConfig), ("space", SpaceConfig),
                          ("engine", EngineConfig)):
            v = getattr(self, name)
            if isinstance(v, Mapping):
                try:
                    object.__setattr__(self, name, cls(**v))
                except TypeError as exc:
                    raise TunerConfigError(f"tuner.{name}: {exc}") from None
        if isinstance(self.model, Mapping):
            try:
                object.__setattr__(self, "model", StepTimeModel.from_dict(dict(self.model)))
            except StepTimeModelError as exc:
                raise TunerConfigError(f"tuner.model: {exc}") from None
        need(self.model is None or isinstance(self.model, StepTimeModel), "model", self.model,
             "None or a step-time model")
        if isinstance(self.anchors, list):  # from a config file
            object.__setattr__(self, "anchors", tuple(self.anchors))
        need(isinstance(self.anchors, tuple) and all(a in ANCHOR_NAMES for a in self.anchors),
             "anchors", self.anchors, f"a list of names from {list(ANCHOR_NAMES)}")
        need(is_int(self.recall) and self.recall >= 0, "recall", self.recall, "an integer >= 0")
        need(isinstance(self.confirm, bool), "confirm", self.confirm, "true or false")
        need(isinstance(self.window_bounds_envelope, bool), "window_bounds_envelope",
             self.window_bounds_envelope, "true or false")
        need(not self.window_bounds_envelope or self.narrow_envelope is True,
             "window_bounds_envelope", self.window_bounds_envelope,
             "false unless narrow_envelope is true (it bounds what narrowing keeps)")
        need(is_int(self.reshuffles) and 0 <= self.reshuffles <= 64, "reshuffles",
             self.reshuffles, "an integer in [0, 64]")
        need(isinstance(self.simplify, bool), "simplify", self.simplify, "true or false")
        need(isinstance(self.narrow_envelope, bool), "narrow_envelope", self.narrow_envelope,
             "true or false")
        need(isinstance(self.simplify_tol, int | float) and not isinstance(self.simplify_tol, bool)
             and math.isfinite(self.simplify_tol) and self.simplify_tol >= 0, "simplify_tol",
             self.simplify_tol, "finite and >= 0")
        for name, cls in (("objective", ObjectiveConfig), ("space", SpaceConfig),
                          ("engine", EngineConfig)):
            need(isinstance(getattr(self, name), cls), name, getattr(self, name),
                 f"a {cls.__name__}")
        try:
            self.engine.validate()
        except ValueError as exc:
            raise TunerConfigError(f"tuner.engine: {exc}") from None
        need(isinstance(self.storage, str) and bool(self.storage), "storage", self.storage,
             "a non-empty string")
        need(isinstance(self.study_name, str) and bool(self.study_name), "study_name",
             self.study_name, "a non-empty string")
        need(self.sampler in SAMPLERS, "sampler", self.sampler, f"one of {list(SAMPLERS)}")
        need(is_int(self.seed) and self.seed >= 0, "seed", self.seed, "an integer >= 0")
        need(is_int(self.n_startup_trials) and self.n_startup_trials >= 0, "n_startup_trials",
             self.n_startup_trials, "an integer >= 0")
        need(isinstance(self.margin, int | float) and math.isfinite(self.margin)
             and self.margin >= 0, "margin", self.margin, "finite and >= 0")
        need(self.stress_load is None or (isinstance(self.stress_load, int | float)
             and not isinstance(self.stress_load, bool) and math.isfinite(self.stress_load)
             and self.stress_load >= 0), "stress_load", self.stress_load,
             "None, 0 (off) or a load > 0")
        need(isinstance(self.stress_weight, int | float) and not isinstance(self.stress_weight, bool)
             and 0 <= self.stress_weight <= 1, "stress_weight", self.stress_weight,
             "between 0 and 1")
        need(isinstance(self.stress_rate_min, int | float)
             and not isinstance(self.stress_rate_min, bool)
             and math.isfinite(self.stress_rate_min)
             and 1 <= self.stress_rate_min <= MAX_STRESS_RATE,
             "stress_rate_min", self.stress_rate_min, f"between 1 and {MAX_STRESS_RATE:g}")
        need(is_int(self.max_window_requests) and self.max_window_requests >= 1,
             "max_window_requests", self.max_window_requests, "an integer >= 1")
        need(self.window_cap in ("tail", "thin"), "window_cap", self.window_cap,
             "'tail' or 'thin'")
        need(is_int(self.min_window_requests) and self.min_window_requests >= 1,
             "min_window_requests", self.min_window_requests, "an integer >= 1")
        need(is_int(self.continuation) and self.continuation >= 0, "continuation",
             self.continuation, "an integer >= 0")
        need(self.round_timeout_s is None or (isinstance(self.round_timeout_s, int | float)
             and math.isfinite(self.round_timeout_s) and self.round_timeout_s > 0),
             "round_timeout_s", self.round_timeout_s, "None or > 0")
        for name in ("heartbeat_interval", "grace_period"):
            v = getattr(self, name)
            need(v is None or (is_int(v) and v > 0), name, v, "None or an integer > 0")


@dataclass(frozen=True)
class TrialSummary:
    number: int
    state: str
    value: float | None
    role: str
    params: dict[str, Any]
    components: dict[str, float | None]
    error: str | None = None


@dataclass(frozen=True)
class RoundResult:
    #: challenger that beat the champion by the margin (version/created_at are the
    #: learner's to set), else None
    promoted: Policy | None
    trials: list[TrialSummary]
    best_value: float | None
    drift: float | None
    champion_value: float | None = None
    #: relative improvement of the best challenger over the champion (> 0 = better)
    improvement: float | None = None
    best_trial: int | None = None
    window_id: str = ""
    window_requests: int = 0
    round: int = 0
    reason: str = ""


class Tuner:
    """Bayesian meta-optimization of policies over one Optuna study (module docstring)."""

    def __init__(
        self,
        cfg: TunerConfig,
        base_policy: Policy,
        *,
        evaluator: Evaluator | None = None,
        storage: BaseStorage | None = None,
    ) -> None:
        base_policy.validate()
        self.cfg = cfg
        self.base = base_policy
        self.storage = storage if storage is not None else open_storage(
            cfg.storage, heartbeat_interval=cfg.heartbeat_interval, grace_period=cfg.grace_period
        )
        direction = cfg.objective.direction
        try:
            self.study = optuna.create_study(
                storage=self.storage, study_name=cfg.study_name, direction=direction,
                load_if_exists=True,
            )
        except ValueError as exc:
            raise TunerError(f"study {cfg.study_name!r}: {exc}") from exc
        have = self.study.direction.name.lower()
        if have != direction:
            raise TunerError(
                f"study {cfg.study_name!r} was created to {have} but objective "
                f"{cfg.objective.kind.value!r} needs to {direction}; use another study name"
            )
        history.name_metrics(self.study, cfg.objective)
        kind = self.study.user_attrs.get(ATTR_OBJECTIVE)
        if kind is None:
            self.study.set_user_attr(ATTR_OBJECTIVE, cfg.objective.kind.value)
        elif kind != cfg.objective.kind.value:
            raise TunerError(
                f"study {cfg.study_name!r} holds {kind!r} values; objective "
                f"{cfg.objective.kind.value!r} would not be comparable; use another study name"
            )
        # offset the seed by the trials already there, so a restarted sidecar does not
        # replay the random draws it made before the restart
        n_existing = len(self.study.get_trials(deepcopy=False))
        self.study.sampler = make_sampler(cfg, cfg.seed + n_existing)
        self.evaluator: Evaluator = evaluator if evaluator is not None else ReplayEvaluator(
            cfg.engine, metrics_config(base_policy, cfg.objective.short_threshold), cfg.model,
            continuation=cfg.continuation)
        self._current = base_policy
        self._partition: tuple[QueueSpec, ...] = base_policy.queues
        self._live: dict[int, tuple[optuna.Trial, _Beat, Policy]] = {}
        self._live_baseline: Mapping[str, Any] | None = None
        self._round_entry: dict[str, Any] = {}
        self._anchors = anchor_policies(base_policy, cfg.anchors)
        self._recall = Recall.from_json(cfg.recall, self.study.user_attrs.get(ATTR_RECALL))
        #: the previous round's window (the gate's confirmation replays on it)
        self._prev_window: Trace | None = None
        #: the reshuffles of this round's window, their stressed copies and the
        #: champion's values on them (:meth:`_robust`, computed once per round)
        self._reshuffled: tuple[list[Trace], list[_Stress | None], list[float]] | None = None
        self.fail_stale_trials()

    # -- rounds ---------------------------------------------------------------------------
    def tune(
        self, window: Trace, current: Policy, partition: tuple[QueueSpec, ...], n_trials: int,
        *, window_span: tuple[float, float] | None = None,
    ) -> RoundResult:
        """One round on ``window``; see the module docstring. ``n_trials`` counts the
        champion's trial; ``window_span`` is the window's engine-time range (for the
        tuning history, :mod:`tailwise.bayes_opt.history`)."""
        if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
            raise TunerConfigError(f"n_trials: must be an integer >= 1, got {n_trials!r}")
        current.validate()
        self._current, self._partition = current, tuple(partition)
        self._reshuffled = None  # this round's champion and window (see _robust)
        window = cap_window(window, self.cfg.max_window_requests, self.cfg.window_cap)
        wid = fingerprint(window)
        rnd = self._next_round()
        if len(window) < self.cfg.min_window_requests:
            return RoundResult(None, [], None, None, window_id=wid, window_requests=len(window),
                               round=rnd, reason=f"window has {len(window)} requests, fewer "
                               f"than min_window_requests={self.cfg.min_window_requests}")
        dr = self._drift(window)
        base_summary = self.evaluator.baseline(window)
        stress = self._stress(window)
        token = uuid.uuid4().hex
        common: dict[str, Any] = {
            "round": rnd, "round_token": token, "window_id": wid,
            "window_requests": len(window),
            **(dr.as_attrs() if dr else {"drift": None, "drift_detected": None}),
            **history.window_attrs(window, window_span, self.cfg.engine,
                                   self.cfg.model or self.base.step_time),
            "stress_rate": stress[2] if stress is not None else None,
        }
        if not self._recall.policies:
            self._recall.add(current)
        fixed = self._fixed(current)
        policies: dict[int, Policy] = {}
        prompts = window.prompt_tokens
        champ_value: list[float | None] = [None]
        comp_keys: dict[str, None] = {}

        def evaluate(trial: optuna.trial.BaseTrial, role: str, given: Policy | None) -> float:
            """Score one trial: a sampled challenger (``given`` None) or a fixed policy
            whose parameters ``trial`` holds (the champion, an anchor)."""
            for k, v in common.items():
                trial.set_user_attr(k, v)
            trial.set_user_attr("role", role)
            try:
                if given is None:
                    policy = self._candidate(trial, prompts)
                    policies[trial.number] = policy
                else:
                    if self._records_params(role, given):
                        suggest_params(trial, self.base, self.cfg.space)  # records params
                    policy = given
                trial.set_user_attr("policy", policy.to_dict())
                trial.set_user_attr("diff_vs_champion", history.policy_diff(policy, current))
                value, keys = self._scored(window, policy, stress, trial, base_summary)
            except Exception as exc:
                trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
                trial.set_user_attr("outcome", f"failed: {type(exc).__name__}: {exc}")
                raise
            comp_keys.update(dict.fromkeys(keys))
            trial.set_user_attr("outcome", history.standing(
                role, value, champ_value[0], self.cfg.margin, self.cfg.objective))
            if role == "champion" and math.isfinite(value):
                champ_value[0] = value
            return value

        # The champion and the anchors are scored here and added to the study as finished
        # trials, not enqueued for ``optimize``: in a study shared by several sidecars
        # (PostgreSQL) any of them pops the oldest queued trial, so another sidecar's
        # round could take this one's champion (scoring it as its own challenger) and
        # leave this round without one.
        named: list[tuple[str, dict[str, Any], Policy]] = [("champion", {}, current)]
        named += [("anchor", {"anchor": i, "anchor_label": label}, pol)
                  for i, (label, pol) in enumerate(fixed)]
        # ``round_timeout_s`` bounds the whole round as Optuna's timeout does a study: a
        # trial starts only while time is left, the champion's always
        limit = self.cfg.round_timeout_s
        deadline = time.monotonic() + limit if limit is not None else math.inf
        by_key: dict[str, Policy] = {}
        for role, attrs, pol in named:
            if role != "champion" and time.monotonic() >= deadline:
                break
            by_key[self._fixed_trial(evaluate, role, attrs, pol, token)] = pol

        def objective(trial: optuna.Trial) -> float:
            return evaluate(trial, "challenger", None)

        left = deadline - time.monotonic()
        if n_trials > 1 and left > 0:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                self.study.optimize(
                    objective, n_trials=n_trials - 1,
                    timeout=left if math.isfinite(left) else None,
                    catch=(Exception,), gc_after_trial=False,
                )
        trials = [
            t for t in self.study.get_trials(deepcopy=False)
            if t.user_attrs.get("round_token") == token
        ]
        for t in trials:
            if t.user_attrs.get(ATTR_FIXED_KEY) in by_key:
                policies[t.number] = by_key[t.user_attrs[ATTR_FIXED_KEY]]
        result = self._gate(trials, policies, rnd, wid, window, dr)
        result = self._simplify(result, trials, window, stress)
        result = self._narrow_envelope(result, trials, window, stress, dr)
        self._prev_window = window
        self._reshuffled = None
        self._record_round(result, current)
        self._record_history(result, trials, common, list(comp_keys))
        return result

    def _records_params(self, role: str, policy: Policy) -> bool:
        """Whether a fixed trial records its policy's parameters (the champion's always,
        clipped into the space; an anchor's when its mode is the space's), so that the
        parameters it is given and the ones its evaluation suggests are the same."""
        return role == "champion" or policy.mode is self.cfg.space.mode

    def _fixed_trial(self, evaluate: Callable[[optuna.trial.BaseTrial, str, Policy], float],
                     role: str, attrs: Mapping[str, Any], policy: Policy, token: str) -> str:
        """Score one fixed policy of the round (the champion, an anchor) with ``evaluate``
        and add it to the study as a finished trial (FAIL when it raised or is not finite,
        as ``optimize`` records one); returns the key it carries (``ATTR_FIXED_KEY``)."""
        params = (policy_to_params(policy, self.cfg.space, self.base)
                  if self._records_params(role, policy) else {})
        trial = optuna.trial.FixedTrial(params)
        key = uuid.uuid4().hex
        trial.set_user_attr(ATTR_FIXED_KEY, key)
        trial.set_user_attr(ATTR_CHAMPION_TOKEN if role == "champion" else ATTR_ANCHOR_TOKEN,
                            token)
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        start = datetime.datetime.now()
        value: float | None = None
        try:
            got = evaluate(trial, role, policy)
            value = got if math.isfinite(got) else None
        except Exception as exc:
            log.warning("the round's %s trial failed: %s: %s", role, type(exc).__name__, exc)
        frozen = optuna.trial.create_trial(
            state=TrialState.COMPLETE if value is not None else TrialState.FAIL, value=value,
            params=trial.params, distributions=trial.distributions,
            user_attrs=trial.user_attrs)
        frozen.datetime_start = start
        self.study.add_trial(frozen)
        return key

    # -- stress scoring -------------------------------------------------------------------
    def _stress(self, window: Trace) -> _Stress | None:
        """The window under ``cfg.stress_load``, its FCFS baseline and its rate factor
        (None: stress scoring off, or the window is loaded enough already)."""
        if not self.cfg.stress_load or not self.cfg.stress_weight \
                or self.cfg.objective.kind is not ObjectiveKind.OPERATOR:
            return None  # off, or an objective of absolute figures (not comparable)
        got = stressed(window, self.cfg.stress_load, self.cfg.engine,
                       self.cfg.model or self.base.step_time, self.cfg.stress_rate_min)
        if got is None:
            return None
        return got[0], self.evaluator.baseline(got[0]), got[1]

    def _with_stress(self, trial: optuna.trial.BaseTrial | None, value: float,
                     summary: Mapping[str, Any], baseline: Mapping[str, Any]) -> float:
        """The window's value blended with the stressed replay's (``cfg.stress_weight``);
        both recorded on ``trial``. NaN when the stressed value is not finite."""
        v = evaluate(summary, baseline, self.cfg.objective)[0]
        w = self.cfg.stress_weight
        if trial is not None:
            trial.set_user_attr("value_window", value)
            trial.set_user_attr("value_stress", v if math.isfinite(v) else None)
        if not math.isfinite(v):
            if trial is not None:
                trial.set_user_attr("error", "objective under stress is not finite")
            return math.nan
        return (1.0 - w) * value + w * v

    def _value(self, window: Trace, policy: Policy,
               stress: _Stress | None) -> float:
        """``policy``'s value on ``window`` as a round scores it, with ``stress`` (the
        window's :meth:`_stress`, computed once by the caller) blended in."""
        return self._scored(window, policy, stress)[0]

    def _scored(self, window: Trace, policy: Policy, stress: _Stress | None,
                trial: optuna.trial.BaseTrial | None = None,
                baseline: Mapping[str, Any] | None = None) -> tuple[float, list[str]]:
        """:meth:`_value` and the objective's component names. With ``trial`` (a round's
        trial closure) the components, headline figures, window and stressed values and
        any non-finite objective are recorded on it; ``baseline`` is the window's, when
        the caller has it. The stressed copy is not replayed once the window's value is
        not finite (the trial fails either way)."""
        summary = self.evaluator.run(window, policy)
        base = baseline if baseline is not None else self.evaluator.baseline(window)
        if trial is not None:
            v, keys = _score(trial, summary, base, self.cfg.objective)
        else:
            v, keys = evaluate(summary, base, self.cfg.objective)[0], []
        if stress is None or not math.isfinite(v):
            return v, keys
        return self._with_stress(trial, v, self.evaluator.run(stress[0], policy), stress[1]), keys

    # -- tuning history (optuna-dashboard) ------------------------------------------------
    def _record_history(self, res: RoundResult, trials: Sequence[FrozenTrial],
                        common: Mapping[str, Any], keys: Sequence[str]) -> None:
        promoted = res.best_trial if res.promoted is not None else None
        outcomes = history.final_outcomes(trials, promoted, res.reason)
        for t in trials:
            history.save_trial_note(self.study, t, f"Round {res.round}: {outcomes[t.number]}")
        by_number = {t.number: t for t in trials}
        champ = next((t for t in trials if t.user_attrs.get("role") == "champion"), None)
        best = by_number.get(res.best_trial) if res.best_trial is not None else None
        comps = {"champion": history.components(champ.user_attrs, keys) if champ else {},
                 "best": history.components(best.user_attrs, keys) if best else {}}
        self._round_entry = {
            **{k: common.get(k) for k in ("round", "window_id", "window_requests",
                                           "window_start_s", "window_end_s", "window_load",
                                           "drift", "drift_detected", "stress_rate")},
            "champion_value": res.champion_value, "best_value": res.best_value,
            "best_trial": res.best_trial, "promoted_trial": promoted,
            # as promoted: simplified or narrowed, it differs from the trial's ``policy``
            # (what ``tailwise freeze`` exports for that trial, tailwise.bayes_opt.freeze)
            "promoted_policy": res.promoted.to_dict() if res.promoted is not None else None,
            "outcome": f"promoted trial {promoted}" if promoted is not None else "kept champion",
            "reason": res.reason, "components": comps,
        }
        history.record_round(self.study, self._round_entry)

    def record_publication(self, res: RoundResult, outcome: str, version: int | None) -> None:
        """The learner's verdict on a round's promotion (``promoted`` with the published
        version, ``paused``, ``rejected_*``): into the best trial's note and the study note."""
        entry = dict(self._round_entry)
        if entry.get("round") != res.round or res.promoted is None or res.best_trial is None:
            return
        published = outcome == "promoted" and version is not None
        text = (f"published as version {version}" if published
                else f"promoted, not published: {outcome}")
        if not published:
            # the champion of record is what is in force (``tailwise freeze --which
            # champion``), not a promotion the learner refused or paused: the round's
            # ``current``, which only :meth:`set_champion` (on a publication) replaces
            self.study.set_user_attr(ATTR_CHAMPION, self._current.to_dict())
        entry["outcome"] = f"trial {res.best_trial} {text}"
        entry["published_version"] = version
        self._round_entry = entry
        best = next((t for t in self.study.get_trials(deepcopy=False)
                     if t.number == res.best_trial), None)
        if best is not None:
            history.save_trial_note(self.study, best, f"Round {res.round}: {text} ({res.reason})")
        history.record_round(self.study, entry)

    def record_live_outcome(self, trial_number: int, outcome: str,
                            version: int | None = None) -> None:
        """A live trial's verdict (``live_kept``, ``live_reverted``, ``live_failed``...)."""
        t = next((t for t in self.study.get_trials(deepcopy=False)
                  if t.number == trial_number), None)
        if t is None:
            return
        word = outcome.removeprefix("live_").split("+")[0]
        history.save_trial_note(self.study, t, f"Live trial: {word}" + (
            f" (policy version {version})" if version is not None else ""))

    def _fixed(self, current: Policy) -> list[tuple[str, Policy]]:
        """This round's anchors: the paper modes and the recalled champions, each once,
        none that schedules like ``current``."""
        out: list[tuple[str, Policy]] = []
        recalled = [(f"champion -{i + 1}", p) for i, p in enumerate(self._recall.policies)]
        for label, pol in [*self._anchors, *recalled]:
            if not same(pol, current) and not any(same(pol, q) for _, q in out):
                out.append((label, pol))
        return out

    def _confirmed(self, policy: Policy, dr: Drift | None) -> tuple[bool, str]:
        """The gate's second look: on the previous round's window the candidate must not
        be worse than the champion by more than the margin (one window's win may be
        noise or a quirk of that window). Skipped without a previous window or when ADWIN
        flagged a drift between the two windows (the previous one is another regime)."""
        prev = self._prev_window
        if not self.cfg.confirm or prev is None or (dr is not None and dr.detected):
            return True, ""
        stress = self._stress(prev)
        vals = [self._value(prev, p, stress) for p in (self._current, policy)]
        g = gain(vals[1], vals[0], self.cfg.objective)
        if not g >= -self.cfg.margin:
            return False, f"on the previous window it loses {g:.4g} to the champion"
        return True, f"confirmed on the previous window ({g:+.4g})"

    def _robust(self, policy: Policy, value: float, champ_value: float,
                window: Trace) -> tuple[bool, str]:
        """The gate on more than one sample path (``cfg.reshuffles``): the candidate's and
        the champion's values averaged over the window (``value``, ``champ_value``, as the
        round scored them) and its reshuffles must still differ by more than the margin.
        The champion's reshuffled values are computed once per round."""
        k = self.cfg.reshuffles
        if not k:
            return True, ""
        try:
            if self._reshuffled is None:  # reset by tune() for each round's window
                paths = [reshuffled(window, i + 1) for i in range(k)]
                stresses = [self._stress(w) for w in paths]
                champ = [self._value(w, self._current, st)
                         for w, st in zip(paths, stresses, strict=True)]
                self._reshuffled = (paths, stresses, champ)
            paths, stresses, champ = self._reshuffled
            cand = [self._value(w, policy, st) for w, st in zip(paths, stresses, strict=True)]
        except Exception as exc:  # a failed replay refuses this candidate, not the round
            log.warning("reshuffles: replay failed: %s", exc)
            return False, f"a replay on a reshuffle failed ({type(exc).__name__}: {exc})"
        c_mean = statistics.fmean([champ_value, *champ])
        v_mean = statistics.fmean([value, *cand])
        g = gain(v_mean, c_mean, self.cfg.objective)
        if not g > self.cfg.margin:
            return False, (f"over the window and {k} reshuffles it gains only {g:.4g} "
                           f"(not more than the margin {self.cfg.margin})")
        return True, f"holds over {k} reshuffles ({g:+.4g})"

    def _candidate(self, trial: optuna.trial.BaseTrial, prompts: Any) -> Policy:
        return suggest_policy(trial, self.base, self._partition, self.cfg.space, prompts,
                              self.cfg.partition_seed)

    def _gate(self, trials: Sequence[FrozenTrial], policies: Mapping[int, Policy], rnd: int,
              wid: str, window: Trace, dr: Drift | None) -> RoundResult:
        direction = self.cfg.objective.direction
        sign = 1.0 if direction == "maximize" else -1.0
        champ = next((t for t in trials if t.user_attrs.get("role") == "champion"), None)
        champ_value = _finite_value(champ)
        done = [t for t in trials if t.user_attrs.get("role") in ("challenger", "anchor")
                and _finite_value(t) is not None]
        done.sort(key=lambda t: -sign * float(t.values[0]))
        best = done[0] if done else None
        best_value = _finite_value(best)
        values = [v for v in (champ_value, best_value) if v is not None]

        def result(reason: str, promoted: Policy | None = None,
                   imp: float | None = None) -> RoundResult:
            return RoundResult(
                promoted=promoted, trials=[_summarise(t) for t in trials],
                best_value=max(values, key=lambda v: sign * v) if values else None,
                drift=dr.value if dr else None, champion_value=champ_value,
                improvement=imp if imp is not None and math.isfinite(imp) else None,
                best_trial=best.number if best is not None else None, window_id=wid,
                window_requests=len(window), round=rnd, reason=reason,
            )

        if best is None or best_value is None:
            return result("no challenger completed")
        if champ_value is None:
            return result("the champion has no finite value on this window; nothing is promoted")
        imp = gain(best_value, champ_value, self.cfg.objective)
        if not imp > self.cfg.margin:
            return result(f"best challenger (trial {best.number}) improves by {imp:.4g}, "
                          f"not more than the margin {self.cfg.margin}", imp=imp)
        refused: list[str] = []
        # the confirmation replays at most the two best winners (bounded extra cost)
        for cand in [t for t in done
                     if gain(float(t.values[0]), champ_value, self.cfg.objective)
                     > self.cfg.margin][:2]:
            policy = policies.get(cand.number) or Policy.from_dict(cand.user_attrs["policy"])
            ok, why = self._second_looks(policy, float(cand.values[0]), champ_value, window, dr)
            if not ok:
                refused.append(f"trial {cand.number} {why}")
                continue
            imp = gain(float(cand.values[0]), champ_value, self.cfg.objective)
            best = cand
            policy = policy.replace(
                note=f"study={self.cfg.study_name} round={rnd} trial={cand.number}")
            return result(f"trial {cand.number} beats the champion by {imp:.4g} > margin "
                          f"{self.cfg.margin}" + (f"; {why}" if why else "")
                          + "".join(f"; {r}" for r in refused), promoted=policy, imp=imp)
        return result("; ".join(refused) + ": kept the champion", imp=imp)

    def _simplify(self, res: RoundResult, trials: Sequence[FrozenTrial], window: Trace,
                  stress: _Stress | None) -> RoundResult:
        """Parsimony (``cfg.simplify``): put each switch in which the promoted policy
        departs from the base policy back to the base's value, in turn, while the window
        cannot tell: the reverted policy must still beat the champion by more than the
        margin and lose at most ``simplify_tol`` to the trial as promoted (each revert is
        measured against the trial, so the losses cannot add up past the tolerance)."""
        pol, champ = res.promoted, res.champion_value
        if not self.cfg.simplify or pol is None or champ is None or pol.mode is not self.base.mode:
            return res
        won = _promoted_value(res, trials)
        if won is None:
            return res
        obj, kept = self.cfg.objective, []
        for path in switch_departures(pol, self.base):
            cand = with_switch(pol, path, not get_switch(pol, path))
            try:
                v = self._value(window, cand, stress)
            except Exception as exc:  # a replay that fails keeps the switch as promoted
                log.warning("simplify: replay with %s reverted failed: %s", path, exc)
                continue
            if self._cannot_tell(v, champ, won) and self._robust(cand, v, champ, window)[0]:
                pol = cand
                kept.append(f"{path} ({gain(v, won, obj):+.3g})")
        if not kept:
            return res
        return dataclasses.replace(
            res, promoted=pol.replace(note=f"{pol.note} simplified"),
            reason=f"{res.reason}; back to the base policy's value, the window not telling "
                   f"them apart (within {self.cfg.simplify_tol} of the trial): {', '.join(kept)}")

    def _cannot_tell(self, value: float, champion: float, promoted: float) -> bool:
        """Whether a variant of the promoted policy, worth ``value``, is as good a winner
        for the round: it still beats the champion by more than ``cfg.margin`` and loses
        at most ``cfg.simplify_tol`` to the promoted trial (:meth:`_simplify`,
        :meth:`_narrow_envelope`)."""
        obj = self.cfg.objective
        return (gain(value, champion, obj) > self.cfg.margin
                and gain(value, promoted, obj) >= -self.cfg.simplify_tol)

    def _narrow_envelope(self, res: RoundResult, trials: Sequence[FrozenTrial], window: Trace,
                         stress: _Stress | None, dr: Drift | None) -> RoundResult:
        """``cfg.narrow_envelope``: a promoted tailwise policy with a wider waiting envelope
        than the base policy's (a tailwise base) is published with the base's envelope
        instead when the window cannot tell the two apart (one more replay, only on
        promoting rounds; measured against the policy as promoted, like
        :meth:`_simplify`), and, with ``cfg.confirm``, the narrowed policy passes the same
        second look as the promoted one. ``best_value`` and ``improvement`` become the
        narrowed policy's (what the learner stamps on the policy it publishes).

        With ``cfg.window_bounds_envelope``: a window cannot show what an envelope longer
        than itself costs (a request may be overtaken for up to ``E``, and a replay of a
        shorter window ends in a drain that serves whoever was held back). So when the
        promoted policy's envelope, as its scheduler measured it on the window
        (:meth:`ReplayEvaluator.envelope`, one replay more), is longer than the window's
        span, or cannot be measured, the wider envelope is not published: the narrowed
        policy is, if it still beats the champion by more than the margin and passes the
        gate's other checks, and otherwise nothing is. Seen on
        chat-longdoc-burst seed 0 (README "Online learning"): a policy with ``E`` = 6.2·T
        won its 40-s long-document window on every reshuffle, and its long documents then
        waited out the envelope (P99 TTLT of that phase 49.6 s against static tailwise's
        32.2 s)."""
        pol, champ = res.promoted, res.champion_value
        if not self.cfg.narrow_envelope or pol is None or champ is None \
                or pol.mode is not Mode.TAILWISE or self.base.mode is not Mode.TAILWISE:
            return res
        won = _promoted_value(res, trials)
        g, b = pol.regime, self.base.regime
        wider = {name: getattr(b, name) for name in ("aging_factor", "queue_floor_factor")
                 if getattr(g, name) > getattr(b, name)}
        if won is None or not wider:
            return res
        cand = pol.replace(regime=dataclasses.replace(g, **wider))
        unseen = self._unseen_envelope(window, pol) if self.cfg.window_bounds_envelope else None
        obj = self.cfg.objective
        changes = ", ".join(f"regime.{k} {getattr(g, k):.3g} -> {x:.3g}" for k, x in wider.items())
        try:
            v = self._value(window, cand, stress)
        except Exception as exc:  # a replay that fails keeps the policy as promoted
            log.warning("narrow_envelope: replay with the base's envelope failed: %s", exc)
            if unseen is None:
                return res
            v = math.nan  # ... unless its envelope may not be published: then nothing is
        if unseen is not None:
            why = f"its waiting envelope {unseen} the window ({window.duration_s:.3g} s) can show"
            if not gain(v, champ, obj) > self.cfg.margin:
                passed, refusal = False, ("with the base policy's envelope it does not beat "
                                          f"the champion ({changes}: {gain(v, champ, obj):+.3g})")
            else:
                passed, refusal = self._second_looks(cand, v, champ, window, dr)
            if not passed:
                return dataclasses.replace(res, promoted=None, reason=(
                    f"{res.reason}; not published: {why}, and {refusal}"))
            kept = f"the base policy's waiting envelope kept, {why}"
        elif not self._cannot_tell(v, champ, won) or \
                not self._second_looks(cand, v, champ, window, dr)[0]:
            return res
        else:
            kept = (f"the base policy's waiting envelope kept, the window not telling it "
                    f"from the wider one (within {self.cfg.simplify_tol} of the trial: "
                    f"{gain(v, won, obj):+.3g})")
        return dataclasses.replace(
            res, promoted=cand.replace(note=f"{pol.note} envelope narrowed"),
            best_value=v, improvement=gain(v, champ, obj),
            reason=f"{res.reason}; {kept}: {changes}")

    def _second_looks(self, cand: Policy, value: float, champ: float, window: Trace,
                      dr: Drift | None) -> tuple[bool, str]:
        """The gate's checks after the margin, for a winner worth ``value`` on the window
        (the round's, or the promoted policy narrowed): ``confirm``, then ``reshuffles``;
        whether it passes, and what they said."""
        ok, why = self._confirmed(cand, dr)
        if not ok:
            return False, why
        ok, why_r = self._robust(cand, value, champ, window)
        return ok, "; ".join(w for w in (why, why_r) if w)

    def _unseen_envelope(self, window: Trace, policy: Policy) -> str | None:
        """Why ``policy``'s waiting envelope is longer than ``window`` can show (it is
        longer than the window's span, or it cannot be measured: an evaluator without an
        ``envelope`` method, a failed replay, no envelope); None when it is shorter."""
        unknown = "could not be measured{}, so it is not known to fit what"
        measure = getattr(self.evaluator, "envelope", None)
        if not callable(measure):
            return unknown.format("")
        try:
            env = measure(window, policy)
        except Exception as exc:
            log.warning("window_bounds_envelope: envelope replay failed: %s", exc)
            return unknown.format(" (the replay failed)")
        if env is None or not math.isfinite(env):
            return unknown.format("")
        return f"({env:.3g} s) is longer than what" if env > window.duration_s else None

    def _record_round(self, res: RoundResult, current: Policy) -> None:
        champion = res.promoted if res.promoted is not None else current
        self.study.set_user_attr(ATTR_CHAMPION, champion.to_dict())
        if res.promoted is not None and self.cfg.recall:
            self._recall.add(res.promoted)
            self.study.set_user_attr(ATTR_RECALL, self._recall.to_json())
        self.study.set_user_attr(ATTR_LAST_ROUND, {
            "round": res.round, "window_id": res.window_id, "drift": res.drift,
            "champion_value": res.champion_value, "best_value": res.best_value,
            "best_trial": res.best_trial, "promoted": res.promoted is not None,
            "improvement": res.improvement, "reason": res.reason,
        })

    def set_champion(self, policy: Policy) -> None:
        """Record the policy actually in force (after the learner stamped its version)."""
        policy.validate()
        self._current = policy
        self.study.set_user_attr(ATTR_CHAMPION, policy.to_dict())

    def _next_round(self) -> int:
        rnd = int(self.study.user_attrs.get(ATTR_ROUND, 0)) + 1
        self.study.set_user_attr(ATTR_ROUND, rnd)
        return rnd

    def _drift(self, window: Trace) -> Drift | None:
        sysattrs = storage_of(self.study).get_study_system_attrs(study_id_of(self.study))
        ref: LengthSketch | None = None
        if SYS_DRIFT_REF in sysattrs:
            try:
                ref = LengthSketch.from_json(sysattrs[SYS_DRIFT_REF])
            except WindowError:
                ref = None  # a corrupt reference only costs one drift figure
        dr = drift(ref, window) if ref is not None else None
        storage_of(self.study).set_study_system_attr(
            study_id_of(self.study), SYS_DRIFT_REF, LengthSketch.of(window).to_json()
        )
        return dr

    # -- live reward ----------------------------------------------------------------------
    def ask_live(
        self, current: Policy | None = None, partition: tuple[QueueSpec, ...] | None = None,
        *, max_tries: int = 16,
    ) -> tuple[int, Policy]:
        """A trial to serve live: (trial number, policy). Tell its metrics with
        :meth:`tell_live`. Invalid candidates are failed and re-asked (``max_tries``)."""
        if current is not None:
            current.validate()
            self._current = current
        if partition is not None:
            self._partition = tuple(partition)
        self.fail_stale_trials()
        last: Exception | None = None
        for _ in range(max_tries):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "heartbeat is supposed to be used with optimize"
                trial = self.study.ask()
            beat = _Beat(storage_of(self.study), trial_id_of(trial))
            trial.set_user_attr("role", "live")
            try:
                policy = self._candidate(trial, None)
            except PolicyError as exc:
                trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
                beat.stop()
                self.study.tell(trial, state=TrialState.FAIL)
                last = exc
                continue
            trial.set_user_attr("policy", policy.to_dict())
            self._live[trial.number] = (trial, beat, policy)
            return trial.number, policy
        raise TunerError(f"no valid live candidate in {max_tries} tries (last: {last})")

    def tell_live(
        self, trial_number: int, summary: Mapping[str, Any],
        baseline: Mapping[str, Any] | None = None,
    ) -> TrialSummary:
        """Score a live trial from the engine's metrics summary over its window.

        ``baseline`` (the same schema, e.g. the champion's previous window) feeds the
        latency-gain and unfairness terms; it is remembered for later calls. A non-finite
        objective FAILs the trial.
        """
        if baseline is not None:
            self._live_baseline = baseline
        entry = self._live.pop(trial_number, None)
        if entry is not None:
            trial: optuna.Trial | int = entry[0]
            entry[1].stop()
        else:  # asked before a restart: tell by number if it is still RUNNING
            trial = trial_number
            try:
                state = self.study.get_trials(deepcopy=False)[trial_number].state
            except IndexError:
                raise TunerError(f"trial {trial_number} does not exist") from None
            if state is not TrialState.RUNNING:
                raise TunerError(f"trial {trial_number} is {state.name}, not RUNNING")
        storage = storage_of(self.study)
        tid = storage.get_trial_id_from_study_id_trial_number(study_id_of(self.study), trial_number)
        handle = optuna.Trial(self.study, tid)
        value, comp = evaluate(summary, self._live_baseline, self.cfg.objective)
        for k, v in {**comp.as_attrs(), **_headline(summary),
                     "has_baseline": self._live_baseline is not None}.items():
            handle.set_user_attr(k, v)
        if math.isfinite(value):
            self.study.tell(trial, value)
        else:
            handle.set_user_attr("error", "objective is not finite")
            self.study.tell(trial, state=TrialState.FAIL)
        return _summarise(storage.get_trial(tid))

    # -- housekeeping ---------------------------------------------------------------------
    def fail_stale_trials(self) -> None:
        """Fail RUNNING trials whose heartbeat is older than the grace period."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)

    def close(self, *, fail_pending: bool = True) -> None:
        """Stop live heartbeats; pending live trials are FAILed unless ``fail_pending``
        is False (then they stay RUNNING and go stale after the grace period)."""
        for number, (trial, beat, _) in list(self._live.items()):
            beat.stop()
            if fail_pending:
                self.study.tell(trial, state=TrialState.FAIL)
            del self._live[number]
        remove = getattr(self.storage, "remove_session", None)
        if callable(remove):
            remove()


# -- helpers ------------------------------------------------------------------------------
def make_sampler(cfg: TunerConfig, seed: int) -> optuna.samplers.BaseSampler:
    """TPE (seeded, multivariate), GP (needs torch), or random."""
    if cfg.sampler == "gp":
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            raise TunerConfigError(
                "tuner.sampler: 'gp' needs PyTorch (pip install torch); use 'tpe' otherwise"
            ) from exc
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=cfg.n_startup_trials)
    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=cfg.n_startup_trials, multivariate=True,
            # group: anchors of other modes carry no parameters; without it the
            # intersection search space would be empty and TPE would go univariate
            group=True,
        )


def _score(trial: optuna.trial.BaseTrial, summary: Mapping[str, Any], baseline: Mapping[str, Any],
           cfg: ObjectiveConfig) -> tuple[float, list[str]]:
    """The trial's value (NaN: Optuna records it FAILED) and its component names."""
    value, comp = evaluate(summary, baseline, cfg)
    attrs = comp.as_attrs()
    for k, v in {**attrs, **_headline(summary)}.items():
        trial.set_user_attr(k, v)
    if not math.isfinite(value):
        trial.set_user_attr("error", "objective is not finite")
        return math.nan, list(attrs)
    return value, list(attrs)


def _headline(summary: Mapping[str, Any]) -> dict[str, float | None]:
    ov = summary.get("overall") if isinstance(summary, Mapping) else None
    ov = ov if isinstance(ov, Mapping) else {}

    def get(*path: str) -> float | None:
        x: Any = ov
        for p in path:
            x = x.get(p) if isinstance(x, Mapping) else None
        ok = isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
        return float(x) if ok else None

    return {
        "ttlt_mean": get("ttlt", "mean"), "ttlt_p99": get("ttlt", "p99"),
        "ttft_mean": get("ttft", "mean"), "goodput_rps": get("goodput_rps"),
        "slo_attainment": get("slo_attainment"),
    }


def _finite_value(t: FrozenTrial | None) -> float | None:
    if t is None or t.state is not TrialState.COMPLETE or t.value is None:
        return None
    return float(t.value) if math.isfinite(t.value) else None


def _promoted_value(res: RoundResult, trials: Sequence[FrozenTrial]) -> float | None:
    """The finite value of the round's promoted (best) trial, else None."""
    return _finite_value(next((t for t in trials if t.number == res.best_trial), None))


def _summarise(t: FrozenTrial) -> TrialSummary:
    comp = {k: t.user_attrs.get(k) for k in ("C", "L", "S", "U")}
    return TrialSummary(
        number=t.number, state=t.state.name,
        value=float(t.value) if t.value is not None else None,
        role=str(t.user_attrs.get("role", "")), params=dict(t.params), components=comp,
        error=t.user_attrs.get("error"),
    )


class _Beat:
    """A daemon thread recording a live trial's heartbeat until stopped (no-op without
    heartbeat). Optuna's own heartbeat thread is non-daemon and tied to ``optimize``."""

    def __init__(self, storage: BaseStorage, trial_id: int) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if is_heartbeat_enabled(storage):
            assert isinstance(storage, BaseHeartbeat)
            interval = storage.get_heartbeat_interval()
            assert interval is not None
            storage.record_heartbeat(trial_id)
            self._thread = threading.Thread(
                target=self._run, args=(storage, trial_id, float(interval)),
                name=f"tailwise-heartbeat-{trial_id}", daemon=True,
            )
            self._thread.start()

    def _run(self, storage: BaseHeartbeat, trial_id: int, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                storage.record_heartbeat(trial_id)
            except Exception:  # a storage hiccup must not kill the sidecar; next beat retries
                time.sleep(0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)


__all__ = [
    "RoundResult",
    "TrialSummary",
    "Tuner",
    "TunerConfig",
    "TunerConfigError",
    "TunerError",
    "make_sampler",
]


#: the policy sections whose on/off switches :meth:`Tuner._simplify` may put back
SWITCH_SECTIONS = ("boost", "preemption", "slo", "regime")


def switch_departures(policy: Policy, base: Policy) -> list[str]:
    """The on/off switches (``section.field``) in which ``policy`` differs from ``base``.

    >>> from tailwise.scorer.policy import Mode
    >>> b = Policy(mode=Mode.TAILWISE)
    >>> switch_departures(with_switch(b, "regime.tail_protect", False), b)
    ['regime.tail_protect']
    """
    out = []
    for sec in SWITCH_SECTIONS:
        a, b = getattr(policy, sec), getattr(base, sec)
        for f in dataclasses.fields(a):
            va = getattr(a, f.name)
            if isinstance(va, bool) and va != getattr(b, f.name):
                out.append(f"{sec}.{f.name}")
    return out


def get_switch(policy: Policy, path: str) -> bool:
    sec, name = path.split(".")
    return bool(getattr(getattr(policy, sec), name))


def with_switch(policy: Policy, path: str, value: bool) -> Policy:
    """``policy`` with the switch ``section.field`` set to ``value``."""
    sec, name = path.split(".")
    return dataclasses.replace(
        policy, **{sec: dataclasses.replace(getattr(policy, sec), **{name: value})})

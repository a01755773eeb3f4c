"""Tuning history an operator can read in optuna-dashboard (and through Optuna's API).

What the tuner leaves in its study, per round:

* the objective's name (``study.set_metric_names``), so the dashboard's charts say what
  is optimised instead of "Objective 0"; the components of every trial (the objective's
  own user attributes) are listed by name in the notes;
* on every trial (user attributes): the window it was scored on (``window_start_s``,
  ``window_end_s`` engine seconds, ``window_requests``, ``window_rate_rps``,
  ``window_load`` = offered work / engine capacity, the drift figures), its difference
  from the champion policy (``diff_vs_champion``), and ``outcome`` — its standing when it
  finished (``champion (in force)``, ``better than champion by +x%``, ``not better than
  champion (-x%)``, ``failed: reason``);
* on every trial a note with its final outcome once the round is decided (``published as
  version V``, ``promoted, not published: why``, ``kept (champion)``, ``replaced by trial
  N``, ``not promoted``, ``failed: reason``; live trials: ``kept`` / ``reverted``) — a
  finished trial's attributes can no longer change, a note can;
* a study note: the latest rounds as a table (what was published and why) and the
  components of the last round's champion and best challenger.

The round entries also live in the study user attribute :data:`ATTR_ROUNDS` (last
:data:`MAX_ROUNDS` rounds), which is what the note is rendered from. Notes need
optuna-dashboard's ``save_note`` (extra ``[dashboard]``); without it the study note is
kept in the user attribute :data:`ATTR_NOTE` only.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import optuna

from tailwise.bayes_opt.objective import ObjectiveConfig, gain
from tailwise.scorer.policy import Policy
from tailwise.scorer.step_time import StepTimeModel
from tailwise.simulator.engine import EngineConfig
from tailwise.simulator.traces import Trace
from tailwise.simulator.workload import offered_load

ATTR_ROUNDS = "tailwise:rounds"
ATTR_NOTE = "tailwise:note"
MAX_ROUNDS = 50
#: rounds shown in the study note
NOTE_ROUNDS = 20
#: policy fields that are bookkeeping, not behaviour
_IGNORED = ("version", "created_at", "source", "note", "extra", "schema_version")


def metric_name(cfg: ObjectiveConfig) -> str:
    """The objective's name on the dashboard, e.g. ``operator (maximize)``."""
    return f"{cfg.kind.value} ({cfg.direction})"


def name_metrics(study: optuna.Study, cfg: ObjectiveConfig) -> None:
    name = [metric_name(cfg)]
    if study.metric_names != name:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(name)


def window_attrs(window: Trace, span: tuple[float, float] | None, engine: EngineConfig,
                 model: StepTimeModel) -> dict[str, float | None]:
    """Time range (engine seconds; the trace's own clock without ``span``), rate, load."""
    dur = float(window.duration_s)
    start, end = span if span is not None else (0.0, dur)
    try:
        load: float | None = offered_load(window, engine, model)
    except ValueError:
        load = None
    return {
        "window_start_s": _fin(start), "window_end_s": _fin(end),
        "window_rate_rps": len(window) / dur if dur > 0 else None, "window_load": load,
    }


def policy_diff(policy: Policy, champion: Policy, limit: int = 12) -> str:
    """Behavioural fields that differ, ``field: champion -> policy``; queues summarised.

    >>> from tailwise.scorer.policy import Mode
    >>> policy_diff(Policy(mode=Mode.BOOST), Policy())
    'mode: fcfs -> boost'
    >>> policy_diff(Policy(), Policy())
    'same as champion'
    """
    a, b = _flat(champion.to_dict()), _flat(policy.to_dict())
    changes = []
    if a.pop("queues", None) != b.pop("queues", None):
        changes.append(f"queues: {len(champion.queues)} -> {len(policy.queues)} "
                       f"({_bounds(policy)})")
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            changes.append(f"{k}: {_fmt(a.get(k))} -> {_fmt(b.get(k))}")
    if not changes:
        return "same as champion"
    more = len(changes) - limit
    return "; ".join(changes[:limit]) + (f"; ... {more} more" if more > 0 else "")


def standing(role: str, value: float, champion_value: float | None, margin: float,
             cfg: ObjectiveConfig) -> str:
    """A finished trial's standing against the champion of its round (the gate's
    :func:`~tailwise.bayes_opt.objective.gain`)."""
    if role == "champion":
        return "champion (in force)"
    if not math.isfinite(value):
        return "failed: objective is not finite"
    if champion_value is None:
        return "scored (champion has no value)"
    imp = gain(value, champion_value, cfg)
    if imp > margin:
        return f"better than champion by {imp:+.2%} (> margin {margin:.0%})"
    return f"not better than champion ({imp:+.2%}, margin {margin:.0%})"


def final_outcomes(trials: Sequence[optuna.trial.FrozenTrial], promoted_trial: int | None,
                   reason: str) -> dict[int, str]:
    """Outcome of every trial of a decided round (trial number -> text)."""
    out: dict[int, str] = {}
    for t in trials:
        role = t.user_attrs.get("role")
        if t.state is not optuna.trial.TrialState.COMPLETE:
            out[t.number] = f"failed: {t.user_attrs.get('error', t.state.name.lower())}"
        elif role == "champion":
            out[t.number] = (f"replaced by trial {promoted_trial}" if promoted_trial is not None
                             else f"kept (champion): {reason}")
        elif t.number == promoted_trial:
            out[t.number] = f"promoted: {reason}"
        else:
            out[t.number] = "not promoted" + (
                f" (trial {promoted_trial} was)" if promoted_trial is not None else f": {reason}")
    return out


def save_trial_note(study: optuna.Study, trial: optuna.trial.FrozenTrial, body: str) -> None:
    save = _save_note()
    if save is not None:
        save(optuna.Trial(study, trial._trial_id), body)


def record_round(study: optuna.Study, entry: Mapping[str, Any]) -> None:
    """Append (or, same round number, replace) a round entry and re-render the note."""
    rounds = [r for r in study.user_attrs.get(ATTR_ROUNDS, []) if isinstance(r, dict)]
    rounds = [r for r in rounds if r.get("round") != entry.get("round")] + [dict(entry)]
    rounds = rounds[-MAX_ROUNDS:]
    study.set_user_attr(ATTR_ROUNDS, rounds)
    body = render_note(study, rounds)
    save = _save_note()
    if save is not None:
        save(study, body)
    else:
        study.set_user_attr(ATTR_NOTE, body)


def render_note(study: optuna.Study, rounds: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: what each recent round published and why, plus the last components."""
    name = study.metric_names[0] if study.metric_names else "objective"
    lines = [f"# Tuning history: {study.study_name}", "",
             f"Objective: **{name}**. Newest round last; times are engine seconds.", "",
             "| round | window (s) | requests | load | drift | champion | best | outcome | why |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rounds[-NOTE_ROUNDS:]:
        lines.append(
            f"| {r.get('round')} | {_fmt(r.get('window_start_s'))}–{_fmt(r.get('window_end_s'))} "
            f"| {r.get('window_requests')} | {_fmt(r.get('window_load'))} "
            f"| {_fmt(r.get('drift'))} | {_fmt(r.get('champion_value'))} "
            f"| {_fmt(r.get('best_value'))} | {r.get('outcome', '')} "
            f"| {str(r.get('reason', '')).replace('|', '/')} |")
    last = rounds[-1] if rounds else {}
    comps = last.get("components")
    if isinstance(comps, Mapping) and comps:
        lines += ["", f"## Round {last.get('round')}: objective components", "",
                  "| component | champion | best challenger |", "|---|---|---|"]
        champ, best = comps.get("champion", {}), comps.get("best", {})
        for k in sorted(set(champ) | set(best)):
            lines.append(f"| {k} | {_fmt(champ.get(k))} | {_fmt(best.get(k))} |")
    return "\n".join(lines) + "\n"


def components(attrs: Mapping[str, Any], keys: Sequence[str]) -> dict[str, float | None]:
    return {k: _fin(attrs.get(k)) for k in keys}


# -- helpers ------------------------------------------------------------------------------
def _save_note() -> Any:
    try:
        from optuna_dashboard import save_note
    except ImportError:  # the [dashboard] extra is not installed
        return None
    return save_note


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if not prefix and k in _IGNORED:
            continue
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and key != "queues":
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _bounds(policy: Policy) -> str:
    return ", ".join(f"[{q.lo:g}, {q.hi:g})" for q in policy.queues[:6]) + (
        ", ..." if len(policy.queues) > 6 else "")


def _fin(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)

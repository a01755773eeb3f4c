"""Choose the policy of a study to freeze (schema-versioned, sha256-hashed file).

``which="champion"``: the policy the tuner last recorded as in force (study user attribute
``tailwise:champion``: the promoted challenger of the latest round, the champion it kept,
or what the learner recorded with :meth:`tailwise.bayes_opt.tuner.Tuner.set_champion`).

``which="best"``: the best COMPLETE trial of the *latest round* that has a policy.
Objective values of different rounds come from different windows (different load and
mix), so they are not compared with each other; within a round every trial replayed the
same window. A study with no rounds (live-only trials) falls back to the best trial of
the whole study. When that round promoted the trial, the policy *as promoted* is frozen
(the round entry's ``promoted_policy``: the tuner may have put switches or the waiting
envelope back to the base policy's, see ``TunerConfig.simplify`` and
``narrow_envelope``), not the trial's raw draw. A best trial the round's gate did not
promote (it did not beat the champion by the margin, or failed a second look), one the
learner promoted but did not publish, and the best trial of a round with no decision
recorded are refused, naming why, unless ``unpromoted=True`` (``--unpromoted``): the gate
is what keeps a window's lucky draw out of production. The champion's own replay is the
policy in force and is exported as such.

The file is written by :func:`tailwise.wire.policy_file.save` (atomic, ``source=frozen``).
"""

from __future__ import annotations

import math

import optuna
from optuna.trial import FrozenTrial, TrialState

from tailwise.bayes_opt.history import ATTR_ROUNDS
from tailwise.bayes_opt.storage import StorageError, open_storage
from tailwise.bayes_opt.tuner import ATTR_CHAMPION
from tailwise.scorer.policy import Policy, PolicyError

WHICH = ("best", "champion")


class FreezeError(ValueError):
    """No policy can be frozen from the study; the message says why."""


def load_study(storage: str, study_name: str) -> optuna.Study:
    """Open an existing study read-only-ish (no heartbeat, no new storage created)."""
    try:
        st = open_storage(storage, heartbeat_interval=None, must_exist=True)
    except StorageError as exc:
        raise FreezeError(str(exc)) from exc
    try:
        return optuna.load_study(study_name=study_name, storage=st)
    except KeyError:
        names = [s.study_name for s in st.get_all_studies()]
        raise FreezeError(
            f"study {study_name!r} not found in {storage!r}; studies there: {names or 'none'}"
        ) from None


def select_policy(study: optuna.Study, which: str = "best",
                  unpromoted: bool = False) -> tuple[Policy, str]:
    """The policy to freeze and a one-line description of where it came from
    (``unpromoted``: export the latest round's best trial even if it was not promoted)."""
    if which not in WHICH:
        raise FreezeError(f"which: must be one of {list(WHICH)}, got {which!r}")
    if which == "champion":
        data = study.user_attrs.get(ATTR_CHAMPION)
        if data is None:
            raise FreezeError(f"study {study.study_name!r} has no champion recorded yet "
                              "(no tuning round finished)")
        return _policy(data, "champion"), f"champion of study {study.study_name!r}"
    trials = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if isinstance(t.user_attrs.get("policy"), dict)
        and t.value is not None and math.isfinite(t.value)
    ]
    rounds = [t.user_attrs["round"] for t in trials if isinstance(t.user_attrs.get("round"), int)]
    if rounds:
        last = max(rounds)
        trials = [t for t in trials if t.user_attrs.get("round") == last]
    if not trials:
        raise FreezeError(f"study {study.study_name!r} has no completed trial with a policy")
    sign = 1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
    best: FrozenTrial = max(trials, key=lambda t: sign * float(t.values[0]))
    where = f"trial {best.number} (value {best.values[0]:.6g}"
    where += f", round {last})" if rounds else ")"
    if not rounds or best.user_attrs.get("role") == "champion":
        # live-only trials have no round gate; the champion's replay is the policy in force
        return _policy(best.user_attrs["policy"], f"trial {best.number}"), where + (
            ", the champion's replay" if rounds else "")
    # the round's own entry: in a study shared by several sidecars round numbers can
    # collide, so the entry must also be of the window the trial replayed
    entry = next((r for r in reversed(study.user_attrs.get(ATTR_ROUNDS, []))
                  if isinstance(r, dict) and r.get("round") == last
                  and r.get("window_id") == best.user_attrs.get("window_id")), None)
    refused = _not_promoted(entry, best.number, last)
    if refused is None and entry is not None:
        promoted = entry.get("promoted_policy")
        if isinstance(promoted, dict):
            return (_policy(promoted, f"trial {best.number} as promoted"),
                    f"{where}, as promoted")
    elif refused is not None and not unpromoted:
        raise FreezeError(
            f"{where} {refused}; --which champion exports the policy in force, "
            "--unpromoted exports this trial anyway")
    if refused is not None:
        where += f", {refused}"
    return _policy(best.user_attrs["policy"], f"trial {best.number}"), where


def _not_promoted(entry: dict[str, object] | None, number: int, last: int) -> str | None:
    """Why the round's gate (or the learner) did not put trial ``number`` in force, or
    ``None`` when it did."""
    if entry is None:
        return (f"has no decision recorded for round {last} (still running, its sidecar "
                "stopped, the entry was overwritten by another sidecar, or the study "
                "predates tuning history)")
    if entry.get("promoted_trial") != number:
        other = entry.get("promoted_trial")
        return (f"was not promoted (round {last} promoted trial {other})" if other is not None
                else f"was not promoted: {entry.get('reason', 'no reason recorded')}")
    if "published_version" in entry and entry["published_version"] is None:
        verdict = str(entry.get("outcome", "")).rpartition("not published: ")[2]
        return f"was promoted but not published ({verdict or 'no verdict recorded'})"
    return None


def _policy(data: object, what: str) -> Policy:
    if not isinstance(data, dict):
        raise FreezeError(f"{what}: stored policy is not an object")
    try:
        return Policy.from_dict(data)
    except PolicyError as exc:
        raise FreezeError(f"{what}: stored policy is invalid: {exc}") from exc

"""The one place tailwise reaches into Optuna's non-public API (Optuna pinned to 5.x).

Optuna's heartbeat protocol (``BaseHeartbeat``, ``is_heartbeat_enabled``) lives in the
private module ``optuna.storages._heartbeat``; :func:`optuna.storages.fail_stale_trials`
only fails stale trials of storages that implement it, so
:class:`~tailwise.bayes_opt.storage.HeartbeatJournalStorage` must subclass it. The
tuner also reads the study's storage and ids (``Study._storage``, ``Study._study_id``,
``Trial._trial_id``) to keep heartbeats and study system attributes. Everything else
uses the public API. ``tests/bayes_opt/test_optuna_seam.py`` checks every name here
against the installed Optuna, so an upgrade that moves them fails there, by name.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

#: the Optuna major version this seam was written against (pyproject pins it)
OPTUNA_MAJOR = 5

#: the abstract methods a heartbeat storage implements
HEARTBEAT_METHODS = frozenset({"record_heartbeat", "_get_stale_trial_ids",
                               "get_heartbeat_interval", "get_heartbeat_stale_trial_callback"})


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage a study writes to."""
    storage: BaseStorage = study._storage
    return storage


def study_id_of(study: optuna.Study) -> int:
    """The storage's id of ``study``."""
    return int(study._study_id)


def trial_id_of(trial: Any) -> int:
    """The storage's id of a ``Trial`` or ``FrozenTrial`` (not its number)."""
    return int(trial._trial_id)


__all__ = ["HEARTBEAT_METHODS", "OPTUNA_MAJOR", "BaseHeartbeat", "is_heartbeat_enabled",
           "storage_of", "study_id_of", "trial_id_of"]

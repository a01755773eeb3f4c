"""The seam to Optuna's non-public API (:mod:`tailwise.bayes_opt.optuna_seam`).

Each name the seam relies on is checked against the installed Optuna, so an upgrade that
moves or changes one fails here by name instead of somewhere in a tuning round.
"""

from __future__ import annotations

import inspect

import optuna
from optuna.storages import InMemoryStorage, RDBStorage

from tailwise.bayes_opt import optuna_seam as seam
from tailwise.bayes_opt.storage import HeartbeatJournalStorage


def test_the_pinned_major_is_installed() -> None:
    assert int(optuna.__version__.split(".")[0]) == seam.OPTUNA_MAJOR


def test_heartbeat_protocol_is_what_our_journal_storage_implements() -> None:
    assert set(seam.BaseHeartbeat.__abstractmethods__) == seam.HEARTBEAT_METHODS
    assert issubclass(RDBStorage, seam.BaseHeartbeat)  # Optuna's own user of the protocol
    for name in seam.HEARTBEAT_METHODS:
        assert name in HeartbeatJournalStorage.__dict__, name
    assert list(inspect.signature(seam.is_heartbeat_enabled).parameters) == ["storage"]
    assert not seam.is_heartbeat_enabled(InMemoryStorage())


def test_study_and_trial_ids() -> None:
    storage = InMemoryStorage()
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    assert seam.storage_of(study) is storage
    sid = seam.study_id_of(study)
    assert storage.get_study_id_from_name(study.study_name) == sid
    tid = seam.trial_id_of(trial)
    assert storage.get_trial_id_from_study_id_trial_number(sid, trial.number) == tid
    study.tell(trial, 1.0)
    (frozen,) = study.get_trials()
    assert seam.trial_id_of(frozen) == tid

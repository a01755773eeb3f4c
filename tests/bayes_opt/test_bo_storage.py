"""Storage: journal resume, heartbeat-based failing of stale RUNNING trials, RDB URLs."""

from __future__ import annotations

import datetime
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tailwise.bayes_opt.storage import (
    HEARTBEAT_ATTR,
    HeartbeatJournalStorage,
    StorageError,
    kind_of,
    open_storage,
)


def fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)


def ask(study: optuna.Study) -> optuna.Trial:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "heartbeat is supposed to be used with optimize"
        return study.ask()


def test_journal_file_resumes_completed_trials(tmp_path: Path) -> None:
    path = tmp_path / "study.journal"
    st = open_storage(str(path))
    assert isinstance(st, HeartbeatJournalStorage)
    s1 = optuna.create_study(storage=st, study_name="s", direction="maximize")
    s1.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=5)
    s1.set_user_attr("tailwise:round", 3)
    before = [(t.number, t.value, t.params) for t in s1.trials]

    # a new process opens the same file: everything is there, and it continues
    s2 = optuna.create_study(storage=open_storage(f"journal:{path}"), study_name="s",
                             direction="maximize", load_if_exists=True)
    assert [(t.number, t.value, t.params) for t in s2.trials] == before
    assert all(t.state is TrialState.COMPLETE for t in s2.trials)
    assert s2.user_attrs["tailwise:round"] == 3
    s2.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(s2.trials) == 7


def test_optimize_records_journal_heartbeats(tmp_path: Path) -> None:
    clock = [1000.0]
    st = open_storage(str(tmp_path / "j"), heartbeat_interval=60, clock=lambda: clock[0])
    study = optuna.create_study(storage=st)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert study.trials[0].system_attrs[HEARTBEAT_ATTR] == 1000.0


def test_stale_running_journal_trial_is_failed_after_grace(tmp_path: Path) -> None:
    clock = [1000.0]
    st = open_storage(str(tmp_path / "j"), heartbeat_interval=10, grace_period=30,
                      clock=lambda: clock[0])
    assert isinstance(st, HeartbeatJournalStorage)
    study = optuna.create_study(storage=st, study_name="s")
    crashed = ask(study)
    st.record_heartbeat(crashed._trial_id)  # then its process dies: no more beats
    alive = ask(study)
    unmanaged = ask(study)  # never beat (not heartbeat-managed): left alone, as RDB does

    clock[0] = 1025.0
    st.record_heartbeat(alive._trial_id)
    fail_stale(study)
    assert study.trials[crashed.number].state is TrialState.RUNNING  # 25 s <= grace

    clock[0] = 1031.0  # crashed: 31 s since its beat > 30; alive: 6 s
    fail_stale(study)
    states = {t.number: t.state for t in study.trials}
    assert states[crashed.number] is TrialState.FAIL
    assert states[alive.number] is TrialState.RUNNING
    assert states[unmanaged.number] is TrialState.RUNNING

    # a restarted sidecar sees the failure in the file
    again = optuna.load_study(study_name="s", storage=open_storage(str(tmp_path / "j")))
    assert again.trials[crashed.number].state is TrialState.FAIL


def test_stale_callback_runs_for_failed_trials(tmp_path: Path) -> None:
    clock = [0.0]
    seen: list[int] = []
    st = open_storage(str(tmp_path / "j"), heartbeat_interval=5, clock=lambda: clock[0],
                      heartbeat_stale_trial_callback=lambda s, t: seen.append(t.number))
    study = optuna.create_study(storage=st)
    t = ask(study)
    assert isinstance(st, HeartbeatJournalStorage)
    st.record_heartbeat(t._trial_id)
    clock[0] = 11.0  # default grace = 2 × interval = 10
    fail_stale(study)
    assert seen == [t.number]


def test_heartbeat_off_never_fails_running_trials(tmp_path: Path) -> None:
    clock = [0.0]
    st = open_storage(str(tmp_path / "j"), heartbeat_interval=None, clock=lambda: clock[0])
    study = optuna.create_study(storage=st)
    t = study.ask()
    clock[0] = 1e9
    fail_stale(study)
    assert study.trials[t.number].state is TrialState.RUNNING


def test_sqlite_rdb_fails_stale_trial_via_heartbeat(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st = open_storage(url, heartbeat_interval=1, grace_period=2)
    assert isinstance(st, optuna.storages.RDBStorage)
    study = optuna.create_study(storage=st, study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    crashed = ask(study)
    st.record_heartbeat(crashed._trial_id)
    fail_stale(study)
    assert study.trials[crashed.number].state is TrialState.RUNNING  # fresh beat
    # age the beat by an hour instead of sleeping (no sleeps in tests)
    from optuna.storages._rdb import models

    session = st.scoped_session()
    beat = models.TrialHeartbeatModel.where_trial_id(crashed._trial_id, session)
    assert beat is not None
    beat.heartbeat = beat.heartbeat - datetime.timedelta(hours=1)
    session.commit()
    fail_stale(study)
    reopened = optuna.load_study(study_name="s", storage=url)
    states = [t.state for t in reopened.trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL]


def test_kinds_and_errors(tmp_path: Path) -> None:
    assert kind_of("postgresql+psycopg://u@h/db") == "rdb"
    assert kind_of("memory") == "memory"
    assert kind_of(str(tmp_path / "x.journal")) == "journal"
    with pytest.raises(StorageError, match="unsupported URL scheme 'ftp'"):
        open_storage("ftp://host/x")
    with pytest.raises(StorageError, match="no such journal file"):
        open_storage(str(tmp_path / "missing.journal"), must_exist=True)
    with pytest.raises(StorageError, match="no such SQLite database"):
        open_storage(f"sqlite:///{tmp_path / 'missing.db'}", must_exist=True)
    with pytest.raises(StorageError, match="not a file"):
        open_storage(str(tmp_path))
    with pytest.raises(StorageError, match="heartbeat_interval"):
        open_storage("memory", heartbeat_interval=0)
    assert not (tmp_path / "missing.journal").exists()

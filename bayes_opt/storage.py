"""Where the study lives: a crash-safe journal file by default, or any RDB URL.

``open_storage(spec)``:

* a path (optionally ``journal:PATH`` / ``file:PATH``) → Optuna ``JournalStorage`` over a
  ``JournalFileBackend``: an append-only log replayed on open, so a sidecar killed at any
  point loses no completed trial; several processes on one host may share the file (the
  backend takes a file lock around appends);
* ``sqlite:///...``, ``postgresql://...``, ``mysql://...`` (any SQLAlchemy URL) →
  ``RDBStorage`` — the choice when several sidecars on several hosts share one study;
* ``memory`` → an in-memory storage (tests, one-shot runs).

Stale RUNNING trials. A sidecar killed mid-trial leaves its trial RUNNING forever, which
would block nothing but clutters the study and skews samplers that account for running
trials. ``RDBStorage`` implements Optuna's heartbeat (``heartbeat_interval`` /
``grace_period``): while a trial runs, a thread records a heartbeat every interval, and
:func:`optuna.storages.fail_stale_trials` (called by ``Study.optimize`` before each trial,
and by the tuner on open) fails RUNNING trials whose last heartbeat is older than the
grace period. Optuna 5's ``JournalStorage`` has no heartbeat, so
:class:`HeartbeatJournalStorage` adds the same protocol on top of it: the heartbeat is a
trial system attribute (:data:`HEARTBEAT_ATTR`, wall-clock seconds, one journal line per
beat) and a RUNNING trial is stale when ``now − last beat > grace_period``. As with
``RDBStorage``, a trial that never recorded a heartbeat is not heartbeat-managed and is
left alone. The clock is injectable for tests.

Resuming: the tuner opens its study with ``load_if_exists=True``, so a restarted sidecar
continues the same study (same trials, same attributes) from either backend.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import BaseStorage, InMemoryStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from tailwise.bayes_opt.optuna_seam import BaseHeartbeat, trial_id_of

#: trial system attribute holding the journal heartbeat (wall-clock seconds)
HEARTBEAT_ATTR = "tailwise:heartbeat"

DEFAULT_HEARTBEAT_S = 60

_RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")

StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


class StorageError(ValueError):
    """A storage spec cannot be opened; the message names it."""


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """``JournalStorage`` with Optuna's heartbeat protocol (see the module docstring)."""

    def __init__(
        self,
        backend: optuna.storages.journal.BaseJournalBackend,
        *,
        heartbeat_interval: int | None = DEFAULT_HEARTBEAT_S,
        grace_period: int | None = None,
        heartbeat_stale_trial_callback: StaleCallback | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(backend)
        _check_heartbeat(heartbeat_interval, grace_period)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.heartbeat_stale_trial_callback = heartbeat_stale_trial_callback
        self._clock = clock

    def record_heartbeat(self, trial_id: int) -> None:
        with contextlib.suppress(UpdateFinishedTrialError):  # finished between two beats
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, float(self._clock()))

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        assert self.heartbeat_interval is not None
        grace = self.grace_period if self.grace_period is not None else 2 * self.heartbeat_interval
        now = float(self._clock())
        stale = []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = t.system_attrs.get(HEARTBEAT_ATTR)
            if isinstance(beat, int | float) and now - float(beat) > grace:
                stale.append(trial_id_of(t))
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> StaleCallback | None:
        return self.heartbeat_stale_trial_callback


def kind_of(spec: str) -> str:
    """``"rdb"``, ``"journal"`` or ``"memory"`` for a storage spec.

    >>> kind_of("sqlite:///x.db"), kind_of("study.journal"), kind_of("journal:/tmp/s.log")
    ('rdb', 'journal', 'journal')
    """
    if spec == "memory":
        return "memory"
    scheme = spec.split("://", 1)[0].split("+", 1)[0].lower() if "://" in spec else ""
    if scheme in _RDB_SCHEMES:
        return "rdb"
    if scheme:
        raise StorageError(
            f"storage {spec!r}: unsupported URL scheme {scheme!r}; use a journal file path, "
            f"'memory', or an RDB URL ({', '.join(_RDB_SCHEMES)})"
        )
    return "journal"


def journal_path(spec: str) -> Path:
    for prefix in ("journal:", "file:"):
        if spec.startswith(prefix):
            return Path(spec[len(prefix):])
    return Path(spec)


def open_storage(
    spec: str,
    *,
    heartbeat_interval: int | None = DEFAULT_HEARTBEAT_S,
    grace_period: int | None = None,
    heartbeat_stale_trial_callback: StaleCallback | None = None,
    must_exist: bool = False,
    clock: Callable[[], float] = time.time,
) -> BaseStorage:
    """Open (or create) the storage ``spec`` names; see the module docstring.

    ``heartbeat_interval=None`` disables the heartbeat (read-only uses such as the
    dashboard or ``freeze``). ``must_exist`` refuses to create a new journal file or
    SQLite database (so a typo in ``--storage`` is an error, not an empty study).
    """
    if not isinstance(spec, str) or not spec:
        raise StorageError(f"storage: must be a non-empty string, got {spec!r}")
    _check_heartbeat(heartbeat_interval, grace_period)
    kind = kind_of(spec)
    if kind == "memory":
        return InMemoryStorage()
    if kind == "rdb":
        if must_exist and spec.startswith("sqlite:///"):
            db = Path(spec[len("sqlite:///"):])
            if not db.is_file():
                raise StorageError(f"storage {spec!r}: no such SQLite database {db}")
        # pool_pre_ping: a connection dropped by a database restart is replaced on the
        # next checkout instead of failing the next operation
        kwargs: dict[str, Any] = {"engine_kwargs": {"pool_pre_ping": True}}
        if spec.startswith("sqlite"):
            kwargs["engine_kwargs"]["connect_args"] = {"timeout": 30}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeat_interval
                return RDBStorage(
                    spec,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    heartbeat_stale_trial_callback=heartbeat_stale_trial_callback,
                    **kwargs,
                )
        except Exception as exc:  # SQLAlchemy / driver errors
            raise StorageError(f"storage {spec!r}: cannot open ({exc})") from exc
    path = journal_path(spec)
    if path.exists() and not path.is_file():
        raise StorageError(f"storage {spec!r}: {path} is not a file")
    if must_exist and not path.is_file():
        raise StorageError(f"storage {spec!r}: no such journal file {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        backend = JournalFileBackend(str(path))
        return HeartbeatJournalStorage(
            backend,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=heartbeat_stale_trial_callback,
            clock=clock,
        )
    except Exception as exc:  # corrupt journal lines, permissions
        raise StorageError(f"storage {spec!r}: cannot open journal ({exc})") from exc


def _check_heartbeat(interval: int | None, grace: int | None) -> None:
    for name, v in (("heartbeat_interval", interval), ("grace_period", grace)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            raise StorageError(f"{name}: must be None or an integer > 0, got {v!r}")

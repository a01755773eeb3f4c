"""The sidecar's persisted state: version counter, policy in force, partition, loop clock,
and (live mode) the trial in flight and the champion it is compared with.

One small JSON file (``state_dir/sidecar_state.json``) next to the Optuna journal,
rewritten atomically (temp file + fsync + rename + directory fsync) on every change, so
a SIGKILL at any instant leaves either the old or the new file. The policy version
counter is written *before* a version is published, so a restarted sidecar never
re-issues a version an adapter has already seen (or NACKed). A corrupt file is refused
with :class:`StateError` rather than silently reset, because resetting would restart the
version counter.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tailwise.wire.policy_file import atomic_write_text

FORMAT = "tailwise-sidecar-state"
STATE_VERSION = 1
FILENAME = "sidecar_state.json"


class StateError(RuntimeError):
    """The state file exists but cannot be read back."""


@dataclass(frozen=True, slots=True)
class SidecarState:
    #: last policy version issued (the next one is ``version + 1``)
    version: int = 0
    #: the last *validated* policy published (``Policy.to_dict()``), or None
    policy: dict[str, Any] | None = None
    #: automatic promotion paused (kill switch or manual policy)
    paused: bool = False
    #: ``tailwise.partitioner.to_state()`` (JSON-serialisable), or None
    partition: Any = None
    #: engine time of the last tuning round
    last_round_engine_time: float | None = None
    rounds: int = 0
    #: live mode: the trial in flight (``tailwise.learner.live.LiveTrial.to_state()``), or None
    live_trial: dict[str, Any] | None = None
    #: live mode: the champion and its measured summary (``Champion.to_state()``), or None
    live_champion: dict[str, Any] | None = None


class StateFile:
    """Thread-safe read-modify-write of :class:`SidecarState` on disk."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / FILENAME
        self._lock = threading.Lock()
        self._state = self._read()

    @property
    def state(self) -> SidecarState:
        return self._state

    def update(self, **changes: Any) -> SidecarState:
        with self._lock:
            new = dataclasses.replace(self._state, **changes)
            self._write(new)
            self._state = new
            return new

    def issue_version(self) -> int:
        """Reserve the next policy version, durably, and return it."""
        with self._lock:
            new = dataclasses.replace(self._state, version=self._state.version + 1)
            self._write(new)
            self._state = new
            return new.version

    # -- disk -----------------------------------------------------------------------------
    def _read(self) -> SidecarState:
        if not self.path.exists():
            return SidecarState()
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StateError(f"{self.path}: unreadable sidecar state ({exc}); refusing to "
                             "start (the policy version counter would restart)") from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise StateError(f"{self.path}: not a tailwise sidecar state file")
        if doc.get("state_version") != STATE_VERSION:
            raise StateError(f"{self.path}: unsupported state_version {doc.get('state_version')!r}")
        body = doc.get("state")
        if not isinstance(body, dict):
            raise StateError(f"{self.path}: missing 'state' object")
        known = {f.name for f in dataclasses.fields(SidecarState)}
        unknown = sorted(set(body) - known)
        if unknown:
            raise StateError(f"{self.path}: unknown field(s) {unknown}")
        st = SidecarState(**body)
        if not isinstance(st.version, int) or st.version < 0:
            raise StateError(f"{self.path}: version must be an integer >= 0, got {st.version!r}")
        t = st.last_round_engine_time
        if t is not None and (not isinstance(t, int | float) or not math.isfinite(t)):
            raise StateError(f"{self.path}: last_round_engine_time must be finite, got {t!r}")
        for name in ("live_trial", "live_champion"):
            if getattr(st, name) is not None and not isinstance(getattr(st, name), dict):
                raise StateError(f"{self.path}: {name} must be an object or null")
        return st

    def _write(self, state: SidecarState) -> None:
        doc = {"format": FORMAT, "state_version": STATE_VERSION,
               "state": dataclasses.asdict(state)}
        atomic_write_text(self.path, json.dumps(doc, sort_keys=True, allow_nan=False))

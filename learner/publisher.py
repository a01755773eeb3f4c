"""The policy in force on the sidecar: versioning, publishing, the kill switch.

:class:`PolicyStore` owns the one mutable reference the Subscribe streams read. Every
publish reserves a version durably first (:meth:`StateFile.issue_version`), stamps the
policy (version, ``created_at`` in wall seconds, source), validates it, persists it, and
only then wakes the streams. Versions are therefore strictly increasing across
restarts, and a version, once issued, is never reused for a different policy.

Promotion gate: automatic publishes from the learning loop are refused while
``paused`` (set by the kill switch or a manual policy, persisted, cleared by resume).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tailwise.learner.metrics import SidecarMetrics
from tailwise.learner.state import StateFile
from tailwise.scorer.policy import Policy, PolicyError, Source, neutral_policy
from tailwise.wire import codec
from tailwise.wire.v1 import policy_pb2 as pb

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Published:
    """One published version: its wire form and, when validated, the Policy."""

    version: int
    msg: pb.Policy
    #: None only for a testing-hook (unchecked) publish
    policy: Policy | None


class PromotionPaused(RuntimeError):
    """The loop tried to publish while promotion is paused."""


class PolicyStore:
    def __init__(self, state: StateFile, metrics: SidecarMetrics, initial: Policy | None = None,
                 *, wall_clock: Callable[[], float] = time.time) -> None:
        self._state = state
        self._metrics = metrics
        self._wall = wall_clock
        self._cond = threading.Condition()
        st = state.state
        restored: Policy | None = None
        if st.policy is not None:
            try:
                restored = Policy.from_dict(st.policy)
            except PolicyError as exc:
                log.error("persisted policy is invalid (%s); publishing the initial policy", exc)
        self._last_good: Policy
        self._current: Published
        if restored is not None and restored.version <= st.version:
            self._last_good = restored
            self._current = Published(restored.version, codec.policy_to_proto(restored), restored)
            log.info("resumed policy version %d (counter at %d)", restored.version, st.version)
        else:
            base = initial if initial is not None else neutral_policy()
            with self._cond:
                self._current = self._publish_locked(base, base.source, note=base.note)
            self._last_good = self._current.policy or base
        self._metrics.policy_version.set(self._current.version)
        self._metrics.promotion_paused.set(1 if st.paused else 0)

    # -- reads ----------------------------------------------------------------------------
    def current(self) -> Published:
        with self._cond:
            return self._current

    def last_good(self) -> Policy:
        """The latest validated policy (what the loop tunes from)."""
        with self._cond:
            return self._last_good

    @property
    def paused(self) -> bool:
        return self._state.state.paused

    def wait_newer(self, version: int | None, timeout: float) -> Published:
        """Block until the version differs from ``version`` or ``timeout`` (wall s)."""
        with self._cond:
            self._cond.wait_for(lambda: self._current.version != version, timeout=timeout)
            return self._current

    def kick(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # -- writes ---------------------------------------------------------------------------
    def publish(self, policy: Policy, *, source: Source, note: str = "",
                automatic: bool = False, pause: bool | None = None) -> Published:
        """Validate, version and publish ``policy``; raises PolicyError if it is invalid.

        ``automatic`` publishes (the learning loop) raise :class:`PromotionPaused` while
        promotion is paused. ``pause`` sets the persisted pause flag alongside.
        """
        with self._cond:
            if automatic and self._state.state.paused:
                raise PromotionPaused("automatic promotion is paused (kill switch/manual policy)")
            pub = self._publish_locked(policy, source, note=note, pause=pause)
            return pub

    def publish_unchecked(self, msg: pb.Policy, note: str = "unchecked (testing hook)"
                          ) -> Published:
        """Testing hook: publish a wire policy as-is (adapters must NACK a bad one)."""
        with self._cond:
            version = self._state.issue_version()
            raw = pb.Policy()
            raw.CopyFrom(msg)
            raw.version = version
            raw.note = raw.note or note
            pub = Published(version, raw, None)
            self._set_current(pub)
            log.warning("published UNCHECKED policy version %d (testing hook)", version)
            return pub

    def kill(self, reason: str = "") -> Published:
        """Kill switch: FCFS now, and pause automatic promotion."""
        note = f"kill switch: {reason}" if reason else "kill switch"
        log.warning("%s", note)
        return self.publish(neutral_policy(), source=Source.BASELINE, note=note, pause=True)

    def set_paused(self, paused: bool) -> None:
        with self._cond:
            self._state.update(paused=paused)
            self._metrics.promotion_paused.set(1 if paused else 0)

    def _publish_locked(self, policy: Policy, source: Source, *, note: str,
                        pause: bool | None = None) -> Published:
        candidate = dataclasses.replace(policy, source=source, note=note or policy.note)
        candidate.validate()  # before reserving a version: invalid input burns nothing
        version = self._state.issue_version()
        stamped = dataclasses.replace(candidate, version=version, created_at=self._wall())
        stamped.validate()
        msg = codec.policy_to_proto(stamped)
        changes: dict[str, object] = {"policy": stamped.to_dict()}
        if pause is not None:
            changes["paused"] = pause
            self._metrics.promotion_paused.set(1 if pause else 0)
        self._state.update(**changes)
        pub = Published(version, msg, stamped)
        self._last_good = stamped
        self._set_current(pub)
        self._metrics.policies_published.labels(source.value).inc()
        log.info("published policy version %d (mode=%s, source=%s)", version,
                 stamped.mode.value, source.value)
        return pub

    def _set_current(self, pub: Published) -> None:
        self._current = pub
        self._metrics.policy_version.set(pub.version)
        self._cond.notify_all()

"""One study, many sidecars: a kill drill on a shared Optuna study (PostgreSQL).

``run_drill`` starts ``replicas`` real sidecar processes (``tailwise sidecar``), all with
``--storage <RDB URL> --study <name>``, each beside its own simulated engine that feeds
it telemetry and runs the policies it pushes (the closed loop of ``simulate --online``,
paced in engine time). Then it

1. lets them tune concurrently until the shared study holds some completed trials;
2. SIGKILLs one sidecar while one of *its* trials is RUNNING (each sidecar replays a
   window capped at its own size, so a trial's ``window_requests`` names its sidecar);
3. waits until another sidecar's Optuna heartbeat check fails that trial
   (``fail_stale_trials``), while the others keep completing trials;
4. restarts the killed sidecar on the same study and measures how long until it
   completes a trial again;
5. optionally stops the database for a while: every sidecar must stay up and answer
   ``GetPolicy`` (the policy in force is kept), and tuning must resume when the
   database is back;
6. checks that every trial completed before the kill is still COMPLETE.

How trials are shared: one Optuna study in the database; every sidecar's TPE sampler
reads all trials (its own and the other replicas'), so each replica's evidence informs
every replica's next candidates. Each round's gate compares a challenger with the
champion on that replica's own window, so a promotion is per replica; the promoted
policy is recorded in the study (the champion of record), from where ``tailwise freeze``
exports it for a fleet-wide rollout (ConfigMap, ``tailwise policy push``).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tailwise.bayes_opt.storage import open_storage
from tailwise.engine_adapter.policy_client import PolicyClient
from tailwise.engine_adapter.telemetry import TelemetryEmitter
from tailwise.lab.pacing import PacedSink
from tailwise.lab.sidecar_process import SidecarSubprocess
from tailwise.learner.admin import AdminClient
from tailwise.scorer.registry import build_scheduler, default_policy
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import EngineConfig, Simulator
from tailwise.simulator.workload import generate, rate_scale_for_load
from tailwise.wire.policy_file import save

M = H100_LLAMA3_8B


@dataclass
class DrillConfig:
    storage: str
    workdir: Path
    replicas: int = 3
    study: str = "fleet"
    #: engine seconds per round (and per replay window)
    round_every_s: float = 120.0
    n_trials: int = 3
    heartbeat_interval: int = 1
    grace_period: int = 3
    #: replica k replays at most cap_base + 2k requests (the trial's signature)
    cap_base: int = 401
    #: completed trials in the study before the kill
    warmup_trials: int = 6
    #: seconds the database is down in step 5 (needs ``db_stop``/``db_start``)
    outage_s: float = 6.0
    timeout_s: float = 300.0
    #: kills tried until one lands while the victim's trial is still RUNNING (on a loaded
    #: host the trial seen running can finish before the SIGKILL arrives)
    kill_attempts: int = 3
    requests_per_engine: int = 60_000


@dataclass
class DrillResult:
    completed_before_kill: int = 0
    completed_total: int = 0
    lost_completed: int = 0
    failed_by_heartbeat: int = 0
    heartbeat_fail_s: float | None = None
    #: SIGKILLs it took to catch the victim inside a trial (``DrillConfig.kill_attempts``)
    kill_attempts: int = 0
    others_completed_while_down: int = 0
    resume_s: float | None = None
    stuck_running: int = 0
    outage: dict[str, Any] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "log"}


class _Replica:
    """One sidecar subprocess and the simulated engine feeding it (a thread)."""

    def __init__(self, k: int, cfg: DrillConfig, initial: Path, offset_s: float) -> None:
        self.k = k
        self.cap = cfg.cap_base + 2 * k
        conf = {
            "storage": cfg.storage, "study": cfg.study, "initial_policy": str(initial),
            "window": {"trial_window_s": cfg.round_every_s, "min_requests": 50},
            "loop": {"round_every_s": cfg.round_every_s, "n_trials": cfg.n_trials},
            "tuner": {"heartbeat_interval": cfg.heartbeat_interval,
                      "grace_period": cfg.grace_period, "max_window_requests": self.cap,
                      "seed": k},
        }
        d = cfg.workdir / f"replica-{k}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "sidecar.json").write_text(json.dumps(conf))
        self.sidecar = SidecarSubprocess(
            ["--config", str(d / "sidecar.json"), "--state-dir", str(d / "state"),
             "--metrics-port", "-1", "--log-level", "WARNING"], d / "sidecar.log")
        self.address = self.sidecar.address
        ecfg = EngineConfig()
        tr = generate(cfg.requests_per_engine, rate_rps=20.0, seed=100 + k)
        tr = tr.scaled(rate_scale_for_load(tr, 0.8, ecfg, M))
        self.trace = type(tr)(tr.name, tr.arrival_s + offset_s, tr.prompt_tokens,
                              tr.output_tokens)
        self.admin = AdminClient(self.address, timeout_s=10.0)
        self.client = PolicyClient(self.address, initial_backoff_s=0.05, max_backoff_s=0.5)
        self.emitter = TelemetryEmitter(self.address, engine_id=f"replica-{k}",
                                        max_queue=1 << 17, flush_interval_s=0.02,
                                        max_backoff_s=0.5)
        self.client.start()
        self.emitter.start()
        self.client.wait_for(lambda c: c.current().version >= 1, 30.0)
        pacer = PacedSink(self.emitter, self.admin, self.client, sync_timeout_s=30.0,
                          high_water=1 << 15, fallback_every_s=cfg.round_every_s)
        self.sim = Simulator(self.trace, build_scheduler(self.client.current()), ecfg, M,
                             source=self.client, sink=pacer)
        self.thread = threading.Thread(target=self._run, name=f"engine-{k}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.sim.run()  # the pacer never raises: a dead sidecar only makes syncs fail fast

    def alive(self) -> bool:
        return self.sidecar.proc.poll() is None

    def close(self, kill: bool = False) -> None:
        if kill:
            self.sidecar.kill()
        else:
            self.sidecar.stop(10.0)
        self.client.close(1.0)
        self.emitter.close(0)
        self.admin.close()


def _trials(storage: Any, study: str) -> list[FrozenTrial]:
    """The study's trials; a dropped connection is retried (the pool reconnects)."""
    for attempt in range(5):
        try:
            return optuna.load_study(study_name=study, storage=storage).get_trials(
                deepcopy=False)
        except KeyError:
            return []
        except optuna.exceptions.StorageInternalError:
            if attempt == 4:
                raise
            time.sleep(0.5)
    return []


def _has_heartbeat(storage: Any, trial: FrozenTrial) -> bool:
    """Whether Optuna's RDB heartbeat table holds a beat for ``trial``."""
    from sqlalchemy import text

    with storage.engine.connect() as conn:
        row = conn.execute(text("SELECT 1 FROM trial_heartbeats WHERE trial_id = :t"),
                           {"t": trial._trial_id}).first()
    return row is not None


def _ts(d: datetime | None) -> float:
    """Optuna stores naive local datetimes; compare them as such."""
    return d.timestamp() if d is not None else math.nan


def run_drill(cfg: DrillConfig, *, db_stop: Callable[[], None] | None = None,
              db_start: Callable[[], None] | None = None) -> DrillResult:
    """Run the drill (module docstring) and return its figures; checks are the caller's."""
    res = DrillResult()
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    initial = cfg.workdir / "initial.json"
    pol = default_policy("tailwise", M)
    assert pol is not None
    save(pol, initial)
    reader = open_storage(cfg.storage, heartbeat_interval=None)
    deadline = time.monotonic() + cfg.timeout_s

    def log(msg: str) -> None:
        res.log.append(f"{time.monotonic():.1f} {msg}")

    def wait(pred: Callable[[], bool], what: str, poll: float = 0.2) -> bool:
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(poll)
        log(f"timeout waiting for {what}")
        return False

    reps = [_Replica(k, cfg, initial, 0.0) for k in range(cfg.replicas)]
    victim = reps[0]
    try:
        def completed() -> list[FrozenTrial]:
            return [t for t in _trials(reader, cfg.study) if t.state == TrialState.COMPLETE]

        wait(lambda: len(completed()) >= cfg.warmup_trials, "warm-up trials")
        running: list[FrozenTrial] = []

        def victim_running() -> bool:
            # only a trial with a recorded heartbeat is heartbeat-managed (Optuna leaves a
            # trial that never beat alone), so kill during one that has beaten
            running[:] = [t for t in _trials(reader, cfg.study)
                          if t.state == TrialState.RUNNING
                          and t.user_attrs.get("window_requests") == victim.cap
                          and _has_heartbeat(reader, t)]
            return bool(running)

        restarts = 0
        target: set[int] = set()
        for attempt in range(1, cfg.kill_attempts + 1):
            wait(victim_running, "a running trial of the victim", poll=0.02)
            victim.close(kill=True)
            t_kill = time.monotonic()
            # the trial read as RUNNING may have completed between that read and the kill
            # (seconds on a loaded host): only one not COMPLETE once the process is gone is
            # left for the heartbeat to fail (it may already have: FAIL counts)
            states = {t.number: t.state for t in _trials(reader, cfg.study)}
            target = {t.number for t in running if states.get(t.number) != TrialState.COMPLETE}
            before = {n for n, st in states.items() if st == TrialState.COMPLETE}
            res.completed_before_kill = len(before)
            log(f"SIGKILL replica 0 during trial(s) {sorted(t.number for t in running)} "
                f"(attempt {attempt}); not completed at the kill: {sorted(target)}; "
                f"{len(before)} completed")
            if target or not running or attempt == cfg.kill_attempts:
                break  # (after the last attempt the victim stays down: it is restarted below)
            # it finished first: nothing to fail; start the victim again and kill again
            restarts += 1
            reps[0] = victim = _Replica(0, cfg, initial, offset_s=1e6 * restarts)
        res.kill_attempts = attempt

        def target_failed() -> bool:
            states = {t.number: t.state for t in _trials(reader, cfg.study)}
            return all(states.get(n) == TrialState.FAIL for n in target)

        if target and wait(target_failed, "the heartbeat to fail the victim's trial"):
            res.heartbeat_fail_s = round(time.monotonic() - t_kill, 2)
            res.failed_by_heartbeat = len(target)
        others = {r.cap for r in reps[1:]}
        res.others_completed_while_down = sum(
            1 for t in completed() if t.number not in before
            and t.user_attrs.get("window_requests") in others)
        # restart on the same study, with a fresh engine timeline after the old one
        t_restart = time.monotonic()
        reps[0] = victim = _Replica(0, cfg, initial, offset_s=1e6 * (restarts + 1))
        seen = {t.number for t in completed()}

        def victim_completed() -> bool:
            return any(t.number not in seen and t.user_attrs.get("window_requests") == victim.cap
                       for t in completed())

        if wait(victim_completed, "the restarted sidecar's first completed trial"):
            res.resume_s = round(time.monotonic() - t_restart, 2)
        if db_stop is not None and db_start is not None:
            res.outage = _outage(cfg, reps, db_stop, db_start, completed, wait)
        final = _trials(reader, cfg.study)
        states = {t.number: t.state for t in final}
        res.completed_total = sum(1 for t in final if t.state == TrialState.COMPLETE)
        res.lost_completed = sum(1 for n in before if states.get(n) != TrialState.COMPLETE)
        wall_now = time.time()
        res.stuck_running = sum(
            1 for t in final if t.state == TrialState.RUNNING and t.datetime_start is not None
            and wall_now - _ts(t.datetime_start) > 10 * cfg.grace_period + 60)
    finally:
        for r in reps:
            r.close(kill=not r.alive())
        remove = getattr(reader, "remove_session", None)
        if remove is not None:
            remove()
    return res


def _outage(cfg: DrillConfig, reps: list[_Replica], db_stop: Callable[[], None],
            db_start: Callable[[], None], completed: Callable[[], list[FrozenTrial]],
            wait: Callable[..., bool]) -> dict[str, Any]:
    """Database down for ``outage_s``: sidecars stay up, answer GetPolicy, keep the policy."""
    versions = {r.k: r.admin.current()[0] for r in reps}
    db_stop()
    t0 = time.monotonic()
    worst = 0.0
    answered = failures = 0
    while time.monotonic() - t0 < cfg.outage_s:
        for r in reps:
            t1 = time.monotonic()
            try:
                r.admin.current()
                answered += 1
            except Exception:
                failures += 1
            worst = max(worst, time.monotonic() - t1)
        time.sleep(0.25)
    alive = all(r.alive() for r in reps)
    kept = all(r.admin.current()[0] == versions[r.k] for r in reps)
    db_start()
    t_up = time.monotonic()
    seen = {t.number for t in completed()}
    resumed = wait(lambda: any(t.number not in seen for t in completed()),
                   "tuning after the database came back", poll=0.5)
    return {"outage_s": cfg.outage_s, "sidecars_alive": alive, "getpolicy_answered": answered,
            "getpolicy_failed": failures, "getpolicy_worst_s": round(worst, 3),
            "policy_kept": kept, "tuning_resumed": resumed,
            "resume_after_db_s": round(time.monotonic() - t_up, 2) if resumed else None,
            "all_alive_after": all(r.alive() for r in reps)}

"""``tailwise simulate --scenario X [--online]``: workload shifts and the closed loop.

Without ``--online`` the scenario trace runs through the standard multi-policy
comparison (every CLI policy, adaptive ones with their in-process learner) and the report
adds the timeline.

With ``--online`` three arms replay the same scenario trace on the same engine:

``fcfs``
    static FCFS (stock vLLM order).
``best-of-papers``
    the best static policy the source papers offer, tuned OFFLINE on the pre-shift part
    of the trace and frozen. For each paper mode — UniBoost (γ-Boost paper: γ, MemGuard
    θ and r, max boost, priority band, aging), EWSJF (the linear weights ``a``/``c`` of
    base/urgency/fairness, Refine-and-Prune α and max_queues, aging; partition learned
    from the pre-shift prompts) and Kairos (scoring window; slack-guided decode cap on)
    — the :class:`tailwise.bayes_opt.tuner.Tuner` runs ``offline_trials`` trials (the paper's
    default policy as the enqueued champion, then TPE) replaying the whole pre-shift
    trace on the simulator, scored with the sidecar's default objective (reward
    ``C + L − 0.5·S − 0.1·U`` against FCFS on the same replay). The best policy of the
    best mode is written with :func:`tailwise.scorer.frozen.save`, loaded back (hash checked) and
    run static: no learner, no partition refresh, γ fixed. tailwise's own mode is not a
    paper policy and is not a candidate.
``tailwise-online``
    the engine reads its policy from a :class:`~tailwise.engine_adapter.policy_client.PolicyClient`
    and reports to a :class:`~tailwise.engine_adapter.telemetry.TelemetryEmitter` — the same
    objects the vLLM adapter uses — connected over gRPC to a real ``tailwise sidecar``
    process started here (127.0.0.1, port 0), or to ``--sidecar ADDR``. It starts from the
    shipped default tailwise policy and learns online.

Pacing (:class:`PacedSink`). The sidecar's loop runs on ENGINE time (telemetry
timestamps), but the simulator runs thousands of times faster than a tuning round. So
the telemetry sink is wrapped: each time engine time crosses the sidecar's next due
round (``next_round_engine_time`` from ``PolicyService.GetStatus``), the engine thread
flushes the emitter, long-polls ``GetStatus(wait_loop_engine_time=t)`` until the
sidecar's loop has completed its iteration at engine time ``t`` (the round included),
and waits until the client holds the version then in force. Each wait is bounded
(``sync_timeout_s`` wall seconds; a timeout is counted and the run goes on). The model
is therefore "a round takes no engine time": a policy learned at engine time ``t`` is in
force from the next engine step. Between boundaries the engine never waits, except to
drain the emitter when its queue passes a high-water mark (so no telemetry is dropped);
a sidecar that stops answering costs at most one timeout per boundary — the engine keeps
the last good policy (fail-static). Our own sidecar runs with
``tune_on_partition_change = false`` so rounds happen only at due boundaries.

The engine runner is injectable (``OnlineOptions.runner``: the built-in simulator, or
``tailwise.engine_adapter.harness.run_vllm`` for ``--engine vllm``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tailwise.scorer.hooks import StepStats
from tailwise.scorer.policy import EwsjfParams, Mode, Policy, QueueSpec
from tailwise.scorer.registry import POLICY_NAMES, build_scheduler, default_policy
from tailwise.scorer.request import ReqInfo
from tailwise.scorer.step_time import StepTimeModel
from tailwise.simulator.engine import EngineConfig, SimResult
from tailwise.simulator.experiment import Arm, Runner, builtin_runner
from tailwise.simulator.metrics import MetricsConfig, per_request
from tailwise.simulator.scenarios import Scenario, build, describe_load
from tailwise.simulator.traces import Trace

#: arm names in results.json (the comparison is keyed by them)
FCFS, BEST, ONLINE = "fcfs", "best-of-papers", "tailwise-online"
#: the paper policies the static best-of-papers arm chooses from (CLI name, mode)
PAPER_MODES: tuple[tuple[str, Mode], ...] = (
    ("uniboost", Mode.BOOST), ("ewsjf", Mode.EWSJF), ("kairos", Mode.KAIROS))


@dataclass
class OnlineOptions:
    scenario: str
    online: bool
    sidecar: str | None
    token: str | None
    out: Path
    engine: EngineConfig
    model: StepTimeModel
    load: float
    window_s: float
    round_every_s: float
    trials_per_round: int
    seed: int
    plots: bool
    metrics: MetricsConfig
    #: requests per scenario phase
    requests: int = 3000
    #: policies of the comparison without ``--online``
    policies: tuple[str, ...] = POLICY_NAMES
    #: replay window of a round, engine seconds (None: ``round_every_s``)
    trial_window_s: float | None = None
    #: a round needs at least this many finished requests in its window
    #: (settled window; a P99 over fewer is a handful of requests, and rounds on such
    #: windows promoted noise in our measurements)
    min_requests: int = 400
    #: trials per paper mode for the offline best-of-papers tuning
    offline_trials: int = 12
    #: relative gain a challenger needs over the champion (the sidecar's gate)
    margin: float = 0.02
    #: wall seconds one pacing wait may take (flush + round + policy delivery)
    sync_timeout_s: float = 300.0
    #: wall seconds to start the sidecar / get the first policy
    start_timeout_s: float = 60.0
    runner: Runner = builtin_runner
    engine_name: str = "sim"
    #: progress lines on stderr
    verbose: bool = True
    #: recovery: within this fraction of the best static arm for ``recovery_hold`` windows
    recovery_tolerance: float = 0.1
    recovery_hold: int = 2
    #: merged (deep) into the config of the sidecar ``--online`` starts
    sidecar_overrides: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------ sidecar
class SidecarLaunchError(RuntimeError):
    """The sidecar subprocess did not start."""


class SidecarSubprocess:
    """``python -m tailwise.cmd_sidecar sidecar ...`` on 127.0.0.1:0; parses its ready
    line, drains its output to ``log_path``; :meth:`stop` ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, args: Sequence[str], log_path: Path, *, timeout_s: float = 60.0,
                 env: dict[str, str] | None = None) -> None:
        cmd = [sys.executable, "-m", "tailwise.cmd_sidecar", "sidecar", *args]
        if "--listen" not in args:
            cmd += ["--listen", "127.0.0.1:0"]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log = log_path.open("a")
        self._log_lock = threading.Lock()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     env=env)
        ready: list[str] = []
        got = threading.Event()

        def pump() -> None:  # reads until the process exits (EOF), then closes the pipe
            out = self.proc.stdout
            assert out is not None
            with out:
                for i, line in enumerate(out):
                    if i == 0:
                        ready.append(line)
                        got.set()
                        continue
                    with self._log_lock:
                        if not self._log.closed:
                            self._log.write(line)
            got.set()

        threading.Thread(target=pump, name="tailwise-sidecar-stdout", daemon=True).start()
        if not got.wait(timeout_s) or not ready:
            self.stop()
            raise SidecarLaunchError(f"sidecar did not start within {timeout_s:g} s "
                                     f"(rc={self.proc.poll()}); see {log_path}")
        try:
            self.ready: dict[str, Any] = json.loads(ready[0])
            self.port = int(self.ready["port"])
        except (ValueError, KeyError, TypeError) as exc:
            self.stop()
            raise SidecarLaunchError(f"unexpected sidecar ready line {ready[0]!r}") from exc
        self.address = f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL (a crash); returns once the process is gone."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._close()

    def stop(self, grace_s: float = 15.0) -> int | None:
        """SIGTERM (graceful), then SIGKILL after ``grace_s``; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close()
        return self.proc.returncode

    def _close(self) -> None:
        with self._log_lock:
            self._log.close()


# ------------------------------------------------------------------------------ pacing
class StatusSource(Protocol):
    """What the pacer asks the sidecar (``tailwise.learner.admin.AdminClient.status``)."""

    def status(self, *, wait_loop_engine_time: float | None = None,
               wait_timeout_s: float = 0.0, max_rounds: int = 0) -> Any: ...


class EmitterLike(Protocol):
    def on_arrival(self, req: ReqInfo, now: float) -> None: ...
    def on_first_token(self, req: ReqInfo, now: float) -> None: ...
    def on_preempt(self, req: ReqInfo, now: float) -> None: ...
    def on_finish(self, req: ReqInfo, now: float) -> None: ...
    def on_step(self, stats: StepStats) -> None: ...
    def flush(self, timeout: float) -> bool: ...
    def pending(self) -> int: ...


class ClientLike(Protocol):
    def current(self) -> Policy: ...
    def wait_for(self, predicate: Callable[[Any], bool], timeout: float) -> bool: ...
    def nacked_versions(self) -> dict[int, str]: ...


@dataclass
class PacingStats:
    syncs: int = 0
    #: waits that hit ``sync_timeout_s`` (flush, loop or policy delivery)
    timeouts: int = 0
    #: status calls that failed (sidecar unreachable)
    errors: int = 0
    #: emitter drains forced by its high-water mark
    drains: int = 0
    wall_wait_s: float = 0.0
    max_wait_s: float = 0.0
    #: engine times of the syncs
    at: list[float] = field(default_factory=list)


class PacedSink:
    """A :class:`~tailwise.scorer.hooks.TelemetrySink` keeping a sidecar in step with a virtual
    engine clock; see the module docstring. Forwards every event to ``emitter``."""

    def __init__(self, emitter: EmitterLike, status: StatusSource, client: ClientLike, *,
                 sync_timeout_s: float = 300.0, high_water: int = 32_768,
                 fallback_every_s: float = 60.0) -> None:
        self.emitter = emitter
        self.status = status
        self.client = client
        self.sync_timeout_s = sync_timeout_s
        self.high_water = high_water
        self.fallback_every_s = fallback_every_s
        self.stats = PacingStats()
        self._next = -math.inf

    # -- TelemetrySink --------------------------------------------------------------------
    def on_arrival(self, req: ReqInfo, now: float) -> None:
        self.emitter.on_arrival(req, now)
        self._drain_if_full()

    def on_first_token(self, req: ReqInfo, now: float) -> None:
        self.emitter.on_first_token(req, now)

    def on_preempt(self, req: ReqInfo, now: float) -> None:
        self.emitter.on_preempt(req, now)

    def on_finish(self, req: ReqInfo, now: float) -> None:
        self.emitter.on_finish(req, now)
        self._drain_if_full()

    def on_step(self, stats: StepStats) -> None:
        self.emitter.on_step(stats)
        if stats.now >= self._next:
            self.sync(stats.now)
        else:
            self._drain_if_full()

    # -- pacing ---------------------------------------------------------------------------
    def _drain_if_full(self) -> None:
        if self.emitter.pending() >= self.high_water:
            self.stats.drains += 1
            self.emitter.flush(self.sync_timeout_s)

    def sync(self, t: float) -> None:
        """Flush, wait for the sidecar's loop to finish engine time ``t``, then for the
        policy it put in force; sets the next boundary. Never raises."""
        t0 = time.monotonic()
        deadline = t0 + self.sync_timeout_s

        def left() -> float:
            return max(deadline - time.monotonic(), 0.0)

        ok = self.emitter.flush(left())
        nxt = t + self.fallback_every_s
        try:
            st = self.status.status(wait_loop_engine_time=t, wait_timeout_s=left())
            ok = ok and bool(st.waited_ok or not st.loop_enabled)
            version = int(st.policy_version)
            if self.client.current().version < version:
                ok = self.client.wait_for(
                    lambda c: c.current().version >= version or version in c.nacked_versions(),
                    left()) and ok
            if st.HasField("next_round_engine_time") and st.next_round_engine_time > t:
                nxt = float(st.next_round_engine_time)
        except Exception:  # the sidecar is gone or broken: keep serving, fail-static
            self.stats.errors += 1
            ok = False
        waited = time.monotonic() - t0
        s = self.stats
        s.syncs += 1
        s.timeouts += 0 if ok else 1
        s.wall_wait_s += waited
        s.max_wait_s = max(s.max_wait_s, waited)
        s.at.append(t)
        self._next = nxt


# ------------------------------------------------------------------------------ arms
def split_phases(trace: Trace, shift_s: float) -> tuple[Trace, Trace]:
    """(pre-shift, post-shift) requests by arrival time."""
    before = trace.arrival_s < shift_s
    return trace.select(np.flatnonzero(before)), trace.select(np.flatnonzero(~before))


def learned_partition(trace: Trace, passes: int = 4, seed: int = 0) -> tuple[QueueSpec, ...]:
    """The Refine-and-Prune partition of ``trace``'s prompt lengths (default EWSJF
    parameters), as the learner would have it after seeing that traffic."""
    from tailwise.bayes_opt.space import refine_partition

    part: tuple[QueueSpec, ...] = ()
    for _ in range(passes):
        part = refine_partition(part, EwsjfParams(), trace.prompt_tokens, seed)
    return part


@dataclass
class BestOfPapers:
    policy: Policy
    name: str
    value: float
    #: per paper mode: champion (default) value, best value, trials run
    modes: dict[str, dict[str, Any]]
    path: Path


def tune_best_of_papers(pre: Trace, opts: OnlineOptions, out: Path) -> BestOfPapers:
    """Offline tuning of every paper mode on the pre-shift trace; freeze the best."""
    import optuna

    from tailwise.bayes_opt.replay import ReplayEvaluator, metrics_config
    from tailwise.bayes_opt.space import SpaceConfig
    from tailwise.bayes_opt.tuner import Tuner, TunerConfig
    from tailwise.scorer.frozen import load, save

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    part = learned_partition(pre, seed=opts.seed)
    evaluator = ReplayEvaluator(opts.engine, metrics_config(Policy(step_time=opts.model)),
                                opts.model)
    best: tuple[float, str, Policy] | None = None
    modes: dict[str, dict[str, Any]] = {}
    for name, mode in PAPER_MODES:
        base = default_policy(name, opts.model)
        assert base is not None
        if mode is Mode.EWSJF:
            base = base.replace(queues=part)
        cfg = TunerConfig(storage="memory", study_name=f"best-of-papers-{name}",
                          seed=opts.seed, margin=0.0, max_window_requests=max(len(pre), 1),
                          min_window_requests=1, heartbeat_interval=None,
                          space=SpaceConfig(mode=mode), engine=opts.engine, model=opts.model)
        res = Tuner(cfg, base, evaluator=evaluator).tune(pre, base, part, opts.offline_trials)
        chosen = res.promoted if res.promoted is not None else base
        value = res.best_value if res.promoted is not None else res.champion_value
        modes[name] = {"champion_value": res.champion_value, "best_value": res.best_value,
                       "trials": len(res.trials), "promoted": res.promoted is not None}
        if value is not None and math.isfinite(value) and (best is None or value > best[0]):
            best = (value, name, chosen)
    if best is None:  # nothing finite: the default UniBoost policy
        p = default_policy("uniboost", opts.model)
        assert p is not None
        best = (math.nan, "uniboost", p)
    value, name, policy = best
    path = save(policy.replace(note=f"best-of-papers: {name}, tuned offline on the pre-shift "
                                    f"trace ({opts.offline_trials} trials per mode)"),
                out / "best-of-papers.policy.json")
    return BestOfPapers(load(path), name, value, modes, path)


@dataclass
class OnlineRun:
    result: SimResult
    pacing: PacingStats
    rounds: list[dict[str, Any]]
    client: dict[str, Any]
    emitter: dict[str, Any]
    address: str
    sidecar_log: Path | None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def sidecar_config(opts: OnlineOptions, initial: Path) -> dict[str, Any]:
    """The config file of the sidecar ``--online`` starts (engine-time schedule)."""
    return _merge({
        "initial_policy": str(initial),
        "window": {"trial_window_s": opts.trial_window_s or opts.round_every_s,
                   "min_requests": opts.min_requests},
        "loop": {"round_every_s": opts.round_every_s, "n_trials": opts.trials_per_round,
                 "tune_on_partition_change": False},
        "tuner": {"seed": opts.seed, "margin": opts.margin,
                  "engine": dataclasses.asdict(opts.engine), "model": opts.model.to_dict()},
    }, opts.sidecar_overrides)


def run_online_arm(trace: Trace, opts: OnlineOptions, out: Path,
                   log: Callable[[str], None]) -> OnlineRun:
    """The ``tailwise-online`` arm: engine ↔ gRPC ↔ sidecar, paced in engine time."""
    from tailwise.engine_adapter.policy_client import PolicyClient
    from tailwise.engine_adapter.telemetry import TelemetryEmitter
    from tailwise.learner.admin import AdminClient
    from tailwise.scorer.frozen import save

    proc: SidecarSubprocess | None = None
    log_path: Path | None = None
    address = opts.sidecar
    if address is None:
        state = out / "sidecar-state"
        if state.exists():
            import shutil

            shutil.rmtree(state)  # a fresh study, version counter and engine clock
        state.mkdir(parents=True)
        start = default_policy("tailwise", opts.model)
        assert start is not None
        # the sidecar's partitioner refreshes at least once per round, so each promoted
        # policy carries the partition of the traffic it was tuned on
        start = start.replace(ewsjf=dataclasses.replace(start.ewsjf,
                                                        refresh_s=opts.round_every_s))
        initial = save(start, state / "initial.policy.json")
        conf = state / "sidecar.json"
        conf.write_text(json.dumps(sidecar_config(opts, initial), indent=2))
        args = ["--config", str(conf), "--state-dir", str(state), "--metrics-port", "-1",
                "--log-level", "WARNING"]
        if opts.token:
            tok = state / "token"
            tok.write_text(opts.token)
            tok.chmod(0o600)
            args += ["--token-file", str(tok)]
        log_path = out / "sidecar.log"
        proc = SidecarSubprocess(args, log_path, timeout_s=opts.start_timeout_s)
        address = proc.address
        log(f"sidecar started on {address} (pid {proc.proc.pid})")
    admin = AdminClient(address, token=opts.token, timeout_s=30.0)
    client = PolicyClient(address, token=opts.token, initial_backoff_s=0.05, max_backoff_s=1.0)
    emitter = TelemetryEmitter(address, token=opts.token, engine_id="tailwise-online",
                               max_queue=1 << 17, flush_interval_s=0.02, max_backoff_s=1.0)
    try:
        client.start()
        emitter.start()
        version, _ = admin.current()
        if not client.wait_for(lambda c: c.current().version >= version, opts.start_timeout_s):
            raise SidecarLaunchError(f"no policy from the sidecar at {address} within "
                                     f"{opts.start_timeout_s:g} s")
        pacer = PacedSink(emitter, admin, client, sync_timeout_s=opts.sync_timeout_s,
                          high_water=1 << 15, fallback_every_s=opts.round_every_s)
        arm = Arm(build_scheduler(client.current()), source=client, sink=pacer)
        t0 = time.monotonic()
        res = opts.runner(trace, arm, opts.engine, opts.model)
        log(f"online arm: {len(trace)} requests in {time.monotonic() - t0:.1f} s wall, "
            f"{pacer.stats.syncs} syncs ({pacer.stats.wall_wait_s:.1f} s waiting for the "
            f"sidecar), {len(res.policy_changes)} policy versions in force")
        emitter.flush(opts.sync_timeout_s)
        st = admin.status(max_rounds=1024)
        rounds = [{
            "engine_time": r.engine_time, "outcome": r.outcome,
            "window_requests": r.window_requests,
            "best_value": r.best_value if r.HasField("best_value") else None,
            "champion_value": r.champion_value if r.HasField("champion_value") else None,
            "drift": r.drift if r.HasField("drift") else None,
            "window": [r.window_start if r.HasField("window_start") else None,
                       r.window_end if r.HasField("window_end") else None],
            "published_version": r.published_version or None,
            "trial_values": [v if math.isfinite(v) else None for v in r.trial_values],
        } for r in st.recent_rounds]
        cc, ec = client.counters, emitter.counters
        return OnlineRun(
            res, pacer.stats, rounds,
            {"received": cc.received, "acked": cc.acked, "nacked": cc.nacked,
             "reconnects": cc.reconnects},
            {"enqueued": ec.enqueued, "sent": ec.sent, "confirmed": ec.confirmed,
             "dropped": ec.dropped, "sidecar_dropped": ec.sidecar_dropped,
             "rejected_by_sidecar": int(st.events_rejected)},
            address, log_path)
    finally:
        client.close()
        emitter.close(flush_timeout=2.0)
        admin.close()
        if proc is not None:
            proc.stop()


# ------------------------------------------------------------------------------ report
def phase_table(runs: dict[str, SimResult], shift_s: float, cfg: MetricsConfig
                ) -> dict[str, dict[str, float | None]]:
    """Per arm: P99 and mean TTLT of requests arriving before / after the shift."""
    out: dict[str, dict[str, float | None]] = {}
    for name, res in runs.items():
        pr = per_request(res, cfg)
        before = res.records.arrival < shift_s
        row: dict[str, float | None] = {}
        for label, m in (("before", before), ("after", ~before)):
            v = pr.ttlt[m & pr.done]
            row[f"p99_ttlt_{label}"] = float(np.percentile(v, 99)) if v.size else None
            row[f"mean_ttlt_{label}"] = float(v.mean()) if v.size else None
        out[name] = row
    return out


def _f(v: float | None, fmt: str = ".2f") -> str:
    return "–" if v is None else format(v, fmt)


def _md(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows)]


def write_scenario_report(out: Path, scen: Scenario, runs: dict[str, SimResult],
                          context: dict[str, Any], opts: OnlineOptions,
                          online: str | None, static: list[str],
                          extra: dict[str, Any], extra_md: list[str]) -> Path:
    """The standard report plus timeline.png, the phase table and the timeline table."""
    from tailwise.simulator.report import make_runs, write_report
    from tailwise.simulator.timeline import plot_timeline, recovery_windows, window_table

    cfg = opts.metrics
    path = write_report(out, make_runs(runs, cfg), context, cfg, window_s=opts.window_s,
                        plots=opts.plots)
    rows = window_table(runs, opts.window_s, cfg, online=online)
    phases = phase_table(runs, scen.shift_s, cfg)
    recovery = None
    after = sum(1 for r in rows if r["start_s"] >= scen.shift_s - 1e-9)
    if online is not None and static:
        recovery = recovery_windows(rows, online, static, scen.shift_s, opts.window_s,
                                    tolerance=opts.recovery_tolerance, hold=opts.recovery_hold)
    trials = [(float(r["engine_time"]), float(v)) for r in extra.get("rounds", [])
              for v in r["trial_values"] if v is not None]
    images = []
    if opts.plots:
        images.append(plot_timeline(out, runs, rows, opts.window_s, scen.shift_s, online,
                                    trials=trials or None))
    results = json.loads((out / "results.json").read_text())
    results["scenario"] = {"name": scen.name, "shift_s": scen.shift_s,
                           "description": scen.description,
                           "offered_load": describe_load(scen, opts.engine, opts.model)}
    results["phases"] = phases
    results["timeline"] = {"window_s": opts.window_s, "rows": rows}
    results["recovery"] = {"online": online, "static": static, "windows": recovery,
                           "windows_after_shift": after,
                           "tolerance": opts.recovery_tolerance, "hold": opts.recovery_hold}
    results.update(extra)
    (out / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False,
                                                 default=_json_default) + "\n")
    md = [f"## Scenario {scen.name}: {scen.description}", "",
          f"Workload shift at engine time {scen.shift_s:.1f} s; offered load "
          f"{describe_load(scen, opts.engine, opts.model)}.", "",
          *_md(["policy", "P99 TTLT before (s)", "P99 TTLT after (s)", "mean TTLT before (s)",
                "mean TTLT after (s)"],
               [[n, _f(p["p99_ttlt_before"]), _f(p["p99_ttlt_after"]),
                 _f(p["mean_ttlt_before"]), _f(p["mean_ttlt_after"])]
                for n, p in phases.items()]), ""]
    if online is not None and static:
        md += [f"**Recovery**: {online} is back within {opts.recovery_tolerance:.0%} of the best "
               f"static arm ({', '.join(static)}) for {opts.recovery_hold} consecutive "
               f"{opts.window_s:g}-s windows "
               + (f"after **{recovery} window(s)** from the shift." if recovery is not None
                  else f"**not** within the {after} window(s) after the shift."), ""]
    md += extra_md
    cols = [c for c in (rows[0] if rows else {}) if c not in ("window",)]
    md += [f"### Timeline ({opts.window_s:g}-s windows of arrival time)", "",
           *_md(cols, [[_cell(r[c]) for c in cols] for r in rows]), ""]
    md += [f"![{i}]({i})" for i in images] + [""]
    with path.open("a") as fh:
        fh.write("\n".join(md))
    return path


def _cell(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _context(trace: Trace, opts: OnlineOptions, names: list[str]) -> dict[str, Any]:
    from tailwise.simulator.workload import offered_load

    return {"trace": trace.summary(), "config": {
        "engine_impl": opts.engine_name, "engine": dataclasses.asdict(opts.engine),
        "step_model": opts.model.name, "step_model_coefficients": opts.model.to_dict(),
        "rate_scale": 1.0, "target_load": opts.load,
        "offered_load": round(offered_load(trace, opts.engine, opts.model), 4),
        "policies": names, "seed": opts.seed}}


# ------------------------------------------------------------------------------ entry
def run_online(opts: OnlineOptions) -> Path:
    """Build the scenario, run the comparison (or the three online arms), write the
    report; returns the path of ``report.md``."""
    def log(msg: str) -> None:
        if opts.verbose:
            print(msg, file=sys.stderr, flush=True)

    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    scen = build(opts.scenario, opts.engine, opts.model, load=opts.load,
                 requests=opts.requests, seed=opts.seed)
    # phases are told apart by arrival time vs. shift_s; classes stay short/long by prompt
    trace = scen.trace
    log(f"scenario {scen.name}: {len(trace)} requests over {trace.duration_s:.0f} engine s, "
        f"shift at {scen.shift_s:.1f} s")
    t_start = time.monotonic()
    if not opts.online:
        from tailwise.cmd_simulate import make_arm

        runs: dict[str, SimResult] = {}
        for name in opts.policies:
            runs[name] = opts.runner(trace, make_arm(name, opts.model), opts.engine, opts.model)
        adaptive = "tailwise" if "tailwise" in runs else None
        return write_scenario_report(out, scen, runs, _context(trace, opts, list(runs)), opts,
                                     adaptive, [], {"wall_s": time.monotonic() - t_start}, [])
    pre, _ = split_phases(trace, scen.shift_s)
    runs = {FCFS: opts.runner(trace, Arm(build_scheduler(Policy(step_time=opts.model))),
                              opts.engine, opts.model)}
    t0 = time.monotonic()
    best = tune_best_of_papers(pre, opts, out)
    log(f"best-of-papers: {best.name} (objective {best.value:.4f} on the pre-shift trace, "
        f"{time.monotonic() - t0:.1f} s of offline tuning) -> {best.path.name}")
    runs[BEST] = opts.runner(trace, Arm(build_scheduler(best.policy)), opts.engine, opts.model)
    online = run_online_arm(trace, opts, out, log)
    runs[ONLINE] = online.result
    versions = [{"engine_time": t, "version": p.version, "mode": p.mode.value,
                 "gamma": p.boost.gamma, "aging_s": p.safety.aging_s,
                 "max_boost_s": p.safety.max_boost_s, "queues": len(p.queues), "note": p.note}
                for t, p in online.result.policy_timeline]
    extra = {
        "wall_s": round(time.monotonic() - t_start, 2),
        "best_of_papers": {"chosen": best.name, "objective": best.value, "modes": best.modes,
                           "file": best.path.name, "offline_trials_per_mode": opts.offline_trials,
                           "policy": best.policy.to_dict()},
        "online": {"sidecar": opts.sidecar or "started (127.0.0.1, port 0)",
                   "round_every_s": opts.round_every_s,
                   "trial_window_s": opts.trial_window_s or opts.round_every_s,
                   "trials_per_round": opts.trials_per_round, "margin": opts.margin,
                   "pacing": dataclasses.asdict(online.pacing), "client": online.client,
                   "emitter": online.emitter, "policy_versions": versions},
        "rounds": online.rounds,
    }
    md = ["### Arms", "",
          f"* **{FCFS}**: static FCFS.",
          f"* **{BEST}**: {best.name}, tuned offline on the pre-shift trace "
          f"({opts.offline_trials} trials per paper mode; objective per mode: "
          + ", ".join(f"{k} {_f(v['best_value'], '.4f')}" for k, v in best.modes.items())
          + f"), frozen to `{best.path.name}` and run static.",
          f"* **{ONLINE}**: the simulator as engine with PolicyClient + TelemetryEmitter over "
          f"gRPC to a real sidecar, starting from the default tailwise policy; rounds every "
          f"{opts.round_every_s:g} engine s replaying a settled "
          f"{opts.trial_window_s or opts.round_every_s:g}-s window (≥ 99% of its arrivals "
          f"finished, ≥ {opts.min_requests} requests), {opts.trials_per_round} trials, "
          f"margin {opts.margin:g}; {online.pacing.syncs} pacing syncs "
          f"({online.pacing.timeouts} timeouts), {len(versions)} policy versions in force.",
          "", "### Tuning rounds (engine time)", "",
          *_md(["t (s)", "outcome", "window req", "champion", "best", "published"],
               [[f"{r['engine_time']:.1f}", r["outcome"], str(r["window_requests"]),
                 _f(r["champion_value"], ".4f"), _f(r["best_value"], ".4f"),
                 str(r["published_version"] or "–")] for r in online.rounds]), ""]
    path = write_scenario_report(out, scen, runs, _context(trace, opts, list(runs)), opts,
                                 ONLINE, [FCFS, BEST], extra, md)
    log(f"done in {time.monotonic() - t_start:.1f} s wall")
    return path


__all__ = ["BEST", "FCFS", "ONLINE", "OnlineOptions", "PacedSink", "PacingStats",
           "SidecarSubprocess", "run_online", "tune_best_of_papers"]

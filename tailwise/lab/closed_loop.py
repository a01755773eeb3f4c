"""``tailwise simulate --scenario X [--online]``: workload shifts and the closed loop.

Without ``--online`` the scenario trace runs through the standard multi-policy
comparison (every CLI policy, adaptive ones with their in-process learner) and the report
adds the timeline.

With ``--online`` three arms replay the same scenario trace on the same engine:

``fcfs``
    static FCFS (stock vLLM order).
``best-of-papers``
    the best static policy the source papers offer, tuned OFFLINE on the pre-shift part
    of the trace and frozen (:mod:`tailwise.lab.offline_tuning`).
``tailwise-online``
    the engine reads its policy from a :class:`~tailwise.engine_adapter.policy_client.PolicyClient`
    and reports to a :class:`~tailwise.engine_adapter.telemetry.TelemetryEmitter` — the same
    objects the vLLM adapter uses — connected over gRPC to a real ``tailwise sidecar``
    process started here (127.0.0.1, port 0), or to ``--sidecar ADDR``. It starts from the
    shipped default tailwise policy and learns online, kept in step with the engine's
    virtual clock by :class:`~tailwise.lab.pacing.PacedSink`. Our own sidecar runs with
    ``tune_on_partition_change = false`` so rounds happen only at due boundaries.

The engine runner is injectable (``OnlineOptions.runner``: the built-in simulator, or
:func:`tailwise.lab.vllm_harness.run_vllm` for ``--engine vllm``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tailwise.bayes_opt.tuner import TunerConfig
from tailwise.lab.arms import make_arm
from tailwise.lab.experiment import Arm, scale_trace
from tailwise.lab.markdown import format_optional
from tailwise.lab.offline_tuning import split_phases, tune_best_of_papers
from tailwise.lab.options import BEST, FCFS, ONLINE, OnlineOptions
from tailwise.lab.pacing import PacedSink, PacingStats
from tailwise.lab.scenario_report import report_context, write_scenario_report
from tailwise.lab.sidecar_process import SidecarLaunchError, SidecarSubprocess
from tailwise.learner.config import WindowConfig
from tailwise.records.trace import Trace, TraceError
from tailwise.scorer.policy import Policy
from tailwise.scorer.registry import build_scheduler, default_policy
from tailwise.simulator.engine import EngineConfig, SimResult
from tailwise.simulator.report import Section
from tailwise.simulator.scenarios import Scenario, build

#: offered load of a scenario when none is asked for
DEFAULT_SCENARIO_LOAD = 0.9


@dataclass
class OnlineRun:
    result: SimResult
    pacing: PacingStats
    rounds: list[dict[str, Any]]
    client: dict[str, Any]
    emitter: dict[str, Any]
    address: str
    sidecar_log: Path | None


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` merged in, nested dicts merged key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def gate_margin(opts: OnlineOptions) -> float:
    """The sidecar's gate margin: ``opts.margin``, else the tuner's own default."""
    return TunerConfig.margin if opts.margin is None else opts.margin


def sidecar_config(opts: OnlineOptions, initial: Path) -> dict[str, Any]:
    """The config file of the sidecar ``--online`` starts (engine-time schedule)."""
    return deep_merge({
        "initial_policy": str(initial),
        "window": {"trial_window_s": opts.trial_window_s or opts.round_every_s,
                   "min_requests": opts.min_requests},
        "loop": {"round_every_s": opts.round_every_s, "n_trials": opts.trials_per_round,
                 "tune_on_partition_change": False},
        "tuner": {"seed": opts.seed, "margin": gate_margin(opts),
                  "engine": dataclasses.asdict(opts.engine), "model": opts.model.to_dict()},
    }, opts.sidecar_overrides)


def run_online_arm(trace: Trace, opts: OnlineOptions, out: Path,
                   log: Callable[[str], None]) -> OnlineRun:
    """The ``tailwise-online`` arm: engine ↔ gRPC ↔ sidecar, paced in engine time."""
    from tailwise.engine_adapter.policy_client import PolicyClient
    from tailwise.engine_adapter.telemetry import TelemetryEmitter
    from tailwise.learner.admin import AdminClient
    from tailwise.wire.policy_file import save

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
            "reason": r.reason,
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


# ------------------------------------------------------------------------------ entry
def trace_scenario(trace: Trace, fraction: float) -> Scenario:
    """A trace as a two-phase scenario: its first ``fraction`` of requests (by arrival)
    is the pre-shift phase the best-of-papers arm is tuned on."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"offline_fraction must be in (0, 1), got {fraction}")
    if len(trace) < 2:
        raise TraceError(f"{trace.name}: the closed loop needs at least 2 requests")
    order = np.sort(trace.arrival_s)
    cut = min(max(int(len(trace) * fraction), 1), len(trace) - 1)
    shift = float(order[cut])
    return Scenario(trace.name, trace, shift,
                    f"trace {trace.name}; best-of-papers tuned offline on its first "
                    f"{fraction:.0%} of requests (arrivals before {shift:.1f} s)")


def scenario_of(opts: OnlineOptions) -> tuple[Scenario, float]:
    """The scenario ``opts`` names, or its trace scaled as asked; and the rate scale."""
    if opts.trace is None:
        load = opts.load if opts.load is not None else DEFAULT_SCENARIO_LOAD
        return build(opts.scenario, opts.engine, opts.model, load=load,
                     requests=opts.requests, seed=opts.seed), 1.0
    trace, scale = scale_trace(opts.trace, opts.engine, opts.model, rate_scale=opts.rate_scale,
                               target_load=opts.load)
    return trace_scenario(trace, opts.offline_fraction), scale


def run_online(opts: OnlineOptions) -> Path:
    """Build the scenario, run the comparison (or the three online arms), write the
    report; returns the path of ``report.md``."""
    def log(msg: str) -> None:
        if opts.verbose:
            print(msg, file=sys.stderr, flush=True)

    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    scen, scale = scenario_of(opts)
    if scen.engine is not None and opts.engine == EngineConfig():
        # a multi-phase scenario brings its engine (KV pressure) and SLO classes
        opts = dataclasses.replace(opts, engine=scen.engine, metrics=dataclasses.replace(
            opts.metrics, slo_classes={**scen.metrics.slo_classes, **opts.metrics.slo_classes}))
    # phases are told apart by arrival time vs. shift_s; classes stay short/long by prompt
    trace = scen.trace
    log(f"{'trace' if opts.trace is not None else 'scenario'} {scen.name}: {len(trace)} "
        f"requests over {trace.duration_s:.0f} engine s, shift at {scen.shift_s:.1f} s")
    t_start = time.monotonic()
    if not opts.online:
        runs: dict[str, SimResult] = {}
        for name in opts.policies:
            runs[name] = opts.runner(trace, make_arm(name, opts.model), opts.engine, opts.model)
        adaptive = "tailwise" if "tailwise" in runs else None
        return write_scenario_report(out, scen, runs, report_context(trace, opts, list(runs), scale), opts,
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
    window_cfg = opts.sidecar_overrides.get("window", {})
    settle = float(window_cfg.get("settle_quantile", WindowConfig().settle_quantile))
    extra = {
        "wall_s": round(time.monotonic() - t_start, 2),
        "best_of_papers": {"chosen": best.name, "objective": best.value, "modes": best.modes,
                           "file": best.path.name, "offline_trials_per_mode": opts.offline_trials,
                           "policy": best.policy.to_dict()},
        "online": {"sidecar": opts.sidecar or "started (127.0.0.1, port 0)",
                   # what a sidecar --online starts is told (an external one has its own)
                   "min_requests": None if opts.sidecar else opts.min_requests,
                   "settle_quantile": None if opts.sidecar else settle,
                   "round_every_s": opts.round_every_s,
                   "trial_window_s": opts.trial_window_s or opts.round_every_s,
                   "trials_per_round": opts.trials_per_round, "margin": gate_margin(opts),
                   "pacing": dataclasses.asdict(online.pacing), "client": online.client,
                   "emitter": online.emitter, "policy_versions": versions},
        "rounds": online.rounds,
    }
    tuned = [r for r in online.rounds if r["outcome"] != "too_few_requests"]
    arms = Section("Arms", ["arm", "what it runs"], [
        [FCFS, "static FCFS."],
        [BEST, f"{best.name}, tuned offline on the pre-shift trace ({opts.offline_trials} "
               "trials per paper mode; objective per mode: "
               + ", ".join(f"{k} {format_optional(v['best_value'], '.4f')}"
                           for k, v in best.modes.items())
               + f"), frozen to `{best.path.name}` and run static."],
        [ONLINE, "the simulator as engine with PolicyClient + TelemetryEmitter over gRPC to a "
                 + (f"real sidecar, starting from the default tailwise policy; rounds every "
                    f"{opts.round_every_s:g} engine s replaying a settled "
                    f"{opts.trial_window_s or opts.round_every_s:g}-s window (≥ {settle:.0%} "
                    f"of its arrivals finished, ≥ {opts.min_requests} requests), "
                    f"{opts.trials_per_round} trials, margin {gate_margin(opts):g}; "
                    if opts.sidecar is None else
                    f"external sidecar at {opts.sidecar}, tuning by its own config; engine "
                    f"and sidecar in step every {opts.round_every_s:g} engine s; ")
                 + f"{online.pacing.syncs} pacing syncs ({online.pacing.timeouts} timeouts), "
                 f"{len(versions)} policy versions in force."]])
    largest = max((r["window_requests"] for r in online.rounds), default=0)
    no_round = "" if tuned or not online.rounds else (
        f"No round tuned: every window held fewer than {opts.min_requests} finished requests "
        f"(the largest held {largest}). The policy stayed the initial one. Lower "
        "--min-requests or raise --round-every-s to tune at this arrival rate."
        if opts.sidecar is None else
        f"No round tuned: every window was smaller than the external sidecar's "
        f"window.min_requests (the largest held {largest}).")
    rounds = Section(
        "Tuning rounds (engine time)",
        ["t (s)", "outcome", "window req", "champion", "best", "published", "why"],
        [[f"{r['engine_time']:.1f}", r["outcome"], str(r["window_requests"]),
          format_optional(r["champion_value"], ".4f"), format_optional(r["best_value"], ".4f"),
          str(r["published_version"] or "–"), r.get("reason") or "–"] for r in online.rounds],
        note=no_round)
    path = write_scenario_report(out, scen, runs, report_context(trace, opts, list(runs), scale),
                                 opts, ONLINE, [FCFS, BEST], extra, [arms, rounds])
    log(f"done in {time.monotonic() - t_start:.1f} s wall")
    return path


__all__ = ["OnlineRun", "run_online", "run_online_arm", "sidecar_config"]

"""Issue 13's targets for online tailwise on the shift scenarios (and one trace file).

For each scenario and seed, on the scenario's engine, it runs every static arm — FCFS,
each paper policy at its defaults (UniBoost, EWSJF, Kairos), the default ``tailwise``
policy (static: no learner) and best-of-papers (tuned offline on phase 1, frozen) — and
the online arm (the simulator as engine, PolicyClient + TelemetryEmitter over gRPC to a
real sidecar process, paced in engine time), then prints:

* per phase and arm: P99 TTLT and mean TTFT of the requests arriving from the second
  window after the phase starts (``W = --round-every-s``), and whether every static arm
  is ≥ 15% worse than that phase's best static arm in some phase (scenario check);
* target 1: online vs the phase's best static arm on both metrics (≤ 5% worse?);
* target 2: operator objective over the whole run (vs FCFS replayed on the same trace),
  online minus each static arm (≥ 0.10 ≈ 10% better?);
* target 3: policies published per phase; the gate: each published policy replayed on
  the next window against the policy it replaced (operator objective, FCFS baseline on
  that window) — worse by more than 0.05 is a violation;
* target 4: trials until a trial is within 0.05 of the round's best (max over rounds);
* target 5: wall time of the online arm.

Median and worst over seeds close the output. ``--trace FILE`` adds a trace file cut
into three equal phases. The default scenarios are the three the learner's settings were
chosen on; ``--scenarios reasoning-longdoc-chat`` runs the held-out one.

    python benchmarks/online_targets.py [--seeds 5] [--phase-s 180] [--scenarios ...]
        [--trace FILE] [--show-rounds] [--anchors ...] [--recall N] [--confirm] [--margin M]
        [--no-stale-check] [--no-fallback] [--drift-features F,...] [--simplify] [--no-narrow-envelope]
        [--max-span-factor K]
        [--search-switches] [--no-search-tradeoffs]
        [--sampler tpe|gp|random] [--engine-knobs max_num_batched_tokens=2048,...]
        [--show-classes]

``--engine-knobs`` runs the scenarios on another engine (the shift engine's KV blocks,
sequence limit or step budget moved; each phase's load set against it).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tailwise.bayes_opt.history import policy_diff
from tailwise.bayes_opt.objective import ObjectiveConfig, evaluate
from tailwise.bayes_opt.tuner import TunerConfig
from tailwise.lab.closed_loop import run_online_arm
from tailwise.lab.offline_tuning import tune_best_of_papers
from tailwise.lab.options import OnlineOptions
from tailwise.learner.config import WindowConfig
from tailwise.scorer.policy import Policy
from tailwise.scorer.registry import build_scheduler, default_policy
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import EngineConfig, EngineConfigError, SimResult, simulate
from tailwise.simulator.metrics import MetricsConfig, per_request, summarize
from tailwise.simulator.scenarios import (
    LEARNER_DEV_SCENARIOS,
    SHIFT_ENGINE,
    Phase,
    Scenario,
    build_shift,
)
from tailwise.simulator.traces import load_trace
from tailwise.simulator.workload import rate_scale_for_load

MODEL = H100_LLAMA3_8B
STATIC = ("fcfs", "uniboost", "ewsjf", "kairos", "tailwise")
OBJ = ObjectiveConfig()


@dataclass
class Run:
    scenario: Scenario
    seed: int
    arms: dict[str, SimResult]
    online: Any
    online_wall_s: float
    best_name: str


def trace_scenario(path: str, requests: int, load: float,
                   engine: EngineConfig = SHIFT_ENGINE) -> Scenario:
    """A trace file (or bundled name) cut into three equal phases, at ``load`` on
    ``engine``."""
    tr = load_trace(path)
    tr = tr.select(np.arange(min(len(tr), 3 * requests)))
    tr = tr.scaled(rate_scale_for_load(tr, load, engine, MODEL))
    cuts = [float(tr.arrival_s[i * len(tr) // 3]) for i in range(3)]
    phases = tuple(Phase(f"third {i + 1}", c, load) for i, c in enumerate(cuts))
    return Scenario(f"trace:{Path(path).name}", tr, cuts[1], f"{path} at load {load}",
                    phases, engine, MetricsConfig())


#: the engine knobs ``--engine-knobs`` takes (whole-number EngineConfig fields)
ENGINE_FIELDS = ("num_gpu_blocks", "max_num_seqs", "max_num_batched_tokens")


def engine_knobs(spec: str) -> dict[str, int]:
    """``KNOB=V,...`` as whole-number :class:`EngineConfig` fields (``{}`` for ``""``)."""
    out: dict[str, int] = {}
    for item in (x.strip() for x in spec.split(",") if x.strip()):
        key, _, value = item.partition("=")
        if key.strip() not in ENGINE_FIELDS:
            raise ValueError(f"unknown engine knob {key.strip()!r}; choose from: "
                             f"{', '.join(ENGINE_FIELDS)}")
        if key.strip() in out:
            raise ValueError(f"engine knob {key.strip()!r} given twice")
        try:
            out[key.strip()] = int(value)
        except ValueError:
            raise ValueError(f"{key.strip()} must be a whole number, got {value!r}") from None
    return out



def options(s: Scenario, seed: int, a: argparse.Namespace, out: Path) -> Any:
    return OnlineOptions(
        scenario=s.name, online=True, sidecar=None, token=None, out=out,
        engine=s.engine or SHIFT_ENGINE, model=MODEL, load=0.9, window_s=a.round_every_s,
        round_every_s=a.round_every_s, trials_per_round=a.trials, seed=seed, plots=False,
        metrics=s.metrics, requests=a.requests, min_requests=a.min_requests,
        offline_trials=a.offline_trials, verbose=False,
        trial_window_s=a.trial_window_s or a.round_every_s,
        sidecar_overrides={"window": {"settle_quantile": a.settle_quantile,
                                      "max_span_factor": a.max_span_factor,
                                      "impute_unfinished": a.impute_unfinished},
                           "tuner": {"anchors": [x for x in a.anchors.split(",") if x],
                                     "continuation": a.continuation,
                                     "recall": a.recall, "confirm": a.confirm,
                                     "reshuffles": a.reshuffles,
                                     "window_bounds_envelope": a.window_bounds_envelope,
                                     "simplify": a.simplify,
                                     "narrow_envelope": not a.no_narrow_envelope,
                                     "stress_load": a.stress_load,
                                     "stress_weight": a.stress_weight,
                                     "stress_rate_min": a.stress_rate_min,
                                     **({"margin": a.margin} if a.margin is not None else {}),
                                     **({"sampler": a.sampler} if a.sampler else {}),
                                     "space": {"search_switches": a.search_switches,
                                               "search_tradeoffs": not a.no_search_tradeoffs,
                                               **({"around_base": a.around_base}
                                                  if a.around_base is not None else {})}},
                           "loop": {"stale_check": not a.no_stale_check,
                                    "fallback_on_drift": not a.no_fallback,
                                    **({"drift_features": a.drift_features.split(",")}
                                       if a.drift_features else {})}})


def run_one(s: Scenario, seed: int, a: argparse.Namespace) -> Run:
    engine = s.engine or SHIFT_ENGINE
    arms: dict[str, SimResult] = {}
    for name in STATIC:
        p = default_policy(name, MODEL)
        assert p is not None
        arms[name] = simulate(s.trace, build_scheduler(p), engine, MODEL)
    with tempfile.TemporaryDirectory(prefix="tailwise-targets-") as tmp:
        out = Path(tmp)  # the sidecar's state and study; what is reported is kept in memory
        opts = options(s, seed, a, out)
        ph = s.phase_of(s.trace.arrival_s)
        pre = s.trace.select(np.flatnonzero(ph == 0))
        best = tune_best_of_papers(pre, opts, out)
        arms["best-of-papers"] = simulate(s.trace, build_scheduler(best.policy), engine, MODEL)
        t0 = time.monotonic()
        online = run_online_arm(s.trace, opts, out, lambda m: None)
        wall = time.monotonic() - t0
    return Run(s, seed, arms, online, wall, best.name)


def phase_metrics(res: SimResult, s: Scenario, w: float) -> list[tuple[float, float]]:
    """(P99 TTLT, mean TTFT) per phase over arrivals from the second window on."""
    pr = per_request(res, s.metrics)
    arr = res.records.arrival
    ph = s.phase_of(arr)
    out = []
    for i, p in enumerate(s.phases):
        m = (ph == i) & (arr >= p.start_s + w) & pr.done
        if not m.any():
            m = (ph == i) & pr.done
        out.append((float(np.percentile(pr.ttlt[m], 99)), float(np.mean(pr.ttft[m]))))
    return out


def gate_check(run: Run, w: float) -> list[float]:
    """For each policy change in force: operator value of the new policy minus the old
    one's, both replayed on the next window of arrivals (FCFS baseline on it)."""
    s, engine = run.scenario, run.scenario.engine or SHIFT_ENGINE
    timeline: list[tuple[float, Policy]] = list(run.online.result.policy_timeline)
    diffs = []
    for (_, old), (t, new) in itertools.pairwise(timeline):
        idx = np.flatnonzero((s.trace.arrival_s >= t) & (s.trace.arrival_s < t + w))
        if len(idx) < 20:
            continue
        win = s.trace.select(idx)
        base = summarize(simulate(win, build_scheduler(Policy(step_time=MODEL)), engine, MODEL),
                         s.metrics)
        vals = [evaluate(summarize(simulate(win, build_scheduler(p), engine, MODEL),
                                   s.metrics), base, OBJ)[0] for p in (old, new)]
        diffs.append(vals[1] - vals[0])
    return diffs


def trials_to_best(rounds: list[dict[str, Any]], tol: float = 0.05) -> list[int]:
    out = []
    for r in rounds:
        vals = [v for v in r.get("trial_values") or [] if v is not None]
        if len(vals) < 2:
            continue
        best = max(vals)
        out.append(next(i + 1 for i, v in enumerate(vals) if v >= best - tol))
    return out


def _fmt(x: float | None, spec: str) -> str:
    """``x`` formatted, or ``–`` where a class has no figure (nothing finished)."""
    return "–" if x is None else format(x, spec)


def report(run: Run, a: argparse.Namespace) -> dict[str, Any]:
    s, w = run.scenario, a.round_every_s
    allr = {**run.arms, "tailwise-online": run.online.result}
    pm = {k: phase_metrics(r, s, w) for k, r in allr.items()}
    statics = list(run.arms)
    print(f"\n### {s.name} seed {run.seed}: {s.description}  (best-of-papers = "
          f"{run.best_name}; online arm {run.online_wall_s:.0f} s wall)\n")
    print("| arm | " + " | ".join(f"{p.name}: P99 TTLT / mean TTFT (s)" for p in s.phases)
          + " | objective |")
    print("|---|" + "---|" * (len(s.phases) + 1))
    base = summarize(run.arms["fcfs"], s.metrics)
    objv = {k: evaluate(summarize(r, s.metrics), base, OBJ)[0] for k, r in allr.items()}
    for k in allr:
        cells = [f"{p99:.1f} / {ttft:.2f}" for p99, ttft in pm[k]]
        print(f"| {k} | " + " | ".join(cells) + f" | {objv[k]:+.3f} |")
    if a.show_classes:  # what the objective weighs: each request class alike
        print("\nper request class, whole run (requests; mean / P99 TTFT s; SLO attainment):")
        for k, r in allr.items():
            cls = summarize(r, s.metrics).get("classes") or {}
            print(f"  {k}: " + "; ".join(
                f"{c} {d['requests']}, {_fmt(d['ttft']['mean'], '.2f')} / "
                f"{_fmt(d['ttft']['p99'], '.1f')}, {_fmt(d['slo_attainment'], '.1%')}"
                for c, d in cls.items()))
    # scenario check: every static arm ≥ 15% worse than the phase's best static in some phase
    worst_gap: dict[str, float] = {}
    for k in statics:
        gaps = []
        for i in range(len(s.phases)):
            b99 = min(pm[x][i][0] for x in statics)
            bft = min(pm[x][i][1] for x in statics)
            gaps.append(max(pm[k][i][0] / b99, pm[k][i][1] / bft) - 1)
        worst_gap[k] = max(gaps)
    scen_ok = all(g >= 0.15 for g in worst_gap.values())
    print("\nscenario check (each static arm's largest gap to the phase's best static, max "
          "of P99 TTLT and mean TTFT): " + ", ".join(f"{k} {g:+.0%}" for k, g in worst_gap.items())
          + f" → {'OK' if scen_ok else 'NOT MET'} (≥ 15% each)")
    # target 1
    t1 = []
    for i in range(len(s.phases)):
        b99 = min(pm[x][i][0] for x in statics)
        bft = min(pm[x][i][1] for x in statics)
        t1.append((pm["tailwise-online"][i][0] / b99 - 1, pm["tailwise-online"][i][1] / bft - 1))
    print("target 1 (online vs phase's best static, from the 2nd window): " + "; ".join(
        f"{p.name}: P99 {a_:+.1%}, TTFT {b_:+.1%}" for p, (a_, b_) in zip(s.phases, t1, strict=True)))
    # target 2
    margin = {k: objv["tailwise-online"] - objv[k] for k in statics}
    print("target 2 (online objective minus each static arm's; ≥ +0.10): "
          + ", ".join(f"{k} {v:+.3f}" for k, v in margin.items()))
    # target 3
    rounds = run.online.rounds
    pub = [r for r in rounds if r.get("published_version")]
    per_phase = [sum(1 for r in pub if s.phase_of(np.asarray([r["engine_time"]]))[0] == i)
                 for i in range(len(s.phases))]
    gates = gate_check(run, w)
    print(f"target 3: published per phase {per_phase}; gate (new − replaced on the next "
          f"window): {', '.join(f'{g:+.3f}' for g in gates) or 'nothing published'}")
    if a.show_rounds:
        for r in rounds:
            w0, w1 = r["window"]
            tv = [None if v is None else round(v, 3) for v in (r.get("trial_values") or [])]
            print(f"  round t={r['engine_time']:.0f} {r['outcome']} n={r['window_requests']} "
                  f"window=[{w0 if w0 is None else round(w0)}, {w1 if w1 is None else round(w1)}] "
                  f"champion={r['champion_value']} best={r['best_value']} "
                  f"v={r['published_version']} trials={tv}")
            if r.get("reason"):
                print(f"    why: {r['reason']}")
        for t, pol in run.online.result.policy_timeline:
            print(f"  policy v{pol.version} from t={t:.0f}: {pol.mode.value} {pol.note} "
                  f"{policy_diff(pol, default_policy('tailwise', MODEL) or pol, limit=40)}")
    ttb = trials_to_best(rounds)
    distinct = [len({round(v, 4) for v in r["trial_values"] if v is not None}) for r in rounds
                if any(v is not None for v in r["trial_values"])]
    print(f"target 4: trials until within 0.05 of the round's best: max "
          f"{max(ttb) if ttb else '–'}, median {statistics.median(ttb) if ttb else '–'} "
          f"over {len(ttb)} rounds; distinct trial values per tuned round (median): "
          f"{statistics.median(distinct) if distinct else '–'}")
    print(f"target 5: online arm wall {run.online_wall_s:.0f} s")
    return {"scenario": s.name, "seed": run.seed, "t1": t1, "t2": min(margin.values()),
            "published_per_phase": per_phase, "gate_worst": min(gates) if gates else None,
            "ttb_max": max(ttb) if ttb else None, "wall_s": run.online_wall_s,
            "scenario_ok": scen_ok, "objective": objv,
            "engine": dataclasses.asdict(s.engine or SHIFT_ENGINE)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenarios", default=",".join(LEARNER_DEV_SCENARIOS))
    ap.add_argument("--trace", default=None, help="also a trace file cut into three phases")
    ap.add_argument("--trace-load", type=float, default=1.0)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--requests", type=int, default=800,
                    help="requests per phase of --trace; probe size of the scenarios")
    ap.add_argument("--phase-s", type=float, default=180.0, help="engine seconds per phase")
    ap.add_argument("--settle-quantile", type=float, default=WindowConfig().settle_quantile,
                    help="sidecar window.settle_quantile (default: the sidecar's)")
    ap.add_argument("--impute-unfinished", action=argparse.BooleanOptionalAction,
                    default=WindowConfig().impute_unfinished,
                    help="sidecar window.impute_unfinished (default: the sidecar's)")
    ap.add_argument("--round-every-s", type=float, default=60.0)
    ap.add_argument("--trial-window-s", type=float, default=None)
    ap.add_argument("--min-requests", type=int, default=150)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--offline-trials", type=int, default=8)
    ap.add_argument("--anchors", default="",
                    help="sidecar tuner.anchors, a comma list (e.g. tailwise,kairos,uniboost,ewsjf)")
    ap.add_argument("--recall", type=int, default=0, help="sidecar tuner.recall")
    ap.add_argument("--continuation", type=int, default=TunerConfig().continuation,
                    help="sidecar tuner.continuation (repeats of a window's traffic after it)")
    ap.add_argument("--confirm", action="store_true", help="sidecar tuner.confirm = true")
    ap.add_argument("--margin", type=float, default=None,
                    help="sidecar tuner.margin (relative gain a challenger needs; default 0.10)")
    ap.add_argument("--no-search-tradeoffs", action="store_true",
                    help="sidecar tuner.space.search_tradeoffs = false (SLO urgency, decode "
                         "cap and tail protection keep the base policy's values)")
    ap.add_argument("--sampler", default=None, help="sidecar tuner.sampler (tpe, gp, random)")
    ap.add_argument("--window-bounds-envelope", action="store_true",
                    help="sidecar tuner.window_bounds_envelope = true (a wider envelope "
                         "longer than the window is not published)")
    ap.add_argument("--stress-rate-min", type=float, default=1.0,
                    help="sidecar tuner.stress_rate_min (the stressed copy raises the "
                         "window's rate at least this much)")
    ap.add_argument("--reshuffles", type=int, default=0,
                    help="sidecar tuner.reshuffles (the gate also on the window's mean over "
                         "this many reshuffles of it)")
    ap.add_argument("--around-base", type=float, default=None,
                    help="sidecar tuner.space.around_base (log-scale parameters searched "
                         "within this factor of the base policy's; default: the sidecar's, 4)")
    ap.add_argument("--search-switches", action="store_true",
                    help="sidecar tuner.space.search_switches = true (booleans searched too)")
    ap.add_argument("--no-stale-check", action="store_true", help="sidecar loop.stale_check = false")
    ap.add_argument("--no-fallback", action="store_true",
                    help="sidecar loop.fallback_on_drift = false")
    ap.add_argument("--drift-features", default=None,
                    help="sidecar loop.drift_features, comma-separated (prompt, gap)")
    ap.add_argument("--simplify", action="store_true", help="sidecar tuner.simplify = true")
    ap.add_argument("--no-narrow-envelope", action="store_true",
                    help="sidecar tuner.narrow_envelope = false (a promoted policy keeps a "
                         "wider waiting envelope than the base's even where the window "
                         "cannot tell)")
    ap.add_argument("--stress-load", type=float, default=TunerConfig().stress_load,
                    help="sidecar tuner.stress_load (score candidates on the window's traffic "
                         "compressed to this load too; 0: the window alone)")
    ap.add_argument("--stress-weight", type=float, default=TunerConfig().stress_weight,
                    help="sidecar tuner.stress_weight")
    ap.add_argument("--max-span-factor", type=int, default=1,
                    help="sidecar window.max_span_factor (light traffic: grow the window)")
    ap.add_argument("--engine-knobs", default="",
                    help="KNOB=V,... of the scenarios' engine (EngineConfig fields, e.g. "
                         "max_num_batched_tokens=2048): another engine, loads set against it")
    ap.add_argument("--show-rounds", action="store_true", help="print every tuning round")
    ap.add_argument("--show-classes", action="store_true",
                    help="print each arm's per-class TTFT and SLO attainment (whole run)")
    ap.add_argument("--json", default=None, help="write the per-run summaries here")
    a = ap.parse_args()
    try:
        engine = dataclasses.replace(SHIFT_ENGINE, **engine_knobs(a.engine_knobs))
        engine.validate()
        if engine.max_num_batched_tokens < engine.max_num_seqs:  # as vLLM requires
            raise ValueError(f"max_num_batched_tokens ({engine.max_num_batched_tokens}) must "
                             f"be >= max_num_seqs ({engine.max_num_seqs})")
    except (ValueError, EngineConfigError) as exc:
        raise SystemExit(f"--engine-knobs: {exc}") from None
    rows = []
    for seed in range(a.first_seed, a.first_seed + a.seeds):
        scens = [build_shift(n, MODEL, requests=a.requests, seed=seed, phase_s=a.phase_s,
                             cfg=engine)
                 for n in a.scenarios.split(",") if n]
        if a.trace:
            scens.append(trace_scenario(a.trace, a.requests, a.trace_load, engine))
        for s in scens:
            t0 = time.monotonic()
            rows.append(report(run_one(s, seed, a), a))
            print(f"({time.monotonic() - t0:.0f} s for this scenario and seed)", flush=True)
    print("\n## Summary over seeds (median / worst)\n")
    print("| scenario | T1 worst phase gap P99 | T1 worst phase gap TTFT | T2 min margin | "
          "T3 min published/phase | T3 worst gate | T4 max trials | T5 wall s | scenario ≥15% |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in dict.fromkeys(r["scenario"] for r in rows):
        rs = [r for r in rows if r["scenario"] == name]

        def mw(vals: list[float], worst: Any = max) -> str:
            v = [x for x in vals if x is not None and math.isfinite(x)]
            return f"{statistics.median(v):+.2f} / {worst(v):+.2f}" if v else "–"

        print(f"| {name} | {mw([max(a_ for a_, _ in r['t1']) for r in rs])} | "
              f"{mw([max(b_ for _, b_ in r['t1']) for r in rs])} | "
              f"{mw([r['t2'] for r in rs], min)} | "
              f"{min(min(r['published_per_phase']) for r in rs)} | "
              f"{mw([r['gate_worst'] for r in rs], min)} | "
              f"{max((r['ttb_max'] or 0) for r in rs)} | "
              f"{statistics.median(r['wall_s'] for r in rs):.0f} / "
              f"{max(r['wall_s'] for r in rs):.0f} | "
              f"{sum(r['scenario_ok'] for r in rs)}/{len(rs)} |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()

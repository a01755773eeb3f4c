"""Who forms the P99 TTLT tail: FCFS vs static ``tailwise`` (optionally with regime
switches off) on one suite workload.

For the requests at or above each policy's P99 TTLT it prints their median prompt and
output length against the workload's, how long they queued, their TTFT, their decode
time (first to last token) and the share that was preempted — enough to tell a tail of
long prompts held back by the boost (queueing ≈ the envelope) from one of preemption
victims or long decodes.

    python benchmarks/tail_anatomy.py --workload azure-conv [--off queue_floor,prefix_rekey]
    python benchmarks/tail_anatomy.py --variant bursty-kv-16k   # a held-out shape
    python benchmarks/tail_anatomy.py --scenario reasoning-longdoc-chat --seed 3 \
        --phase "bursty reasoning"                              # one phase of a shift

``tailwise`` is the static policy, without the in-process partition refresh of the bench's
``tailwise`` arm (its figures differ slightly from ``heldout_shapes.py``'s ``tailwise``
row and match its ``tailwise-static`` row). ``--variant`` takes a workload of
``benchmarks/heldout_shapes.py``. ``--scenario`` runs a
shift scenario (the engine, step model and phase lengths of
``benchmarks/online_targets.py``) and adds Kairos at its defaults to the arms; with
``--phase`` the tail and the SLO misses are those of the requests arriving in that phase
(the whole run is still simulated, so a phase's backlog carries into the next). Below the
table, the SLO misses split by whether the request was preempted; each policy's mean
TTFT by arrival octile shows whether arrivals wait more as the run goes on (an envelope
collapsing into FCFS under sustained overload); and for each tailwise arm the envelope in
force through the run, as ``QueueDiscipline.envelope`` reports it to the adapter's gauges:
``T``, FCFS's drain time ``D₇₅``, ``E``, the longest wait (counted as ``E`` counts it), and
how many waiting requests are demoted victims.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from tailwise.lab.bench import VariantError, regime_switches
from tailwise.records.requests import RequestRecords
from tailwise.records.summary import MetricsConfig, per_request
from tailwise.records.trace import TraceError
from tailwise.scorer.policy import Mode, Policy, RegimeParams
from tailwise.scorer.registry import build_scheduler, default_policy
from tailwise.scorer.request import ReqInfo
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.scorer.tailwise import TailwisePolicy
from tailwise.simulator.engine import EngineConfig, Simulator
from tailwise.simulator.scenarios import SHIFT_ENGINE, SHIFT_SCENARIOS, build_shift
from tailwise.simulator.step_models import load_step_model
from tailwise.simulator.suite import build


def describe(name: str, r: RequestRecords) -> None:
    ttlt, ttft = r.finish - r.arrival, r.first_token - r.arrival
    queue, decode = r.first_scheduled - r.arrival, r.finish - r.first_token
    p99 = float(np.nanpercentile(ttlt, 99))
    tail = np.where(ttlt >= p99)[0]
    print(f"| {name} | {np.nanmean(ttft):.2f} | {p99:.1f} | {len(tail)} | "
          f"{np.median(r.prompt[tail]):,.0f} ({np.median(r.prompt):,.0f}) | "
          f"{np.median(r.output[tail]):,.0f} ({np.median(r.output):,.0f}) | "
          f"{np.nanmedian(queue[tail]):.1f} ({np.nanpercentile(queue, 99):.1f}) | "
          f"{np.nanmedian(decode[tail]):.1f} | {(r.preemptions[tail] > 0).mean():.2f} |")


def slo_misses(r: RequestRecords, cfg: MetricsConfig) -> tuple[float, int, int]:
    """(SLO attainment of the finished requests, misses among them that were preempted,
    misses never preempted): a miss after a preemption is a victim's wait, one without
    a wait for the first token (or a slow decode)."""
    pr = per_request(r, cfg)
    miss = pr.done & ~pr.slo_ok
    pre = miss & (r.preemptions > 0)
    done = int(pr.done.sum())
    return (float(pr.slo_ok[pr.done].mean()) if done else float("nan"),
            int(pre.sum()), int((miss & ~pre).sum()))


def by_octile(r: RequestRecords) -> list[float]:
    """Mean TTFT of the requests arriving in each eighth of the arrival span."""
    edges = np.linspace(r.arrival.min(), r.arrival.max(), 9)
    ttft = r.first_token - r.arrival
    idx = np.clip(np.searchsorted(edges, r.arrival, side="right") - 1, 0, 7)
    return [float(np.nanmean(ttft[idx == k])) if np.any(idx == k) else float("nan")
            for k in range(8)]


def watch_envelope(sched: TailwisePolicy, every_s: float
                   ) -> list[tuple[float, float, float | None, float, float, int, int]]:
    """Samples of (engine time, T, D₇₅, E, the longest wait, waiting requests, demoted
    victims among them) taken as the engine asks ``sched`` for its next request, at most
    one per ``every_s``."""
    rows: list[tuple[float, float, float | None, float, float, int, int]] = []
    peek = sched.peek

    def sampled(now: float) -> ReqInfo | None:
        if not rows or now - rows[-1][0] >= every_s:
            env = sched.envelope(now)  # what the adapter's gauges read
            assert env is not None
            rows.append((now, env.service_scale_s or 0.0, env.drain_s, env.bound_s,
                         env.oldest_wait_s or 0.0, len(sched), env.demoted_waiting))
        return peek(now)

    sched.peek = sampled  # type: ignore[method-assign]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="azure-conv")
    ap.add_argument("--variant", default=None,
                    help="a held-out variant of benchmarks/heldout_shapes.py instead")
    ap.add_argument("--scenario", default=None,
                    help=f"a shift scenario instead ({', '.join(SHIFT_SCENARIOS)})")
    ap.add_argument("--seed", type=int, default=0, help="the scenario's seed")
    ap.add_argument("--phase-s", type=float, default=120.0,
                    help="engine seconds per scenario phase")
    ap.add_argument("--requests", type=int, default=600, help="scenario probe size")
    ap.add_argument("--phase", default=None,
                    help="only the requests arriving in this phase of the scenario (its name)")
    ap.add_argument("--off", default="", help="regime switches to turn off, comma-separated")
    args = ap.parse_args()
    model = H100_LLAMA3_8B  # a held-out variant may name other hardware
    try:
        off = regime_switches(args.off)
    except VariantError as exc:
        raise SystemExit(str(exc)) from None
    if (args.variant is not None) + (args.scenario is not None) > 1:
        raise SystemExit("--variant and --scenario are alternatives: give one")
    if args.scenario is None and args.phase is not None:
        raise SystemExit("--phase needs --scenario")
    arms = {"fcfs": Policy(), "tailwise": Policy(mode=Mode.TAILWISE)}
    metrics, keep, every = MetricsConfig(), None, None
    engine: EngineConfig
    if args.scenario is not None:
        if args.scenario not in SHIFT_SCENARIOS:
            raise SystemExit(f"unknown scenario {args.scenario!r}; choose from: "
                             f"{', '.join(SHIFT_SCENARIOS)}")
        try:
            sc = build_shift(args.scenario, H100_LLAMA3_8B, requests=args.requests,
                             seed=args.seed, phase_s=args.phase_s)
        except (TraceError, ValueError) as exc:
            raise SystemExit(str(exc)) from None
        trace, engine, metrics = sc.trace, sc.engine or SHIFT_ENGINE, sc.metrics
        kairos = default_policy("kairos")
        assert kairos is not None
        arms = {"fcfs": arms["fcfs"], "kairos": kairos, "tailwise": arms["tailwise"]}
        args.workload = f"{args.scenario} seed {args.seed} ({sc.description})"
        every = args.phase_s / 4
        if args.phase is not None:
            names = [p.name for p in sc.phases]
            if args.phase not in names:
                raise SystemExit(f"unknown phase {args.phase!r}; {args.scenario} has: "
                                 f"{', '.join(names)}")
            keep = np.flatnonzero(sc.phase_of(trace.arrival_s) == names.index(args.phase))
            args.workload += f", requests arriving in its {args.phase} phase"
    elif args.variant is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from heldout_shapes import variants

        (v,) = variants(args.variant)
        model = load_step_model(v.model)
        arms = {k: p.replace(step_time=model) for k, p in arms.items()}
        wl = build(v.workload, model=model, seed=v.seed, scale=v.scale, **v.shape)
        args.workload = f"{v.name} ({wl.shape}, step model {model.name})"
        trace, engine = wl.trace, wl.engine
    else:
        wl = build(args.workload, model=H100_LLAMA3_8B)
        trace, engine = wl.trace, wl.engine
    if off:
        arms[f"tailwise, {'/'.join(off)} off"] = Policy(
            mode=Mode.TAILWISE, step_time=model,
            regime=dataclasses.replace(RegimeParams(), **dict.fromkeys(off, False)))
    whole = "the phase's" if keep is not None else "the whole workload's"
    print(f"{args.workload}: the P99 TTLT tail (medians; {whole} in brackets)\n")
    print("| policy | mean TTFT s | P99 TTLT s | tail n | prompt | output | queued s "
          "(all p99) | decode s | preempted |")
    print("|---|---|---|---|---|---|---|---|---|")
    octiles, timelines, slo = {}, {}, {}
    for name, pol in arms.items():
        sched = build_scheduler(pol)
        if isinstance(sched, TailwisePolicy):
            timelines[name] = watch_envelope(sched, every or trace.duration_s / 8)
        sim = Simulator(trace, sched, engine, model)
        rec = sim.run().records
        if keep is not None:
            rec = rec.subset(keep)
        describe(name, rec)
        octiles[name] = by_octile(rec)
        slo[name] = slo_misses(rec, metrics)
    print("\nSLO misses (TTFT and TPOT targets) of the finished requests\n")
    print("| policy | SLO attainment | misses, preempted | misses, never preempted |")
    print("|---|---|---|---|")
    for name, (att, pre, never) in slo.items():
        print(f"| {name} | {att:.1%} | {pre} | {never} |")
    print("\nmean TTFT (s) by arrival octile\n")
    print("| policy | " + " | ".join(f"{k}/8" for k in range(1, 9)) + " |")
    print("|---|" + "---|" * 8)
    for name, row in octiles.items():
        print(f"| {name} | " + " | ".join(f"{x:.1f}" for x in row) + " |")
    for name, rows in timelines.items():
        span = f"{every:.0f} engine s" if every else "eighth of the arrival span"
        print(f"\n{name}: the waiting envelope E in force, sampled every {span} "
              "(the whole run)\n")
        print("| engine s | T s | D75 s | E s | longest wait s | waiting | of them demoted "
              "victims |")
        print("|---|---|---|---|---|---|---|")
        for t, scale, d75, env, oldest, waiting, demoted in rows:
            d = "–" if d75 is None else f"{d75:.1f}"
            print(f"| {t:.0f} | {scale:.1f} | {d} | {env:.1f} | {oldest:.1f} | {waiting} | "
                  f"{demoted} |")


if __name__ == "__main__":
    main()

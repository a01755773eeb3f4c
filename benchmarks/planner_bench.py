"""Sorted-F planner benchmark: approximation ratio on small instances, and mean latency of
every method on a large Azure-conversation backlog, measured side by side in one run.

    python benchmarks/planner_bench.py                       # defaults below
    python benchmarks/planner_bench.py --trace azure-conv --n 5000 --small 200

(a) ``--small`` random instances (n in [2, --small-n-max]): each method's total
    completion time over the exact optimum (HiGHS MILP), unit-time model.
(b) The first ``--n`` requests of the trace as one backlog at t=0: mean / p99 completion
    and makespan per method at each ``--budgets`` KV budget (memory binds: the backlog's
    total footprint is far above them), in unit time and in the step-time model.
(c) Sorted-F planning time (batch formation + dispatch) for several backlog sizes and
    ``--runtime-budgets``, median of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from tailwise.planner import Instance, TimeModel, evaluate, run_method, solve_exact
from tailwise.planner.methods import METHODS
from tailwise.planner.sorted_f import sorted_f_batches, sorted_f_schedule
from tailwise.simulator.step_models import load_step_model
from tailwise.simulator.traces import Trace, load_trace

DEFAULT_TRACE = "/work/shared/traces/azure2023_conv.csv"
FALLBACK_TRACE = "azure-conv"
HEURISTICS = [m for m in METHODS if m != "exact"]


def small_instances(count: int, n_max: int, seed: int) -> list[Instance]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n = int(rng.integers(2, n_max + 1))
        p = rng.integers(1, 40, n)  # heterogeneous prompts: the hard case of seed 004
        o = rng.integers(1, 12, n)
        budget = int((p + o).max() * rng.uniform(1.0, 3.0))
        out.append(Instance.from_lengths(p, o, budget))
    return out


def bench_ratio(count: int, n_max: int, seed: int) -> None:
    print(f"\n(a) method / exact optimum, {count} random instances, n in [2, {n_max}], "
          "prompts 1-39, outputs 1-11, budget 1-3x the largest request, unit time")
    insts = small_instances(count, n_max, seed)
    ratios: dict[str, list[float]] = {m: [] for m in HEURISTICS}
    exact_s: list[float] = []
    for inst in insts:
        t0 = time.perf_counter()
        opt = evaluate(inst, solve_exact(inst)).total
        exact_s.append(time.perf_counter() - t0)
        for m in HEURISTICS:
            ratios[m].append(evaluate(inst, run_method(m, inst, ls_budget_s=0.5)).total / opt)
    print(f"{'method':<17} {'mean':>7} {'max':>7} {'p95':>7} {'=opt':>6}")
    for m, rs in ratios.items():
        arr = np.asarray(rs)
        print(f"{m:<17} {arr.mean():7.4f} {arr.max():7.4f} {np.percentile(arr, 95):7.4f} "
              f"{(arr <= 1 + 1e-9).mean():6.1%}")
    worst = max(ratios["sorted-f"])
    print(f"Sorted-F max ratio {worst:.4f} (paper bound 48: {'OK' if worst <= 48 else 'VIOLATED'})"
          f"; exact solve time mean {statistics.mean(exact_s):.3f} s, max {max(exact_s):.2f} s")


def load_backlog(path: str) -> Trace:
    if Path(path).is_file() or path in ("azure-conv", "azure-code"):
        return load_trace(path)
    print(f"note: {path} not found, using the bundled sample {FALLBACK_TRACE!r}")
    return load_trace(FALLBACK_TRACE)


def bench_large(trace: Trace, n: int, budgets: list[int], models: list[TimeModel],
                ls_seconds: float) -> None:
    n = min(n, len(trace))
    p, o = trace.prompt_tokens[:n], trace.output_tokens[:n]
    print(f"\n(b) backlog: first {n:,} requests of {trace.name} at t=0; prompt mean "
          f"{p.mean():.0f} (p10 {np.percentile(p, 10):.0f}, p90 {np.percentile(p, 90):.0f}), "
          f"output mean {o.mean():.0f}; total footprint {int((p + o).sum()):,} KV tokens")
    for tm in models:
        for budget in budgets:
            inst = Instance.from_lengths(p, o, budget)
            print(f"\n  KV budget {budget:,} tokens, time model {tm.name} "
                  f"(times in {tm.time_unit})")
            print(f"  {'method':<17} {'mean':>10} {'p99':>10} {'makespan':>10} "
                  f"{'mean/FCFS':>9} {'plan s':>7}")
            rows = {}
            for m in HEURISTICS:
                sched = run_method(m, inst, tm, ls_budget_s=ls_seconds)
                rows[m] = (evaluate(inst, sched, tm), sched.runtime_s)
            base = rows["fcfs"][0].mean
            best = min(ev.mean for ev, _ in rows.values())
            for m, (ev, rt) in rows.items():
                fmt = "{:10.1f}" if tm.is_unit else "{:10.2f}"
                print(f"  {m:<17} {fmt.format(ev.mean)} {fmt.format(ev.percentile(99))} "
                      f"{fmt.format(ev.makespan)} {ev.mean / base:9.3f} {rt:7.2f}"
                      + ("  <- best" if ev.mean == best else ""))


def bench_runtime(trace: Trace, sizes: list[int], budget: int, repeats: int) -> None:
    print(f"\n(c) Sorted-F planning time (unit-time F), KV budget {budget:,}, median of "
          f"{repeats} runs")
    print(f"  {'n':>7} {'batches':>8} {'form batches s':>15} {'+ back-to-back s':>17} "
          f"{'+ eager s':>10}")
    for n in sizes:
        n = min(n, len(trace))
        inst = Instance.from_lengths(trace.prompt_tokens[:n], trace.output_tokens[:n], budget)
        form, seq, eag = [], [], []
        nb = 0
        for _ in range(repeats):
            t0 = time.perf_counter()
            nb = len(sorted_f_batches(inst))
            form.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            sorted_f_schedule(inst, "sequential")
            seq.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            sorted_f_schedule(inst, "eager")
            eag.append(time.perf_counter() - t0)
        print(f"  {n:>7,} {nb:>8} {statistics.median(form):15.3f} {statistics.median(seq):17.3f} "
              f"{statistics.median(eag):10.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--trace", default=DEFAULT_TRACE,
                    help=f"backlog trace (default {DEFAULT_TRACE}; falls back to "
                         f"{FALLBACK_TRACE!r} when missing)")
    ap.add_argument("--n", type=int, default=10_000, help="backlog size for (b)")
    ap.add_argument("--budgets", default="457600,131072,65536",
                    help="comma-separated KV budgets in tokens (457,600 = H100 default)")
    ap.add_argument("--time-models", default="unit,step", help="unit and/or step")
    ap.add_argument("--step-model", default="h100-llama3-8b")
    ap.add_argument("--ls-seconds", type=float, default=5.0, help="sorted-f-ls time budget")
    ap.add_argument("--small", type=int, default=300, help="random small instances for (a)")
    ap.add_argument("--small-n-max", type=int, default=8)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--sizes", default="1000,2500,5000,10000,20000",
                    help="backlog sizes for (c)")
    ap.add_argument("--runtime-budgets", default="457600,16384",
                    help="KV budgets for (c); a small one means many tiny batches (worst case)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: a,b,c")
    args = ap.parse_args()
    skip = set(args.skip.split(","))
    t0 = time.perf_counter()
    if "a" not in skip:
        bench_ratio(args.small, args.small_n_max, args.seed)
    trace = load_backlog(args.trace)
    budgets = [int(b) for b in args.budgets.split(",") if b]
    if "b" not in skip:
        models = []
        for kind in args.time_models.split(","):
            models.append(TimeModel.unit() if kind == "unit"
                          else TimeModel(load_step_model(args.step_model)))
        bench_large(trace, args.n, budgets, models, args.ls_seconds)
    if "c" not in skip:
        for budget in (int(b) for b in args.runtime_budgets.split(",") if b):
            bench_runtime(trace, [int(s) for s in args.sizes.split(",")], budget, args.repeats)
    print(f"\ntotal benchmark time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

"""Bayesian meta-optimization on a shifted workload: trials until the optimizer beats the
default policy, and by how much.

The workload shifts from calm traffic (80% short / 20% long, Poisson, load 0.7) to an
overloaded, bursty mix (60/40 with longer requests, Gamma arrivals with CV 2, load 1.3).
The learner's partition was fitted on the calm part; the champion is the default
``tailwise`` policy. Round 1 tunes on a calm window (as the sidecar would have), round 2
on the most recent window after the shift. For each seed the script prints the drift the
tuner measured, the trial at which a challenger first beat the champion on the replay,
the improvement of the best of ``--trials`` trials (champion included) over the
champion, and — side by side from the same replays — mean and P99 TTLT and SLO
attainment of the champion, the best trial and FCFS.

    python benchmarks/tuner_shift.py [--seeds 10] [--trials 8] [--n 1000] [--load 1.3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import optuna

from tailwise.bayes_opt.replay import ReplayEvaluator, metrics_config
from tailwise.bayes_opt.space import refine_partition
from tailwise.bayes_opt.tuner import Tuner, TunerConfig
from tailwise.bayes_opt.window import cap_window
from tailwise.scorer.policy import EwsjfParams, Mode, Policy, QueueSpec
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import EngineConfig
from tailwise.simulator.traces import Trace
from tailwise.simulator.workload import LengthClass, concat, generate, rate_scale_for_load

CALM = (LengthClass("short", 0.8, 256, 64), LengthClass("long", 0.2, 3072, 512))
SHIFTED = (LengthClass("short", 0.6, 256, 64), LengthClass("long", 0.4, 4096, 768))


def shifted_workload(n: int, load: float, seed: int = 0) -> tuple[Trace, Trace, Trace]:
    """(calm part, shifted part, the two concatenated): ``n`` requests each."""
    eng = EngineConfig()
    calm = generate(n, 10.0, classes=CALM, seed=seed + 1)
    calm = calm.scaled(rate_scale_for_load(calm, 0.7, eng, H100_LLAMA3_8B))
    hot = generate(n, 10.0, classes=SHIFTED, arrival="gamma", cv=2.0, seed=seed + 2)
    hot = hot.scaled(rate_scale_for_load(hot, load, eng, H100_LLAMA3_8B))
    return calm, hot, concat(calm, hot)


def learned_partition(trace: Trace, passes: int = 4) -> tuple[QueueSpec, ...]:
    part: tuple[QueueSpec, ...] = ()
    for _ in range(passes):
        part = refine_partition(part, EwsjfParams(), trace.prompt_tokens)
    return part


def run(seed: int, trials: int, n: int, load: float, evaluator: ReplayEvaluator) -> dict[str, Any]:
    calm, _, both = shifted_workload(n, load)
    part = learned_partition(calm)
    champion = Policy(mode=Mode.TAILWISE, queues=part)
    tuner = Tuner(TunerConfig(storage="memory", seed=seed, max_window_requests=n,
                              stress_load=0),
                  Policy(), evaluator=evaluator)
    tuner.tune(calm, champion, part, n_trials=2)
    t0 = time.perf_counter()
    res = tuner.tune(both, champion, part, n_trials=trials)  # the tail: post-shift window
    wall = time.perf_counter() - t0
    champ = res.champion_value
    assert champ is not None
    first = next((i + 1 for i, t in enumerate(res.trials)
                  if t.role == "challenger" and t.value is not None and t.value > champ), None)
    attrs = {t.number: t.user_attrs for t in tuner.study.trials}
    best = max((t for t in res.trials if t.value is not None), key=lambda t: float(t.value or 0))
    return {"seed": seed, "drift": res.drift, "first": first, "champion": champ,
            "best": res.best_value, "promoted": res.promoted is not None, "wall": wall,
            "champ_attrs": attrs[res.trials[0].number], "best_attrs": attrs[best.number],
            "fcfs": evaluator.baseline(cap_window(both, n))}  # cached: the same window


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--load", type=float, default=1.3)
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    ev = ReplayEvaluator(EngineConfig(), metrics_config(Policy()))
    print(f"shifted workload: {args.n} calm + {args.n} shifted requests (load 0.7 -> "
          f"{args.load}), {args.trials} trials per round, TPE seeds 0..{args.seeds - 1}")
    print(f"{'seed':>4} {'drift':>6} {'1st better*':>11} {'champion':>9} {'best':>8} "
          f"{'gain':>7} {'promoted':>8} | {'TTLT mean c/b/fcfs':>20} {'TTLT p99 c/b/fcfs':>20} "
          f"{'SLO att. c/b/fcfs':>18} {'round s':>7}")
    rows = [run(s, args.trials, args.n, args.load, ev) for s in range(args.seeds)]
    for r in rows:
        gain = (r["best"] - r["champion"]) / abs(r["champion"])
        c, b, f = r["champ_attrs"], r["best_attrs"], r["fcfs"]["overall"]
        print(f"{r['seed']:>4} {r['drift']:>6.3f} {r['first'] or '-'!s:>11} "
              f"{r['champion']:>9.4f} {r['best']:>8.4f} {gain:>+7.1%} {r['promoted']!s:>8} | "
              f"{c['ttlt_mean']:>6.2f}/{b['ttlt_mean']:>6.2f}/{f['ttlt']['mean']:>6.2f} "
              f"{c['ttlt_p99']:>6.1f}/{b['ttlt_p99']:>6.1f}/{f['ttlt']['p99']:>6.1f} "
              f"{c['slo_attainment']:>5.3f}/{b['slo_attainment']:>5.3f}/"
              f"{f['slo_attainment']:>5.3f} {r['wall']:>7.2f}")
    print("* trial of the round (the champion's is trial 1) at which a challenger first beat "
          "the champion; gain: best of the round over the champion, same replay window")
    gains = [(r["best"] - r["champion"]) / abs(r["champion"]) for r in rows]
    firsts = [r["first"] for r in rows if r["first"] is not None]
    print(f"improved within {args.trials} trials: {len(firsts)}/{len(rows)} seeds; "
          f"trials to first improvement: median {statistics.median(firsts) if firsts else '-'}"
          f" (min {min(firsts) if firsts else '-'}, max {max(firsts) if firsts else '-'}); "
          f"best-objective gain over the default policy: median {statistics.median(gains):+.1%}, "
          f"max {max(gains):+.1%}; promoted (gain > margin 2%): "
          f"{sum(r['promoted'] for r in rows)}/{len(rows)}")


if __name__ == "__main__":
    main()

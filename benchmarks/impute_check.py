"""How well the learner's window sees an overloaded span before it has finished.

A tuning round replays the telemetry window. Under overload many of the window's requests
are still queued or decoding when the round runs; left out (as with ``[window]
settle_quantile`` 0 and no imputation) the replay sees a lighter, shorter workload than
the engine serves. With ``[window] impute_unfinished`` they are replayed with output
lengths drawn from the finished requests that outlived them
(``tailwise.learner.window.impute_outputs``).

This benchmark runs each shift scenario under static ``tailwise`` with the engine's
telemetry recorded, feeds the events to a sidecar's ``TelemetryWindow`` in engine-time
order, and at every round (``--round-every-s``) compares the latest span as a round would
replay it against the same span replayed once every request in it has finished (the
truth, known at the end of the run):

- requests: finished-only and imputed as a share of the true count;
- output tokens to replay (backlog included): finished-only and imputed ÷ truth;
- the P90 output length among the requests still unfinished: imputed ÷ truth.

Each cell is the median over the rounds whose span holds unfinished requests, with the
worst round in brackets (farthest from 1).

    python benchmarks/impute_check.py [--scenarios ...] [--seeds 3]
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import numpy as np

from tailwise.learner.window import TelemetryWindow
from tailwise.records.trace import Trace
from tailwise.scorer.hooks import StepStats
from tailwise.scorer.policy import Mode, Policy
from tailwise.scorer.registry import build_scheduler
from tailwise.scorer.request import ReqInfo
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import Simulator
from tailwise.simulator.scenarios import SHIFT_ENGINE, SHIFT_SCENARIOS, build_shift
from tailwise.wire.codec import step_event
from tailwise.wire.v1 import policy_pb2 as pb


@dataclass
class Recorder:
    """A TelemetrySink that keeps every event as the adapter would send it."""

    events: list[pb.RequestEvent]
    steps: list[pb.StepEvent]

    def _add(self, kind: pb.RequestEventKind, r: ReqInfo, now: float) -> None:
        self.events.append(pb.RequestEvent(
            kind=kind, request_id=r.request_id, time=now, arrival_time=r.arrival_time,
            prompt_tokens=r.prompt_tokens, cached_tokens=r.cached_tokens,
            slo_class=r.slo_class, output_tokens=r.num_output_tokens,
            num_preemptions=r.num_preemptions,
            first_token_time=r.first_token_time if r.first_token_time is not None else 0.0))

    def on_arrival(self, r: ReqInfo, now: float) -> None:
        self._add(pb.REQUEST_EVENT_KIND_ARRIVAL, r, now)

    def on_first_token(self, r: ReqInfo, now: float) -> None:
        self._add(pb.REQUEST_EVENT_KIND_FIRST_TOKEN, r, now)

    def on_preempt(self, r: ReqInfo, now: float) -> None:
        self._add(pb.REQUEST_EVENT_KIND_PREEMPTED, r, now)

    def on_finish(self, r: ReqInfo, now: float) -> None:
        self._add(pb.REQUEST_EVENT_KIND_FINISHED, r, now)

    def on_step(self, stats: StepStats) -> None:
        self.steps.append(step_event(stats))


def _work(tr: Trace | None) -> float:
    return 0.0 if tr is None else float(tr.output_tokens.sum())


def _worst(xs: list[float]) -> str:
    if not xs:
        return "–"
    far = max(xs, key=lambda x: abs(math.log(x)) if x > 0 else math.inf)
    return f"{np.median(xs):.2f} ({far:.2f})"


def check(name: str, seed: int, a: argparse.Namespace) -> dict[str, list[float]]:
    sc = build_shift(name, H100_LLAMA3_8B, requests=a.requests, seed=seed, phase_s=a.phase_s)
    rec = Recorder([], [])
    Simulator(sc.trace, build_scheduler(Policy(mode=Mode.TAILWISE)), sc.engine or SHIFT_ENGINE,
              H100_LLAMA3_8B, sink=rec).run()
    events = sorted(rec.events, key=lambda e: e.time)
    steps = np.asarray([st.time for st in rec.steps])
    final = {e.request_id: e for e in events if e.kind == pb.REQUEST_EVENT_KIND_FINISHED}
    truth = TelemetryWindow()
    truth.apply(pb.EngineEvent(engine_id="e", requests=events))
    live = TelemetryWindow(step_counts=True)
    out: dict[str, list[float]] = {"n_fin": [], "n_imp": [], "w_fin": [], "w_imp": [],
                                   "p90": []}
    finished: set[str] = set()
    i, t, since_steps = 0, a.round_every_s, -1.0
    end = max(e.time for e in events)
    while t <= end:
        j = i
        while j < len(events) and events[j].time <= t:
            if events[j].kind == pb.REQUEST_EVENT_KIND_FINISHED:
                finished.add(events[j].request_id)
            j += 1
        lo, hi = np.searchsorted(steps, [since_steps, t], "right")
        live.apply(pb.EngineEvent(engine_id="e", requests=events[i:j],
                                  steps=rec.steps[lo:hi]))
        i, since_steps = j, t
        since, until = t - a.round_every_s, t
        t += a.round_every_s
        full = truth.trace(since, until=until, carry_in=True)
        fin = live.trace(since, until=until, carry_in=True)
        imp = live.trace(since, until=until, carry_in=True, impute=True)
        if full is None or imp is None or not imp.meta.get("imputed"):
            continue
        n_true = len(full) - int(full.meta["carried_in"])
        n_fin = 0 if fin is None else len(fin) - int(fin.meta["carried_in"])
        out["n_fin"].append(n_fin / n_true)
        out["n_imp"].append((len(imp) - int(imp.meta["carried_in"])) / n_true)
        out["w_fin"].append(_work(fin) / _work(full))
        out["w_imp"].append(_work(imp) / _work(full))
        true_len = [e.output_tokens for rid, e in final.items()
                    if rid not in finished and since <= e.arrival_time < until]
        guess = _unfinished_rows(imp, fin)
        if true_len and guess.size:
            out["p90"].append(float(np.percentile(guess, 90))
                              / float(np.percentile(true_len, 90)))
    return out


def _unfinished_rows(imp: Trace, fin: Trace | None) -> np.ndarray:
    """The imputed rows of ``imp`` (those not among ``fin``'s finished rows)."""
    k = int(imp.meta["carried_in"])
    rows = list(zip(imp.arrival_s[k:] + imp.meta["engine_t0"], imp.prompt_tokens[k:],
                    imp.output_tokens[k:], strict=True))
    seen: dict[tuple[float, int, int], int] = {}
    if fin is not None:
        kf = int(fin.meta["carried_in"])
        for a_, p, o in zip(fin.arrival_s[kf:] + fin.meta["engine_t0"], fin.prompt_tokens[kf:],
                            fin.output_tokens[kf:], strict=True):
            key = (round(float(a_), 6), int(p), int(o))
            seen[key] = seen.get(key, 0) + 1
    guess = []
    for a_, p, o in rows:
        key = (round(float(a_), 6), int(p), int(o))
        if seen.get(key, 0):
            seen[key] -= 1
        else:
            guess.append(int(o))
    return np.asarray(guess, dtype=np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default=",".join(SHIFT_SCENARIOS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--phase-s", type=float, default=120.0)
    ap.add_argument("--round-every-s", type=float, default=40.0)
    a = ap.parse_args()
    names = [s for s in a.scenarios.split(",") if s]
    bad = [s for s in names if s not in SHIFT_SCENARIOS]
    if bad:
        raise SystemExit(f"unknown scenario {bad[0]!r}; choose from: {', '.join(SHIFT_SCENARIOS)}")
    print("| scenario | rounds with unfinished requests | requests seen: finished only / "
          "imputed (÷ true) | output tokens: finished only / imputed (÷ true) | "
          "unfinished P90 output: imputed ÷ true |")
    print("|---|---|---|---|---|")
    for name in names:
        agg: dict[str, list[float]] = {}
        for seed in range(a.seeds):
            for k, v in check(name, seed, a).items():
                agg.setdefault(k, []).extend(v)
        print(f"| {name} | {len(agg['w_imp'])} | {_worst(agg['n_fin'])} / "
              f"{_worst(agg['n_imp'])} | {_worst(agg['w_fin'])} / {_worst(agg['w_imp'])} | "
              f"{_worst(agg['p90'])} |")


if __name__ == "__main__":
    main()

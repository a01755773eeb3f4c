"""The ``best-of-papers`` arm: each paper policy tuned OFFLINE on the pre-shift trace.

For each paper mode — UniBoost (γ-Boost paper: γ, MemGuard θ and r, max boost, priority
band, aging), EWSJF (the linear weights ``a``/``c`` of base/urgency/fairness,
Refine-and-Prune α and max_queues, aging; partition learned from the pre-shift prompts)
and Kairos (scoring window; slack-guided decode cap on) — the
:class:`tailwise.bayes_opt.tuner.Tuner` runs ``offline_trials`` trials (the paper's
default policy as the enqueued champion, then TPE) replaying the whole pre-shift trace
on the simulator, scored with the sidecar's default objective against FCFS on the same
replay. The best policy of the best mode is written with :func:`tailwise.wire.policy_file.save`,
loaded back (hash checked) and run static: no learner, no partition refresh, γ fixed.
tailwise's own mode is not a paper policy and is not a candidate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tailwise.lab.options import PAPER_MODES, OnlineOptions
from tailwise.records.trace import Trace
from tailwise.scorer.policy import EwsjfParams, Mode, Policy, QueueSpec
from tailwise.scorer.registry import default_policy


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
    from tailwise.wire.policy_file import load, save

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
                          space=SpaceConfig(mode=mode), engine=opts.engine, model=opts.model,
                          # the baseline arm is the papers' modes tuned on the pre-shift
                          # trace as it is (no stress scoring: that is tailwise's learner)
                          stress_load=0)
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

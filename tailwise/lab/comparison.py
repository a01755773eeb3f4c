"""``tailwise simulate`` on one trace: every chosen policy on the same trace and engine.

Arms are the CLI's named policies (:func:`tailwise.lab.arms.make_arm`), frozen policy
files (``file:<stem>``) and, in backlog mode, offline planner orders (``plan:<method>``).
The engine is the built-in simulator or, with ``engine_name="vllm"``, vLLM's own
scheduler through :mod:`tailwise.lab.vllm_harness`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tailwise.lab.arms import make_arm
from tailwise.lab.experiment import Arm, Experiment, Runner, builtin_runner, run_experiment
from tailwise.planner.model import TimeModel
from tailwise.planner.policy import PlannedOrder
from tailwise.records.trace import Trace
from tailwise.scorer.policy import Policy
from tailwise.scorer.registry import build_scheduler
from tailwise.scorer.step_time import StepTimeModel
from tailwise.simulator.engine import EngineConfig
from tailwise.simulator.metrics import MetricsConfig
from tailwise.simulator.report import Run, make_runs, write_report

#: engines ``--engine`` accepts
ENGINE_NAMES = ("sim", "vllm")


class EngineChoiceError(ValueError):
    """``--engine`` names no engine, or the vLLM engine is not installed."""


def engine_runner(name: str) -> Runner:
    """The runner of engine ``name`` (``sim`` or ``vllm``; the latter needs the [vllm] extra)."""
    if name == "sim":
        return builtin_runner
    if name == "vllm":
        try:
            from tailwise.lab.vllm_harness import run_vllm
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise EngineChoiceError(f"--engine vllm needs the [vllm] extra: {exc}") from exc
        return run_vllm
    raise EngineChoiceError(f"--engine must be 'sim' or 'vllm', got {name!r}")


def as_backlog(trace: Trace) -> Trace:
    """Every request waiting at t = 0 (the planner's setting); timestamps dropped."""
    return dataclasses.replace(trace, arrival_s=np.zeros(len(trace)),
                              name=f"{trace.name}-backlog")


@dataclass
class Comparison:
    """What ``tailwise simulate`` (without a scenario) runs."""

    trace: Trace
    policies: list[str]
    engine: EngineConfig
    model: StepTimeModel
    metrics: MetricsConfig
    #: frozen policies by arm name (``file:<stem>``)
    frozen: dict[str, Policy] = field(default_factory=dict)
    #: planner methods (backlog mode), run as ``plan:<method>``
    plans: list[str] = field(default_factory=list)
    rate_scale: float | None = None
    target_load: float | None = None
    engine_name: str = "sim"

    def arm_names(self) -> list[str]:
        return self.policies + list(self.frozen) + [f"plan:{m}" for m in self.plans]

    def arm(self, name: str) -> Arm:
        if name in self.frozen:
            return Arm(build_scheduler(self.frozen[name]))
        if name.startswith("plan:"):
            return Arm(PlannedOrder.from_backlog(
                self.trace.prompt_tokens, self.trace.output_tokens, self.engine.kv_tokens,
                name[len("plan:"):], time_model=TimeModel(self.model)))
        return make_arm(name, self.model)

    def experiment(self) -> Experiment:
        return Experiment(trace=self.trace, policies=self.arm_names(), factory=self.arm,
                          engine=self.engine, model=self.model, rate_scale=self.rate_scale,
                          target_load=self.target_load, runner=engine_runner(self.engine_name),
                          engine_name=self.engine_name)


def run_comparison(comp: Comparison, out: Path, *, window_s: float, plots: bool,
                   on_progress: Callable[[str, int, int], None] | None = None,
                   ) -> tuple[list[Run], dict[str, Any], Path]:
    """Run every arm, write the report to ``out``; returns runs, context and the
    path of ``report.md``."""
    results, context = run_experiment(comp.experiment(), on_progress)
    runs = make_runs(results, comp.metrics)
    path = write_report(out, runs, context, comp.metrics, window_s=window_s, plots=plots)
    return runs, context, path

"""One comparison run: a trace, an engine, several policies, same seed for all.

:mod:`tailwise.lab.comparison` builds an :class:`Experiment` from the CLI's flags and
calls :func:`run_experiment`; the engine that executes each policy is injectable (the
built-in simulator by default, the vLLM-in-the-loop harness for ``--engine vllm``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from tailwise.records.trace import Trace, TraceError
from tailwise.scorer.hooks import PolicySource, TelemetrySink
from tailwise.scorer.interface import QueueDiscipline
from tailwise.scorer.step_time import StepTimeModel
from tailwise.simulator.engine import EngineConfig, SimResult, simulate
from tailwise.simulator.workload import offered_load, rate_scale_for_load


@dataclass
class Arm:
    """What one compared policy needs: its scheduler, and for adaptive policies the
    policy source and telemetry sink of the learner that adapts it."""

    scheduler: QueueDiscipline
    source: PolicySource | None = None
    sink: TelemetrySink | None = None


class Runner(Protocol):
    def __call__(self, trace: Trace, arm: Arm, config: EngineConfig, model: StepTimeModel, *,
                 progress: Callable[[int, int], None] | None = None) -> SimResult: ...


def builtin_runner(trace: Trace, arm: Arm, config: EngineConfig, model: StepTimeModel, *,
                   progress: Callable[[int, int], None] | None = None) -> SimResult:
    return simulate(trace, arm.scheduler, config, model, source=arm.source, sink=arm.sink,
                    progress=progress)


@dataclass
class Experiment:
    trace: Trace
    policies: list[str]
    factory: Callable[[str], Arm]
    engine: EngineConfig = field(default_factory=EngineConfig)
    model: StepTimeModel | None = None
    rate_scale: float | None = None
    target_load: float | None = None
    runner: Runner = builtin_runner
    engine_name: str = "sim"


def scale_trace(trace: Trace, engine: EngineConfig, model: StepTimeModel, *,
                rate_scale: float | None, target_load: float | None) -> tuple[Trace, float]:
    """Apply ``--rate-scale`` or ``--target-load``; returns the trace and the scale used."""
    if rate_scale is not None and target_load is not None:
        raise TraceError("give either --rate-scale or --target-load, not both")
    scale = 1.0
    if target_load is not None:
        scale = rate_scale_for_load(trace, target_load, engine, model)
    elif rate_scale is not None:
        scale = rate_scale
    return (trace.scaled(scale) if scale != 1.0 else trace), scale


def prepare_trace(exp: Experiment) -> tuple[Trace, float]:
    """The experiment's trace with ``--rate-scale`` or ``--target-load`` applied."""
    assert exp.model is not None
    return scale_trace(exp.trace, exp.engine, exp.model, rate_scale=exp.rate_scale,
                       target_load=exp.target_load)


def run_experiment(exp: Experiment,
                   on_progress: Callable[[str, int, int], None] | None = None
                   ) -> tuple[dict[str, SimResult], dict[str, Any]]:
    """Run every policy on the same (scaled) trace. Returns results and report context."""
    assert exp.model is not None
    trace, scale = prepare_trace(exp)
    results: dict[str, SimResult] = {}
    for name in exp.policies:
        arm = exp.factory(name)
        cb = None
        if on_progress is not None:
            def cb(done: int, total: int, _n: str = name) -> None:
                on_progress(_n, done, total)
        results[name] = exp.runner(trace, arm, exp.engine, exp.model, progress=cb)
    load = None
    if len(trace) >= 2 and trace.duration_s > 0:
        load = round(offered_load(trace, exp.engine, exp.model), 4)
    context = {
        "trace": trace.summary(),
        "config": {
            "engine_impl": exp.engine_name,
            "engine": asdict(exp.engine),
            "step_model": exp.model.name,
            "step_model_coefficients": exp.model.to_dict(),
            "rate_scale": round(scale, 6),
            "target_load": exp.target_load,
            "offered_load": load,
            "policies": list(exp.policies),
        },
    }
    return results, context

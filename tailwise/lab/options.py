"""Options of ``tailwise simulate --scenario/--online`` and the names of its arms."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tailwise.lab.experiment import Runner, builtin_runner
from tailwise.records.trace import Trace
from tailwise.scorer.policy import Mode
from tailwise.scorer.registry import POLICY_NAMES
from tailwise.scorer.step_time import StepTimeModel
from tailwise.simulator.engine import EngineConfig
from tailwise.simulator.metrics import MetricsConfig

FCFS, BEST, ONLINE = "fcfs", "best-of-papers", "tailwise-online"
#: the paper policies the static best-of-papers arm chooses from (CLI name, mode)
PAPER_MODES: tuple[tuple[str, Mode], ...] = (
    ("uniboost", Mode.BOOST), ("ewsjf", Mode.EWSJF), ("kairos", Mode.KAIROS))


@dataclass
class OnlineOptions:
    """What ``tailwise simulate --scenario/--online`` runs: a named scenario, or (when
    ``trace`` is set) a trace whose first ``offline_fraction`` of requests plays the
    pre-shift phase the best-of-papers arm is tuned on."""

    #: the scenario's name (ignored when ``trace`` is set)
    scenario: str
    online: bool
    sidecar: str | None
    token: str | None
    out: Path
    engine: EngineConfig
    model: StepTimeModel
    #: target offered load (scenarios: required; a trace: None keeps its own rate)
    load: float | None
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
    #: relative gain a challenger needs over the champion (the sidecar's gate); ``None``:
    #: the tuner's default (:attr:`~tailwise.bayes_opt.tuner.TunerConfig.margin`)
    margin: float | None = None
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
    #: a trace instead of the scenario, scaled by ``rate_scale`` or to ``load``
    trace: Trace | None = None
    rate_scale: float | None = None
    #: a trace's first fraction of requests: the pre-shift phase
    offline_fraction: float = 0.25
    #: merged (deep) into the config of the sidecar ``--online`` starts
    sidecar_overrides: dict[str, Any] = field(default_factory=dict)

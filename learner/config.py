"""Typed sidecar configuration, loaded once at the edge (CLI) from TOML/JSON + flags.

A config file holds the same keys as :class:`SidecarConfig` (nested tables for
``[window]``, ``[loop]`` and ``[tuner]``); unknown keys are an error naming the key.
Nothing here reads the environment.

>>> cfg = config_from_mapping({"listen": "127.0.0.1:0", "window": {"trial_window_s": 60}})
>>> cfg.window.trial_window_s, cfg.loop.round_every_s
(60.0, None)
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tailwise.partitioner.drift import ARRIVAL_FEATURES


class ConfigError(ValueError):
    """A sidecar config file or flag is invalid; the message names the key."""


@dataclass(frozen=True, slots=True)
class WindowConfig:
    """The recent-telemetry window (all durations in ENGINE seconds)."""

    #: requests that finished in the last ``trial_window_s`` are replayed by a round
    trial_window_s: float = 600.0
    #: at most this many finished requests are kept (oldest evicted, counted)
    max_requests: int = 50_000
    #: at most this many arrived-but-unfinished requests are tracked
    max_pending: int = 100_000
    #: a round needs at least this many finished requests in the window
    min_requests: int = 50
    #: replay the latest span in which at least this share of the arrivals have finished
    #: (``TelemetryWindow.settled_end``): limits the right-censoring bias toward short
    #: requests (the unfinished rest is not replayed) at the cost of a lag of about this
    #: quantile of the latency; 0 = the latest span. 0.99 waited for the P99 latency,
    #: which under overload with long outputs outlasts a traffic phase: measured with
    #: ``benchmarks/online_targets.py`` (5 seeds x 3 shift scenarios, 180-s and 120-s
    #: phases), mean whole-run margin of online over static tailwise +0.038 / +0.003 at
    #: 0.99, +0.073 / +0.051 at 0.95, +0.065 / +0.070 at 0.9 (+0.070 at 0.8, 180-s)
    settle_quantile: float = 0.9
    #: the settled span ends at most this many engine seconds before the engine clock
    max_settle_lag_s: float = 600.0
    #: light traffic: a window with fewer than ``min_requests`` grows back in time, one
    #: ``trial_window_s`` at a time, up to this many trial windows, so a quiet period
    #: still gets rounds (1, the default = never grow: such rounds are skipped as
    #: too_few_requests; on the shift scenarios 3 let phase 1 publish in 4 of 10 runs but
    #: cost slo-flip's whole-run objective, see README "Online learning")
    max_span_factor: int = 1
    #: replay the backlog too: requests still in the engine when the window starts are
    #: replayed from its start (``TelemetryWindow.trace(carry_in=True)``)
    carry_in: bool = True
    #: replay the requests not finished yet too, their output lengths drawn from the
    #: latest finished ones that outlived them, of similar prompt length
    #: (``TelemetryWindow.trace(impute=True)``, ``impute_outputs``); they count toward
    #: ``min_requests``. Unfinished requests older than ``max_settle_lag_s`` are taken for
    #: lost and left out (with a settled span, measured from the engine clock, not from the
    #: span's end). Meant with ``settle_quantile = 0`` (the latest span, no lag);
    #: off by default: measured no better on the whole (README "Online learning")
    impute_unfinished: bool = False


#: how the loop scores candidates: on a replay of the telemetry window, or live
LOOP_MODES = ("replay", "live")


@dataclass(frozen=True, slots=True)
class LoopConfig:
    enabled: bool = True
    #: "replay" (tune on a simulator replay of the settled window each round) or "live"
    #: (serve one Optuna trial per round and score it from the engine's measured metrics;
    #: see :mod:`tailwise.learner.live`)
    mode: str = "replay"
    #: engine seconds between tuning rounds (None → the trial window)
    round_every_s: float | None = None
    #: Optuna trials per round
    n_trials: int = 8
    #: a partition refresh triggers an extra round as soon as the window allows one
    tune_on_partition_change: bool = True
    #: wall seconds the loop waits for new telemetry before re-checking stop/state
    idle_wait_s: float = 0.5
    #: a promoted policy is not published (outcome ``stale_window``) when river's ADWIN,
    #: fed ``drift_features`` of the replayed window's arrivals and then of every arrival
    #: since, fires on the later ones: the traffic moved on while the window settled,
    #: and a policy tuned for the old traffic is not pushed onto the new (the next round
    #: tunes on it)
    stale_check: bool = True
    #: a policy the loop published is trusted only for the traffic it was tuned on: when
    #: river's ADWIN, fed ``drift_features`` of that policy's tuning window's arrivals and
    #: then of every arrival since (each learned once, as it is reported), has fired, the
    #: next round that tunes starts from the tuner's base policy (the sidecar's initial
    #: policy when it started without a persisted one, else the policy in force when it
    #: started) and publishes it unless it promotes a winner over it.
    #: A window cannot show how a tuned policy does in a regime it did not contain (a
    #: calm window's draw switched tail protection off, and it ruled the overload after
    #: it). Replay mode only; watches the last policy this process published (not
    #: persisted across a restart); skipped while promotion is paused
    fallback_on_drift: bool = True
    #: what the two checks above feed ADWIN, per arrival (both known at arrival):
    #: ``prompt`` (prompt tokens) and ``gap`` (milliseconds since the previous arrival, i.e.
    #: the arrival rate). Adding ``gap`` (README "Online learning",
    #: ``benchmarks/online_targets.py --drift-features prompt,gap``) cut the worst run's
    #: loss to static tailwise but also replaced tuned policies that were right after a
    #: load shift: mean whole-run margin +0.074 -> +0.045 and +0.085 -> +0.089
    drift_features: tuple[str, ...] = ("prompt",)
    #: CPU bound of tuning, so replays do not slow an engine on the same host: the loop
    #: thread (and every thread it starts) runs at this many nice levels below the
    #: sidecar's gRPC threads (0-19; Linux niceness is per thread) ...
    nice: int = 10
    #: ... and numeric libraries (BLAS/OpenMP via threadpoolctl, torch) use at most this
    #: many worker threads while it tunes
    threads: int = 1

    def __post_init__(self) -> None:
        if self.mode not in LOOP_MODES:
            raise ConfigError(f"loop.mode: must be one of {list(LOOP_MODES)}, got {self.mode!r}")
        feats = self.drift_features
        if isinstance(feats, str) or not isinstance(feats, list | tuple) or not feats \
                or len(set(feats)) != len(feats) \
                or any(f not in ARRIVAL_FEATURES for f in feats):
            raise ConfigError(f"loop.drift_features: must be distinct names from "
                              f"{list(ARRIVAL_FEATURES)}, at least one, got {feats!r}")
        object.__setattr__(self, "drift_features", tuple(feats))


@dataclass(frozen=True, slots=True)
class HintsConfig:
    """Router hints (GET /v1/hints and the HintService gRPC method)."""

    host: str = "127.0.0.1"
    #: HTTP/JSON hints port; 0 picks a free one, -1 (default) disables the HTTP endpoint
    #: (the gRPC HintService is always on)
    port: int = -1
    #: the replica's KV blocks (vLLM num_gpu_blocks) and step token budget
    #: (max_num_batched_tokens), used to express hints in blocks and engine-seconds
    kv_total_blocks: int = 28_600
    step_budget: int = 8192
    max_engines: int = 64

    def __post_init__(self) -> None:
        if not -1 <= self.port <= 65535:
            raise ConfigError(f"hints.port: must be in [-1, 65535], got {self.port}")
        for name in ("kv_total_blocks", "step_budget", "max_engines"):
            if getattr(self, name) < 1:
                raise ConfigError(f"hints.{name}: must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class SidecarConfig:
    listen: str = "127.0.0.1:50051"
    metrics_host: str = "127.0.0.1"
    #: Prometheus HTTP port; 0 picks a free one, -1 disables the endpoint
    metrics_port: int = 9464
    state_dir: Path = Path("tailwise-state")
    #: Optuna storage: a JournalStorage file path or an RDB URL; None → state_dir/study.journal
    storage: str | None = None
    study: str = "tailwise"
    token: str | None = field(default=None, repr=False)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: allow a non-local bind without TLS or token
    insecure: bool = False
    #: the first version a fresh sidecar publishes: a frozen policy file, or a policy name
    #: (``tailwise``, ``ewsjf``, ``uniboost``, ``kairos``, ``fcfs``, ... at its defaults).
    #: Set it to what the adapters are configured with (their ``mode``/``policy_file``):
    #: the adapters adopt what the sidecar publishes. Default: ``tailwise``, the adapter's
    #: default mode — never a silent FCFS. A restarted sidecar resumes its persisted policy.
    initial_policy: str = "tailwise"
    max_message_bytes: int = 4 * 1024 * 1024
    #: gRPC worker threads; every open Subscribe/Report stream holds one for its lifetime,
    #: so size it above 2 × (engines served) plus room for admin/health calls
    max_workers: int = 128
    #: further RPCs get RESOURCE_EXHAUSTED at once instead of queueing behind streams
    max_concurrent_rpcs: int = 120
    keepalive_time_s: float = 30.0
    keepalive_timeout_s: float = 10.0
    #: Subscribe streams end after this many wall seconds (their deadline); clients resume
    stream_max_age_s: float = 3600.0
    #: telemetry batches buffered between the RPC threads and the ingest thread
    ingest_buffer_batches: int = 2048
    window: WindowConfig = WindowConfig()
    loop: LoopConfig = LoopConfig()
    #: passed to ``tailwise.bayes_opt.tuner.TunerConfig`` as keyword arguments
    tuner: dict[str, Any] = field(default_factory=dict)
    #: testing hook: SetPolicy(unchecked=True) may publish an unvalidated policy
    testing_allow_unchecked_push: bool = False
    hints: HintsConfig = HintsConfig()

    @property
    def storage_url(self) -> str:
        return self.storage or str(self.state_dir / "study.journal")

    def validate(self) -> None:
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(f"listen: expected HOST:PORT, got {self.listen!r}")
        if not -1 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port: must be in [-1, 65535], got {self.metrics_port}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert/tls_key: give both or neither")
        for name in ("max_message_bytes", "max_workers", "max_concurrent_rpcs",
                     "ingest_buffer_batches"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("keepalive_time_s", "keepalive_timeout_s", "stream_max_age_s"):
            v = getattr(self, name)
            if not math.isfinite(v) or v <= 0:
                raise ConfigError(f"{name}: must be a positive number, got {v}")
        w = self.window
        if not math.isfinite(w.trial_window_s) or w.trial_window_s <= 0:
            raise ConfigError(f"window.trial_window_s: must be > 0, got {w.trial_window_s}")
        for name in ("max_requests", "max_pending", "min_requests"):
            if getattr(w, name) < 1:
                raise ConfigError(f"window.{name}: must be >= 1, got {getattr(w, name)}")
        if not 0.0 <= w.settle_quantile < 1.0:  # False for NaN
            raise ConfigError(f"window.settle_quantile: must be in [0, 1), got "
                              f"{w.settle_quantile}")
        if isinstance(w.max_span_factor, bool) or not isinstance(w.max_span_factor, int) \
                or w.max_span_factor < 1:
            raise ConfigError(f"window.max_span_factor: must be an integer >= 1, got "
                              f"{w.max_span_factor!r}")
        if not w.max_settle_lag_s > 0:
            raise ConfigError(f"window.max_settle_lag_s: must be > 0, got {w.max_settle_lag_s}")
        lp = self.loop
        if lp.round_every_s is not None and not (
            math.isfinite(lp.round_every_s) and lp.round_every_s > 0
        ):
            raise ConfigError(f"loop.round_every_s: must be > 0, got {lp.round_every_s}")
        if lp.n_trials < 1:
            raise ConfigError(f"loop.n_trials: must be >= 1, got {lp.n_trials}")
        if not 0 <= lp.nice <= 19:
            raise ConfigError(f"loop.nice: must be in [0, 19], got {lp.nice}")
        if lp.threads < 1:
            raise ConfigError(f"loop.threads: must be >= 1, got {lp.threads}")
        if not self.initial_policy.strip():
            raise ConfigError("initial_policy: must be a policy file or a policy name")
        self._validate_tuner()
        if self.token is not None and not self.token.strip():
            raise ConfigError("token: must not be empty")


    def _validate_tuner(self) -> None:
        """Refuse a bad ``[tuner.objective]`` table (weights included) at start, naming
        the field, instead of when the first round builds the tuner. (Only the objective:
        the rest of ``TunerConfig`` would import Optuna, which a sidecar without a loop
        never needs.)"""
        from tailwise.bayes_opt.objective import ObjectiveConfig, ObjectiveError

        obj = self.tuner.get("objective")
        if obj is None:
            return
        if not isinstance(obj, dict):
            raise ConfigError("tuner.objective: must be a table")
        try:
            ObjectiveConfig(**obj)
        except ObjectiveError as exc:
            raise ConfigError(f"tuner.{exc}") from None
        except TypeError as exc:
            raise ConfigError(f"tuner.objective: {exc}") from None


def load_config_file(path: Path) -> dict[str, Any]:
    """Raw mapping from a ``.toml`` or ``.json`` file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a table/object")
    return data


def config_from_mapping(data: dict[str, Any], base: SidecarConfig | None = None) -> SidecarConfig:
    """Apply ``data`` (file contents, then flags) over ``base`` and validate."""
    cfg = _apply(base or SidecarConfig(), data, "")
    assert isinstance(cfg, SidecarConfig)
    cfg.validate()
    return cfg


def _apply(obj: Any, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    changes: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{path}: unknown key")
        tp = hints[key]
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: must be a table")
            changes[key] = _apply(current, value, f"{path}.")
        else:
            changes[key] = _coerce(tp, value, path)
    return dataclasses.replace(obj, **changes)


def _coerce(tp: Any, value: Any, path: str) -> Any:
    args = typing.get_args(tp)
    if type(None) in args:
        if value is None:
            return None
        tp = next(a for a in args if a is not type(None))
    origin = typing.get_origin(tp)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: must be a table")
        return dict(value)
    if origin is tuple and typing.get_args(tp)[1:] == (Ellipsis,) \
            and typing.get_args(tp)[0] is str:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}: must be a list of strings, got {value!r}")
        return tuple(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: must be a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, str | Path):
            raise ConfigError(f"{path}: must be a path string, got {value!r}")
        return Path(value)
    raise ConfigError(f"{path}: unsupported type {tp!r}")  # pragma: no cover

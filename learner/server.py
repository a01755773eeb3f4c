"""The sidecar process: gRPC server + ingest thread + learning loop + metrics endpoint.

:class:`Sidecar` wires the pieces and owns their lifecycle; :func:`run_sidecar` is the
blocking entry point used by ``tailwise sidecar``. On start it prints one JSON line to
stdout (``{"event": "listening", "address": ..., "port": ..., "metrics_port": ...}``)
so a supervisor or test learns the bound ports when it asked for port 0.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tailwise.learner.config import ConfigError, SidecarConfig
from tailwise.learner.hints import HintBook, HintHttpServer, HintServicer
from tailwise.learner.ingest import TelemetryIngest
from tailwise.learner.loop import LearningLoop, PartitionerFactory, TunerFactory, TunerLike
from tailwise.learner.metrics import SidecarMetrics
from tailwise.learner.policy_service import PolicyServicer
from tailwise.learner.publisher import PolicyStore
from tailwise.learner.security import (
    TokenInterceptor,
    check_bind,
    is_loopback,
    server_credentials,
    split_host_port,
)
from tailwise.learner.state import StateFile
from tailwise.learner.status import StatusReporter
from tailwise.learner.window import TelemetryWindow
from tailwise.scorer.frozen import FrozenPolicyError
from tailwise.scorer.policy import EwsjfParams, Policy
from tailwise.wire import rpc
from tailwise.wire.policy_file import load as load_frozen

log = logging.getLogger(__name__)


def server_options(cfg: SidecarConfig) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", cfg.max_message_bytes),
        ("grpc.max_send_message_length", cfg.max_message_bytes),
        ("grpc.keepalive_time_ms", int(cfg.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(cfg.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        # accept client keepalive pings every >= 10 s (our clients ping every 30 s)
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        # a second sidecar on the same port must fail, not share it
        ("grpc.so_reuseport", 0),
    ]


def default_tuner_factory(cfg: SidecarConfig) -> TunerFactory:
    """Build ``tailwise.bayes_opt.tuner.Tuner`` lazily (imported on the first round)."""

    def make(base: Policy) -> TunerLike:
        from tailwise.bayes_opt.tuner import Tuner, TunerConfig

        kwargs: dict[str, Any] = {"storage": cfg.storage_url, "study_name": cfg.study}
        kwargs.update(_nested_config(TunerConfig, cfg.tuner))
        tuner: TunerLike = Tuner(TunerConfig(**kwargs), base)
        return tuner

    return make


def _nested_config(cls: Any, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with sub-tables turned into the dataclass of the matching field
    (``[tuner.objective]`` → ``ObjectiveConfig(**...)``)."""
    out: dict[str, Any] = {}
    fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    for key, value in values.items():
        f = fields.get(key)
        if isinstance(value, dict) and f is not None:
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            if dataclasses.is_dataclass(default) and not isinstance(default, type):
                value = dataclasses.replace(default, **_nested_config(type(default), value))
        out[key] = value
    return out


def default_partitioner_factory() -> PartitionerFactory | None:
    """``tailwise.partitioner.refine_prune.RefinePrune`` when it is installed, else None."""
    try:
        from tailwise.partitioner.refine_prune import RefinePrune
    except ImportError:
        log.warning("tailwise.partitioner.refine_prune is not available; partition refresh disabled")
        return None

    def make(params: EwsjfParams) -> Any:
        return RefinePrune(params)

    return make


def resolve_initial_policy(cfg: SidecarConfig) -> Policy:
    """``cfg.initial_policy``: an existing frozen file, else a policy name at its defaults
    (with the tuner's step-time model when the config gives one)."""
    from tailwise.scorer.registry import POLICY_NAMES, default_policy
    from tailwise.scorer.step_time import H100_LLAMA3_8B, StepTimeModel, StepTimeModelError

    spec = cfg.initial_policy
    path = Path(spec)
    if path.is_file():
        try:
            return load_frozen(path)
        except FrozenPolicyError as exc:
            raise ConfigError(f"initial_policy: {exc}") from exc
    model = H100_LLAMA3_8B
    raw = cfg.tuner.get("model")
    if isinstance(raw, dict):
        try:
            model = StepTimeModel.from_dict(dict(raw))
        except StepTimeModelError as exc:
            raise ConfigError(f"tuner.model: {exc}") from None
    name = {"boost": "uniboost"}.get(spec, spec)
    policy = default_policy(name, model)
    if policy is None:
        choices = [n for n in POLICY_NAMES if default_policy(n) is not None]
        raise ConfigError(f"initial_policy: {spec!r} is neither a policy file nor a policy "
                          f"name (one of {', '.join(choices)})")
    return policy


class Sidecar:
    """One sidecar instance (in-process: tests and benchmarks build it directly)."""

    def __init__(self, cfg: SidecarConfig, *, tuner_factory: TunerFactory | None = None,
                 partitioner_factory: PartitionerFactory | None = None,
                 use_default_learners: bool = True) -> None:
        cfg.validate()
        check_bind(cfg)
        self.cfg = cfg
        self.metrics = SidecarMetrics()
        self.state = StateFile(cfg.state_dir)
        initial = resolve_initial_policy(cfg)
        log.info("initial policy (published if no persisted one): mode=%s source=%s",
                 initial.mode.value, initial.source.value)
        self.store = PolicyStore(self.state, self.metrics, initial)
        m = self.metrics
        self.window = TelemetryWindow(
            cfg.window.max_requests, cfg.window.max_pending,
            on_reject=lambda reason, n: m.events_rejected.labels(reason).inc(n),
            on_evict=lambda what, n: m.window_evicted.labels(what).inc(n),
            step_counts=cfg.window.impute_unfinished)
        self.ingest = TelemetryIngest(self.window, self.metrics, cfg.ingest_buffer_batches)
        self.hints = HintBook(kv_total_blocks=cfg.hints.kv_total_blocks,
                              step_budget=cfg.hints.step_budget,
                              max_engines=cfg.hints.max_engines)
        self.ingest.hints = self.hints
        self.hints_http: HintHttpServer | None = None
        self.hints_port: int | None = None
        self.policy_service = PolicyServicer(
            self.store, self.metrics, stream_max_age_s=cfg.stream_max_age_s,
            allow_unchecked=cfg.testing_allow_unchecked_push)
        if use_default_learners:
            tuner_factory = tuner_factory or default_tuner_factory(cfg)
            partitioner_factory = partitioner_factory or default_partitioner_factory()
        self.loop = LearningLoop(
            self.window, self.store, self.state, self.metrics, loop_cfg=cfg.loop,
            window_cfg=cfg.window, tuner_factory=tuner_factory,
            partitioner_factory=partitioner_factory)
        self.status = StatusReporter(self.loop, self.window, self.ingest, self.store)
        self.policy_service.status = self.status.status
        self.health = health.HealthServicer()
        self._server: Any = None
        self.port = 0
        self.metrics_port: int | None = None
        self._stopped = threading.Event()
        self._done = threading.Event()

    def _policy_in_force(self) -> Policy | None:
        return self.store.current().policy

    @property
    def address(self) -> str:
        host, _ = split_host_port(self.cfg.listen)
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def start(self) -> Sidecar:
        cfg = self.cfg
        interceptors = []
        if cfg.token:
            interceptors.append(TokenInterceptor(cfg.token, self.metrics.auth_failures.inc))
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=cfg.max_workers,
                                       thread_name_prefix="tailwise-rpc"),
            interceptors=interceptors, options=server_options(cfg),
            maximum_concurrent_rpcs=cfg.max_concurrent_rpcs)
        rpc.add_policy_service(self.policy_service, server)
        rpc.add_telemetry_service(self.ingest, server)
        rpc.add_hint_service(HintServicer(self.hints, self._policy_in_force), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (*rpc.SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            port = server.add_secure_port(cfg.listen, server_credentials(cfg.tls_cert,
                                                                         cfg.tls_key))
        else:
            port = server.add_insecure_port(cfg.listen)
        if not port:
            raise ConfigError(f"listen: could not bind {cfg.listen}")
        self.port = int(port)
        self.ingest.start()
        server.start()
        self._server = server
        for name in ("", *rpc.SERVICE_NAMES):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if cfg.metrics_port >= 0:
            self.metrics_port = self.metrics.serve(cfg.metrics_host, cfg.metrics_port)
        if cfg.hints.port >= 0:
            if not is_loopback(cfg.hints.host) and cfg.token is None and not cfg.insecure:
                raise ConfigError(f"hints.host: refusing to serve hints on non-local "
                                  f"{cfg.hints.host!r} without a token; pass --insecure")
            self.hints_http = HintHttpServer(self.hints, self._policy_in_force, cfg.hints.host,
                                             cfg.hints.port, cfg.token).start()
            self.hints_port = self.hints_http.port
        self.loop.start()
        log.info("sidecar listening on %s (policy version %d)", self.address,
                 self.store.current().version)
        return self

    def stop(self, grace: float = 2.0) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        self.loop.stop()
        if self._server is not None:
            self.store.kick()
            self._server.stop(grace).wait(grace + 1.0)
        self.ingest.stop()
        if self.hints_http is not None:
            self.hints_http.stop()
        self.metrics.close()
        self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`stop` has finished."""
        return self._done.wait(timeout)

    def __enter__(self) -> Sidecar:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_sidecar(cfg: SidecarConfig) -> int:
    """Run until SIGINT/SIGTERM; prints the ready line; returns an exit status."""
    sidecar = Sidecar(cfg).start()
    ready = {"event": "listening", "address": sidecar.address, "port": sidecar.port,
             "metrics_port": sidecar.metrics_port, "hints_port": sidecar.hints_port,
             "policy_version": sidecar.store.current().version,
             "state_dir": str(cfg.state_dir), "storage": cfg.storage_url}
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: shutting down", signum)
        threading.Thread(target=sidecar.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    sidecar.wait()
    return 0

"""From a :class:`~tailwise.engine_adapter.config.TailwiseConfig` to a PolicySource and a TelemetrySink.

No sidecar: a :class:`~tailwise.scorer.hooks.StaticPolicySource` over the startup policy and a
:class:`~tailwise.scorer.hooks.NullSink`. With a sidecar, the gRPC client and emitter are looked up
lazily by name, so this module (and the scheduler) import without gRPC code:

* ``tailwise.engine_adapter.policy_client.connect(address, *, token, tls_ca, frozen_file)``
  returns a started ``PolicySource`` at once (it subscribes on its own thread and
  answers ``current()`` from memory: the frozen file or FCFS until the first push, the
  last good policy when the sidecar is gone). When the startup policy comes from
  ``mode`` instead of a file, it stands in for the client's FCFS until the first push.
* ``tailwise.engine_adapter.telemetry.connect(address, *, token, tls_ca)`` returns a started,
  bounded, non-blocking ``TelemetrySink`` (``TelemetryEmitter(...).start()`` is used
  when the module has no ``connect``).

Nothing here touches vLLM.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

from tailwise.engine_adapter.config import ConfigError, TailwiseConfig
from tailwise.scorer.hooks import NullSink, PolicySource, StaticPolicySource, TelemetrySink
from tailwise.scorer.policy import Mode, Policy, Source


def _module(name: str, key: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ConfigError(key, f"a sidecar is configured but {name} cannot be imported ({exc})") from exc


def _connect(mod: ModuleType, key: str) -> Callable[..., Any]:
    connect = getattr(mod, "connect", None)
    if not callable(connect):
        name = getattr(mod, "__name__", "the client module")
        raise ConfigError(key, f"a sidecar is configured but {name}.connect() does not exist")
    return connect  # type: ignore[no-any-return]


class StartupFallback:
    """The sidecar client's policy, except that its built-in FCFS placeholder (version 0,
    source baseline: nothing received yet) is replaced by the configured startup policy."""

    def __init__(self, client: PolicySource, startup: Policy) -> None:
        self.client = client
        self.startup = startup

    def current(self) -> Policy:
        p = self.client.current()
        if p.version == 0 and p.source is Source.BASELINE:
            return self.startup
        return p


def make_policy_source(cfg: TailwiseConfig, **client_kwargs: Any) -> PolicySource:
    """The policy source ``cfg`` describes (validates the startup policy either way);
    ``client_kwargs`` go to the sidecar client's ``connect`` (e.g. ``on_count``)."""
    startup = cfg.startup_policy()
    if cfg.sidecar is None:
        return StaticPolicySource(startup)
    connect = _connect(_module("tailwise.engine_adapter.policy_client", "sidecar"), "sidecar")
    source = connect(
        cfg.sidecar,
        token=cfg.sidecar_token,
        tls_ca=cfg.sidecar_tls_ca,
        frozen_file=cfg.policy_file,
        **client_kwargs,
    )
    if not isinstance(source, PolicySource):
        raise ConfigError("sidecar", "policy_client.connect() did not return a PolicySource")
    if cfg.policy_file is None and startup.mode is not Mode.FCFS:
        return StartupFallback(source, startup)
    return source


def make_telemetry_sink(cfg: TailwiseConfig) -> TelemetrySink:
    """The telemetry sink ``cfg`` describes (a NullSink when telemetry is off)."""
    if not cfg.telemetry or cfg.sidecar is None:
        return NullSink()
    mod = _module("tailwise.engine_adapter.telemetry", "telemetry")
    if hasattr(mod, "connect") or not hasattr(mod, "TelemetryEmitter"):
        sink = _connect(mod, "telemetry")(cfg.sidecar, token=cfg.sidecar_token,
                                          tls_ca=cfg.sidecar_tls_ca)
    else:
        sink = mod.TelemetryEmitter(cfg.sidecar, token=cfg.sidecar_token, tls_ca=cfg.sidecar_tls_ca)
        sink = sink.start() if hasattr(sink, "start") else sink
    if not isinstance(sink, TelemetrySink):
        raise ConfigError("telemetry", "telemetry.connect() did not return a TelemetrySink")
    return sink

"""From a :class:`~engine_adapter.config.TailwiseConfig` to a PolicySource and a TelemetrySink.

No sidecar: a :class:`~scorer.hooks.StaticPolicySource` over the startup policy and a
:class:`~scorer.hooks.NullSink`. With a sidecar, the gRPC client and emitter are looked up
lazily by name so that this module (and the scheduler) import without gRPC code:

* ``engine_adapter.policy_client.connect(address: str, *, initial: Policy) -> PolicySource``
  — returns at once; connects, subscribes and swaps policies on its own thread, and
  answers ``current()`` from memory (``initial`` until the first valid push; the last
  good policy when the sidecar is gone).
* ``engine_adapter.telemetry.connect(address: str) -> TelemetrySink`` — returns at once;
  a bounded, non-blocking emitter.

Nothing here touches vLLM.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from engine_adapter.config import ConfigError, TailwiseConfig
from scorer.hooks import NullSink, PolicySource, StaticPolicySource, TelemetrySink
from scorer.policy import Policy


def _factory(module: str, key: str) -> Callable[..., Any]:
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            key, f"a sidecar is configured but {module} cannot be imported ({exc})"
        ) from exc
    connect = getattr(mod, "connect", None)
    if not callable(connect):
        raise ConfigError(key, f"a sidecar is configured but {module}.connect() does not exist")
    return connect  # type: ignore[no-any-return]


def make_policy_source(cfg: TailwiseConfig, initial: Policy | None = None) -> PolicySource:
    """The policy source ``cfg`` describes; ``initial`` defaults to the startup policy."""
    policy = initial if initial is not None else cfg.startup_policy()
    if cfg.sidecar is None:
        return StaticPolicySource(policy)
    source = _factory("engine_adapter.policy_client", "sidecar")(cfg.sidecar, initial=policy)
    if not isinstance(source, PolicySource):
        raise ConfigError("sidecar", "policy_client.connect() did not return a PolicySource")
    return source


def make_telemetry_sink(cfg: TailwiseConfig) -> TelemetrySink:
    """The telemetry sink ``cfg`` describes (a NullSink when telemetry is off)."""
    if not cfg.telemetry or cfg.sidecar is None:
        return NullSink()
    sink = _factory("engine_adapter.telemetry", "telemetry")(cfg.sidecar)
    if not isinstance(sink, TelemetrySink):
        raise ConfigError("telemetry", "telemetry.connect() did not return a TelemetrySink")
    return sink

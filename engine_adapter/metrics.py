"""The adapter's Prometheus series, named after vLLM's conventions (``vllm:`` prefix,
``model_name`` / ``engine`` labels, ``_seconds`` units), for vLLM's own ``/metrics``.

Where they show up: the scheduler runs in vLLM's engine-core process, while
``/metrics`` is served by the API-server process from prometheus-client's default
registry, or, when ``PROMETHEUS_MULTIPROC_DIR`` is set, from every process's
multiprocess files (vLLM sets it itself with ``--api-server-count`` > 1;
``tailwise-vllm`` sets it for every ``serve``). The series are registered on the default
registry, so with the multiprocess directory set they are served next to vLLM's own;
without it they stay in the engine process (the adapter logs this once at startup).

No vLLM import: the series are plain prometheus-client objects.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from tailwise.scorer.interface import Envelope

#: every series this module exports (as Prometheus exposes them; the dashboard test reads it)
EXPORTED = (
    "vllm:tailwise_policy_version",
    "vllm:tailwise_policy_active",
    "vllm:tailwise_policy_swaps_total",
    "vllm:tailwise_fallbacks_total",
    "vllm:tailwise_policy_nacks_total",
    "vllm:tailwise_policy_acks_total",
    "vllm:tailwise_sidecar_reconnects_total",
    "vllm:tailwise_sidecar_connected",
    "vllm:tailwise_decision_seconds_bucket",
    "vllm:tailwise_decision_seconds_sum",
    "vllm:tailwise_decision_seconds_count",
    "vllm:tailwise_waiting_envelope_seconds",
    "vllm:tailwise_oldest_wait_seconds",
    "vllm:tailwise_service_scale_seconds",
    "vllm:tailwise_fcfs_drain_seconds",
    "vllm:tailwise_demoted_waiting",
)

#: the envelope gauges are refreshed at most this often (engine seconds): a scrape every
#: few seconds needs no more, and each set writes a multiprocess file
ENVELOPE_EVERY_S = 1.0

#: decision-time buckets: the adapter's own work per schedule() is micro- to milliseconds
_BUCKETS = (2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1)

_LOCK = threading.Lock()
_SERIES: dict[int, _Series] = {}


def multiprocess_enabled() -> bool:
    """Whether prometheus-client writes multiprocess files (then the API server serves us)."""
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ or "prometheus_multiproc_dir" in os.environ


class _Series:
    """The metric families, created once per registry (prometheus refuses duplicates)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["model_name", "engine"]
        kw: dict[str, Any] = {"labelnames": labels, "registry": registry}
        self.policy_version = Gauge(
            "vllm:tailwise_policy_version", "tailwise policy version in force (0: startup policy)",
            multiprocess_mode="mostrecent", **kw)
        self.policy_active = Gauge(
            "vllm:tailwise_policy_active",
            "1 when a tailwise policy reorders vLLM's queues, 0 when stock vLLM order runs",
            multiprocess_mode="mostrecent", **kw)
        self.swaps = Counter("vllm:tailwise_policy_swaps", "Policies put in force after startup", **kw)
        self.fallbacks = Counter(
            "vllm:tailwise_fallbacks",
            "Times the adapter fell back (kept the last policy or ran stock vLLM), by reason",
            labelnames=[*labels, "reason"], registry=registry)
        self.nacks = Counter("vllm:tailwise_policy_nacks", "Policy versions refused (NACK)", **kw)
        self.acks = Counter("vllm:tailwise_policy_acks", "Policy versions accepted (ACK)", **kw)
        self.reconnects = Counter(
            "vllm:tailwise_sidecar_reconnects", "Policy streams reopened to the sidecar", **kw)
        self.connected = Gauge(
            "vllm:tailwise_sidecar_connected", "1 while the policy stream to the sidecar is open",
            multiprocess_mode="mostrecent", **kw)
        self.decision = Histogram(
            "vllm:tailwise_decision_seconds",
            "Time the adapter adds to one schedule() call (policy read, ranking, bookkeeping)",
            buckets=_BUCKETS, **kw)
        # the waiting envelope (NaN while the policy in force has none, e.g. stock vLLM)
        self.envelope = Gauge(
            "vllm:tailwise_waiting_envelope_seconds",
            "Waiting bound in force: the oldest waiting request is served first once it has "
            "waited this long (tailwise's E)", multiprocess_mode="mostrecent", **kw)
        self.oldest_wait = Gauge(
            "vllm:tailwise_oldest_wait_seconds",
            "How long the longest-waiting request has waited, counted as the bound counts it: "
            "from its arrival (a preempted request that was not demoted keeps its arrival, "
            "so this includes the time it ran) or a demoted victim's preemption; 0 when "
            "nothing waits",
            multiprocess_mode="mostrecent", **kw)
        self.service_scale = Gauge(
            "vllm:tailwise_service_scale_seconds",
            "tailwise's measured service time T (the regime's scale_quantile of recent "
            "first-to-last-token times, re-queue waits left out)",
            multiprocess_mode="mostrecent", **kw)
        self.drain = Gauge(
            "vllm:tailwise_fcfs_drain_seconds",
            "tailwise's measured FCFS drain time D75 (upper quartile of the waits FCFS's own "
            "queue would impose)",
            multiprocess_mode="mostrecent", **kw)
        self.demoted = Gauge(
            "vllm:tailwise_demoted_waiting",
            "Preempted requests waiting behind the arrivals they made room for (tailwise)",
            multiprocess_mode="mostrecent", **kw)


class AdapterMetrics:
    """The series of one scheduler, bound to its ``model_name`` and ``engine`` labels."""

    def __init__(self, model_name: str, engine: str = "0",
                 registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else REGISTRY
        with _LOCK:
            series = _SERIES.get(id(registry))
            if series is None:
                series = _SERIES[id(registry)] = _Series(registry)
        labels = {"model_name": model_name, "engine": engine}
        self._labels = labels
        self._series = series
        self.policy_version = series.policy_version.labels(**labels)
        self.policy_active = series.policy_active.labels(**labels)
        self.swaps = series.swaps.labels(**labels)
        self.nacks = series.nacks.labels(**labels)
        self.acks = series.acks.labels(**labels)
        self.reconnects = series.reconnects.labels(**labels)
        self.connected = series.connected.labels(**labels)
        self.decision = series.decision.labels(**labels)
        self._envelope = tuple(g.labels(**labels) for g in (
            series.envelope, series.oldest_wait, series.service_scale, series.drain,
            series.demoted))

    def observe_envelope(self, env: Envelope | None) -> None:
        """Set the envelope gauges from the policy in force (NaN where it has no such
        figure: no envelope, or a scale not yet measured)."""
        nan = float("nan")
        if env is None:
            values = (nan, nan, nan, nan, nan)
        else:
            values = (env.bound_s, env.oldest_wait_s or 0.0,
                      nan if env.service_scale_s is None else env.service_scale_s,
                      nan if env.drain_s is None else env.drain_s, float(env.demoted_waiting))
        for gauge, value in zip(self._envelope, values, strict=True):
            gauge.set(value)

    def fallback(self, reason: str) -> None:
        self._series.fallbacks.labels(reason=reason, **self._labels).inc()

    def on_client_count(self, changes: dict[str, Any]) -> None:
        """Mirror :class:`~tailwise.engine_adapter.policy_client.PolicyClient` counter changes."""
        if changes.get("nacked"):
            self.nacks.inc(changes["nacked"])
        if changes.get("acked"):
            self.acks.inc(changes["acked"])
        if changes.get("reconnects"):
            self.reconnects.inc(changes["reconnects"])
        if "connected" in changes:
            self.connected.set(1.0 if changes["connected"] else 0.0)

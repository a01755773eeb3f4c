"""Prometheus metrics of the sidecar (own registry, so tests can run several sidecars).

Everything that is skipped, dropped, NACKed, failed or retried has a counter here.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class SidecarMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events_ingested = Counter(
            "tailwise_events_ingested", "Telemetry events accepted into the window", registry=r)
        self.events_dropped = Counter(
            "tailwise_events_dropped",
            "Telemetry events dropped: ingest buffer full (sidecar) or emitter queue full "
            "(as reported by the engine)", ["where"], registry=r)
        self.events_rejected = Counter(
            "tailwise_events_rejected", "Malformed telemetry events skipped", ["reason"],
            registry=r)
        self.window_evicted = Counter(
            "tailwise_window_evicted", "Requests evicted from the telemetry window by its bounds",
            ["what"], registry=r)
        self.batches = Counter("tailwise_telemetry_batches", "Telemetry batches received",
                               registry=r)
        self.policies_pushed = Counter(
            "tailwise_policies_pushed", "PolicyUpdates sent to adapters", registry=r)
        self.policies_acked = Counter("tailwise_policies_acked", "ACKs received", registry=r)
        self.policies_nacked = Counter("tailwise_policies_nacked", "NACKs received", registry=r)
        self.policies_published = Counter(
            "tailwise_policies_published", "Policy versions published", ["source"], registry=r)
        self.policies_rejected = Counter(
            "tailwise_policies_rejected",
            "Promoted policies refused before publishing (invalid or non-finite objective)",
            registry=r)
        self.stale_acks = Counter(
            "tailwise_stale_acks", "ACK/NACKs with an unknown nonce (ignored)", registry=r)
        self.auth_failures = Counter(
            "tailwise_auth_failures", "Calls refused for a missing/wrong token", registry=r)
        self.trials = Gauge(
            "tailwise_trials", "Trials in the Optuna study by state", ["state"], registry=r)
        self.best_objective = Gauge(
            "tailwise_best_objective", "Best objective value in the study (NaN: none yet)",
            registry=r)
        self.best_objective.set(math.nan)
        self.rounds = Counter("tailwise_tuning_rounds", "Tuning rounds by outcome", ["outcome"],
                              registry=r)
        self.partition_refreshes = Counter(
            "tailwise_partition_refreshes", "Partition refreshes that changed the partition",
            registry=r)
        self.drift = Gauge("tailwise_workload_drift", "Last workload drift reported by the tuner",
                           registry=r)
        self.connected_adapters = Gauge(
            "tailwise_connected_adapters", "Open Subscribe streams", registry=r)
        self.telemetry_streams = Gauge(
            "tailwise_telemetry_streams", "Open Report streams", registry=r)
        self.policy_version = Gauge(
            "tailwise_policy_version", "Version of the policy in force", registry=r)
        self.promotion_paused = Gauge(
            "tailwise_promotion_paused", "1 after the kill switch or a manual policy", registry=r)
        self.engine_time = Gauge(
            "tailwise_engine_time_seconds", "Latest engine timestamp seen in telemetry",
            registry=r)
        self.window_requests = Gauge(
            "tailwise_window_requests",
            "Requests in the telemetry window a round replays (finished ones; unfinished "
            "ones too with window.impute_unfinished)", registry=r)
        self.loop_errors = Counter(
            "tailwise_loop_errors", "Exceptions caught in the learning loop", ["stage"],
            registry=r)
        self._http: Any = None
        self._http_thread: threading.Thread | None = None

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP endpoint; returns the bound port."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self._http, self._http_thread = server, thread
        return int(server.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

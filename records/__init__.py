"""The shared data model: traces, per-request records and the metrics summary.

Simulator, sidecar and tuner all speak it; it imports nothing of ours and no engine, so
the sidecar scores live telemetry without building simulator objects.
"""

from tailwise.records.requests import RequestRecords
from tailwise.records.summary import (
    Dist,
    EngineStats,
    GroupSummary,
    MetricsConfig,
    PerRequest,
    Summary,
    dist,
    per_request,
    summarize,
)
from tailwise.records.trace import Trace, TraceError

__all__ = ["Dist", "EngineStats", "GroupSummary", "MetricsConfig", "PerRequest",
           "RequestRecords", "Summary", "Trace", "TraceError", "dist", "per_request",
           "summarize"]

"""The sidecar: gRPC server, telemetry ingest, background learning loops, metrics."""

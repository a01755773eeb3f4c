"""Hypothesis settings for fuzz tests against real processes (deterministic, no database,
no per-example deadline: a round trip to a sidecar is not a unit of pure code)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings


def fuzz_settings(max_examples: int) -> settings:
    return settings(max_examples=max_examples, deadline=None, derandomize=True,
                    database=None, suppress_health_check=[HealthCheck.too_slow,
                                                          HealthCheck.function_scoped_fixture])

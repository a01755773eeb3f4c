"""The multi-phase shift scenarios: deterministic, phases in order at their own load, and
labelled so per-class metrics (and the SLO classes Kairos reads) exist."""

from __future__ import annotations

import numpy as np
import pytest

from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.scenarios import SCENARIOS, SHIFT_ENGINE, SHIFT_SCENARIOS, build, build_shift
from tailwise.simulator.workload import offered_load


@pytest.mark.parametrize("name", SHIFT_SCENARIOS)
def test_phases_are_ordered_labelled_and_at_their_load(name: str) -> None:
    s = build_shift(name, H100_LLAMA3_8B, requests=300, seed=3, phase_s=None)
    assert name in SCENARIOS and s.engine == SHIFT_ENGINE and len(s.phases) == 3
    starts = [p.start_s for p in s.phases]
    assert starts == sorted(starts) and starts[0] == 0.0 and s.shift_s == starts[1]
    assert np.all(np.diff(s.trace.arrival_s) >= 0)
    ph = s.phase_of(s.trace.arrival_s)
    assert np.bincount(ph).tolist() == [300, 300, 300]
    assert s.trace.classes is not None and all(s.trace.classes)
    for i, p in enumerate(s.phases):
        part = s.trace.select(np.flatnonzero(ph == i))
        assert offered_load(part, SHIFT_ENGINE, H100_LLAMA3_8B) == pytest.approx(
            p.target_load, rel=0.15)
    if s.trace.slo_classes is not None:
        tagged = {c for c in s.trace.slo_classes if c}
        assert tagged <= set(s.metrics.slo_classes)


@pytest.mark.parametrize("name", SHIFT_SCENARIOS)
def test_deterministic_per_seed(name: str) -> None:
    a = build(name, SHIFT_ENGINE, H100_LLAMA3_8B, requests=200, seed=1)
    b = build(name, SHIFT_ENGINE, H100_LLAMA3_8B, requests=200, seed=1)
    c = build(name, SHIFT_ENGINE, H100_LLAMA3_8B, requests=200, seed=2)
    assert np.array_equal(a.trace.arrival_s, b.trace.arrival_s)
    assert np.array_equal(a.trace.output_tokens, b.trace.output_tokens)
    assert not np.array_equal(a.trace.output_tokens, c.trace.output_tokens)


@pytest.mark.parametrize("name", SHIFT_SCENARIOS)
def test_phases_of_equal_length(name: str) -> None:
    s = build_shift(name, H100_LLAMA3_8B, requests=200, seed=0, phase_s=120.0)
    starts = [p.start_s for p in s.phases] + [float(s.trace.arrival_s[-1])]
    lengths = np.diff(starts)
    assert np.all(lengths <= 121.0) and np.all(lengths >= 100.0)

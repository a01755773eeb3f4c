"""``benchmarks/online_targets.py``: ``--engine-knobs`` runs the shift scenarios on another
engine, and a bad knob is a one-line error naming it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from support.bench import BENCH, load_benchmark


def test_engine_knobs_parse_whole_numbers_of_known_fields() -> None:
    mod = load_benchmark("online_targets")
    assert mod.engine_knobs("") == {}
    assert mod.engine_knobs("max_num_batched_tokens=2048, max_num_seqs=64") == {
        "max_num_batched_tokens": 2048, "max_num_seqs": 64}
    with pytest.raises(ValueError, match="unknown engine knob 'block_size'"):
        mod.engine_knobs("block_size=32")
    with pytest.raises(ValueError, match="given twice"):
        mod.engine_knobs("max_num_seqs=64,max_num_seqs=32")
    with pytest.raises(ValueError, match=r"max_num_seqs must be a whole number, got '2\.5'"):
        mod.engine_knobs("max_num_seqs=2.5")


@pytest.mark.parametrize(("spec", "message"), [
    ("max_num_seqs=0", "--engine-knobs: max_num_seqs must be >= 1"),
    ("max_num_batched_tokens=100", "must be >= max_num_seqs (256)"),
])
def test_a_bad_engine_is_refused_before_anything_runs(spec: str, message: str) -> None:
    res = subprocess.run([sys.executable, str(BENCH / "online_targets.py"), "--engine-knobs",
                          spec], capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    last = res.stderr.strip().splitlines()[-1]
    assert message in last and "Traceback" not in res.stderr


def test_the_trace_scenario_runs_on_the_given_engine() -> None:
    mod = load_benchmark("online_targets")
    from tailwise.simulator.engine import EngineConfig

    small = EngineConfig(num_gpu_blocks=6000, max_num_batched_tokens=2048)
    a = mod.trace_scenario("azure-code", 100, 0.9, small)
    b = mod.trace_scenario("azure-code", 100, 0.9)
    assert a.engine == small and b.engine == mod.SHIFT_ENGINE
    # the load is set against each engine: the same requests at another rate
    assert a.trace.duration_s != b.trace.duration_s

"""Step-time models: values worked by hand from DESIGN.md's formulas, and the clock."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tailwise.scorer.baselines import Fcfs
from tailwise.scorer.hooks import NullSink, StepStats
from tailwise.scorer.step_time import StepTimeModel, StepTimeModelError
from tailwise.simulator.engine import EngineConfig, simulate
from tailwise.simulator.step_models import bundled_models, load_step_model
from tailwise.simulator.workload import generate


def test_h100_values_by_hand() -> None:
    m = load_step_model("h100-llama3-8b")
    # prefill 8192 tokens: 3.77 + 0.01793*8192 + 7.33e-7*8192^2
    assert m.step_ms(8192, 0, 0) == pytest.approx(3.77 + 146.88256 + 49.190797312, rel=1e-9)
    # decode 256 requests with 332,800 context tokens: 6.36 + 2.94912 + 13.6448
    assert m.step_ms(0, 256, 332_800) == pytest.approx(22.95392, rel=1e-9)
    # mixed: prefill 1000 + decode 10 requests, 5000 context: fixed paid once
    assert m.step_ms(1000, 10, 5000) == pytest.approx(
        3.77 + 17.93 + 0.733 + 0.1152 + 0.205, rel=1e-9)
    assert m.step_ms(0, 0, 0) == 0.0


def test_a100_values_by_hand() -> None:
    m = load_step_model("a100-llama3-8b")
    assert m.step_ms(2048, 0, 0) == pytest.approx(6.96 + 113.27488 + 6.06076928, rel=1e-9)
    assert m.step_ms(0, 64, 64_000) == pytest.approx(11.65 + 1.9808 + 5.3696, rel=1e-9)


def test_models_are_data_files_with_provenance() -> None:
    assert {"h100-llama3-8b", "a100-llama3-8b"} <= set(bundled_models())
    for name in bundled_models():
        assert len(load_step_model(name).provenance) > 40


def test_user_model_file(tmp_path: Path) -> None:
    f = tmp_path / "mine.json"
    f.write_text(json.dumps({"name": "mine", "prefill_fixed_ms": 1, "prefill_per_token_ms": 0.1,
                             "prefill_quad_ms": 0, "decode_fixed_ms": 2, "decode_per_req_ms": 0.5,
                             "decode_per_ctx_ms": 0}))
    assert load_step_model(str(f)).step_ms(10, 0, 0) == pytest.approx(2.0)
    f.write_text(json.dumps({"name": "bad", "prefill_fixed_ms": -1}))
    with pytest.raises(StepTimeModelError, match="missing"):
        load_step_model(str(f))
    with pytest.raises(StepTimeModelError, match="no such file"):
        load_step_model(str(tmp_path / "nope.json"))
    with pytest.raises(StepTimeModelError, match="prefill_fixed_ms"):
        StepTimeModel("x", -1, 0, 0, 0, 0, 0)


class Recorder(NullSink):
    def __init__(self) -> None:
        self.steps: list[StepStats] = []

    def on_step(self, stats: StepStats) -> None:
        self.steps.append(stats)


def test_each_step_advances_the_clock_by_exactly_the_model_time() -> None:
    m = load_step_model("h100-llama3-8b")
    tr = generate(400, rate_rps=30.0, seed=3)
    rec = Recorder()
    res = simulate(tr, Fcfs(), EngineConfig(num_gpu_blocks=3000), m, sink=rec)
    prev = 0.0
    jumps = 0
    for s in rec.steps:
        if s.steps == 1:
            expect = m.step_s(s.prefill_tokens, s.decode_requests, s.decode_context)
        else:  # a skipped decode run: context grows by B tokens per step
            jumps += 1
            expect = sum(m.step_s(0, s.decode_requests, s.decode_context + j * s.decode_requests)
                         for j in range(s.steps))
        assert s.step_time_s == pytest.approx(expect, rel=1e-9, abs=1e-12)
        # the engine is either busy (gap == step) or was idle before the step
        assert s.now - prev >= s.step_time_s - 1e-9
        prev = s.now
    assert jumps > 0
    assert res.end_time == pytest.approx(rec.steps[-1].now)
    assert sum(s.steps for s in rec.steps) == res.counters["steps"]
    assert not np.isnan(res.records.finish).any()

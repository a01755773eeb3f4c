"""SGLang LPM / HRRN through vLLM's real scheduler: the adapter gives them its live
prefix-cache lookup, so they reorder on cache hits exactly as in the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (pip install 'tailwise[vllm]')")

from tailwise.lab.experiment import Arm
from tailwise.lab.vllm_harness import run_vllm
from tailwise.scorer.registry import make_named
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import EngineConfig, SimResult, Simulator
from tailwise.simulator.traces import Trace

pytestmark = pytest.mark.vllm
MODEL = H100_LLAMA3_8B


def burst_with_shared_prefix(n: int = 40) -> tuple[Trace, np.ndarray]:
    """A burst: every other request shares a 1,536-token prefix, the rest share nothing."""
    shared = np.arange(n) % 2 == 1
    return Trace(
        name="burst", arrival_s=np.linspace(0.0, 0.2, n),
        prompt_tokens=np.full(n, 2048, dtype=np.int64),
        output_tokens=np.full(n, 64, dtype=np.int64),
        hash_ids=[(1, 2, 3) if s else (100 + i,) for i, s in enumerate(shared.tolist())],
    ), shared


def sim(trace: Trace, name: str, cfg: EngineConfig) -> SimResult:
    s = Simulator(trace, make_named(name, MODEL), cfg, MODEL)
    return s.run()


@pytest.mark.parametrize("name", ["lpm", "hrrn"])
def test_prefix_aware_baselines_favour_cache_hits_in_both_engines(name: str) -> None:
    trace, shared = burst_with_shared_prefix()
    cfg = EngineConfig(max_num_seqs=4, hash_block_tokens=512)  # a queue forms
    ttft: dict[tuple[str, str], float] = {}
    for engine in ("sim", "vllm"):
        for pol in ("fcfs", name):
            res = (sim(trace, pol, cfg) if engine == "sim"
                   else run_vllm(trace, Arm(make_named(pol, MODEL)), cfg, MODEL))
            r = res.records
            ttft[engine, pol] = float(np.mean((r.first_token - r.arrival)[shared]))
            assert np.isfinite(r.finish).all()
    for engine in ("sim", "vllm"):
        assert ttft[engine, name] < 0.8 * ttft[engine, "fcfs"], (engine, ttft)
    assert ttft["vllm", name] == pytest.approx(ttft["sim", name], rel=0.15)


def test_bench_runs_on_vllm(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tailwise.cli import app

    out = tmp_path / "b"
    res = CliRunner().invoke(app, ["bench", "--engine", "vllm", "--workload", "slo-mix",
                                   "--head", "60", "--policy", "fcfs,lpm", "--out", str(out),
                                   "--no-plots", "--no-progress"])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["engine"] == "vllm"
    assert data["workloads"]["slo-mix"]["lpm"]["completed"] == 60

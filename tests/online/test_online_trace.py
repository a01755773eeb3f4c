"""``tailwise simulate --online --trace FILE``: the closed loop on the user's trace.

Before, the trace was silently ignored and the ``code-to-conv`` scenario ran instead.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tailwise.cli import app
from tailwise.lab.closed_loop import scenario_of, trace_scenario
from tailwise.lab.options import BEST, FCFS, ONLINE, OnlineOptions
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import EngineConfig
from tailwise.simulator.metrics import MetricsConfig
from tailwise.simulator.traces import load_trace

pytestmark = [pytest.mark.timeout(240)]


def _write_trace(path: Path, n: int = 400, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(0.5, n))
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["TIMESTAMP", "ContextTokens", "GeneratedTokens"])
        for i in range(n):
            w.writerow([f"2023-11-16 18:{int(t[i]) // 60 % 60:02d}:{t[i] % 60:09.6f}",
                        int(rng.integers(50, 3000)), int(rng.integers(5, 300))])
    return path


def _options(tmp_path: Path, **kw: object) -> OnlineOptions:
    base: dict[str, object] = dict(
        scenario="", online=True, sidecar=None, token=None, out=tmp_path, engine=EngineConfig(),
        model=H100_LLAMA3_8B, load=None, window_s=20.0, round_every_s=20.0,
        trials_per_round=2, seed=0, plots=False, metrics=MetricsConfig())
    base.update(kw)
    return OnlineOptions(**base)  # type: ignore[arg-type]


def test_the_trace_is_the_workload_scaled_as_asked(tmp_path: Path) -> None:
    tr = load_trace(str(_write_trace(tmp_path / "t.csv")))
    scen, scale = scenario_of(_options(tmp_path, trace=tr, rate_scale=2.0))
    assert scale == 2.0 and len(scen.trace) == len(tr)
    np.testing.assert_allclose(scen.trace.arrival_s, tr.arrival_s / 2.0)
    np.testing.assert_array_equal(scen.trace.prompt_tokens, tr.prompt_tokens)
    scen, scale = scenario_of(_options(tmp_path, trace=tr, load=0.7))
    assert scale != 1.0
    # without a trace the named scenario is built, as before
    named, _ = scenario_of(_options(tmp_path, scenario="long-burst", load=0.9, requests=200))
    assert named.name == "long-burst"


def test_a_trace_splits_at_its_first_quarter() -> None:
    tr = load_trace("azure-code").head(100)
    scen = trace_scenario(tr, 0.25)
    assert int(np.sum(scen.trace.arrival_s < scen.shift_s)) == 25


def test_online_on_a_trace_file_end_to_end(tmp_path: Path) -> None:
    path = _write_trace(tmp_path / "mine.csv")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["simulate", "--online", "--trace", str(path),
                                   "--rate-scale", "3", "--round-every-s", "20",
                                   "--trials-per-round", "2", "--no-plots", "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "results.json").read_text())
    assert set(data["policies"]) == {FCFS, BEST, ONLINE}
    assert data["trace"]["name"] == "mine" and data["trace"]["requests"] == 400
    assert data["config"]["rate_scale"] == 3.0
    assert data["scenario"]["name"] == "mine"
    for arm in (FCFS, BEST, ONLINE):
        assert data["policies"][arm]["overall"]["ttlt"]["p99"] > 0
    # 400 requests over ~67 s: no 20-s window holds the default 400, and the report says so
    rounds = data["rounds"]
    assert rounds and all(r["outcome"] == "too_few_requests" for r in rounds)
    report = (out / "report.md").read_text()
    assert "No round tuned: every window held fewer than 400 finished requests" in report
    assert "No round tuned" in (out / "report.html").read_text()
    assert "≥ 90% of its arrivals finished" in report  # the sidecar's settle quantile


def test_min_requests_lets_a_slow_trace_tune(tmp_path: Path) -> None:
    path = _write_trace(tmp_path / "mine.csv")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["simulate", "--online", "--trace", str(path),
                                   "--rate-scale", "3", "--round-every-s", "20",
                                   "--trials-per-round", "2", "--min-requests", "40",
                                   "--no-plots", "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "results.json").read_text())
    tuned = [r for r in data["rounds"] if r["outcome"] != "too_few_requests"]
    assert tuned and all(r["window_requests"] >= 40 for r in tuned)
    assert "No round tuned" not in (out / "report.md").read_text()


def test_min_requests_below_one_is_refused(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["simulate", "--online", "--trace", "azure-code",
                                   "--min-requests", "0", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "--min-requests must be >= 1, got 0" in res.output
    assert not (tmp_path / "o").exists()


def test_report_states_the_sidecar_window_it_was_given(tmp_path: Path) -> None:
    from tailwise.lab.closed_loop import run_online

    tr = load_trace(str(_write_trace(tmp_path / "t.csv")))
    path = run_online(_options(tmp_path / "out", trace=tr, rate_scale=3.0, min_requests=40,
                               sidecar_overrides={"window": {"settle_quantile": 0.95}}))
    assert "≥ 95% of its arrivals finished, ≥ 40 requests" in path.read_text()
    online = json.loads((path.parent / "results.json").read_text())["online"]
    assert online["settle_quantile"] == 0.95 and online["min_requests"] == 40

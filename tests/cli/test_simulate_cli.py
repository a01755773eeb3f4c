"""``tailwise simulate``: report files, schema, and clear errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tailwise.cli import app

runner = CliRunner()


def test_simulate_writes_report_with_table_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "rep"
    res = runner.invoke(app, ["simulate", "--trace", "azure-code", "--head", "800",
                              "--policy", "fcfs,sjf-oracle,srpt-oracle", "--target-load", "0.9",
                              "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    for f in ("report.md", "report.html", "results.json", "summary.csv", "ttlt_cdf.png",
              "p99_windows.png", "kv_queue.png", "requests_fcfs.csv"):
        assert (out / f).stat().st_size > 0, f
    data = json.loads((out / "results.json").read_text())
    assert set(data["policies"]) == {"fcfs", "sjf-oracle", "srpt-oracle"}
    fcfs = data["policies"]["fcfs"]
    for key in ("ttft", "tpot", "ttlt", "queue_delay"):
        assert set(fcfs["overall"][key]) == {"mean", "p50", "p90", "p95", "p99"}
    for key in ("throughput_rps", "throughput_tps", "goodput_rps", "preemptions",
                "wasted_recompute_tokens"):
        assert key in fcfs["overall"]
    assert {"short", "long"} <= set(fcfs["classes"])
    assert data["config"]["offered_load"] == 0.9
    md = (out / "report.md").read_text()
    assert "÷ srpt-oracle" in md and "(ttlt_cdf.png)" in md
    assert "short TTFT mean" in md and "Left out" not in md  # the classes exist here
    assert "### End-to-end latency (TTLT) distribution per request class" in md
    # no policy here has a waiting envelope: no envelope figure
    assert not (out / "envelope.png").exists() and "envelope.png" not in md


def test_the_report_plots_the_waiting_envelope_of_the_policies_that_have_one(
        tmp_path: Path) -> None:
    from tailwise.scorer.registry import build_scheduler, default_policy
    from tailwise.scorer.step_time import H100_LLAMA3_8B
    from tailwise.simulator.engine import EngineConfig, simulate
    from tailwise.simulator.traces import load_trace

    trace = load_trace("azure-code").head(300)
    got = {}
    for name in ("fcfs", "tailwise"):
        policy = default_policy(name)
        assert policy is not None
        res = simulate(trace, build_scheduler(policy), EngineConfig(), H100_LLAMA3_8B)
        got[name] = res.timeseries
    assert len(got["fcfs"]["envelope_s"]) == len(got["fcfs"]["t"]) > 1
    assert all(v != v for v in got["fcfs"]["envelope_s"])  # NaN: FCFS has none
    env, oldest = got["tailwise"]["envelope_s"], got["tailwise"]["oldest_wait_s"]
    assert env[0] == 240.0 and (env > 0).all() and (oldest >= 0).all()
    assert env.min() < 240.0  # E follows the measured service time once it is known

    out = tmp_path / "rep"
    res = runner.invoke(app, ["simulate", "--trace", "azure-code", "--head", "300",
                              "--policy", "fcfs,tailwise", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (out / "envelope.png").stat().st_size > 0
    assert "### Waiting envelope E and the longest wait over time" in (out / "report.md").read_text()


def test_unknown_policy_is_a_clear_error(tmp_path: Path) -> None:
    res = runner.invoke(app, ["simulate", "--policy", "fcfs,nope", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "unknown policy 'nope'" in res.output


def test_missing_trace_file_is_a_clear_error(tmp_path: Path) -> None:
    res = runner.invoke(app, ["simulate", "--trace", str(tmp_path / "missing.csv"),
                              "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "no such file" in res.output


def test_conflicting_load_flags(tmp_path: Path) -> None:
    res = runner.invoke(app, ["simulate", "--policy", "fcfs", "--rate-scale", "2",
                              "--target-load", "0.9", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "either --rate-scale or --target-load" in res.output


def test_bad_engine_flag(tmp_path: Path) -> None:
    res = runner.invoke(app, ["simulate", "--policy", "fcfs", "--preemption", "teleport",
                              "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "preemption_mode" in res.output


def test_backlog_mode_runs_planner_orders(tmp_path: Path) -> None:
    out = tmp_path / "bl"
    res = runner.invoke(app, ["simulate", "--trace", "azure-conv", "--head", "300", "--backlog",
                              "--plan", "sorted-f", "--policy", "fcfs", "--out", str(out),
                              "--no-plots", "--no-progress"])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "results.json").read_text())
    assert set(data["policies"]) == {"fcfs", "plan:sorted-f"}
    # every request waited from t=0, and the planner's order beats FCFS on mean latency
    fcfs = data["policies"]["fcfs"]["overall"]["ttlt"]["mean"]
    planned = data["policies"]["plan:sorted-f"]["overall"]["ttlt"]["mean"]
    assert planned < fcfs
    bad = runner.invoke(app, ["simulate", "--plan", "sorted-f", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "--plan needs --backlog" in bad.output


@pytest.mark.vllm
def test_simulate_with_the_real_vllm_scheduler(tmp_path: Path) -> None:
    pytest.importorskip("vllm.v1.core.sched.scheduler", reason="needs the [vllm] extra")
    out = tmp_path / "v"
    res = runner.invoke(app, ["simulate", "--engine", "vllm", "--head", "150",
                              "--target-load", "0.9", "--policy", "fcfs,tailwise",
                              "--out", str(out), "--no-plots", "--no-progress"])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["engine_impl"] == "vllm"
    assert data["policies"]["fcfs"]["overall"]["completed"] == 150


def test_fleet_mode_writes_fleet_and_replica_tables(tmp_path: Path) -> None:
    out = tmp_path / "fleet"
    res = runner.invoke(app, ["simulate", "--trace", "azure-code", "--head", "300",
                              "--policy", "fcfs,tailwise", "--replicas", "3",
                              "--router", "round-robin,kv-aware", "--target-load", "0.9",
                              "--out", str(out), "--no-plots", "--no-progress"])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "results.json").read_text())
    assert set(data["fleet"]) == {"round-robin", "kv-aware"}
    cell = data["fleet"]["round-robin"]["fcfs"]
    assert cell["routing"]["requests_per_replica"] == [100, 100, 100]
    assert len(cell["replicas"]) == 3
    assert cell["fleet"]["overall"]["requests"] == 300
    assert sum(r["overall"]["requests"] for r in cell["replicas"]) == 300
    html = (out / "report.html").read_text()
    assert "**" not in html and 'class="best"' in html


def test_unknown_router_is_a_one_line_error(tmp_path: Path) -> None:
    res = runner.invoke(app, ["simulate", "--trace", "azure-code", "--replicas", "2",
                              "--router", "nope", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "unknown router 'nope'" in res.output

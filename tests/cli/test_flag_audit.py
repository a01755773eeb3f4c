"""Every flag either applies to the chosen mode or is a one-line error (exit 2).

The table of :mod:`tailwise.cmd_simulate` is checked against the command's real options
(a new flag must be placed), and each mode refuses each flag it would ignore before any
work starts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from tailwise import cmd_simulate
from tailwise.cli import app
from tailwise.cmd_simulate import APPLIES, COMPARE, ONLINE_SCENARIO, ONLINE_TRACE, SCENARIO

runner = CliRunner()

#: a value each mode-specific flag accepts (the check runs before the value is used)
VALUES: dict[str, list[str]] = {
    "trace": ["--trace", "azure-conv"], "head": ["--head", "10"], "fmt": ["--format", "azure"],
    "columns": ["--columns", "arrival=t"], "time_unit": ["--time-unit", "ms"],
    "skip_bad": ["--skip-bad"], "rate_scale": ["--rate-scale", "2"],
    "policy": ["--policy", "fcfs"], "policy_file": ["--policy-file", "x.json"],
    "backlog": ["--backlog"], "plan": ["--plan", "sorted-f"], "progress": ["--no-progress"],
    "seed": ["--seed", "3"], "sidecar": ["--sidecar", "127.0.0.1:1"],
    "token": ["--token", "t"], "round_every_s": ["--round-every-s", "30"],
    "trials_per_round": ["--trials-per-round", "2"], "min_requests": ["--min-requests", "50"],
    "replicas": ["--replicas", "2"], "router": ["--router", "kv-aware"],
}
MODE_ARGS = {COMPARE: [], SCENARIO: ["--scenario", "long-burst"],
             ONLINE_SCENARIO: ["--scenario", "long-burst", "--online"],
             ONLINE_TRACE: ["--online"]}


def _simulate_params() -> set[str]:
    cmd = get_command(app)
    assert isinstance(cmd, typer.core.TyperGroup)
    return {p.name for p in cmd.commands["simulate"].params if p.name}


def test_the_table_names_real_flags_and_every_case_is_tested() -> None:
    assert set(APPLIES) <= _simulate_params()
    assert set(VALUES) == set(APPLIES)


@pytest.mark.parametrize(("name", "mode"), [(n, m) for n, modes in APPLIES.items()
                                            for m in MODE_ARGS if m not in modes])
def test_a_flag_the_mode_ignores_is_an_error(name: str, mode: str, tmp_path: Path) -> None:
    res = runner.invoke(app, ["simulate", *MODE_ARGS[mode], *VALUES[name],
                              "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    (line,) = [ln for ln in res.output.splitlines() if ln.strip()]
    assert line.startswith("error: --") and VALUES[name][0] in line
    assert not (tmp_path / "o").exists()  # refused before any work


def test_trace_and_scenario_are_exclusive(tmp_path: Path) -> None:
    res = runner.invoke(app, ["simulate", "--scenario", "long-burst", "--trace", "azure-code",
                              "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "--trace and --scenario are exclusive" in res.output


def test_modes() -> None:
    assert cmd_simulate.mode_of(None, False) == COMPARE
    assert cmd_simulate.mode_of("x", False) == SCENARIO
    assert cmd_simulate.mode_of("x", True) == ONLINE_SCENARIO
    assert cmd_simulate.mode_of(None, True) == ONLINE_TRACE


def test_scenario_comparison_honours_policy(tmp_path: Path) -> None:
    out = tmp_path / "scen"
    res = runner.invoke(app, ["simulate", "--scenario", "long-burst", "--policy", "fcfs,uniboost",
                              "--out", str(out), "--no-plots"])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "results.json").read_text())
    assert set(data["policies"]) == {"fcfs", "uniboost"}


def test_plan_flags_that_do_not_apply(tmp_path: Path) -> None:
    base = ["plan", "azure-code", "--kv-budget", "100000", "--limit", "20",
            "--out", str(tmp_path / "p")]
    for extra, msg in ((["--target-mean-latency", "5"], "--target-mean-latency applies only"),
                       (["--time-model", "unit", "--step-model", "a100-llama3-8b"],
                        "--step-model does not apply"),
                       (["--methods", "fcfs", "--method", "fcfs", "--ls-seconds", "1"],
                        "--ls-seconds applies only")):
        res = runner.invoke(app, [*base, *extra])
        assert res.exit_code == 2, res.output
        assert msg in res.output


def test_sidecar_no_loop_refuses_tuning_flags(tmp_path: Path) -> None:
    res = runner.invoke(app, ["sidecar", "--no-loop", "--n-trials", "4",
                              "--state-dir", str(tmp_path)])
    assert res.exit_code == 2
    assert "--n-trials does not apply with --no-loop" in res.output


def test_policy_token_and_token_file_are_exclusive(tmp_path: Path) -> None:
    tok = tmp_path / "tok"
    tok.write_text("x")
    res = runner.invoke(app, ["policy", "current", "--sidecar", "127.0.0.1:1", "--token", "a",
                              "--token-file", str(tok)])
    assert res.exit_code == 2
    assert "--token or --token-file" in res.output


@pytest.mark.parametrize("flag", [["--min-requests", "50"], ["--trials-per-round", "2"]])
def test_an_external_sidecar_owns_its_tuning_config(flag: list[str], tmp_path: Path) -> None:
    res = runner.invoke(app, ["simulate", "--online", "--scenario", "long-burst", "--sidecar",
                              "127.0.0.1:1", *flag, "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    (line,) = [ln for ln in res.output.splitlines() if ln.strip()]
    assert line == (f"error: {flag[0]} does not apply with --sidecar: an external sidecar "
                    "tunes by its own config")
    assert not (tmp_path / "o").exists()

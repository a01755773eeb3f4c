"""``tailwise bench``: results keyed by workload then policy, ratios, report, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from tailwise.cli import app
from tailwise.lab import bench
from tailwise.scorer import registry
from tailwise.scorer.policy import Mode, Policy
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.suite import build
from tailwise.wire.policy_file import save

runner = CliRunner()
SMALL = ["--scale", "0.05", "--no-plots", "--no-progress"]


def test_bench_writes_results_and_report(tmp_path: Path) -> None:
    out = tmp_path / "b"
    res = runner.invoke(app, ["bench", "--out", str(out), "--workload", "slo-mix,azure-code",
                              "--policy", "fcfs,srpt-oracle,tailwise", *SMALL])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "results.json").read_text())
    assert list(data["workloads"]) == ["slo-mix", "azure-code"]
    for w, per in data["workloads"].items():
        assert list(per) == ["fcfs", "srpt-oracle", "tailwise"]
        for p, m in per.items():
            for k in ("ttft_mean", "short_ttft_mean", "ttft_p99", "ttlt_p99", "preemptions",
                      "wasted_recompute_tokens", "slo_attainment", "vs_fcfs", "vs_srpt_oracle"):
                assert k in m, (w, p, k)
            assert m["summary"]["overall"]["ttft"]["mean"] == pytest.approx(m["ttft_mean"])
        assert per["fcfs"]["vs_fcfs"]["ttft_mean"] == 1.0
        assert per["srpt-oracle"]["vs_srpt_oracle"]["ttlt_p99"] == 1.0
        t = per["tailwise"]
        assert t["vs_fcfs"]["ttft_mean"] == pytest.approx(
            t["ttft_mean"] / per["fcfs"]["ttft_mean"])
    assert set(data["workloads"]["slo-mix"]["fcfs"]["slo_attainment"]) == {"interactive",
                                                                           "batch"}
    assert set(data["workloads"]["azure-code"]["fcfs"]["slo_attainment"]) == {"default"}
    assert data["suite"]["slo-mix"]["slo"]["interactive"] == [2.0, 0.05]
    html = (out / "report.html").read_text()
    assert "**" not in html and 'class="best"' in html
    md = (out / "report.md").read_text()
    assert "## Workload slo-mix" in md and "**" in md
    assert "| policy | slo-mix TTFT÷SRPT |" in res.output  # the README table


def test_unknown_names_are_one_line_errors(tmp_path: Path) -> None:
    for args, msg in ((["--workload", "slo-mix,nope"], "unknown workload 'nope'"),
                      (["--policy", "fcfs,nope"], "unknown policy 'nope'")):
        res = runner.invoke(app, ["bench", "--out", str(tmp_path), *args, *SMALL])
        assert res.exit_code == 2
        assert msg in res.output
        assert res.output.strip().count("\n") == 0


def test_policy_file_runs_as_file_stem(tmp_path: Path) -> None:
    path = save(Policy(mode=Mode.TAILWISE), tmp_path / "mine.json")
    out = tmp_path / "b"
    res = runner.invoke(app, ["bench", "--out", str(out), "--workload", "azure-code",
                              "--policy", "fcfs,file:mine", "--policy-file", str(path), *SMALL])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "results.json").read_text())
    assert list(data["workloads"]["azure-code"]) == ["fcfs", "file:mine"]


def test_policy_list_follows_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "POLICY_NAMES", (*registry.POLICY_NAMES, "new-variant"))
    assert "new-variant" in bench.parse_policies(None)
    assert bench.parse_policies("new-variant") == ["new-variant"]
    with pytest.raises(bench.BenchError, match="listed twice"):
        bench.parse_policies("fcfs,fcfs")


def test_short_mask_is_the_lower_half_by_true_size() -> None:
    wl = build("bursty-reasoning", scale=0.05)
    model = H100_LLAMA3_8B
    m = bench.short_mask(wl.trace, model)
    assert 0.5 <= m.mean() <= 0.55
    # every short request is no larger than every long one in true size
    size = (wl.trace.prompt_tokens * model.prefill_token_s
            + wl.trace.output_tokens * model.decode_token_s)
    assert size[m].max() <= size[~m].min()
    assert np.array_equal(m, bench.short_mask(wl.trace, model))


def test_ratios_undefined_without_reference() -> None:
    per: dict[str, dict[str, Any]] = {"a": {"ttft_mean": 2.0}, "fcfs": {"ttft_mean": 0.0}}
    bench.add_ratios(per)
    assert per["a"]["vs_fcfs"]["ttft_mean"] is None  # reference is 0
    assert per["a"]["vs_srpt_oracle"]["ttft_mean"] is None  # reference absent


def test_readme_block_is_regenerated_in_place() -> None:
    from tailwise.lab.bench_report import README_END, README_START, update_readme

    per: dict[str, dict[str, Any]] = {"fcfs": {"ttft_mean": 2.0, "ttlt_p99": 9.0},
                                      "srpt-oracle": {"ttft_mean": 1.0, "ttlt_p99": 12.0}}
    bench.add_ratios(per)
    results = {"workloads": {"w": per}, "suite": {}, "config": {}}
    text = f"intro\n{README_START}\nSTALE\n{README_END}\noutro\n"
    new = update_readme(text, results)
    assert new.startswith("intro\n") and new.endswith("\noutro\n") and "STALE" not in new
    assert "| fcfs | 2.00× | **1.00×** |" in new
    assert update_readme(new, results) == new
    with pytest.raises(ValueError, match="suite-table"):
        update_readme("no markers", results)


def test_worker_processes_give_identical_results(tmp_path: Path) -> None:
    opts = bench.BenchOptions(workloads=["azure-conv"], policies=["fcfs", "uniboost"],
                              scale=0.03)
    one = bench.run_bench(opts)
    opts.jobs = 2
    two = bench.run_bench(opts)
    for p in ("fcfs", "uniboost"):
        a, b = one["workloads"]["azure-conv"][p], two["workloads"]["azure-conv"][p]
        for k in ("ttft_mean", "ttlt_p99", "preemptions", "vs_fcfs"):
            assert a[k] == b[k]


def test_head_takes_a_slice_and_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    out = tmp_path / "b"
    res = runner.invoke(app, ["bench", "--out", str(out), "--workload", "bursty-reasoning",
                              "--policy", "fcfs", "--head", "120", "--no-plots",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "results.json").read_text())
    assert data["workloads"]["bursty-reasoning"]["fcfs"]["requests"] == 120
    assert data["suite"]["bursty-reasoning"]["trace"]["requests"] == 120
    full = build("bursty-reasoning")
    assert data["suite"]["bursty-reasoning"]["trace"]["duration_s"] == pytest.approx(
        float(full.trace.arrival_s[119]), abs=1e-3)
    for args, msg in ((["--engine", "gpu"], "engine must be 'sim' or 'vllm'"),
                      (["--jobs", "0"], "jobs must be >= 1"),
                      (["--head", "1"], "head must be >= 2")):
        res = runner.invoke(app, ["bench", "--out", str(tmp_path), *args, *SMALL])
        assert res.exit_code == 2 and msg in res.output, res.output


def test_best_cell_is_min_for_latency_and_max_for_slo_attainment() -> None:
    from tailwise.lab.bench_report import workload_table

    per: dict[str, dict[str, Any]] = {
        "a": {"ttft_mean": 2.0, "slo_attainment": {"interactive": 0.5}},
        "b": {"ttft_mean": 1.0, "slo_attainment": {"interactive": 0.9}},
        "c": {"ttft_mean": None, "slo_attainment": {"interactive": 0.1}},
    }
    header, rows = workload_table(per)
    ttft, slo = header.index("TTFT mean (s)"), header.index("SLO interactive")
    best = {header[j]: [r[0][0] for r in rows if r[j][1]] for j in (ttft, slo)}
    assert best == {"TTFT mean (s)": ["b"], "SLO interactive": ["b"]}
    assert rows[2][ttft] == ("–", False)


def test_tailwise_variants_for_ablations() -> None:
    from tailwise.lab.bench import VariantError, tailwise_variants
    from tailwise.scorer.policy import Mode, RegimeParams

    got = tailwise_variants("tail_protect, scale_excludes_requeue", "demote_delay_factor=1,3")
    assert list(got) == ["no-tail_protect", "no-scale_excludes_requeue",
                         "demote_delay_factor=1", "demote_delay_factor=3"]
    assert all(p.mode is Mode.TAILWISE for p in got.values())
    assert got["no-tail_protect"].regime == RegimeParams(tail_protect=False)
    assert got["demote_delay_factor=3"].regime.demote_delay_factor == 3.0
    k = tailwise_variants(sweep="prefix_rekey_k=2")["prefix_rekey_k=2"].regime.prefix_rekey_k
    assert k == 2 and isinstance(k, int)
    assert tailwise_variants() == {}
    for off, sweep in (("bogus", None), (None, "bogus=1"), (None, "tail_protect=0"),
                       (None, "demote_delay_factor")):
        with pytest.raises(VariantError):
            tailwise_variants(off, sweep)


def test_bench_runs_a_held_out_shape() -> None:
    from tailwise.lab.bench import BenchOptions, run_bench, scorecard

    res = run_bench(BenchOptions(workloads=["bursty-reasoning"],
                                 policies=["fcfs", "srpt-oracle", "hrrn", "tailwise"],
                                 seed=20, scale=0.1, shape=(("kv_blocks", 8000),)))
    assert res["config"]["shape"] == {"kv_blocks": 8000}
    assert res["suite"]["bursty-reasoning"]["engine"]["num_gpu_blocks"] == 8000
    per = res["workloads"]["bursty-reasoning"]
    card = scorecard(per)
    assert card["ttft_vs_srpt"] == per["tailwise"]["ttft_mean"] / per["srpt-oracle"]["ttft_mean"]
    # the knob reached the engine: the same requests on the default KV cache preempt less
    default = run_bench(BenchOptions(workloads=["bursty-reasoning"], policies=["fcfs"],
                                     seed=20, scale=0.1))
    assert (per["fcfs"]["preemptions"]
            > default["workloads"]["bursty-reasoning"]["fcfs"]["preemptions"])


def test_target_met_is_strict_for_p99_below_hrrn() -> None:
    from tailwise.lab.bench import target_met

    assert target_met("p99_ttlt_vs_min_fcfs_srpt", 1.0)
    assert not target_met("p99_ttlt_vs_hrrn", 1.0) and target_met("p99_ttlt_vs_hrrn", 0.999)
    assert target_met("ttft_vs_hrrn", 1.2) and not target_met("ttft_vs_hrrn", 1.21)


def test_shape_option_runs_a_held_out_variant(tmp_path: Path) -> None:
    out = tmp_path / "b"
    res = runner.invoke(app, ["bench", "--out", str(out), "--workload", "bursty-reasoning",
                              "--policy", "fcfs", "--scale", "0.05", "--shape",
                              "kv_blocks=8000,heavy_frac=0.3", "--no-plots", "--no-progress"])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["shape"] == {"heavy_frac": 0.3, "kv_blocks": 8000}
    suite = data["suite"]["bursty-reasoning"]
    assert suite["engine"]["num_gpu_blocks"] == 8000 and "30% outputs" in suite["shape"]
    for page in ("report.md", "report.html"):
        assert "Held-out shape: heavy_frac=0.3, kv_blocks=8000" in (out / page).read_text()
    for spec, msg in (("heavy_frac=0.3", "azure-code has no shape knob 'heavy_frac'"),
                      ("kv_blocks", "shape: want KNOB=VALUE"),
                      ("kv_blocks=8k", "shape: kv_blocks must be a whole number"),
                      ("load=1,load=2", "shape: load given twice"),
                      ("load=0", "load must be > 0")):
        res = runner.invoke(app, ["bench", "--out", str(tmp_path / "x"), "--shape", spec,
                                  "--workload", "azure-code,bursty-reasoning", "--policy",
                                  "fcfs", "--no-plots", "--no-progress"])
        assert res.exit_code == 2, res.output
        (line,) = [ln for ln in res.output.splitlines() if ln.strip()]
        assert line.startswith("error: ") and msg in line, res.output
        assert not (tmp_path / "x").exists()

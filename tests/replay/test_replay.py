"""``tailwise replay`` against an in-process fake OpenAI server, and ``tailwise report``.

Timing assertions here are causal bounds only (a token cannot arrive before the server
sent it; a request is never sent before its arrival), never performance thresholds.
"""

from __future__ import annotations

import asyncio
import csv
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.fake_openai import FakeOpenAI
from support.net import closed_port
from typer.testing import CliRunner

from tailwise.cli import app
from tailwise.lab.replay import (
    Measurement,
    PlannedRequest,
    ReplayOptions,
    build_plan,
    parse_sse_line,
    token_prompt,
)
from tailwise.lab.replay_report import replay
from tailwise.simulator.traces import Trace

runner = CliRunner()


def make_trace(arrivals: list[float], prompts: list[int], outputs: list[int]) -> Trace:
    return Trace("t", np.array(arrivals, dtype=np.float64), np.array(prompts, dtype=np.int64),
                 np.array(outputs, dtype=np.int64))


def write_mooncake(path: Path, rows: list[tuple[float, int, int]]) -> Path:
    with path.open("w") as fh:
        for t_ms, p, o in rows:
            fh.write(json.dumps({"timestamp": t_ms, "input_length": p, "output_length": o,
                                 "hash_ids": []}) + "\n")
    return path


def run(opts: ReplayOptions, **kw: Any) -> tuple[Path, Any]:
    return asyncio.run(replay(opts, **kw))


def results(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "results.json").read_text())
    return data


def client_rows(out: Path, label: str = "replay") -> list[dict[str, str]]:
    with (out / f"replay_{label}.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


# -- pure parts ------------------------------------------------------------------------------
def test_token_prompts_have_exact_length_and_distinct_prefixes() -> None:
    reqs = [PlannedRequest(i, 0.0, n, 4, n, 4) for i, n in enumerate([1, 2, 7, 300, 300])]
    prompts = [token_prompt(r, 100, 300) for r in reqs]
    assert [len(p) for p in prompts] == [1, 2, 7, 300, 300]
    assert all(100 <= t < 300 for p in prompts for t in p)
    assert prompts[3][:2] != prompts[4][:2]  # no accidental shared prefix
    shared = [PlannedRequest(i, 0.0, 600, 4, 600, 4, hash_ids=(7, i)) for i in range(2)]
    a, b = (token_prompt(r) for r in shared)
    assert a[:512] == b[:512] and a[512:] != b[512:]  # the shared hash block is shared


def test_plan_clips_to_max_model_len_and_keeps_trace_lengths() -> None:
    tr = make_trace([0.0, 1.0, 2.0], [10, 500, 90], [5, 20, 200])
    plan = build_plan(tr, max_model_len=128)
    assert all(p.prompt_tokens + p.output_tokens <= 128 for p in plan)
    assert [p.clipped for p in plan] == [False, True, True]
    assert [(p.prompt_tokens, p.output_tokens) for p in plan] == [(10, 5), (108, 20), (1, 127)]
    assert [p.trace_prompt_tokens for p in plan] == [10, 500, 90]
    assert build_plan(tr, None)[1].prompt_tokens == 500


def test_sse_parser_reads_usage_errors_and_done() -> None:
    ev = parse_sse_line('data: {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3}}')
    assert ev is not None and (ev.tokens, ev.prompt_tokens, ev.completion_tokens) == (0, 9, 3)
    err = parse_sse_line('data: {"error": {"message": "boom"}}')
    assert err is not None and err.error == "stream error: boom"
    bad = parse_sse_line("data: {not json")
    assert bad is not None and bad.error is not None and bad.error.startswith("bad SSE payload")
    assert parse_sse_line("event: x") is None


@given(st.lists(st.text(st.characters(blacklist_characters="\r\n"), max_size=30), max_size=8),
       st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=8, max_size=8),
       st.lists(st.integers(1, 7), min_size=1, max_size=20))
def test_sse_splitter_matches_lines_for_any_chunking(lines: list[str], ends: list[str],
                                                     cuts: list[int]) -> None:
    from tailwise.lab.replay import SSELineSplitter

    stream = "".join(line + end for line, end in zip(lines, ends, strict=False))
    sp, got, pos, k = SSELineSplitter(), [], 0, 0
    while pos < len(stream):
        step = cuts[k % len(cuts)]
        got += sp.feed(stream[pos:pos + step])
        pos, k = pos + step, k + 1
    got += sp.close()
    oracle = re.split(r"\r\n|\r|\n", stream)[:-1] if stream else []
    assert got == oracle


# -- against the fake server -----------------------------------------------------------------
def test_replay_measures_each_request_with_trace_lengths(tmp_path: Path) -> None:
    tr = make_trace([0.0, 0.02, 0.04, 0.06, 0.08, 0.10], [5, 40, 5, 40, 1500, 8],
                    [3, 1, 6, 2, 4, 5])
    with FakeOpenAI(first_delay_s=0.03, token_delay_s=0.005) as srv:
        path, _ = run(ReplayOptions(endpoint=srv.url + "/v1", trace=tr, out=tmp_path,
                                    max_concurrency=2, plots=False))
        got = sorted((r.prompt_len, r.body["max_tokens"]) for r in srv.completions())
    assert got == sorted(zip([5, 40, 5, 40, 1500, 8], [3, 1, 6, 2, 4, 5], strict=True))
    data = results(tmp_path)
    s = data["policies"]["replay"]
    assert s["overall"]["requests"] == s["overall"]["completed"] == 6
    assert s["errors"]["failed"] == 0 and s["errors"]["by_reason"] == {}
    assert data["config"]["prompt_mode"] == "tokens" and data["config"]["model"] == "tiny-llama"
    assert set(s["classes"]) == {"short", "long"}
    rows = client_rows(tmp_path)
    for row in rows:
        arrival, first = float(row["arrival_s"]), float(row["first_token_s"])
        finish, sent = float(row["finish_s"]), float(row["sent_s"])
        out = int(row["output_tokens_asked"])
        assert int(row["output_tokens_received"]) == out
        assert sent >= arrival  # never sent early
        assert first - sent >= 0.03  # the server slept before the first token
        assert finish >= first
        assert finish - sent >= 0.03 + 0.005 * (out - 1) - 1e-9
        assert int(row["prompt_tokens_server"]) == int(row["prompt_tokens_sent"])
    # the simulate report schema, filled from client measurements
    for key in ("ttft", "tpot", "ttlt", "queue_delay"):
        assert set(s["overall"][key]) == {"mean", "p50", "p90", "p95", "p99"}
    assert s["overall"]["ttft"]["mean"] >= 0.03
    assert s["overall"]["queue_delay"]["mean"] is None  # not observable from the client
    assert (tmp_path / "report.html").exists() and path.name == "report.md"


def test_arrivals_are_paced_and_sent_in_trace_order(tmp_path: Path) -> None:
    arrivals = [0.0, 0.15, 0.16, 0.4, 0.41, 0.42, 0.7]
    tr = make_trace(arrivals, [3] * 7, [1] * 7)
    with FakeOpenAI() as srv:
        t_before = time.perf_counter()  # same clock as the in-process server
        run(ReplayOptions(endpoint=srv.url, trace=tr, out=tmp_path, plots=False,
                          prompt_mode="tokens"))
        recv = srv.completions()
    # the first prompt id spells the request index (base 200 from id 100)
    at = {r.first_ids[0] - 100: r.t for r in recv}
    assert sorted(at) == list(range(7))
    # pacing, as a causal bound: no request reaches the server before its arrival time
    assert all(at[i] - t_before >= a for i, a in enumerate(arrivals))
    # the client sends in trace order, each at or after its arrival
    sent = [float(row["sent_s"]) for row in client_rows(tmp_path)]
    assert sent == sorted(sent)
    assert all(s >= a for s, a in zip(sent, arrivals, strict=True))


def test_errors_are_counted_with_reasons_and_shown_in_the_report(tmp_path: Path) -> None:
    # prompt 11 -> HTTP 500, prompt 12 -> hangs past the timeout, others fine
    tr = make_trace([0.0, 0.01, 0.02, 0.03], [5, 11, 12, 6], [2, 2, 2, 2])
    with FakeOpenAI(fail_status={11: 500}, hang_s={12: 2.0}) as srv:
        run(ReplayOptions(endpoint=srv.url, trace=tr, out=tmp_path, timeout_s=0.5, plots=False))
    s = results(tmp_path)["policies"]["replay"]
    assert s["errors"]["by_reason"] == {"HTTP 500": 1, "timeout": 1}
    assert s["overall"]["completed"] == 2 and s["overall"]["requests"] == 4
    md = (tmp_path / "report.md").read_text()
    assert "## Errors by reason" in md and "HTTP 500" in md and "injected failure" in md
    html = (tmp_path / "report.html").read_text()
    assert "Errors by reason" in html and "**" not in html
    reasons = {r["request"]: r["reason"] for r in client_rows(tmp_path)}
    assert reasons == {"0": "", "1": "HTTP 500", "2": "timeout", "3": ""}


def test_connection_refused_is_counted_per_request(tmp_path: Path) -> None:
    tr = make_trace([0.0, 0.01, 0.02], [4, 4, 4], [2, 2, 2])
    port = closed_port()
    run(ReplayOptions(endpoint=f"http://127.0.0.1:{port}/v1", trace=tr, out=tmp_path,
                      model="m", prompt_mode="tokens", plots=False))
    s = results(tmp_path)["policies"]["replay"]
    assert s["errors"]["by_reason"] == {"connection refused": 3}
    assert s["overall"]["completed"] == 0


def test_ctrl_c_path_writes_partial_results(tmp_path: Path) -> None:
    # request 1 hangs (in flight when stopped); requests 3.. arrive long after the stop
    tr = make_trace([0.0, 0.01, 0.02, 30.0, 31.0], [5, 13, 5, 5, 5], [2, 2, 2, 2, 2])
    stop: asyncio.Event | None = None
    done: list[Measurement] = []

    async def go() -> Any:
        nonlocal stop
        stop = asyncio.Event()

        def on_done(m: Measurement) -> None:
            done.append(m)
            if sum(d.status == "ok" for d in done) == 2:
                assert stop is not None
                stop.set()  # what the SIGINT handler does

        return await replay(ReplayOptions(endpoint=srv.url, trace=tr, out=tmp_path,
                                          plots=False), stop=stop, on_done=on_done)

    with FakeOpenAI(hang_s={13: 5.0}) as srv:
        _, outcome = asyncio.run(go())
    assert outcome.interrupted
    data = results(tmp_path)
    s = data["policies"]["replay"]
    assert data["config"]["interrupted"] is True
    assert s["overall"]["requests"] == 3 and s["overall"]["completed"] == 2
    assert s["errors"]["by_reason"] == {"interrupted": 1}
    assert s["client"]["planned"] == 5 and s["client"]["sent"] == 3
    assert "interrupted" in (tmp_path / "report.md").read_text()


def test_base_url_with_or_without_v1_and_model_discovery(tmp_path: Path) -> None:
    tr = make_trace([0.0], [4], [1])
    with FakeOpenAI(models=["first", "second"]) as srv:
        for i, suffix in enumerate(["", "/", "/v1", "/v1/"]):
            run(ReplayOptions(endpoint=srv.url + suffix, trace=tr, out=tmp_path / str(i),
                              plots=False))
        run(ReplayOptions(endpoint=srv.url, trace=tr, out=tmp_path / "m", model="second",
                          plots=False))
        posts = srv.completions()
        paths = {r.path for r in srv.received}
    assert paths - {"/metrics"} == {"/v1/models", "/v1/completions"}
    assert [r.body["model"] for r in posts] == ["first"] * 4 + ["second"]


def test_text_prompts_when_server_refuses_token_ids(tmp_path: Path) -> None:
    tr = make_trace([0.0, 0.01], [20, 30], [2, 2])
    with FakeOpenAI(accept_token_ids=False) as srv:
        run(ReplayOptions(endpoint=srv.url, trace=tr, out=tmp_path, plots=False))
        prompts = [r.body["prompt"] for r in srv.completions()]
    data = results(tmp_path)
    assert data["config"]["prompt_mode"] == "text"
    assert all(isinstance(p, str) for p in prompts)
    assert data["policies"]["replay"]["overall"]["completed"] == 2


def test_max_model_len_from_server_clips_instead_of_failing(tmp_path: Path) -> None:
    tr = make_trace([0.0, 0.01], [10, 400], [4, 8])
    with FakeOpenAI(max_model_len=64) as srv:
        run(ReplayOptions(endpoint=srv.url, trace=tr, out=tmp_path, plots=False))
    s = results(tmp_path)["policies"]["replay"]
    assert s["overall"]["completed"] == 2 and s["client"]["clipped_to_max_model_len"] == 1
    assert "clipped" in (tmp_path / "report.md").read_text()


# -- CLI -------------------------------------------------------------------------------------
def test_cli_replay_then_report_side_by_side(tmp_path: Path) -> None:
    trace = write_mooncake(tmp_path / "t.jsonl",
                           [(0, 30, 3), (20, 2000, 2), (40, 30, 4), (60, 50, 2)])
    with FakeOpenAI(first_delay_s=0.01) as srv:
        for label in ("stock", "tailwise"):
            res = runner.invoke(app, ["replay", "--endpoint", srv.url + "/v1", "--trace",
                                      str(trace), "--out", str(tmp_path / label), "--label",
                                      label, "--rate-scale", "2", "--head", "3",
                                      "--no-progress"])
            assert res.exit_code == 0, res.output
    data = results(tmp_path / "stock")
    assert list(data["policies"]) == ["stock"]
    assert data["trace"]["requests"] == 3 and data["config"]["rate_scale"] == 2
    for f in ("report.md", "report.html", "ttlt_cdf.png", "p99_windows.png", "kv_queue.png",
              "requests_stock.csv", "replay_stock.csv", "summary.csv"):
        assert (tmp_path / "stock" / f).stat().st_size > 0, f
    # simulate on the same trace, compared with the two replays
    res = runner.invoke(app, ["simulate", "--trace", str(trace), "--policy", "fcfs", "--out",
                              str(tmp_path / "sim"), "--no-progress", "--no-plots"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["report", str(tmp_path / "stock"), str(tmp_path / "tailwise"),
                              str(tmp_path / "sim"), "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output
    cmp = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert cmp["baseline"] == "stock/stock"
    a = results(tmp_path / "stock")["policies"]["stock"]["overall"]["ttlt"]["mean"]
    b = results(tmp_path / "tailwise")["policies"]["tailwise"]["overall"]["ttlt"]["mean"]
    assert cmp["ratios"]["tailwise/tailwise"]["TTLT mean"] == pytest.approx(b / a)
    assert cmp["ratios"]["stock/stock"]["TTLT mean"] == pytest.approx(1.0)
    assert set(cmp["runs"]) == {"stock/stock", "tailwise/tailwise", "sim/fcfs"}
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "Ratios to the baseline" in md and "sim/fcfs" in md
    assert "**" not in (tmp_path / "cmp" / "comparison.html").read_text()
    assert (tmp_path / "cmp" / "compare_cdf.png").stat().st_size > 0


@pytest.mark.parametrize(("args", "needle"), [
    (["--endpoint", "ftp://x", "--trace", "azure-code"], "--endpoint"),
    (["--endpoint", "http://127.0.0.1:1", "--trace", "nope.csv"], "nope.csv"),
    (["--endpoint", "http://127.0.0.1:1", "--trace", "azure-code", "--head", "0"], "--head"),
    (["--endpoint", "http://127.0.0.1:1", "--trace", "azure-code", "--rate-scale", "0"],
     "--rate-scale"),
    (["--endpoint", "http://127.0.0.1:1", "--trace", "azure-code", "--prompt-mode", "ids"],
     "--prompt-mode"),
    (["--endpoint", "http://127.0.0.1:1", "--trace", "azure-code", "--token-range", "5"],
     "--token-range"),
    (["--endpoint", "http://127.0.0.1:1", "--trace", "azure-code", "--max-concurrency", "0",
      "--model", "m"], "--max-concurrency"),
    (["--endpoint", "http://127.0.0.1:1", "--trace", "azure-code", "--head", "2"],
     "cannot list models"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    res = runner.invoke(app, ["replay", *args, "--out", str(tmp_path), "--no-progress"])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], res.output


def test_cli_unknown_model_and_bad_report_dirs(tmp_path: Path) -> None:
    with FakeOpenAI() as srv:
        res = runner.invoke(app, ["replay", "--endpoint", srv.url, "--trace", "azure-code",
                                  "--head", "1", "--model", "other", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--model: 'other' is not served" in res.output
    res = runner.invoke(app, ["report", str(tmp_path / "a"), str(tmp_path / "b")])
    assert res.exit_code == 2 and "no results.json" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_server_metrics_feed_the_queue_plot_when_exported(tmp_path: Path) -> None:
    tr = make_trace([0.0, 0.01, 0.02], [4, 4, 4], [2, 2, 2])
    with FakeOpenAI(metrics=True, first_delay_s=1.2) as srv:
        run(ReplayOptions(endpoint=srv.url, trace=tr, out=tmp_path / "srv",
                          scrape_interval_s=0.2))
        scrapes = sum(r.path == "/metrics" for r in srv.received)
    data = results(tmp_path / "srv")
    assert data["config"]["queue_series"] == "server /metrics" and scrapes >= 2
    assert data["policies"]["replay"]["engine"]["mean_kv_usage"] == pytest.approx(0.25)
    with FakeOpenAI() as srv:  # no /metrics: the client's own view
        run(ReplayOptions(endpoint=srv.url, trace=tr, out=tmp_path / "cli"))
    data = results(tmp_path / "cli")
    assert data["config"]["queue_series"] == "client"
    assert data["policies"]["replay"]["engine"]["mean_kv_usage"] is None
    assert (tmp_path / "cli" / "kv_queue.png").stat().st_size > 0


def test_server_metrics_parser_sums_label_sets_and_ignores_garbage() -> None:
    from tailwise.lab.replay import parse_server_metrics

    text = ('# TYPE vllm:num_requests_waiting gauge\n'
            'vllm:num_requests_waiting{engine="0"} 2\nvllm:num_requests_waiting{engine="1"} 3\n'
            'sglang:token_usage 0.5\nother 9\n')
    assert parse_server_metrics(text) == {"waiting": 5.0, "kv_usage": 0.5}
    assert parse_server_metrics("{{{ not prometheus") == {}


def test_report_baseline_policy_filter_and_names(tmp_path: Path) -> None:
    from tailwise.lab.compare import CompareError, compare

    def fake_results(d: Path, pols: dict[str, float]) -> Path:
        d.mkdir()
        summaries = {p: {"overall": {"ttlt": {"mean": v, "p99": 2 * v}, "requests": 3,
                                     "completed": 3}, "classes": {}} for p, v in pols.items()}
        (d / "results.json").write_text(json.dumps({"config": {"engine_impl": "sim"},
                                                    "policies": summaries}))
        return d

    a = fake_results(tmp_path / "a", {"fcfs": 4.0, "tailwise": 2.0})
    b = fake_results(tmp_path / "b", {"stock": 8.0})
    compare([a, b], tmp_path / "o1", names=["sim", "real"], baseline="stock", plots=False)
    cmp = json.loads((tmp_path / "o1" / "comparison.json").read_text())
    assert cmp["baseline"] == "real/stock"
    assert cmp["ratios"]["sim/tailwise"]["TTLT mean"] == pytest.approx(0.25)
    assert cmp["ratios"]["sim/fcfs"]["TTLT p99"] == pytest.approx(0.5)
    md = (tmp_path / "o1" / "comparison.md").read_text()
    assert "**0.25×**" in md  # the best (lowest) ratio of its column is marked
    compare([a, b], tmp_path / "o2", policies=["tailwise", "stock"], plots=False)
    runs = json.loads((tmp_path / "o2" / "comparison.json").read_text())["runs"]
    assert set(runs) == {"a/tailwise", "b/stock"}
    with pytest.raises(CompareError, match="--policy"):
        compare([a, b], tmp_path / "o3", policies=["nope"])
    with pytest.raises(CompareError, match="--baseline"):
        compare([a, b], tmp_path / "o4", baseline="nope")
    with pytest.raises(CompareError, match="--names"):
        compare([a, b], tmp_path / "o5", names=["x"])


def test_waiting_for_a_concurrency_slot_counts_in_ttft_and_is_reported(tmp_path: Path) -> None:
    # three requests at t=0, one slot, each held >= 0.15 s: the third waits >= 0.3 s
    tr = make_trace([0.0, 0.0, 0.0], [4, 4, 4], [1, 1, 1])
    with FakeOpenAI(first_delay_s=0.15) as srv:
        run(ReplayOptions(endpoint=srv.url, trace=tr, out=tmp_path, max_concurrency=1,
                          plots=False))
    rows = client_rows(tmp_path)
    lags = sorted(float(r["sent_s"]) - float(r["arrival_s"]) for r in rows)
    assert lags[1] >= 0.15 and lags[2] >= 0.3
    ttft = sorted(float(r["first_token_s"]) - float(r["arrival_s"]) for r in rows)
    assert ttft[2] >= 0.45  # its slot wait is part of its TTFT
    assert "--max-concurrency slots" in (tmp_path / "report.md").read_text()

"""``tailwise simulate --scenario/--online``: pacing, the three arms, the report."""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tailwise.cli import app
from tailwise.lab.closed_loop import run_online
from tailwise.lab.options import BEST, FCFS, ONLINE, OnlineOptions
from tailwise.lab.pacing import PacedSink
from tailwise.scorer.hooks import StepStats
from tailwise.scorer.policy import Mode, Policy
from tailwise.scorer.request import ReqInfo
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import EngineConfig
from tailwise.simulator.metrics import MetricsConfig
from tailwise.wire.policy_file import load

pytestmark = [pytest.mark.timeout(240)]


# -- the pacer against fakes ----------------------------------------------------------------
@dataclass
class FakeStatus:
    waited_ok: bool = True
    loop_enabled: bool = True
    policy_version: int = 1
    next_round_engine_time: float | None = None

    def HasField(self, name: str) -> bool:  # noqa: N802 - protobuf API
        return getattr(self, name) is not None


@dataclass
class FakeSidecar:
    """Status source: rounds due every ``every`` engine s; a round at t publishes."""

    every: float = 10.0
    fail: bool = False
    calls: list[float] = field(default_factory=list)
    version: int = 1

    def status(self, *, wait_loop_engine_time: float | None = None,
               wait_timeout_s: float = 0.0, max_rounds: int = 0) -> FakeStatus:
        if self.fail:
            raise ConnectionError("sidecar gone")
        t = wait_loop_engine_time or 0.0
        self.calls.append(t)
        if t >= self.every:
            self.version += 1
        return FakeStatus(policy_version=self.version,
                          next_round_engine_time=(math.floor(t / self.every) + 1) * self.every)


class FakeEmitter:
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.flushes = 0

    def on_arrival(self, req: ReqInfo, now: float) -> None:
        self.events.append(("arrival", now))

    def on_first_token(self, req: ReqInfo, now: float) -> None:
        self.events.append(("first", now))

    def on_preempt(self, req: ReqInfo, now: float) -> None:
        self.events.append(("preempt", now))

    def on_finish(self, req: ReqInfo, now: float) -> None:
        self.events.append(("finish", now))

    def on_step(self, stats: StepStats) -> None:
        self.events.append(("step", stats.now))

    def flush(self, timeout: float) -> bool:
        self.flushes += 1
        self.events.clear()
        return True

    def pending(self) -> int:
        return len(self.events)


class FakeClient:
    def __init__(self, sidecar: FakeSidecar) -> None:
        self.sidecar = sidecar

    def current(self) -> Policy:
        return Policy(version=self.sidecar.version)

    def wait_for(self, predicate: Any, timeout: float) -> bool:
        return bool(predicate(self))

    def nacked_versions(self) -> dict[int, str]:
        return {}


def step(t: float) -> StepStats:
    return StepStats(t, 0.01, 0, 1, 1, 0, 0.1, 0, 1)


def test_pacer_syncs_at_each_due_round_and_only_there() -> None:
    sidecar = FakeSidecar(every=10.0)
    em = FakeEmitter()
    pacer = PacedSink(em, sidecar, FakeClient(sidecar), high_water=1000)
    for i in range(350):
        pacer.on_step(step(i * 0.1))
    # the first step, then the first step at or past each due time 10, 20, 30
    assert [round(t, 1) for t in sidecar.calls] == [0.0, 10.0, 20.0, 30.0]
    assert pacer.stats.syncs == 4 and pacer.stats.timeouts == 0 and em.flushes == 4


def test_pacer_drains_at_high_water_and_survives_a_dead_sidecar() -> None:
    sidecar = FakeSidecar(every=10.0)
    em = FakeEmitter()
    pacer = PacedSink(em, sidecar, FakeClient(sidecar), high_water=5, fallback_every_s=3.0)
    pacer.on_step(step(0.0))
    req = ReqInfo("r", 0.0, 10)
    for _ in range(12):
        pacer.on_arrival(req, 0.5)
    assert pacer.stats.drains == 2
    sidecar.fail = True
    pacer.on_step(step(10.0))  # due: the status call fails, counted, never raised
    assert (pacer.stats.errors, pacer.stats.timeouts) == (1, 1)
    pacer.on_step(step(12.0))  # next boundary falls back to t + fallback_every_s
    assert pacer.stats.syncs == 2
    pacer.on_step(step(13.0))
    assert pacer.stats.syncs == 3


# -- end to end -----------------------------------------------------------------------------
def small_options(out: Path, **kw: Any) -> OnlineOptions:
    base: dict[str, Any] = dict(
        scenario="code-to-conv", online=True, sidecar=None, token=None, out=out,
        engine=EngineConfig(), model=H100_LLAMA3_8B, load=0.9, window_s=20.0,
        round_every_s=20.0, trials_per_round=3, seed=0, plots=True, metrics=MetricsConfig(),
        requests=600, offline_trials=2, min_requests=100, verbose=False)
    base.update(kw)
    return OnlineOptions(**base)


def test_online_three_arms_with_a_real_sidecar(tmp_path: Path) -> None:
    out = tmp_path / "online"
    # margin 0: any gain is promoted; the sidecar starts from FCFS so that one round of 3
    # trials surely finds a gain (from the tuned-good default it may not); the stale-window
    # check is off: this test is about pacing and when a version is in force, and on this
    # shift scenario the check may rightly hold every round's winner back
    path = run_online(small_options(out, margin=0.0, sidecar_overrides={
        "initial_policy": "fcfs", "loop": {"stale_check": False}}))
    assert path == out / "report.md"
    for f in ("report.md", "results.json", "timeline.png", "best-of-papers.policy.json",
              "sidecar.log", "requests_tailwise-online.csv"):
        assert (out / f).stat().st_size > 0, f
    data = json.loads((out / "results.json").read_text())
    assert set(data["policies"]) == {FCFS, BEST, ONLINE}
    for arm in (FCFS, BEST, ONLINE):
        p = data["phases"][arm]
        assert p["p99_ttlt_before"] > 0 and p["p99_ttlt_after"] > 0
    rows = data["timeline"]["rows"]
    assert rows and {f"{ONLINE}.p99_ttlt", "policy_version"} <= set(rows[0])
    assert data["recovery"]["static"] == [FCFS, BEST]
    # the frozen best-of-papers arm: a paper mode, hash-checked file
    best = load(out / "best-of-papers.policy.json")
    assert best.mode in (Mode.BOOST, Mode.EWSJF, Mode.KAIROS)
    assert data["best_of_papers"]["chosen"] in ("uniboost", "ewsjf", "kairos")
    # pacing: every round ran at an engine time the engine synced at, nothing was lost
    online = data["online"]
    pacing = online["pacing"]
    assert pacing["timeouts"] == 0 and pacing["errors"] == 0 and pacing["syncs"] >= 3
    rounds = data["rounds"]
    assert len(rounds) >= 2
    assert all(r["engine_time"] in pacing["at"] for r in rounds)
    assert online["emitter"]["dropped"] == 0
    assert online["emitter"]["confirmed"] == online["emitter"]["enqueued"]
    assert online["emitter"]["rejected_by_sidecar"] == 0
    # a version published by a round at engine time t is in force from the engine's next
    # step, which starts at t: no engine time passes while the sidecar tunes
    published = {r["published_version"]: r["engine_time"] for r in rounds
                 if r["published_version"]}
    assert published
    # every round says why it ended as it did (the gate's reason for a tuned round)
    assert all(r["reason"] for r in rounds)
    assert all("beats the champion" in r["reason"] for r in rounds if r["published_version"])
    in_force = {v["version"]: v["engine_time"] for v in online["policy_versions"]}
    for version, t in published.items():
        assert in_force[version] == t
    md = path.read_text()
    assert "P99 TTLT before" in md and "Recovery" in md and "Tuning rounds" in md
    # a reader in a browser sees the same sections (they were markdown-only before)
    page = (path.parent / "report.html").read_text()
    for heading in ("<h2>Scenario ", "<h2>Arms</h2>", "<h2>Tuning rounds (engine time)</h2>",
                    "<h2>Timeline ("):
        assert heading in page, heading
    assert "<b>Recovery</b>" in page and "P99 TTLT before (s)" in page
    assert "**" not in page  # no raw markdown
    for r in rounds:  # the rounds table, row by row
        assert f"<tr><td>{r['engine_time']:.1f}</td><td>{r['outcome']}</td>" in page
        assert html.escape(r["reason"], quote=False) in page
    for row in data["timeline"]["rows"]:
        assert f"<tr><td>{row['start_s']:.2f}</td>" in page


def test_scenario_without_online_is_the_standard_comparison(tmp_path: Path) -> None:
    out = tmp_path / "scen"
    res = CliRunner().invoke(app, ["simulate", "--scenario", "long-burst", "--out", str(out),
                                   "--no-plots"])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "results.json").read_text())
    assert {"fcfs", "tailwise", "srpt-oracle"} <= set(data["policies"])
    assert data["scenario"]["name"] == "long-burst" and data["timeline"]["rows"]
    assert set(data["phases"]) == set(data["policies"])
    assert "## Scenario long-burst" in (out / "report.md").read_text()


def test_unknown_scenario_is_a_clear_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["simulate", "--scenario", "nope", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "unknown scenario 'nope'" in res.output


def test_a_labelled_scenario_leaves_out_the_empty_class_columns(tmp_path: Path) -> None:
    """A shift scenario's own class labels leave the short/long prompt classes empty: the
    report's tables leave those columns out and say so; summary.csv keeps every column."""
    out = tmp_path / "scen"
    res = CliRunner().invoke(app, ["simulate", "--scenario", "slo-flip", "--policy",
                                   "fcfs,tailwise", "--out", str(out), "--no-plots"])
    assert res.exit_code == 0, res.output
    page, md = (out / "report.html").read_text(), (out / "report.md").read_text()
    assert "<th>short TTFT mean (s)</th>" not in page and "<th>long TTLT p99 (s)</th>" not in page
    assert "| short TTFT mean (s) |" not in md and "| long TTLT p99 (s) |" not in md
    assert "<th>TTFT mean (s)</th>" in page and "| TTFT mean (s) |" in md
    for text in (page, md):
        assert "Left out, no value for any policy: short TTFT mean (s), long TTLT p99 (s)" in text
        assert "(a trace with its own class labels has no short/long prompt classes)" in text
        # the intro names the classes the tables use
        assert "Classes: the trace's own labels (batch, chat, interactive, reasoning)." in text
    assert "short TTFT mean" in (out / "summary.csv").read_text().splitlines()[0]
    # the timeline: mean TTFT over all requests instead of an empty short-class column
    assert "<th>tailwise.ttft_mean</th>" in page and "tailwise.short_ttft" not in page
    rows = json.loads((out / "results.json").read_text())["timeline"]["rows"]
    assert all(r["tailwise.short_ttft"] is None for r in rows)  # kept in results.json
    assert any(r["tailwise.ttft_mean"] is not None for r in rows)


def test_an_unlabelled_trace_without_long_prompts_says_no_false_reason(tmp_path: Path) -> None:
    """Every prompt is short: the long-class column is left out, and the note does not
    blame class labels the trace does not have."""
    trace = tmp_path / "short.csv"
    rows = [f"2023-11-16 18:17:{i // 10:02d}.{i % 10}000000,{100 + i},{20 + i % 5}"
            for i in range(300)]
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(rows) + "\n")
    out = tmp_path / "rep"
    res = CliRunner().invoke(app, ["simulate", "--trace", str(trace), "--policy", "fcfs,tailwise",
                                   "--out", str(out), "--no-plots", "--no-progress"])
    assert res.exit_code == 0, res.output
    md = (out / "report.md").read_text()
    assert "Left out, no value for any policy: long TTLT p99 (s)." in md
    assert "class labels" not in md and "Classes: short = prompt ≤ 1024 tokens." in md

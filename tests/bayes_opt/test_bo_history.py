"""Tuning history for operators: read back through Optuna's API from a real journal file,
and rendered by optuna-dashboard in headless Chromium (Debian's ``chromium``)."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import optuna
import pytest
from bo_fakes import FakeEvaluator, make_trace

from tailwise.bayes_opt.history import ATTR_ROUNDS, metric_name
from tailwise.bayes_opt.objective import ObjectiveConfig
from tailwise.bayes_opt.storage import open_storage
from tailwise.bayes_opt.tuner import Tuner, TunerConfig
from tailwise.scorer.policy import Mode, Policy, QueueSpec

optuna_dashboard = pytest.importorskip("optuna_dashboard", reason="needs the [dashboard] extra")

CURRENT = Policy(mode=Mode.TAILWISE)  # γ = 0.1, off the fake's optimum γ = 0.3
PARTITION = (QueueSpec(1, 1024, 200, 0.001), QueueSpec(1024, 20000, 3000, 0.00001))
REQUIRE_CHROMIUM = os.environ.get("TAILWISE_REQUIRE_CHROMIUM") == "1"
METRIC = metric_name(ObjectiveConfig())  # e.g. "operator (maximize)"


def tuned_study(tmp_path: Path) -> tuple[Tuner, Any, Any]:
    """Two rounds on a journal file; replays with γ in (0.2, 0.25) fail (NaN)."""
    fake = FakeEvaluator(nan_if=lambda p: 0.2 < p.boost.gamma < 0.25)
    cfg = TunerConfig(storage=str(tmp_path / "study.journal"), study_name="ops", seed=3)
    tu = Tuner(cfg, CURRENT, evaluator=fake)
    r1 = tu.tune(make_trace(300, seed=1), CURRENT, PARTITION, n_trials=8,
                 window_span=(1200.0, 1800.0))
    tu.record_publication(r1, "promoted", 7)
    champ = r1.promoted or CURRENT
    r2 = tu.tune(make_trace(300, seed=2, long_share=0.8), champ, PARTITION, n_trials=8,
                 window_span=(1800.0, 2400.0))
    tu.close()
    return tu, r1, r2


def test_history_reads_back_through_optunas_api(tmp_path: Path) -> None:
    _, r1, r2 = tuned_study(tmp_path)
    assert r1.promoted is not None  # the fake's γ optimum is reachable: round 1 promotes
    study = optuna.load_study(study_name="ops",
                              storage=open_storage(str(tmp_path / "study.journal")))
    assert study.metric_names == [METRIC]  # not "Objective 0"
    assert METRIC.startswith(ObjectiveConfig().kind.value)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 16
    for t in trials:
        a = t.user_attrs
        rnd = a["round"]
        assert (a["window_start_s"], a["window_end_s"]) == ((1200.0, 1800.0) if rnd == 1
                                                            else (1800.0, 2400.0))
        assert a["window_requests"] == 300 and a["window_rate_rps"] > 0
        assert a["window_load"] is not None and a["window_load"] > 0
        assert "drift" in a and "drift_detected" in a
        assert isinstance(a["diff_vs_champion"], str) and a["diff_vs_champion"]
        assert isinstance(a["outcome"], str)
        if a["role"] == "champion":
            assert a["outcome"] == "champion (in force)"
            assert a["diff_vs_champion"] == "same as champion"
        elif t.state is optuna.trial.TrialState.COMPLETE:
            assert a["outcome"].startswith(("better than champion", "not better than champion"))
            assert "boost.gamma" in a["diff_vs_champion"]  # γ is searched: it differs
        else:
            assert a["outcome"].startswith("failed: ")
    assert any(t.state is optuna.trial.TrialState.FAIL for t in trials)  # the NaN replay
    # the drift verdict of round 2 (80% long requests instead of 20%) is in the window attrs
    assert all(t.user_attrs["drift_detected"] for t in trials if t.user_attrs["round"] == 2)
    # per-trial notes carry final outcomes; the published one names its version
    notes = {t.number: optuna_dashboard.get_note(optuna.Trial(study, t._trial_id))
             for t in trials}
    assert notes[r1.best_trial] == f"Round 1: published as version 7 ({r1.reason})"
    champ1 = next(t for t in trials if t.user_attrs["round"] == 1
                  and t.user_attrs["role"] == "champion")
    assert notes[champ1.number] == f"Round 1: replaced by trial {r1.best_trial}"
    failed = [t for t in trials if t.state is optuna.trial.TrialState.FAIL]
    assert failed and all(notes[t.number].startswith(f"Round {t.user_attrs['round']}: failed: ")
                          for t in failed)
    # the study note says what each round published and why, with named components
    note = optuna_dashboard.get_note(study)
    assert METRIC in note
    assert f"trial {r1.best_trial} published as version 7" in note
    assert r2.reason.split(" ")[0] in note
    rounds = study.user_attrs[ATTR_ROUNDS]
    comps = rounds[-1]["components"]["champion"]
    assert comps and "objective components" in note
    assert all(f"| {k} |" in note for k in comps)  # every component named in the note
    assert [r["round"] for r in rounds] == [1, 2]
    assert rounds[0]["published_version"] == 7


# -- the dashboard in a real browser ----------------------------------------------------------
def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if REQUIRE_CHROMIUM:
            pytest.fail("TAILWISE_REQUIRE_CHROMIUM=1 but chromium is not installed")
        pytest.skip("chromium is not installed (apt-get install -y chromium); CI requires it")
    return exe


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[str]:
    """optuna-dashboard (its WSGI app) on the tuned study's journal file, port 0."""
    tuned_study(tmp_path)
    storage = open_storage(str(tmp_path / "study.journal"))
    sid = optuna.load_study(study_name="ops", storage=storage)._study_id
    server = make_server("127.0.0.1", 0, optuna_dashboard.wsgi(storage), handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/dashboard/studies/{sid}"
    finally:
        server.shutdown()
        thread.join(10)


def browse(exe: str, url: str, *extra: str) -> str:
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", "--virtual-time-budget=15000", *extra, url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    return out.stdout


def text(dom: str) -> str:
    """Visible text of a dumped DOM (styles and tags removed, whitespace collapsed)."""
    dom = re.sub(r"<style[^>]*>.*?</style>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


def test_dashboard_renders_metric_names_outcomes_and_the_round_note(
    dashboard: str, tmp_path: Path
) -> None:
    exe = chromium()
    history = text(browse(exe, dashboard, "--dump-dom"))
    assert "ops (id=" in history  # the study page loaded its data
    assert f"History y Axis {METRIC}" in history  # the metric name on the chart
    assert "Objective 0" not in history
    trials = text(browse(exe, f"{dashboard}/trials", "--dump-dom"))
    for attr in ("window_start_s 1200.0", "window_end_s 1800.0", "window_requests 300",
                 "window_load", "diff_vs_champion same as champion",
                 "outcome champion (in force)", "Round 1: replaced by trial"):
        assert attr in trials, attr  # trial 0: its window, diff, standing and final note
    note = text(browse(exe, f"{dashboard}/note", "--dump-dom"))
    assert "Tuning history: ops" in note  # the study note, rendered from Markdown
    assert "published as version 7" in note and "kept champion" in note
    assert "objective components" in note
    shot = Path(os.environ.get("TAILWISE_DASHBOARD_SHOT", tmp_path / "dashboard-note.png"))
    browse(exe, f"{dashboard}/note", f"--screenshot={shot}", "--window-size=1400,1000")
    assert shot.exists() and shot.stat().st_size > 10_000  # a real rendered page

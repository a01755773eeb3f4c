"""``tailwise freeze`` and ``tailwise dashboard`` on a tuned study."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import typer
from bo_fakes import FakeEvaluator, make_trace
from typer.testing import CliRunner

from tailwise import cmd_dashboard, cmd_freeze
from tailwise.bayes_opt.freeze import FreezeError, select_policy
from tailwise.bayes_opt.tuner import RoundResult, Tuner, TunerConfig
from tailwise.lab.freeze import freeze_study
from tailwise.scorer import frozen
from tailwise.scorer.policy import Mode, Policy, QueueSpec, Source
from tailwise.wire import policy_file

CURRENT = Policy(mode=Mode.TAILWISE)
PARTITION = (QueueSpec(1, 1024, 200, 0.001), QueueSpec(1024, 20000, 3000, 0.00001))


def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Test app with the commands under test."""

    cmd_freeze.register(app)
    cmd_dashboard.register(app)
    return app


@pytest.fixture
def study_file(tmp_path: Path) -> tuple[Path, Tuner]:
    path = tmp_path / "study.journal"
    tu = Tuner(TunerConfig(storage=str(path), study_name="prod"), Policy(),
               evaluator=FakeEvaluator())
    tu.tune(make_trace(seed=1), CURRENT, PARTITION, n_trials=6)
    tu.tune(make_trace(seed=2), CURRENT, PARTITION, n_trials=6)
    tu.close()
    return path, tu


def test_freeze_best_of_latest_round_roundtrips(study_file: tuple[Path, Tuner],
                                                tmp_path: Path) -> None:
    path, tu = study_file
    out = tmp_path / "out" / "policy.json"
    res = CliRunner().invoke(cli(), ["freeze", "--storage", str(path), "--study", "prod",
                                     "--out", str(out)])
    assert res.exit_code == 0, res.output
    loaded = policy_file.load(out)  # hash verified
    assert loaded.source is Source.FROZEN
    round2 = [t for t in tu.study.trials if t.user_attrs["round"] == 2 and t.value is not None]
    best = max(round2, key=lambda t: t.values[0])
    want = Policy.from_dict(best.user_attrs["policy"])
    assert loaded.boost == want.boost and loaded.ewsjf == want.ewsjf
    assert loaded.queues == want.queues
    assert f"trial {best.number}" in res.output
    # tampering is refused
    doc = json.loads(out.read_text())
    doc["policy"]["boost"]["gamma"] = 0.123
    out.write_text(json.dumps(doc))
    with pytest.raises(frozen.FrozenPolicyError, match="sha256"):
        policy_file.load(out)


def test_freeze_champion(study_file: tuple[Path, Tuner], tmp_path: Path) -> None:
    path, tu = study_file
    out = tmp_path / "champion.json"
    _, policy, _ = freeze_study(str(path), "prod", out, which="champion")
    recorded = Policy.from_dict(tu.study.user_attrs["tailwise:champion"])
    assert policy.boost == recorded.boost and policy.queues == recorded.queues
    assert policy_file.load(out) == policy


def test_freeze_errors_are_clear(study_file: tuple[Path, Tuner], tmp_path: Path) -> None:
    path, _ = study_file
    run = CliRunner().invoke
    res = run(cli(), ["freeze", "--storage", str(path), "--study", "nope", "--out",
                      str(tmp_path / "x.json")])
    assert res.exit_code == 2 and "'nope' not found" in res.output and "prod" in res.output
    res = run(cli(), ["freeze", "--storage", str(tmp_path / "missing.journal"), "--out",
                      str(tmp_path / "x.json")])
    assert res.exit_code == 2 and "no such journal file" in res.output
    res = run(cli(), ["freeze", "--storage", str(path), "--study", "prod", "--which", "worst",
                      "--out", str(tmp_path / "x.json")])
    assert res.exit_code == 2 and "--which" in res.output
    assert not (tmp_path / "x.json").exists()


def test_freeze_without_completed_trials(tmp_path: Path) -> None:
    import optuna

    st = str(tmp_path / "empty.journal")
    from tailwise.bayes_opt.storage import open_storage

    study = optuna.create_study(storage=open_storage(st), study_name="e")
    with pytest.raises(FreezeError, match="no completed trial"):
        select_policy(study, "best")
    with pytest.raises(FreezeError, match="no champion"):
        select_policy(study, "champion")


def test_dashboard_serves_the_study(study_file: tuple[Path, Tuner]) -> None:
    pytest.importorskip("optuna_dashboard")
    path, _ = study_file
    code = ("import typer; from tailwise import cmd_dashboard\n"
            "app = typer.Typer()\n"
            "@app.callback()\n"
            "def main() -> None: pass\n"
            "cmd_dashboard.register(app); app()\n")
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "dashboard", "--storage", str(path), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: lines.put(proc.stdout.readline() if proc.stdout else ""),
                         daemon=True).start()
        try:
            line = lines.get(timeout=30.0)
        except queue.Empty:
            pytest.fail("dashboard printed no address within 30 s")
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert m, f"no address in {line!r}"
        port = int(m.group(1))
        url = f"http://127.0.0.1:{port}/api/studies"
        deadline = time.monotonic() + 30.0
        body = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5.0) as resp:
                    assert resp.status == 200
                    body = json.loads(resp.read())
                    break
            except OSError:
                time.sleep(0.1)
        assert body is not None, "dashboard did not answer within 30 s"
        studies = body["study_summaries"]
        assert [s["study_name"] for s in studies] == ["prod"]
        # and the study's trials, with our user attributes, are served too
        sid = studies[0]["study_id"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{sid}",
                                    timeout=5.0) as resp:
            assert resp.status == 200
            detail = json.loads(resp.read())
        assert len(detail["trials"]) == 12
        keys = {a["key"] for a in detail["trials"][0]["user_attrs"]}
        assert {"round", "window_id", "drift", "C", "L", "S", "U"} <= keys
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_dashboard_refuses_a_missing_storage(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli(), ["dashboard", "--storage", str(tmp_path / "none.journal"),
                                     "--port", "0"])
    assert res.exit_code == 2 and "no such journal file" in res.output


def test_dashboard_missing_package_points_to_the_extra(
        study_file: tuple[Path, Tuner], monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = study_file
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import fails
    res = CliRunner().invoke(cli(), ["dashboard", "--storage", str(path), "--port", "0"])
    assert res.exit_code == 2 and "tailwise[dashboard]" in res.output


def _study(path: Path, margin: float) -> tuple[Tuner, RoundResult]:
    tu = Tuner(TunerConfig(storage=str(path), study_name="prod", margin=margin), Policy(),
               evaluator=FakeEvaluator())
    return tu, tu.tune(make_trace(seed=1), CURRENT, PARTITION, n_trials=6)


def test_freeze_best_refuses_a_trial_the_gate_did_not_promote(tmp_path: Path) -> None:
    path = tmp_path / "study.journal"
    tu, _ = _study(path, margin=50.0)  # no challenger beats the champion by 50
    entry = tu.study.user_attrs["tailwise:rounds"][-1]
    assert entry["promoted_trial"] is None
    best = entry["best_trial"]
    out = tmp_path / "p.json"
    run = CliRunner().invoke
    res = run(cli(), ["freeze", "--storage", str(path), "--study", "prod", "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert f"trial {best}" in res.output and "was not promoted" in res.output
    assert "margin" in res.output and "--unpromoted" in res.output
    assert not out.exists()
    # asked for explicitly, it is exported, and the output says it was not promoted
    res = run(cli(), ["freeze", "--storage", str(path), "--study", "prod", "--out", str(out),
                      "--unpromoted"])
    assert res.exit_code == 0, res.output
    assert "was not promoted" in res.output
    raw = next(t for t in tu.study.trials if t.number == best)
    assert policy_file.load(out).boost == Policy.from_dict(raw.user_attrs["policy"]).boost
    # the policy in force is still there to freeze; --unpromoted means nothing for it
    res = run(cli(), ["freeze", "--storage", str(path), "--study", "prod", "--out", str(out),
                      "--which", "champion", "--unpromoted"])
    assert res.exit_code == 2 and "--which best only" in res.output
    tu.close()


def test_freeze_best_refuses_a_promotion_the_learner_did_not_publish(tmp_path: Path) -> None:
    path = tmp_path / "study.journal"
    tu, res = _study(path, margin=0.02)
    assert res.promoted is not None
    tu.record_publication(res, "rejected_stale", None)
    with pytest.raises(FreezeError, match=r"promoted but not published \(rejected_stale\); "
                                          r"--which champion exports the policy in force"):
        select_policy(tu.study, "best")
    policy, where = select_policy(tu.study, "best", unpromoted=True)
    assert "not published" in where
    assert (policy.boost, policy.regime) == (res.promoted.boost, res.promoted.regime)
    # what the refusal points to is indeed the policy in force, not the refused promotion
    champion, _ = select_policy(tu.study, "champion")
    assert champion.to_dict() == CURRENT.to_dict() != res.promoted.to_dict()
    # published, it is exported as promoted, and it is the champion of record
    tu.record_publication(res, "promoted", 3)
    _, where = select_policy(tu.study, "best")
    assert "as promoted" in where
    tu.close()


def test_freeze_best_refuses_a_round_without_a_decision(tmp_path: Path) -> None:
    path = tmp_path / "study.journal"
    tu, _ = _study(path, margin=0.02)
    tu.study.set_user_attr("tailwise:rounds", [])  # the round's record never written
    with pytest.raises(FreezeError, match="no decision recorded"):
        select_policy(tu.study, "best")
    tu.close()


def test_freeze_best_names_the_trial_its_round_promoted_instead(tmp_path: Path) -> None:
    """The best trial of the round is not the one the gate promoted (it failed a second
    look, or the round's decision is another replica's): refused, naming the promoted."""
    path = tmp_path / "study.journal"
    tu, res = _study(path, margin=0.02)
    rounds = tu.study.user_attrs["tailwise:rounds"]
    other = next(t.number for t in tu.study.trials
                 if t.number != res.best_trial and t.user_attrs.get("role") != "champion")
    tu.study.set_user_attr("tailwise:rounds", [{**rounds[-1], "promoted_trial": other}])
    with pytest.raises(FreezeError, match=rf"was not promoted \(round 1 promoted trial {other}\)"):
        select_policy(tu.study, "best")
    # another replica's entry for the same round number (another window) is not this
    # round's decision
    tu.study.set_user_attr("tailwise:rounds", [{**rounds[-1], "window_id": "elsewhere"}])
    with pytest.raises(FreezeError, match="no decision recorded for round 1"):
        select_policy(tu.study, "best")
    tu.close()


class ChampionIsBest(FakeEvaluator):
    """The policy in force (γ = 0.1) is the optimum: no challenger beats its replay."""

    OPTIMUM = 0.1


def test_freeze_best_exports_the_champion_replay_when_it_is_best(tmp_path: Path) -> None:
    tu = Tuner(TunerConfig(storage=str(tmp_path / "s.journal"), study_name="prod"), Policy(),
               evaluator=ChampionIsBest())
    res = tu.tune(make_trace(seed=1), CURRENT, PARTITION, n_trials=6)
    assert res.promoted is None
    policy, where = select_policy(tu.study, "best")
    assert "the champion's replay" in where and policy.boost == CURRENT.boost
    tu.close()

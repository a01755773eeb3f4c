"""Three sidecars, one Optuna study in a real PostgreSQL server: a SIGKILL loses no
completed trial, the killed sidecar's running trial is failed by the heartbeat, the
others keep tuning, a restart resumes, and a database outage keeps every sidecar up
with its policy. Skipped (with the reason) without PostgreSQL binaries or psycopg2;
CI sets TAILWISE_REQUIRE_POSTGRES=1 and starts the server (TAILWISE_PG_DIR)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tailwise.lab.fleet_study import DrillConfig, run_drill

ROOT = Path(__file__).resolve().parents[2]
PG = str(ROOT / "scripts" / "pg_local.sh")
pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(900)]


def _have_binaries() -> bool:
    return shutil.which("pg_ctl") is not None or any(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))


@pytest.fixture
def pg_dir() -> Iterator[Path]:
    pytest.importorskip("psycopg2", reason="the [postgres] extra (psycopg2-binary) is not installed")
    given = os.environ.get("TAILWISE_PG_DIR")
    if given:  # CI started the server (.ci/run)
        yield Path(given)
        return
    if not _have_binaries():
        pytest.skip("no PostgreSQL binaries (pg_ctl) found; apt-get install postgresql")
    # not under tmp_path: another pytest run of this user resets pytest's temp root to
    # 0700, and the server user (postgres, when run as root) then cannot reach its data
    base = Path(tempfile.mkdtemp(prefix="tailwise-pg-"))
    d = base / "pg"
    try:
        subprocess.run([PG, "start", str(d)], check=True, capture_output=True, timeout=120)
        yield d
    finally:
        subprocess.run([PG, "stop", str(d)], capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


def test_three_sidecars_share_one_study_through_kill_restart_and_outage(
        pg_dir: Path, tmp_path: Path) -> None:
    url = f"postgresql+psycopg2://tailwise@/tailwise?host={pg_dir}"
    cfg = DrillConfig(storage=url, workdir=tmp_path / "drill", study=f"fleet-{uuid.uuid4().hex[:8]}",
                      timeout_s=540)
    res = run_drill(
        cfg,
        db_stop=lambda: subprocess.run([PG, "stop", str(pg_dir)], check=True, timeout=120),
        db_start=lambda: subprocess.run([PG, "restart", str(pg_dir)], check=True, timeout=120))
    (tmp_path / "figures.json").write_text(json.dumps(res.to_dict(), indent=1))
    print(json.dumps(res.to_dict()), *res.log, sep="\n")
    assert res.completed_before_kill >= cfg.warmup_trials
    assert res.lost_completed == 0
    assert res.failed_by_heartbeat >= 1 and res.heartbeat_fail_s is not None
    assert res.resume_s is not None  # the restarted sidecar completed a trial again
    assert res.stuck_running == 0
    assert res.completed_total > res.completed_before_kill
    out = res.outage
    assert out["sidecars_alive"] and out["all_alive_after"]
    assert out["getpolicy_failed"] == 0 and out["policy_kept"]
    assert out["tuning_resumed"]

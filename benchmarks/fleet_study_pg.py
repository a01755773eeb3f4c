"""PostgreSQL kill drill: three sidecars tune one Optuna study; figures for issue 15.

Starts a throw-away PostgreSQL (scripts/pg_local.sh) unless --pg-dir names a running one,
runs :func:`tailwise.lab.fleet_study.run_drill` and prints trials completed, lost (must
be 0), failed by heartbeat, seconds until the heartbeat failed the killed sidecar's trial,
resume time of the restarted sidecar and the database-outage figures.

    python benchmarks/fleet_study_pg.py [--pg-dir DIR] [--out figures.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import uuid
from pathlib import Path

from tailwise.lab.fleet_study import DrillConfig, run_drill

PG = str(Path(__file__).resolve().parents[1] / "scripts" / "pg_local.sh")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pg-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tailwise-drill-"))
    pg = args.pg_dir or work / "pg"
    if args.pg_dir is None:
        subprocess.run([PG, "start", str(pg)], check=True, capture_output=True)
    try:
        res = run_drill(
            DrillConfig(storage=f"postgresql+psycopg2://tailwise@/tailwise?host={pg}",
                        workdir=work / "drill", study=f"fleet-{uuid.uuid4().hex[:8]}"),
            db_stop=lambda: subprocess.run([PG, "stop", str(pg)], check=True),
            db_start=lambda: subprocess.run([PG, "restart", str(pg)], check=True))
    finally:
        if args.pg_dir is None:
            subprocess.run([PG, "stop", str(pg)], capture_output=True)
    print(json.dumps(res.to_dict(), indent=1))
    if args.out is not None:
        args.out.write_text(json.dumps(res.to_dict(), indent=1) + "\n")


if __name__ == "__main__":
    main()

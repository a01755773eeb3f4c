"""Closing figures of the reliability suite (issue 7): runs ``tests/reliability`` and
prints what it measured.

* bad policies tried / NACKed / applied (hypothesis-fuzzed PolicyUpdates through a real
  sidecar to the adapter's PolicyClient), undecodable updates rejected;
* sidecar SIGKILLs survived while the simulator engine ran, the longest wall-clock gap
  between two engine steps during a kill (vs. the sidecar's downtime), and completed
  Optuna trials kept across the kills;
* starvation violations over 10,000 randomized overloaded simulations (must be 0);
* fuzzed telemetry events and trace rows rejected/counted; the kill switch's step.

    python benchmarks/reliability_figures.py [-k EXPR] [--json OUT]

The suite writes its figures to a JSON file (``$TAILWISE_RELIABILITY_FIGURES``); this
script points that at a temporary file, runs pytest, and prints them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ROWS = [
    ("bad policies tried", "bad_policies_tried"),
    ("bad policies NACKed", "bad_policies_nacked"),
    ("bad policies applied", "bad_policies_applied"),
    ("undecodable updates rejected (never applied)", "undecodable_updates_rejected"),
    ("sidecar SIGKILLs survived", "kills_survived"),
    ("max engine step gap during a kill (s)", "max_engine_step_gap_during_kill_s"),
    ("sidecar downtime per kill (s)", "sidecar_downtime_s"),
    ("engine steps while the sidecar was down", "engine_steps_while_sidecar_down"),
    ("completed trials kept across kills", "trials_kept_across_kills"),
    ("kills that left Optuna's journal lock behind", "stale_optuna_journal_locks_after_kill"),
    ("starvation runs", "starvation_runs"),
    ("starvation requests", "starvation_requests"),
    ("starvation runs where the policy reordered", "starvation_runs_with_reordering"),
    ("starvation violations", "starvation_violations"),
    ("telemetry events fuzzed / malformed rejected", ("telemetry_events_fuzzed",
                                                      "telemetry_bad_events_rejected")),
    ("trace rows fuzzed / malformed counted", ("trace_rows_fuzzed", "trace_bad_rows_counted")),
    ("kill switch: engine step that ran FCFS first", "kill_switch_next_step"),
    ("default bind", "default_bind"),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", default=None, help="pytest -k expression (subset of the suite)")
    ap.add_argument("--json", type=Path, default=None, help="also copy the figures here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               str(ROOT / "tests" / "reliability")]
        if args.k:
            cmd += ["-k", args.k]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ,
                                                  "TAILWISE_RELIABILITY_FIGURES": str(out)},
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
        summary = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
        if not out.exists():
            print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n")
            print(f"error: the suite wrote no figures (pytest exit {proc.returncode})")
            return 1
        figures = json.loads(out.read_text())
        if args.json is not None:
            args.json.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    print(f"tailwise reliability suite: {summary} (pytest exit {proc.returncode}, "
          f"{wall:.0f} s wall)")
    width = max(len(label) for label, _ in ROWS)
    for label, key in ROWS:
        if isinstance(key, tuple):
            vals = [figures.get(k) for k in key]
            value = " / ".join("–" if v is None else str(v) for v in vals)
        else:
            v = figures.get(key)
            value = "–" if v is None else str(v)
        print(f"  {label:<{width}}  {value}")
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())

"""The scenario report: the standard report plus phase table, timeline and recovery."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from tailwise.lab.markdown import format_cell, format_optional
from tailwise.lab.options import OnlineOptions
from tailwise.records.trace import Trace
from tailwise.simulator.engine import SimResult
from tailwise.simulator.metrics import MetricsConfig, per_request
from tailwise.simulator.report import Section, make_runs, without_empty_columns, write_report
from tailwise.simulator.scenarios import Scenario, describe_load


def phase_table(runs: dict[str, SimResult], shift_s: float, cfg: MetricsConfig
                ) -> dict[str, dict[str, float | None]]:
    """Per arm: P99 and mean TTLT of requests arriving before / after the shift."""
    out: dict[str, dict[str, float | None]] = {}
    for name, res in runs.items():
        pr = per_request(res, cfg)
        before = res.records.arrival < shift_s
        row: dict[str, float | None] = {}
        for label, m in (("before", before), ("after", ~before)):
            v = pr.ttlt[m & pr.done]
            row[f"p99_ttlt_{label}"] = float(np.percentile(v, 99)) if v.size else None
            row[f"mean_ttlt_{label}"] = float(v.mean()) if v.size else None
        out[name] = row
    return out


def write_scenario_report(out: Path, scen: Scenario, runs: dict[str, SimResult],
                          context: dict[str, Any], opts: OnlineOptions,
                          online: str | None, static: list[str],
                          extra: dict[str, Any], extra_sections: list[Section]) -> Path:
    """The standard report plus the scenario's sections (phase table and recovery,
    ``extra_sections``, the timeline table and figure), in report.md and report.html."""
    from tailwise.simulator.timeline import plot_timeline, recovery_windows, window_table

    cfg = opts.metrics
    out.mkdir(parents=True, exist_ok=True)
    rows = window_table(runs, opts.window_s, cfg, online=online)
    phases = phase_table(runs, scen.shift_s, cfg)
    recovery = None
    after = sum(1 for r in rows if r["start_s"] >= scen.shift_s - 1e-9)
    if online is not None and static:
        recovery = recovery_windows(rows, online, static, scen.shift_s, opts.window_s,
                                    tolerance=opts.recovery_tolerance, hold=opts.recovery_hold)
    trials = [(float(r["engine_time"]), float(v)) for r in extra.get("rounds", [])
              for v in r["trial_values"] if v is not None]
    images = []
    if opts.plots:
        images.append(plot_timeline(out, runs, rows, opts.window_s, scen.shift_s, online,
                                    trials=trials or None))
    loads = describe_load(scen, opts.engine, opts.model)
    note = (f"Shift (phase boundary) at engine time {scen.shift_s:.1f} s"
            + ("; offered load " + ", ".join(f"{v:.3g} {k}" for k, v in loads.items())
               if loads else "") + ".")
    if online is not None and static:
        note += (f" **Recovery**: {online} is back within {opts.recovery_tolerance:.0%} of "
                 f"the best static arm ({', '.join(static)}) for {opts.recovery_hold} "
                 f"consecutive {opts.window_s:g}-s windows "
                 + (f"after **{recovery} window(s)** from the shift." if recovery is not None
                    else f"**not** within the {after} window(s) after the shift."))
    # columns with no value in any window (the short class of a trace with its own
    # class labels) are left out of the table; results.json keeps them
    cols = [c for c in (rows[0] if rows else {}) if c != "window"]
    head, cells, _ = without_empty_columns(cols, [[format_cell(r[c]) for c in cols]
                                                  for r in rows])
    sections = [
        Section(f"Scenario {scen.name}: {scen.description}",
                ["policy", "P99 TTLT before (s)", "P99 TTLT after (s)", "mean TTLT before (s)",
                 "mean TTLT after (s)"],
                [[n, format_optional(p["p99_ttlt_before"]), format_optional(p["p99_ttlt_after"]),
                  format_optional(p["mean_ttlt_before"]), format_optional(p["mean_ttlt_after"])]
                 for n, p in phases.items()], note=note),
        *extra_sections,
        Section(f"Timeline ({opts.window_s:g}-s windows of arrival time)", head, cells,
                images=images),
    ]
    path = write_report(out, make_runs(runs, cfg), context, cfg, window_s=opts.window_s,
                        plots=opts.plots, sections=sections)
    results = json.loads((out / "results.json").read_text())
    results["scenario"] = {"name": scen.name, "shift_s": scen.shift_s,
                           "description": scen.description,
                           "offered_load": describe_load(scen, opts.engine, opts.model)}
    results["phases"] = phases
    results["timeline"] = {"window_s": opts.window_s, "rows": rows}
    results["recovery"] = {"online": online, "static": static, "windows": recovery,
                           "windows_after_shift": after,
                           "tolerance": opts.recovery_tolerance, "hold": opts.recovery_hold}
    results.update(extra)
    (out / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False,
                                                 default=json_default) + "\n")
    return path


def json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def report_context(trace: Trace, opts: OnlineOptions, names: list[str],
                   rate_scale: float = 1.0) -> dict[str, Any]:
    from tailwise.simulator.workload import offered_load

    return {"trace": trace.summary(), "config": {
        "engine_impl": opts.engine_name, "engine": dataclasses.asdict(opts.engine),
        "step_model": opts.model.name, "step_model_coefficients": opts.model.to_dict(),
        "rate_scale": round(rate_scale, 6), "target_load": opts.load,
        "offered_load": round(offered_load(trace, opts.engine, opts.model), 4),
        "policies": names, "seed": opts.seed}}

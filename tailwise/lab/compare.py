"""Two (or more) report directories side by side: ``tailwise report A B``.

Each directory is a ``simulate`` or ``replay`` output (``results.json`` + the per-request
``requests_<name>.csv``). Every run in them becomes a row, named ``<dir>/<policy>``;
ratios divide each row by a baseline row (the first one unless chosen). Typical uses:
stock vs tailwise replays on one server, and a simulation's prediction vs a replay.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tailwise.simulator.report import (
    LINESTYLES,
    html_page,
    html_table,
    lookup,
    md_inline_html,
    md_table,
    metric_table,
)


class CompareError(ValueError):
    """A report directory is missing or unreadable; the message names it."""


@dataclass(frozen=True)
class LoadedRun:
    name: str
    summary: dict[str, Any]
    directory: Path
    policy: str
    kind: str


#: (label, path into the summary, higher is better)
RATIO_METRICS: list[tuple[str, tuple[str, ...], bool]] = [
    ("TTFT mean", ("overall", "ttft", "mean"), False),
    ("TTFT p99", ("overall", "ttft", "p99"), False),
    ("short TTFT mean", ("classes", "short", "ttft", "mean"), False),
    ("TTLT mean", ("overall", "ttlt", "mean"), False),
    ("TTLT p50", ("overall", "ttlt", "p50"), False),
    ("TTLT p99", ("overall", "ttlt", "p99"), False),
    ("short TTLT p99", ("classes", "short", "ttlt", "p99"), False),
    ("long TTLT p99", ("classes", "long", "ttlt", "p99"), False),
    ("TPOT mean", ("overall", "tpot", "mean"), False),
    ("throughput", ("overall", "throughput_tps"), True),
    ("goodput", ("overall", "goodput_rps"), True),
]


def load_runs(dirs: Sequence[Path], names: Sequence[str] | None = None,
              policies: Sequence[str] | None = None) -> list[LoadedRun]:
    """Read every ``results.json``; keep only ``policies`` when given."""
    if len(dirs) < 2:
        raise CompareError("give at least two report directories")
    if names is not None and len(names) != len(dirs):
        raise CompareError(f"--names: {len(names)} names for {len(dirs)} directories")
    labels = list(names) if names is not None else _dir_labels(dirs)
    runs: list[LoadedRun] = []
    for d, label in zip(dirs, labels, strict=True):
        path = d / "results.json"
        if not path.is_file():
            raise CompareError(f"{d}: no results.json (not a simulate/replay report directory)")
        try:
            data = json.loads(path.read_text())
            pols = data["policies"]
            kind = str(data.get("config", {}).get("engine_impl", "sim"))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise CompareError(f"{path}: unreadable results ({type(exc).__name__}: {exc})") from None
        if not isinstance(pols, dict):
            raise CompareError(f"{path}: 'policies' is not an object")
        for pol, summary in pols.items():
            if policies is None or pol in policies:
                runs.append(LoadedRun(f"{label}/{pol}", summary, d, pol, kind))
    if policies is not None:
        missing = [p for p in policies if not any(r.policy == p for r in runs)]
        if missing:
            raise CompareError(f"--policy: {missing[0]!r} is in none of the directories")
    if len(runs) < 2:
        raise CompareError("fewer than two runs to compare")
    return runs


def _dir_labels(dirs: Sequence[Path]) -> list[str]:
    labels = [d.resolve().name or str(d) for d in dirs]
    if len(set(labels)) < len(labels):
        labels = [f"{chr(ord('A') + i)}:{lab}" for i, lab in enumerate(labels)]
    return labels


def ratio_rows(runs: Sequence[LoadedRun], base: LoadedRun) -> tuple[list[str], list[list[str]]]:
    """Each run's metric ÷ the baseline's; the best row per column in bold."""
    header = ["run"] + [f"{label} ÷ base" for label, _, _ in RATIO_METRICS]
    vals: list[list[float | None]] = []
    for r in runs:
        row: list[float | None] = []
        for _, path, _ in RATIO_METRICS:
            a, b = lookup(r.summary, path), lookup(base.summary, path)
            row.append(a / b if a is not None and b else None)
        vals.append(row)
    rows = [[r.name + (" (base)" if r is base else "")] for r in runs]
    for j, (_, _, higher) in enumerate(RATIO_METRICS):
        col = [v[j] for v in vals]
        finite = [x for x in col if x is not None and math.isfinite(x)]
        best = (max(finite) if higher else min(finite)) if finite else None
        for i, x in enumerate(col):
            cell = "–" if x is None else f"{x:.2f}×"
            rows[i].append(f"**{cell}**" if x is not None and x == best and len(finite) > 1
                           else cell)
    return header, rows


def error_rows(runs: Sequence[LoadedRun]) -> list[list[str]]:
    rows = []
    for r in runs:
        ov = r.summary.get("overall", {})
        errs = r.summary.get("errors", {})
        reasons = ", ".join(f"{k}: {v}" for k, v in errs.get("by_reason", {}).items()) or "–"
        rows.append([r.name, r.kind, str(ov.get("requests", "?")), str(ov.get("completed", "?")),
                     str(errs.get("failed", 0)), str(errs.get("interrupted", 0)), reasons])
    return rows


def _csv_column(path: Path, column: str) -> tuple[np.ndarray[Any, Any], list[str]]:
    vals: list[float] = []
    classes: list[str] = []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            v = row.get(column, "")
            vals.append(float(v) if v not in ("", None) else math.nan)
            classes.append(row.get("class", ""))
    return np.array(vals, dtype=np.float64), classes


def plot_cdfs(out: Path, runs: Sequence[LoadedRun]) -> list[str]:
    """TTFT and TTLT CDFs of every run, from the per-request CSVs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    drawn = False
    for ax, (col, title) in zip(axes, (("ttft_s", "time to first token"),
                                       ("ttlt_s", "end-to-end latency")), strict=True):
        for i, r in enumerate(runs):
            path = r.directory / f"requests_{r.policy}.csv"
            if not path.is_file():
                continue
            v, _ = _csv_column(path, col)
            v = np.sort(v[np.isfinite(v)])
            if v.size:
                drawn = True
                ax.plot(v, np.arange(1, v.size + 1) / v.size, label=r.name,
                        linestyle=LINESTYLES[i % len(LINESTYLES)], color=f"C{i % 10}")
        ax.set_xscale("log")
        ax.set_xlabel(f"{col[:-2].upper()} (s, log)")
        ax.set_ylabel("CDF")
        ax.set_title(f"{title}, all requests")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    files = []
    if drawn:
        fig.savefig(out / "compare_cdf.png", dpi=110)
        files.append("compare_cdf.png")
    plt.close(fig)
    return files


def compare(dirs: Sequence[Path], out: Path, *, names: Sequence[str] | None = None,
            policies: Sequence[str] | None = None, baseline: str | None = None,
            plots: bool = True) -> Path:
    """Write ``comparison.md``, ``comparison.html``, ``comparison.json`` (and a plot)."""
    runs = load_runs(dirs, names, policies)
    if baseline is None:
        base = runs[0]
    else:
        found = [r for r in runs if baseline in (r.name, r.policy)]
        if not found:
            raise CompareError(f"--baseline: no run named {baseline!r} "
                               f"(runs: {', '.join(r.name for r in runs)})")
        base = found[0]
    out.mkdir(parents=True, exist_ok=True)
    mh, mrows = metric_table(runs)
    rh, rrows = ratio_rows(runs, base)
    eh = ["run", "kind", "requests", "completed", "failed", "interrupted", "errors by reason"]
    erows = error_rows(runs)
    images = plot_cdfs(out, runs) if plots else []
    sources = ", ".join(f"`{r.name}` ← {r.directory}" for r in runs)
    intro = (f"Runs: {sources}. Ratios divide by **{base.name}**; < 1 is better for "
             f"latencies, > 1 for throughput and goodput; the best per column is in bold.")
    lines = ["# tailwise comparison", "", intro, "",
             "## Ratios to the baseline", "", md_table(rh, rrows), "",
             "## Metrics (lower is better except goodput/throughput)", "", md_table(mh, mrows), "",
             "## Requests and errors", "", md_table(eh, erows), ""]
    lines += [f"![{i}]({i})" for i in images] + [""]
    (out / "comparison.md").write_text("\n".join(lines))
    body = "".join([
        "<h1>tailwise comparison</h1>", f"<p>{md_inline_html(intro)}</p>",
        "<h2>Ratios to the baseline</h2>", html_table(rh, rrows),
        "<h2>Metrics</h2>", html_table(mh, mrows),
        "<h2>Requests and errors</h2>", html_table(eh, erows),
        "".join(f'<h2>latency CDFs</h2><img src="{i}" style="max-width:100%">' for i in images),
    ])
    (out / "comparison.html").write_text(html_page("tailwise comparison", body))
    ratios = {r.name: {label: (lookup(r.summary, path) or math.nan) /
                       (lookup(base.summary, path) or math.nan)
                       for label, path, _ in RATIO_METRICS} for r in runs}
    (out / "comparison.json").write_text(json.dumps(
        {"baseline": base.name, "runs": {r.name: {"directory": str(r.directory),
                                                   "policy": r.policy, "kind": r.kind}
                                          for r in runs},
         "ratios": {n: {k: (v if math.isfinite(v) else None) for k, v in d.items()}
                    for n, d in ratios.items()}}, indent=2) + "\n")
    return out / "comparison.md"

"""The report a serving engineer reads: comparison table, plots, results.json, CSVs.

``write_report(out_dir, runs, context)`` writes

* ``results.json`` — ``{"trace", "config", "policies": {name: summary}}`` (stable schema,
  see DESIGN.md §Names and report schema),
* ``summary.csv`` and ``requests_<policy>.csv``,
* ``report.md`` and ``report.html`` — the comparison table with each policy's ratio to
  FCFS and to oracle SRPT (when they were run), and the plots,
* ``ttlt_cdf.png`` (latency CDFs per class), ``p99_windows.png`` (P99 TTLT per time
  window), ``kv_queue.png`` (KV usage and waiting queue over time), ``envelope.png``
  (the waiting envelope and the longest wait over time, for policies that have one).
"""

from __future__ import annotations

import csv
import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from tailwise.simulator.engine import SimResult
from tailwise.simulator.metrics import MetricsConfig, per_request, summarize, windows, write_requests_csv


@dataclass
class Run:
    name: str
    result: SimResult
    #: a :class:`~tailwise.records.summary.Summary` (as a plain dict, like one read back)
    summary: dict[str, Any]


class Summarised(Protocol):
    """Anything with a name and a ``results.json`` summary (a run, or one read back)."""

    @property
    def name(self) -> str: ...
    @property
    def summary(self) -> dict[str, Any]: ...


@dataclass
class Section:
    """An extra table in the report (e.g. a replay's errors by reason)."""

    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""
    images: list[str] = field(default_factory=list)


def make_runs(results: dict[str, SimResult], cfg: MetricsConfig) -> list[Run]:
    return [Run(name, res, cast(dict[str, Any], summarize(res, cfg)))
            for name, res in results.items()]


_COLUMNS: list[tuple[str, str, tuple[str, ...]]] = [
    ("TTFT mean", "s", ("overall", "ttft", "mean")),
    ("TTFT p99", "s", ("overall", "ttft", "p99")),
    ("short TTFT mean", "s", ("classes", "short", "ttft", "mean")),
    ("TTLT mean", "s", ("overall", "ttlt", "mean")),
    ("TTLT p50", "s", ("overall", "ttlt", "p50")),
    ("TTLT p99", "s", ("overall", "ttlt", "p99")),
    ("long TTLT p99", "s", ("classes", "long", "ttlt", "p99")),
    ("TPOT p99", "ms", ("overall", "tpot", "p99")),
    ("queue p99", "s", ("overall", "queue_delay", "p99")),
    ("goodput", "req/s", ("overall", "goodput_rps")),
    ("throughput", "tok/s", ("overall", "throughput_tps")),
    ("rejected", "", ("overall", "rejected")),
    ("preempt", "", ("overall", "preemptions")),
    ("wasted tok", "", ("overall", "wasted_recompute_tokens")),
]
_RATIOS: list[tuple[str, tuple[str, ...]]] = [
    ("TTLT mean", ("overall", "ttlt", "mean")),
    ("TTLT p99", ("overall", "ttlt", "p99")),
    ("short TTFT", ("classes", "short", "ttft", "mean")),
]


def lookup(summary: Mapping[str, Any], path: tuple[str, ...]) -> float | None:
    cur: Any = summary
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return None
        cur = cur[key]
    return float(cur) if isinstance(cur, int | float) and math.isfinite(cur) else None


def _format_value(v: float | None, unit: str = "") -> str:
    if v is None:
        return "–"
    if unit == "" and float(v).is_integer():
        return f"{int(v):,}"
    if unit == "ms":
        v *= 1000.0
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3f}"


def ratio_table(runs: Sequence[Summarised]) -> tuple[list[str], list[list[str]]]:
    """Each policy's metric divided by FCFS's and by SRPT-oracle's (lower is better)."""
    base = {r.name: r.summary for r in runs}
    refs = [n for n in ("fcfs", "srpt-oracle") if n in base]
    header = ["policy"] + [f"{label} ÷ {ref}" for ref in refs for label, _ in _RATIOS]
    rows, values = [], []
    for r in runs:
        row, vals = [r.name], []
        for ref in refs:
            for _, path in _RATIOS:
                a, b = lookup(r.summary, path), lookup(base[ref], path)
                ratio = None if a is None or not b else a / b
                vals.append(ratio)
                row.append("–" if ratio is None else f"{ratio:.2f}×")
        rows.append(row)
        values.append(vals)
    _bold_columns(rows, values, [False] * (len(header) - 1))
    return header, rows


#: columns where higher is better (every other metric column: lower is better)
HIGHER_IS_BETTER = frozenset({"goodput", "throughput"})
#: figure file -> what it shows (the report's heading for it)
FIGURE_TITLES = {
    "ttlt_cdf.png": "End-to-end latency (TTLT) distribution per request class",
    "p99_windows.png": "P99 end-to-end latency per 60 s window of arrivals",
    "kv_queue.png": "KV-cache usage and waiting requests over time",
    "envelope.png": "Waiting envelope E and the longest wait over time",
}


def mark_best(values: Sequence[float | None], cells: list[str], higher: bool = False) -> None:
    """Bold (markdown ``**``) the best of ``values`` in ``cells``, ties included; nothing
    when every value is the same (no best to point at).

    >>> cells = ["1.0", "0.5", "0.5", "–"]
    >>> mark_best([1.0, 0.5, 0.5, None], cells); cells
    ['1.0', '**0.5**', '**0.5**', '–']
    """
    present = [v for v in values if v is not None]
    if len(set(present)) < 2:
        return
    best = max(present) if higher else min(present)
    for i, v in enumerate(values):
        if v == best:
            cells[i] = f"**{cells[i]}**"


def _bold_columns(rows: list[list[str]], values: list[list[float | None]],
                  higher: Sequence[bool]) -> None:
    for j, hi in enumerate(higher):
        column = [row[j + 1] for row in rows]
        mark_best([vals[j] for vals in values], column, hi)
        for row, cell in zip(rows, column, strict=True):
            row[j + 1] = cell


def without_empty_columns(header: list[str], rows: list[list[str]]
                          ) -> tuple[list[str], list[list[str]], list[str]]:
    """``header`` and ``rows`` without the columns (after the first) that hold no value
    for any row, and the names of those left out (a report shows no column of dashes).

    >>> without_empty_columns(["policy", "a", "b"], [["x", "–", "1"], ["y", "–", "2"]])
    (['policy', 'b'], [['x', '1'], ['y', '2']], ['a'])
    """
    keep = [0] + [j for j in range(1, len(header)) if any(r[j] != "–" for r in rows)]
    if not rows:
        keep = list(range(len(header)))
    gone = [h for j, h in enumerate(header) if j not in keep]
    return [header[j] for j in keep], [[r[j] for j in keep] for r in rows], gone


def metric_table(runs: Sequence[Summarised]) -> tuple[list[str], list[list[str]]]:
    """One row per policy; the best value of each column in bold."""
    header = ["policy"] + [f"{label} ({unit})" if unit else label for label, unit, _ in _COLUMNS]
    values = [[lookup(r.summary, path) for _, _, path in _COLUMNS] for r in runs]
    rows = [[r.name] + [_format_value(v, unit) for v, (_, unit, _) in zip(vals, _COLUMNS, strict=True)]
            for r, vals in zip(runs, values, strict=True)]
    _bold_columns(rows, values, [label in HIGHER_IS_BETTER for label, _, _ in _COLUMNS])
    return header, rows


def md_table(header: list[str], rows: list[list[str]],
             best: list[list[bool]] | None = None) -> str:
    """A markdown table; cells flagged in ``best`` are bold. A ``|`` in a cell is escaped
    and a line break becomes a space, so prose (an error's text) cannot break a row."""
    def cell(c: str) -> str:
        return " ".join(c.replace("|", "\\|").split())

    out = ["| " + " | ".join(map(cell, header)) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
    for i, row in enumerate(rows):
        cells = [f"**{cell(c)}**" if best and best[i][j] else cell(c) for j, c in enumerate(row)]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def html_table(header: list[str], rows: list[list[str]],
               best: list[list[bool]] | None = None) -> str:
    """An HTML table (cells may hold ``**bold**``/```code```); cells flagged in ``best``
    get ``class="best"`` (highlighted by :data:`STYLE`)."""
    # a column holding prose (any cell longer than PROSE_CHARS) is left-aligned
    prose = [any(len(row[j]) > PROSE_CHARS for row in rows if j < len(row))
             for j in range(len(header))]
    th = "".join(f'<th class="text">{html.escape(h)}</th>' if prose[j]
                 else f"<th>{html.escape(h)}</th>" for j, h in enumerate(header))

    def td(c: str, i: int, j: int) -> str:
        cls = ["best"] if best and best[i][j] else []
        cls += ["text"] if j < len(prose) and prose[j] else []
        attr = f' class="{" ".join(cls)}"' if cls else ""
        return f"<td{attr}>{md_inline_html(c)}</td>"

    trs = "".join("<tr>" + "".join(td(c, i, j) for j, c in enumerate(row)) + "</tr>"
                  for i, row in enumerate(rows))
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def html_page(title: str, body: str) -> str:
    """A whole HTML report page around ``body``, styled by :data:`STYLE`."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body>{body}</body></html>\n")


LINESTYLES = ("-", "--", "-.", ":")


def plot_all(out: Path, runs: list[Run], cfg: MetricsConfig, window_s: float,
             time_label: str = "engine time (s)") -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: list[str] = []

    def save(fig: Any, name: str, axes: Sequence[Any], legend: Any) -> None:
        """Grid on ``axes``, the legend on ``legend``, written to ``out/name``."""
        for a in axes:
            a.grid(alpha=0.3)
        legend.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        files.append(name)

    class_names = sorted({c for r in runs for c in r.summary["classes"]},
                         key=lambda c: (c != "short", c))
    fig, axes = plt.subplots(1, max(len(class_names), 1), figsize=(5.5 * max(len(class_names), 1), 4),
                             squeeze=False)
    for ax, cname in zip(axes[0], class_names, strict=False):
        for r in runs:
            pr = per_request(r.result, cfg)
            m = np.asarray(pr.classes) == cname
            v = np.sort(pr.ttlt[m][np.isfinite(pr.ttlt[m])])
            if v.size:
                ax.plot(v, np.arange(1, v.size + 1) / v.size, label=r.name,
                        linestyle=LINESTYLES[runs.index(r) % len(LINESTYLES)])
        ax.set_xscale("log")
        ax.set_xlabel("TTLT (s, log)")
        ax.set_ylabel("CDF")
        ax.set_title(f"end-to-end latency, class {cname}")
    save(fig, "ttlt_cdf.png", axes[0][:len(class_names)], axes[0][0])

    fig, ax = plt.subplots(figsize=(9, 4))
    for r in runs:
        w = windows(r.result, window_s, cfg)
        ax.plot(w["start"], w["p99_ttlt"], marker=".", label=r.name,
                linestyle=LINESTYLES[runs.index(r) % len(LINESTYLES)])
    ax.set_xlabel("arrival time (s)")
    ax.set_ylabel(f"P99 TTLT per {window_s:g}s window (s)")
    ax.set_title(f"P99 end-to-end latency per {window_s:g}s window of arrivals")
    save(fig, "p99_windows.png", [ax], ax)

    # a replay without server metrics has no KV series: plot the queue alone
    has_kv = any("kv_usage" in r.result.timeseries for r in runs)
    fig, axes2 = plt.subplots(2 if has_kv else 1, 1, figsize=(9, 6 if has_kv else 3.5),
                              sharex=True, squeeze=False)
    a1, a2 = axes2[0][0], axes2[-1][0]
    for i, r in enumerate(runs):
        ts = r.result.timeseries
        style = LINESTYLES[i % len(LINESTYLES)]
        if "kv_usage" in ts:
            a1.plot(ts["t"], ts["kv_usage"], lw=0.8, label=r.name, linestyle=style)
        a2.plot(ts["t"], ts["waiting"], lw=0.8, label=r.name, linestyle=style)
    if has_kv:
        a1.set_ylabel("KV usage")
    a2.set_ylabel("waiting requests")
    a2.set_xlabel(time_label)
    a1.set_title("KV usage and waiting queue over time" if has_kv else
                 "requests waiting for their first token over time")
    save(fig, "kv_queue.png", list({a1, a2}), a1)

    # the waiting bound of the policies that have one (what the adapter's gauges show)
    enveloped = [(i, r) for i, r in enumerate(runs)
                 if np.isfinite(r.result.timeseries.get("envelope_s", np.zeros(0))).any()]
    if enveloped:
        fig, (e1, e2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
        for i, r in enveloped:
            ts = r.result.timeseries
            style = LINESTYLES[i % len(LINESTYLES)]
            e1.plot(ts["t"], ts["envelope_s"], lw=1.0, label=r.name, linestyle=style,
                    color=f"C{i % 10}")
            e2.plot(ts["t"], ts["oldest_wait_s"], lw=0.8, label=r.name, linestyle=style,
                    color=f"C{i % 10}")
        e1.set_ylabel("envelope E (s)")
        e2.set_ylabel("longest wait (s)")
        e2.set_xlabel(time_label)
        e1.set_title("Waiting envelope E (a request that has waited E is served before later "
                     "arrivals) and the longest wait", fontsize=9)
        save(fig, "envelope.png", [e1, e2], e1)
    return files


def write_report(out: Path, runs: list[Run], context: dict[str, Any], cfg: MetricsConfig,
                 window_s: float = 60.0, plots: bool = True, *,
                 title: str = "tailwise simulation report", description: str | None = None,
                 sections: Sequence[Section] = (),
                 time_label: str = "engine time (s)") -> Path:
    """Write results.json, CSVs, plots and the markdown/HTML report into ``out``.

    ``description`` replaces the engine paragraph (a replay has no simulated engine);
    ``sections`` are extra tables shown before the plots.
    """
    out.mkdir(parents=True, exist_ok=True)
    results = {
        "trace": context.get("trace", {}),
        "config": context.get("config", {}),
        "policies": {r.name: r.summary for r in runs},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False,
                                                 default=json_default) + "\n")
    mh, mrows = metric_table(runs)
    rh, rrows = ratio_table(runs)
    with (out / "summary.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(mh)
        w.writerows(mrows)
    for r in runs:
        write_requests_csv(r.result, out / f"requests_{r.name}.csv", cfg)
    # summary.csv keeps every column; the report leaves out those with no value at all
    mh, mrows, gone = without_empty_columns(mh, mrows)
    rh, rrows, gone_r = without_empty_columns(rh, rrows)
    left_out = "; ".join(x for x in (", ".join(gone), ", ".join(gone_r)) if x)
    # why, when it is known: a trace with its own class labels has no short/long classes
    labels = sorted({c for r in runs for c in (r.summary.get("classes") or {})}
                    - {"short", "long"})
    by_class = all(("short" in c or "long" in c) for c in [*gone, *gone_r])
    note = (f"Left out, no value for any policy: {left_out}" + (
        " (a trace with its own class labels has no short/long prompt classes)"
        if labels and by_class else "") + "." if left_out else "")
    images = plot_all(out, runs, cfg, window_s, time_label) if plots else []
    trace = context.get("trace", {})
    conf = context.get("config", {})
    default_description = (
        f"Trace **{trace.get('name', '?')}**: {trace.get('requests', '?')} requests over "
        f"{trace.get('duration_s', '?')} s (rate scale {conf.get('rate_scale', 1)}, offered load "
        f"{conf.get('offered_load', '?')}). Engine: {conf.get('step_model', '?')}, "
        f"{conf.get('engine', {}).get('num_gpu_blocks', '?')} KV blocks of "
        f"{conf.get('engine', {}).get('block_size', '?')} tokens, max "
        f"{conf.get('engine', {}).get('max_num_seqs', '?')} running, "
        f"{conf.get('engine', {}).get('max_num_batched_tokens', '?')}-token steps. "
        + (f"Classes: the trace's own labels ({', '.join(labels)}). " if labels else
           f"Classes: short = prompt ≤ {cfg.short_threshold} tokens. ")
        + f"SLO: TTFT ≤ {cfg.ttft_slo_s} s, "
        f"TPOT ≤ {cfg.tpot_slo_s * 1000:g} ms.")
    lines = [
        f"# {title}",
        "",
        description if description is not None else default_description,
        "",
        "## Metrics (lower is better except goodput/throughput; best of each column in bold)",
        "",
        md_table(mh, mrows),
        "",
    ] + ([note, ""] if note else [])
    if len(rh) > 1:  # only when a reference (fcfs, srpt-oracle) was run
        lines += ["## Ratios (policy ÷ reference; < 1 means better than the reference)", "",
                  md_table(rh, rrows), ""]
    for sec in sections:
        lines += [f"## {sec.title}", ""] + ([sec.note, ""] if sec.note else [])
        lines += ([md_table(sec.header, sec.rows), ""] if sec.rows else [])
        lines += [f"![{i}]({i})" for i in sec.images] + ([""] if sec.images else [])
    if images:
        lines += ["## Plots", ""]
        for i in images:
            lines += [f"### {FIGURE_TITLES.get(i, i)}", "", f"![{FIGURE_TITLES.get(i, i)}]({i})", ""]
    lines += ["Per-request data: `requests_<policy>.csv`; machine-readable: `results.json`.", ""]
    (out / "report.md").write_text("\n".join(lines))
    body = "".join([
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{md_inline_html(lines[2])}</p>",
        "<h2>Metrics</h2>", html_table(mh, mrows),
        f"<p>{html.escape(note)}</p>" if note else "",
        "<h2>Ratios</h2>" + html_table(rh, rrows) if len(rh) > 1 else "",
        "".join(f"<h2>{html.escape(sec.title)}</h2>"
                + (f"<p>{md_inline_html(sec.note)}</p>" if sec.note else "")
                + (html_table(sec.header, sec.rows) if sec.rows else "")
                + "".join(f'<img src="{i}" style="max-width:100%">' for i in sec.images)
                for sec in sections),
        "".join(f'<h2>{html.escape(FIGURE_TITLES.get(i, i))}</h2>'
                f'<img src="{i}" alt="{html.escape(FIGURE_TITLES.get(i, i))}" style="max-width:100%">'
                for i in images),
    ])
    (out / "report.html").write_text(html_page(title, body))
    return out / "report.md"


STYLE = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
         "margin-bottom:1em}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
         "td:first-child,th:first-child{text-align:left}.text{text-align:left}"
         "td.best{background:#d8f5d0;font-weight:bold}")
#: a cell longer than this is prose, not a number: left-aligned in HTML
PROSE_CHARS = 40


def md_inline_html(text: str) -> str:
    """Escape a markdown paragraph for HTML, rendering ``**bold**`` and ```code```.

    >>> md_inline_html("Trace **a<b** at `x`")
    'Trace <b>a&lt;b</b> at <code>x</code>'
    """
    out = html.escape(text, quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def json_default(obj: Any) -> Any:
    """``json.dumps`` default for numpy scalars (results files hold them)."""
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")

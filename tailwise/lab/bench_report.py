"""The bench report a person reads: ``report.md``, ``report.html`` and a figure.

Built from the ``results.json`` document alone (:func:`write_report`), so a saved run can
be re-rendered and the README's suite table regenerated (:func:`readme_table`) without
rerunning anything. In every table the best value of each column is marked: bold in
markdown, a highlighted cell in HTML (never raw ``**``).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tailwise.simulator.report import html_page, html_table, md_table

#: (header, path into a policy's result, "min" or "max" is best, format)
Column = tuple[str, tuple[str, ...], str, str]

DETAIL: list[Column] = [
    ("TTFT mean (s)", ("ttft_mean",), "min", "s"),
    ("short TTFT mean (s)", ("short_ttft_mean",), "min", "s"),
    ("TTFT p99 (s)", ("ttft_p99",), "min", "s"),
    ("TTLT p99 (s)", ("ttlt_p99",), "min", "s"),
    ("preempt", ("preemptions",), "min", "int"),
    ("wasted tok", ("wasted_recompute_tokens",), "min", "int"),
    ("TTFT ÷ FCFS", ("vs_fcfs", "ttft_mean"), "min", "x"),
    ("TTFT ÷ SRPT", ("vs_srpt_oracle", "ttft_mean"), "min", "x"),
    ("P99 TTLT ÷ FCFS", ("vs_fcfs", "ttlt_p99"), "min", "x"),
    ("P99 TTLT ÷ SRPT", ("vs_srpt_oracle", "ttlt_p99"), "min", "x"),
]


def _get(d: Any, path: Sequence[str]) -> float | None:
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    if isinstance(d, bool) or not isinstance(d, int | float) or not math.isfinite(d):
        return None
    return float(d)


def _fmt(v: float | None, kind: str) -> str:
    if v is None:
        return "–"
    if kind == "int":
        return f"{int(v):,}"
    if kind == "x":
        return f"{v:.2f}×"
    if kind == "pct":
        return f"{100 * v:.1f}%"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


Cell = tuple[str, bool]  # text, is best in its column


def _table(rows: list[tuple[str, dict[str, Any]]], cols: list[Column]
           ) -> tuple[list[str], list[list[Cell]]]:
    header = ["policy"] + [c[0] for c in cols]
    vals = [[_get(m, c[1]) for c in cols] for _, m in rows]
    best: list[float | None] = []
    for j, c in enumerate(cols):
        present = [x for v in vals if (x := v[j]) is not None]
        best.append((min(present) if c[2] == "min" else max(present)) if present else None)
    body = []
    for (name, _), v in zip(rows, vals, strict=True):
        cells: list[Cell] = [(name, False)]
        for j, c in enumerate(cols):
            cells.append((_fmt(v[j], c[3]), v[j] is not None and v[j] == best[j]))
        body.append(cells)
    return header, body


def _split(body: list[list[Cell]]) -> tuple[list[list[str]], list[list[bool]]]:
    """Cell rows as the text rows and best flags that ``md_table``/``html_table`` take."""
    return [[t for t, _ in row] for row in body], [[b for _, b in row] for row in body]


def _slo_columns(per_policy: dict[str, Any]) -> list[Column]:
    names: set[str] = set()
    for m in per_policy.values():
        names.update(m.get("slo_attainment", {}))
    return [(f"SLO {n}", ("slo_attainment", n), "max", "pct") for n in sorted(names)]


def workload_table(per_policy: dict[str, Any]) -> tuple[list[str], list[list[Cell]]]:
    cols = DETAIL[:4] + _slo_columns(per_policy) + DETAIL[4:]
    return _table(list(per_policy.items()), cols)


def overview_table(results: dict[str, Any]) -> tuple[list[str], list[list[Cell]]]:
    """Policies × workloads: mean TTFT ÷ oracle SRPT and P99 TTLT ÷ FCFS."""
    wls = list(results["workloads"])
    policies: list[str] = []
    for w in wls:
        for p in results["workloads"][w]:
            if p not in policies:
                policies.append(p)
    cols: list[Column] = []
    for w in wls:
        cols.append((f"{w} TTFT÷SRPT", (w, "vs_srpt_oracle", "ttft_mean"), "min", "x"))
        cols.append((f"{w} P99 TTLT÷FCFS", (w, "vs_fcfs", "ttlt_p99"), "min", "x"))
    rows = [(p, {w: results["workloads"][w].get(p, {}) for w in wls}) for p in policies]
    return _table(rows, cols)


def pressure_table(results: dict[str, Any]) -> tuple[list[str], list[list[Cell]]]:
    """Per workload: its load and what FCFS suffers there (queueing, preemption)."""
    header = ["workload", "requests", "offered load", "KV blocks", "FCFS queue mean (s)",
              "FCFS queue p99 (s)", "FCFS preemptions", "FCFS wasted tok", "FCFS TTFT (s)",
              "SRPT TTFT (s)"]
    body: list[list[Cell]] = []
    for w, per in results["workloads"].items():
        d = results.get("suite", {}).get(w, {})
        f = per.get("fcfs", {})
        s = per.get("srpt-oracle", {})
        body.append([(w, False), (_fmt(_get(d, ("trace", "requests")), "int"), False),
                     (_fmt(_get(d, ("offered_load",)), "s"), False),
                     (_fmt(_get(d, ("engine", "num_gpu_blocks")), "int"), False),
                     (_fmt(_get(f, ("queue_delay_mean",)), "s"), False),
                     (_fmt(_get(f, ("queue_delay_p99",)), "s"), False),
                     (_fmt(_get(f, ("preemptions",)), "int"), False),
                     (_fmt(_get(f, ("wasted_recompute_tokens",)), "int"), False),
                     (_fmt(_get(f, ("ttft_mean",)), "s"), False),
                     (_fmt(_get(s, ("ttft_mean",)), "s"), False)])
    return header, body


def readme_table(results: dict[str, Any]) -> str:
    """The README's suite table (markdown), regenerated from ``results.json``."""
    header, body = overview_table(results)
    return md_table(header, *_split(body))


_DEF_SHORT = ("Short requests: true job size (prompt prefill work + output decode work in "
              "engine seconds, the oracles' size) at or below the workload's median. SLO "
              "attainment: share of a class's requests meeting both TTFT and TPOT targets "
              "(default class: TTFT 8 s, TPOT 50 ms; interactive 2 s / 50 ms; batch 60 s / "
              "200 ms). Ratios are policy ÷ reference on the same workload; lower is better.")


def plot(out: Path, results: dict[str, Any]) -> str | None:
    """Mean TTFT ÷ SRPT against P99 TTLT ÷ FCFS, one panel per workload."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    wls = list(results["workloads"])
    if not wls:
        return None
    width = 4.2 * len(wls)
    policies = sorted({p for w in wls for p in results["workloads"][w]})
    # the legend below the panels gets as many columns as the width holds (one panel, as
    # with --workload, fits three), and a row of height per row of entries: nothing clips
    ncol = max(1, min(len(policies), int(width // 1.35)))
    rows = -(-len(policies) // ncol)
    height = 4.2 + 0.28 * rows
    fig, axes = plt.subplots(1, len(wls), figsize=(width, height), squeeze=False)
    markers = "osD^vP*Xh<>p8"
    cmap = plt.get_cmap("tab20")
    for ax, w in zip(axes[0], wls, strict=True):
        for i, p in enumerate(policies):
            m = results["workloads"][w].get(p)
            if m is None:
                continue
            x = _get(m, ("vs_srpt_oracle", "ttft_mean"))
            y = _get(m, ("vs_fcfs", "ttlt_p99"))
            if x is None or y is None:
                continue
            ax.scatter([x], [y], marker=markers[i % len(markers)], color=cmap(i % 20),
                       s=110 if p == "tailwise" else 46, label=p, edgecolors="black",
                       linewidths=1.2 if p == "tailwise" else 0.4, zorder=3)
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.axvline(1.0, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.set_title(w)
        ax.set_xlabel("mean TTFT ÷ oracle SRPT (log)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("P99 TTLT ÷ FCFS")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if labels:  # none when every policy run is a reference (e.g. --policy fcfs alone)
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), ncol),
                   fontsize=8)
    fig.suptitle("Suite: mean TTFT vs. SRPT (x) and tail latency vs. FCFS (y); "
                 "lower-left is better", wrap=True, fontsize=11 if len(wls) > 1 else 9)
    fig.tight_layout(rect=(0, (0.1 + 0.28 * rows) / height, 1, 0.92 if len(wls) == 1 else 0.95))
    fig.savefig(out / "suite.png", dpi=100)
    plt.close(fig)
    return "suite.png"


def write_report(out: Path, results: dict[str, Any], plots: bool = True) -> Path:
    """``report.md`` and ``report.html`` (plus ``suite.png``) from a results document."""
    out.mkdir(parents=True, exist_ok=True)
    image = plot(out, results) if plots else None
    conf = results.get("config", {})
    intro = (f"Step model {conf.get('step_model', '?')}, seed {conf.get('seed', '?')}, "
             f"scale {conf.get('scale', '?')}; bench wall time "
             f"{_fmt(_get(conf, ('bench_wall_s',)), 's')} s.")
    if conf.get("shape"):
        knobs = ", ".join(f"{k}={v:g}" for k, v in conf["shape"].items())
        intro += (f" Held-out shape: {knobs} (the workloads below are suite variants, "
                  "not the suite).")
    sections: list[tuple[str, str, tuple[list[str], list[list[Cell]]]]] = [
        ("Suite overview", "Best per column in bold.", overview_table(results)),
        ("Pressure per workload (FCFS)", "What the default policy suffers on each workload.",
         pressure_table(results)),
    ]
    for w, per in results["workloads"].items():
        d = results.get("suite", {}).get(w, {})
        text = f"{d.get('shape', '')}. Why: {d.get('why', '')}."
        sections.append((f"Workload {w}", text, workload_table(per)))
    md = ["# tailwise bench", "", intro, "", _DEF_SHORT, ""]
    body = [f"<h1>tailwise bench</h1><p>{html.escape(intro)}</p><p>{html.escape(_DEF_SHORT)}</p>"]
    if image:
        md += [f"![suite]({image})", ""]
        body.append(f'<img src="{image}" alt="suite figure" style="max-width:100%">')
    for title, text, (header, rows) in sections:
        md += [f"## {title}", "", text, "", md_table(header, *_split(rows)), ""]
        body.append(f"<h2>{html.escape(title)}</h2><p>{html.escape(text)}</p>"
                    f"{html_table(header, *_split(rows))}")
    (out / "report.md").write_text("\n".join(md))
    (out / "report.html").write_text(html_page("tailwise bench", "".join(body)))
    return out / "report.md"


README_START = "<!-- suite-table:start (generated by scripts/update_readme_suite.py) -->"
README_END = "<!-- suite-table:end -->"


def update_readme(text: str, results: dict[str, Any]) -> str:
    """``text`` with the block between the suite-table markers regenerated."""
    if README_START not in text or README_END not in text:
        raise ValueError(f"README has no {README_START!r} … {README_END!r} block")
    conf = results.get("config", {})
    pressure_header, pressure_rows = pressure_table(results)
    block = "\n".join([
        README_START, "",
        f"`tailwise bench` (seed {conf.get('seed', '?')}, scale {conf.get('scale', '?')}, "
        f"step model {conf.get('step_model', '?')}). Mean TTFT ÷ oracle SRPT and P99 TTLT ÷ "
        "FCFS per workload; lower is better, best per column in bold.", "",
        readme_table(results), "",
        "What FCFS suffers on each workload (the pressure each one is built to create):", "",
        md_table(pressure_header, *_split(pressure_rows)), "",
        README_END,
    ])
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    return head + block + tail

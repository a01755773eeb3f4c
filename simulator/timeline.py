"""Timelines for workload-shift runs: per-window latency, policy in force, partitions.

``window_table`` gives, per window of arrival time, each arm's P99 TTLT, mean TTFT and
mean short-request TTFT plus the online arm's policy version; ``recovery_windows`` counts how
many windows after the shift the online arm needs to get back within ``tolerance`` of the
best static arm (and stay there for ``hold`` windows); ``plot_timeline`` draws it all.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from tailwise.simulator.engine import SimResult
from tailwise.simulator.metrics import MetricsConfig, windows


def version_at(res: SimResult, t: float) -> int | None:
    """Version of the policy in force at engine time ``t`` (None before the first)."""
    v = None
    for when, policy in res.policy_timeline:
        if when <= t:
            v = policy.version
        else:
            break
    return v


def window_table(runs: dict[str, SimResult], window_s: float, cfg: MetricsConfig,
                 online: str | None = None) -> list[dict[str, Any]]:
    per = {name: windows(res, window_s, cfg) for name, res in runs.items()}
    n = min(len(w["start"]) for w in per.values())
    rows = []
    for i in range(n):
        start = float(next(iter(per.values()))["start"][i])
        row: dict[str, Any] = {"window": i, "start_s": start}
        for name, w in per.items():
            row[f"{name}.p99_ttlt"] = _num(w["p99_ttlt"][i])
            row[f"{name}.ttft_mean"] = _num(w["ttft_mean"][i])
            row[f"{name}.short_ttft"] = _num(w["short_ttft_mean"][i])
        if online is not None:
            row["policy_version"] = version_at(runs[online], start + window_s)
        rows.append(row)
    return rows


def recovery_windows(rows: list[dict[str, Any]], online: str, static: list[str],
                     shift_s: float, window_s: float, tolerance: float = 0.1,
                     hold: int = 2) -> int | None:
    """Windows after the shift until the online arm's P99 TTLT is within ``tolerance`` of
    the best static arm for ``hold`` consecutive windows; None if it never is."""
    after = [r for r in rows if r["start_s"] >= shift_s - 1e-9]
    streak = 0
    for k, r in enumerate(after):
        mine = r.get(f"{online}.p99_ttlt")
        best = [r.get(f"{s}.p99_ttlt") for s in static]
        best_v = min((b for b in best if b is not None), default=None)
        ok = mine is not None and best_v is not None and mine <= (1 + tolerance) * best_v
        streak = streak + 1 if ok else 0
        if streak >= hold:
            return k - hold + 1
    return None


def plot_timeline(out: Path, runs: dict[str, SimResult], rows: list[dict[str, Any]],
                  window_s: float, shift_s: float, online: str | None,
                  trials: list[tuple[float, float]] | None = None) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # without an online arm there is no policy version or partition to show
    panels = 4 if online is not None else 2
    fig, axes = plt.subplots(panels, 1, figsize=(10, 11 if panels == 4 else 6), sharex=True)
    t = np.array([r["start_s"] + window_s / 2 for r in rows])
    # a trace with its own class labels has no short class: its panel shows all requests
    ttft = ("short_ttft" if any(r.get(f"{n}.short_ttft") is not None for r in rows for n in runs)
            else "ttft_mean")
    for name in runs:
        axes[0].plot(t, [_nan(r[f"{name}.p99_ttlt"]) for r in rows], marker=".", label=name)
        axes[1].plot(t, [_nan(r[f"{name}.{ttft}"]) for r in rows], marker=".", label=name)
    axes[0].set_ylabel("P99 TTLT (s)")
    axes[1].set_ylabel("short TTFT mean (s)" if ttft == "short_ttft" else "mean TTFT (s)")
    axes[0].set_title(f"Latency per {window_s:g}-s window of arrivals, and the policy "
                      "in force (dashed line: the shift)" if online is not None else
                      f"Latency per {window_s:g}-s window of arrivals (dashed line: the shift)",
                      fontsize=10)
    axes[1].set_yscale("symlog", linthresh=0.1)
    axes[0].legend(fontsize=8)
    if online is not None:
        res = runs[online]
        xs = [w for w, _ in res.policy_timeline] + [res.end_time]
        vs = [p.version for _, p in res.policy_timeline]
        if vs:
            axes[2].step(xs, [*vs, vs[-1]], where="post", label="policy version (online)")
        if trials:
            ax2 = axes[2].twinx()
            ax2.scatter([a for a, _ in trials], [b for _, b in trials], s=10, color="tab:red",
                        label="trial objective")
            ax2.set_ylabel("trial objective", color="tab:red")
        for when, policy in res.policy_timeline:
            for q in policy.queues:
                axes[3].plot([when, when], [q.lo, q.hi], color="tab:blue", lw=3, alpha=0.5)
                axes[3].plot([when], [q.lo], marker="_", color="black")
        axes[3].set_yscale("symlog", linthresh=100)
        axes[2].set_ylabel("policy version")
        axes[3].set_ylabel("partition boundaries\n(uncached prompt tokens)")
    axes[-1].set_xlabel("engine time (s)")
    for ax in axes:
        ax.axvline(shift_s, color="grey", ls="--", lw=1)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "timeline.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _nan(x: float | None) -> float:
    return float("nan") if x is None else x

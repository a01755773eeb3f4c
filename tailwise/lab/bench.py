"""``tailwise bench``: every policy on every suite workload, one report.

The suite is :mod:`tailwise.simulator.suite`; the policies are every name in
:data:`tailwise.scorer.registry.POLICY_NAMES` at call time (so names registered later,
ablation variants included, are benchmarked without touching this module) plus frozen
policy files (``file:<stem>``).

Per (workload, policy) ``results.json`` holds, times in seconds:

* ``ttft_mean``, ``ttft_p99``, ``ttlt_mean``, ``ttlt_p99``, ``queue_delay_mean``,
  ``queue_delay_p99``;
* ``short_ttft_mean`` — mean TTFT of the *short* requests: those whose true job size
  (prompt prefill work + output decode work, in engine seconds, the oracles'
  size; see :func:`short_mask`) is at or below the workload's median. The mask is a
  property of the trace, identical for every policy;
* ``slo_attainment`` per SLO class (``default`` for untagged requests): the fraction of
  the class's requests finishing within their TTFT and TPOT targets;
* ``preemptions``, ``wasted_recompute_tokens``, throughput, the simulator's wall time;
* ``vs_fcfs`` / ``vs_srpt_oracle``: each of the metrics above divided by FCFS's /
  oracle SRPT's on the same workload (``null`` when the reference did not run or is 0);
* ``summary``: the full per-run summary in the stable ``simulate`` schema.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tailwise.lab.arms import make_arm as named_arm
from tailwise.lab.experiment import Arm
from tailwise.records.trace import Trace
from tailwise.scorer import registry
from tailwise.scorer.policy import REGIME_SWITCHES, Mode, Policy, RegimeParams
from tailwise.scorer.step_time import H100_LLAMA3_8B, StepTimeModel
from tailwise.simulator.engine import SimResult, Simulator
from tailwise.simulator.metrics import per_request, summarize
from tailwise.simulator.suite import Workload, build, parse_names

#: metrics compared against the references (lower is better for all of them)
RATIO_KEYS = ("ttft_mean", "short_ttft_mean", "ttft_p99", "ttlt_p99", "ttlt_mean",
              "preemptions", "wasted_recompute_tokens")
REFERENCES = (("fcfs", "vs_fcfs"), ("srpt-oracle", "vs_srpt_oracle"))


class BenchError(ValueError):
    """Bad bench input (unknown policy, duplicate name); the message says which."""


def policy_names() -> tuple[str, ...]:
    """Every registered policy name, read at call time."""
    return tuple(registry.POLICY_NAMES)


def parse_policies(spec: str | None, files: dict[str, Policy] | None = None) -> list[str]:
    """Comma-separated policy names (``None`` = all registered), validated."""
    known = policy_names()
    if spec is None:
        return list(known)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise BenchError("--policy: give at least one policy name")
    for n in names:
        if n not in known and n not in (files or {}):
            raise BenchError(f"unknown policy {n!r}; choose from: {', '.join(known)}")
    if len(set(names)) != len(names):
        raise BenchError("--policy: a policy is listed twice")
    return names


def make_arm(name: str, model: StepTimeModel, files: dict[str, Policy] | None = None) -> Arm:
    """A fresh arm: a frozen file's policy, or a named one (:func:`tailwise.lab.arms.make_arm`)."""
    if files and name in files:
        return Arm(registry.build_scheduler(files[name]))
    return named_arm(name, model)


def short_mask(trace: Trace, model: StepTimeModel) -> npt.NDArray[np.bool_]:
    """Requests whose true job size is at or below the trace's median job size.

    Job size = prompt tokens × prefill cost per token + output tokens × decode cost per
    token (:attr:`StepTimeModel.prefill_token_s`, :attr:`~StepTimeModel.decode_token_s`),
    the size the oracle baselines sort by.

    >>> import numpy as np
    >>> t = Trace("t", np.zeros(4), np.array([10, 10, 10, 10]), np.array([1, 2, 300, 400]))
    >>> short_mask(t, H100_LLAMA3_8B).tolist()
    [True, True, False, False]
    """
    size = (trace.prompt_tokens * model.prefill_token_s
            + trace.output_tokens * model.decode_token_s)
    if len(size) == 0:
        return np.zeros(0, np.bool_)
    return np.asarray(size <= np.median(size))


def _f(x: Any) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def _mean(x: npt.NDArray[np.float64]) -> float | None:
    v = x[np.isfinite(x)]
    return float(v.mean()) if v.size else None


def _p99(x: npt.NDArray[np.float64]) -> float | None:
    v = x[np.isfinite(x)]
    return float(np.percentile(v, 99)) if v.size else None


def measure(res: SimResult, wl: Workload, model: StepTimeModel) -> dict[str, Any]:
    """The bench metrics of one run (see the module docstring)."""
    pr = per_request(res, wl.metrics)
    rec = res.records
    short = short_mask(wl.trace, model)
    summary = summarize(res, wl.metrics)
    ov = summary["overall"]
    slo_names = (rec.slo_classes if rec.slo_classes is not None
                 else [""] * len(rec.arrival))
    labels = np.asarray([c or "default" for c in slo_names])
    attain = {c: float(pr.slo_ok[labels == c].mean()) for c in sorted(set(labels.tolist()))}
    return {
        "requests": len(rec.arrival),
        "completed": int(pr.done.sum()),
        "ttft_mean": _mean(pr.ttft),
        "ttft_p99": _p99(pr.ttft),
        "short_ttft_mean": _mean(pr.ttft[short]),
        "short_requests": int(short.sum()),
        "ttlt_mean": _mean(pr.ttlt),
        "ttlt_p99": _p99(pr.ttlt),
        "queue_delay_mean": _mean(pr.queue_delay),
        "queue_delay_p99": _p99(pr.queue_delay),
        "slo_attainment": attain,
        "slo_attainment_overall": float(pr.slo_ok.mean()) if len(pr.slo_ok) else None,
        "preemptions": int(rec.preemptions.sum()),
        "wasted_recompute_tokens": int(rec.wasted_tokens.sum()),
        "throughput_tps": _f(ov["throughput_tps"]),
        "mean_kv_usage": _f(summary["engine"]["mean_kv_usage"]),
        "sim_wall_s": res.wall_s,
        "summary": summary,
    }


def add_ratios(per_policy: dict[str, dict[str, Any]]) -> None:
    """Fill ``vs_fcfs`` / ``vs_srpt_oracle`` in place (``None`` where undefined)."""
    for ref, key in REFERENCES:
        base = per_policy.get(ref)
        for m in per_policy.values():
            out: dict[str, float | None] = {}
            for k in RATIO_KEYS:
                a = m.get(k)
                b = base.get(k) if base is not None else None
                out[k] = (float(a) / float(b)
                          if a is not None and b is not None and float(b) != 0.0 else None)
            m[key] = out


@dataclass
class BenchOptions:
    workloads: list[str]
    policies: list[str]
    files: dict[str, Policy] = field(default_factory=dict)
    model: StepTimeModel = H100_LLAMA3_8B
    seed: int = 0
    scale: float = 1.0
    #: worker processes (1 = run in this process, with per-request progress)
    jobs: int = 1
    #: only the first N requests of each workload (a slice: same arrival times and load)
    head: int | None = None
    #: "sim" (built-in simulator) or "vllm" (vLLM's real scheduler, tailwise.lab.vllm_harness)
    engine: str = "sim"
    #: shape knobs of the workloads (``simulator.suite.SHAPE_KNOBS``, as (name, value)
    #: pairs): a held-out variant instead of the suite's workload
    shape: tuple[tuple[str, Any], ...] = ()

    def validate(self) -> None:
        if self.jobs < 1:
            raise BenchError(f"jobs must be >= 1, got {self.jobs}")
        if self.head is not None and self.head < 2:
            raise BenchError(f"head must be >= 2 requests, got {self.head}")
        if self.engine not in ("sim", "vllm"):
            raise BenchError(f"engine must be 'sim' or 'vllm', got {self.engine!r}")


#: on_progress(workload, policy, requests done, requests total)
Progress = Callable[[str, str, int, int], None]


@lru_cache(maxsize=8)
def _workload(name: str, model: StepTimeModel, seed: int, scale: float,
              head: int | None = None, shape: tuple[tuple[str, Any], ...] = ()) -> Workload:
    wl = build(name, model=model, seed=seed, scale=scale, **dict(shape))
    if head is None or head >= len(wl.trace):
        return wl
    return replace(wl, trace=wl.trace.head(head), meta={**wl.meta, "head": head})


def run_one(wname: str, pname: str, opts: BenchOptions,
            progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """One policy on one workload (workloads are built once per process)."""
    wl = _workload(wname, opts.model, opts.seed, opts.scale, opts.head, opts.shape)
    arm = make_arm(pname, opts.model, opts.files)
    if opts.engine == "vllm":
        from tailwise.lab.vllm_harness import run_vllm  # the adapter installs its probe

        return measure(run_vllm(wl.trace, arm, wl.engine, opts.model, progress=progress),
                       wl, opts.model)
    sim = Simulator(wl.trace, arm.scheduler, wl.engine, opts.model, source=arm.source,
                    sink=arm.sink, progress=progress)  # installs its own prefix probe
    return measure(sim.run(), wl, opts.model)


def _worker(wname: str, pname: str, opts: BenchOptions) -> tuple[str, str, dict[str, Any]]:
    return wname, pname, run_one(wname, pname, opts)


def run_bench(opts: BenchOptions, on_progress: Progress | None = None,
              on_workload: Callable[[Workload], None] | None = None) -> dict[str, Any]:
    """Run every policy on every workload; returns the ``results.json`` document.

    With ``jobs > 1`` runs go to worker processes (results are identical: every run is
    deterministic); ``on_progress`` then reports whole runs (done = total)."""
    t0 = time.perf_counter()
    opts.validate()
    names = parse_names(",".join(opts.workloads))
    out: dict[str, Any] = {"workloads": {}, "suite": {}, "config": {
        "step_model": opts.model.name, "seed": opts.seed, "scale": opts.scale,
        "jobs": opts.jobs, "head": opts.head, "engine": opts.engine,
        "shape": dict(opts.shape),
        "policies": list(opts.policies)}}
    runs: dict[tuple[str, str], dict[str, Any]] = {}
    if opts.jobs == 1:
        for wname in names:
            wl = _workload(wname, opts.model, opts.seed, opts.scale, opts.head, opts.shape)
            if on_workload is not None:
                on_workload(wl)
            for pname in opts.policies:
                cb = None
                if on_progress is not None:
                    def cb(done: int, total: int, _w: str = wname, _p: str = pname) -> None:
                        on_progress(_w, _p, done, total)
                runs[wname, pname] = run_one(wname, pname, opts, cb)
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=opts.jobs, mp_context=ctx) as pool:
            futs = [pool.submit(_worker, w, p, opts) for w in names for p in opts.policies]
            for fut in as_completed(futs):
                w, p, m = fut.result()
                runs[w, p] = m
                if on_progress is not None:
                    on_progress(w, p, 1, 1)
    for wname in names:
        out["suite"][wname] = _workload(wname, opts.model, opts.seed, opts.scale,
                                        opts.head, opts.shape).describe()
        per_policy = {p: runs[wname, p] for p in opts.policies}
        add_ratios(per_policy)
        out["workloads"][wname] = per_policy
    out["config"]["bench_wall_s"] = time.perf_counter() - t0
    return out


#: the regime issue's targets for tailwise on one workload: each ratio must stay at or below
#: its limit (mean TTFT ≤ 2× oracle SRPT's; P99 TTLT ≤ min(FCFS's, SRPT's); wasted
#: recompute ≤ FCFS's; P99 TTLT below HRRN's with mean TTFT ≤ 1.2× HRRN's)
TARGET_LIMITS = {"ttft_vs_srpt": 2.0, "p99_ttlt_vs_min_fcfs_srpt": 1.0, "wasted_vs_fcfs": 1.0,
                 "p99_ttlt_vs_hrrn": 1.0, "ttft_vs_hrrn": 1.2}
#: ratios that must stay strictly below their limit ("P99 TTLT better than HRRN's")
STRICT_TARGETS = frozenset({"p99_ttlt_vs_hrrn"})


def target_met(key: str, ratio: float) -> bool:
    """Whether ``ratio`` meets target ``key`` of :data:`TARGET_LIMITS`."""
    lim = TARGET_LIMITS[key]
    return ratio < lim if key in STRICT_TARGETS else ratio <= lim


def scorecard(per: dict[str, dict[str, Any]], name: str = "tailwise") -> dict[str, float]:
    """Policy ``name``'s ratios for :data:`TARGET_LIMITS`, from one workload's results
    (needs ``fcfs``, ``srpt-oracle`` and ``hrrn`` beside it)."""
    t, f, s, h = per[name], per["fcfs"], per["srpt-oracle"], per["hrrn"]
    return {
        "ttft_vs_srpt": t["ttft_mean"] / s["ttft_mean"],
        "p99_ttlt_vs_min_fcfs_srpt": t["ttlt_p99"] / min(f["ttlt_p99"], s["ttlt_p99"]),
        "wasted_vs_fcfs": (t["wasted_recompute_tokens"] / f["wasted_recompute_tokens"]
                           if f["wasted_recompute_tokens"] else
                           (0.0 if t["wasted_recompute_tokens"] == 0 else float("inf"))),
        "p99_ttlt_vs_hrrn": t["ttlt_p99"] / h["ttlt_p99"],
        "ttft_vs_hrrn": t["ttft_mean"] / h["ttft_mean"],
    }


class VariantError(ValueError):
    """A regime switch or sweep spec that names no :class:`RegimeParams` field."""


def regime_switches(spec: str | None) -> list[str]:
    """The regime switches named in ``spec`` (comma-separated), each checked against
    :data:`~tailwise.scorer.policy.REGIME_SWITCHES`."""
    names = [f.strip() for f in (spec or "").split(",") if f.strip()]
    for flag in names:
        if flag not in REGIME_SWITCHES:
            raise VariantError(f"unknown regime switch {flag!r}; choose from: "
                               f"{', '.join(REGIME_SWITCHES)}")
    return names


def tailwise_variants(off: str | None = None, sweep: str | None = None) -> dict[str, Policy]:
    """Static ``tailwise`` policies for ablations: ``no-FLAG`` for each regime switch in
    ``off`` (comma-separated), ``FIELD=V`` for each value of ``sweep``
    (``FIELD=V1,V2,...`` of :class:`RegimeParams`; an int field stays int)."""
    out: dict[str, Policy] = {}
    base = RegimeParams()
    for flag in regime_switches(off):
        out[f"no-{flag}"] = Policy(mode=Mode.TAILWISE, regime=replace(base, **{flag: False}))
    if sweep:
        name, _, values = sweep.partition("=")
        if not hasattr(base, name) or not values or isinstance(getattr(base, name), bool):
            raise VariantError(f"--sweep wants FIELD=V1,V2,... with a numeric RegimeParams "
                               f"field, got {sweep!r}")
        kind = type(getattr(base, name))
        for v in values.split(","):
            try:
                value = kind(float(v))
            except ValueError:
                raise VariantError(f"--sweep {name}: {v!r} is not a number") from None
            out[f"{name}={v}"] = Policy(mode=Mode.TAILWISE, regime=replace(base, **{name: value}))
    return out


def write_results(out_dir: Path, results: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.json"
    path.write_text(json.dumps(results, indent=1, allow_nan=False) + "\n")
    return path

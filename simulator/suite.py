"""The benchmark workload suite: five seeded workloads where schedulers differ.

Each workload is built by the repo from a seed (the two Azure samples are bundled; the
rest is synthetic), so ``tailwise bench`` reruns bit for bit. :func:`build` is pure: it
returns the trace, the engine configuration, the metrics configuration (SLO targets) and
metadata; it runs nothing. Loads are set with :func:`~tailwise.simulator.workload.
rate_scale_for_load` against the workload's own engine configuration.

=================== ======================================================================
workload            shape and why it is in the suite
=================== ======================================================================
azure-code          Azure 2023 code trace (prefill-heavy: long prompts, short outputs) at
                    0.9 load, default engine. The production-like baseline: a good policy
                    must not lose here.
azure-conv          Azure 2023 conversation trace at 1.1 load on a small KV cache (3,000
                    blocks ≈ 48k tokens). Sustained overload plus KV pressure: queues grow
                    for the whole run and admissions are memory-bound.
bursty-reasoning    Gamma arrivals (CV 2), prompts 100–4k tokens (log-uniform), half the
                    outputs short (log-normal, median 150) and half heavy-tailed (bounded
                    Pareto α = 1.1 on 1k–16k tokens, reasoning traces), at 1.0 × capacity
                    on the default KV cache. Bursts queue up and the long decodes fill KV,
                    so both queueing and preemption happen — the γ-boost paper's regime.
long-context-chat   Multi-turn chat sessions: each turn's prompt is the previous prompt +
                    answer + a new message, with Mooncake-style ``hash_ids`` (one id per
                    512-token segment, stable across a session's turns, plus a system
                    prompt shared by all sessions), so the prefix cache sees reuse.
                    Prompts 4k–64k tokens, 0.92 load net of the prefix hits FCFS
                    realises (:func:`realised_cache_load`).
                    Tests cache-aware admission and victim choice.
slo-mix             Two SLO classes tagged per request (``slo_class``): interactive
                    (short prompts and answers, TTFT SLO 2 s) and batch (long documents,
                    TTFT SLO 60 s), Gamma arrivals (CV 1.5) at 0.95 load. SLO targets are
                    :class:`~tailwise.scorer.policy.SloParams`' defaults, the ones Kairos
                    reads, so policy and metric agree.
=================== ======================================================================

Sizes are chosen so that ~15 policies × 5 workloads run in a few minutes on 2 cores
(``benchmarks/suite_bench.py`` measures it); ``scale`` multiplies the request counts.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from tailwise.scorer.policy import SloParams
from tailwise.scorer.step_time import H100_LLAMA3_8B, StepTimeModel
from tailwise.simulator.engine import EngineConfig
from tailwise.simulator.metrics import MetricsConfig
from tailwise.simulator.traces import Trace, TraceError, load_trace
from tailwise.simulator.workload import offered_load, rate_scale_for_load, request_work_ms

SUITE: tuple[str, ...] = ("azure-code", "azure-conv", "bursty-reasoning", "long-context-chat",
                          "slo-mix")


class UnknownWorkloadError(ValueError):
    """A workload name is not one of :data:`SUITE`."""


@dataclass(frozen=True)
class Workload:
    """One suite workload: everything a bench run needs, nothing run yet."""

    name: str
    trace: Trace
    engine: EngineConfig
    metrics: MetricsConfig
    #: one line: the shape of the workload
    shape: str
    #: one line: what it tests
    why: str
    target_load: float
    #: offered load as the workload counts it (cache-discounted for long-context-chat)
    offered_load: float
    meta: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """JSON-ready metadata (trace summary, engine, load, SLOs)."""
        return {
            "name": self.name, "shape": self.shape, "why": self.why,
            "target_load": self.target_load, "offered_load": round(self.offered_load, 4),
            "trace": self.trace.summary(),
            "engine": {"num_gpu_blocks": self.engine.num_gpu_blocks,
                       "block_size": self.engine.block_size,
                       "max_num_seqs": self.engine.max_num_seqs,
                       "max_num_batched_tokens": self.engine.max_num_batched_tokens,
                       "enable_prefix_caching": self.engine.enable_prefix_caching},
            "slo": {"default": [self.metrics.ttft_slo_s, self.metrics.tpot_slo_s],
                    **{k: list(v) for k, v in self.metrics.slo_classes.items()}},
            **self.meta,
        }


def _slo_metrics() -> MetricsConfig:
    """Metric SLOs = the policy's default SLO classes (what Kairos schedules for)."""
    slo = SloParams()
    return MetricsConfig(ttft_slo_s=slo.ttft_s, tpot_slo_s=slo.tpot_s,
                         slo_classes={c.name: (c.ttft_s, c.tpot_s) for c in slo.classes})


def _gamma_arrivals(rng: np.random.Generator, n: int, rate: float, cv: float
                    ) -> npt.NDArray[np.float64]:
    shape = 1.0 / (cv * cv)
    gaps = rng.gamma(shape, 1.0 / (rate * shape), n)
    gaps[0] = 0.0
    return np.cumsum(gaps)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, n: int) -> npt.NDArray[np.int64]:
    out: npt.NDArray[np.int64] = np.rint(np.exp(rng.uniform(math.log(lo), math.log(hi), n))
                                         ).astype(np.int64)
    return out


def bounded_pareto(rng: np.random.Generator, alpha: float, lo: float, hi: float, n: int
                   ) -> npt.NDArray[np.int64]:
    """``n`` draws of a Pareto(α) truncated to [lo, hi] (inverse-CDF sampling).

    >>> x = bounded_pareto(np.random.default_rng(0), 1.1, 1000, 16000, 1000)
    >>> bool(x.min() >= 1000 and x.max() <= 16000)
    True
    """
    u = rng.random(n)
    la, ha = lo ** alpha, hi ** alpha
    x = (-(u * ha - u * la - ha) / (ha * la)) ** (-1.0 / alpha)
    out: npt.NDArray[np.int64] = np.clip(np.rint(x), lo, hi).astype(np.int64)
    return out


def _at_load(trace: Trace, load: float, cfg: EngineConfig, model: StepTimeModel) -> Trace:
    return trace.scaled(rate_scale_for_load(trace, load, cfg, model))


# -- the workloads ----------------------------------------------------------------------------
def _engine(base: EngineConfig, kv_blocks: int | None) -> EngineConfig:
    return base if kv_blocks is None else replace(base, num_gpu_blocks=kv_blocks)


def _kv_text(cfg: EngineConfig) -> str:
    """The engine in the shape line: KV blocks, and the engine knobs (:data:`ENGINE_KNOBS`)
    that are not the suite's (``EngineConfig``'s defaults)."""
    default = EngineConfig()
    extra = "".join(f", {k} {getattr(cfg, k):,}" for k in ENGINE_KNOBS
                    if getattr(cfg, k) != getattr(default, k))
    return f"{cfg.num_gpu_blocks:,} KV blocks{extra}"


def _azure(name: str, kind: str, n: int, load: float, cfg: EngineConfig, why: str,
           model: StepTimeModel, scale: float, skip: int) -> Workload:
    """``n * scale`` requests (at least 50) of a bundled Azure 2023 trace, from request
    ``skip`` on (times shifted to start at 0), rescaled to ``load`` on ``cfg``."""
    count = max(int(n * scale), 50)
    full = load_trace(name)
    if skip:
        if skip + count > len(full):
            raise TraceError(f"skip must be in [0, {max(len(full) - count, 0)}] for {count} "
                             f"requests of {name}, got {skip}")
        tr = full.select(np.arange(skip, skip + count))
        tr = replace(tr, arrival_s=tr.arrival_s - tr.arrival_s[0])
    else:  # the first requests, at most the whole bundled trace (as before the knob)
        tr = full.head(count)
    tr = _at_load(tr, load, cfg, model)
    where = f"requests {skip:,}-{skip + len(tr) - 1:,}" if skip else f"first {len(tr)} requests"
    return Workload(name, replace(tr, name=name), cfg, _slo_metrics(),
                    shape=f"Azure 2023 {kind} trace, {where}, {load} load, {_kv_text(cfg)}",
                    why=why, target_load=load, offered_load=offered_load(tr, cfg, model))


def azure_code(model: StepTimeModel, seed: int, scale: float, base: EngineConfig, *,
               load: float = 0.9, kv_blocks: int | None = None, skip: int = 0) -> Workload:
    return _azure("azure-code", "code", 4000, load, _engine(base, kv_blocks),
                  "production-like prefill-heavy traffic: a policy must not lose here",
                  model, scale, skip)


def azure_conv(model: StepTimeModel, seed: int, scale: float, base: EngineConfig, *,
               load: float = 1.1, kv_blocks: int | None = 3000, skip: int = 0) -> Workload:
    return _azure("azure-conv", "conversation", 3000, load, _engine(base, kv_blocks),
                  "sustained overload with memory-bound admission", model, scale, skip)


def bursty_reasoning(model: StepTimeModel, seed: int, scale: float, base: EngineConfig, *,
                     load: float = 1.0, cv: float = 2.0, heavy_frac: float = 0.5,
                     alpha: float = 1.1, kv_blocks: int | None = None) -> Workload:
    cfg = _engine(base, kv_blocks)
    n = max(int(4000 * scale), 50)
    rng = np.random.default_rng(seed)
    prompt = _log_uniform(rng, 100, 4000, n)
    heavy = rng.random(n) < heavy_frac
    output = np.clip(np.rint(rng.lognormal(math.log(150), 0.8, n)), 8, 1000).astype(np.int64)
    output[heavy] = bounded_pareto(rng, alpha, 1000, 16_000, int(heavy.sum()))
    arrival = _gamma_arrivals(rng, n, 1.0, cv)
    tr = Trace(name="bursty-reasoning", arrival_s=arrival, prompt_tokens=prompt,
               output_tokens=output,
               classes=["reasoning" if h else "chat" for h in heavy.tolist()],
               meta={"format": "suite", "seed": seed})
    tr = _at_load(tr, load, cfg, model)
    return Workload("bursty-reasoning", tr, cfg, _slo_metrics(),
                    shape=f"{n} requests, Gamma arrivals CV {cv:g}, prompts 100-4k, "
                          f"{heavy_frac:.0%} outputs bounded-Pareto (α {alpha:g}) 1k-16k, "
                          f"{load} load, {_kv_text(cfg)}",
                    why="bursts + long decodes: queueing and KV preemption at once",
                    target_load=load, offered_load=offered_load(tr, cfg, model),
                    meta={"seed": seed})


#: a system prompt every chat session starts with (hash ids reserved below 1000)
_SYSTEM_SEGMENTS = 4
#: mean user think time between a session's turns (s), plus 2 s
THINK_S = 10.0


def long_context_chat(model: StepTimeModel, seed: int, scale: float, base: EngineConfig, *,
                      load: float = 0.92, kv_blocks: int | None = None) -> Workload:
    cfg = _engine(base, kv_blocks)
    seg = cfg.hash_block_tokens
    rng = np.random.default_rng(seed)
    n_sessions = max(int(220 * scale), 5)
    starts = np.cumsum(rng.exponential(1.0, n_sessions))
    rows: list[tuple[float, int, int, tuple[int, ...], int]] = []
    next_id = 1000
    for s in range(n_sessions):
        # first turn: system prompt + a document / codebase of 2k-30k tokens
        ctx = _SYSTEM_SEGMENTS * seg + int(_log_uniform(rng, 2000, 30_000, 1)[0])
        t = float(starts[s])
        ids: list[int] = list(range(_SYSTEM_SEGMENTS))
        turns = int(rng.integers(2, 9))
        for _ in range(turns):
            if ctx > 64_000:
                break
            prompt = max(ctx, 4000)
            full = prompt // seg
            while len(ids) < full:
                ids.append(next_id)
                next_id += 1
            out = int(np.clip(np.rint(rng.lognormal(math.log(300), 0.7)), 16, 2000))
            rows.append((t, prompt, out, tuple(ids[:full]), s))
            ctx = prompt + out + int(_log_uniform(rng, 50, 1500, 1)[0])
            t += float(rng.exponential(THINK_S)) + 2.0
    rows.sort(key=lambda r: r[0])
    arr = np.asarray([r[0] for r in rows])
    tr = Trace(name="long-context-chat", arrival_s=arr - arr[0],
               prompt_tokens=np.asarray([r[1] for r in rows], np.int64),
               output_tokens=np.asarray([r[2] for r in rows], np.int64),
               hash_ids=[r[3] for r in rows],
               meta={"format": "suite", "seed": seed, "sessions": n_sessions})
    target = load
    tr = tr.scaled(target / cached_offered_load(tr, cfg, model))
    for _ in range(3):  # fixed point: the load FCFS's realised prefix hits leave
        realised = realised_cache_load(tr, cfg, model)
        tr = tr.scaled(target / realised)
    return Workload("long-context-chat", tr, cfg, _slo_metrics(),
                    shape=f"{n_sessions} sessions, {len(tr)} turns, prompts 4k-64k with "
                          f"shared prefixes (hash_ids), {target} load net of FCFS's cache hits, "
                          f"{_kv_text(cfg)}",
                    why="prefix reuse and huge KV footprints: cache-aware admission/victims",
                    target_load=target, offered_load=realised_cache_load(tr, cfg, model),
                    meta={"seed": seed, "sessions": n_sessions,
                          "raw_offered_load": round(offered_load(tr, cfg, model), 4),
                          "ideal_cache_offered_load": round(cached_offered_load(tr, cfg, model),
                                                            4)})


def slo_mix(model: StepTimeModel, seed: int, scale: float, base: EngineConfig, *,
            load: float = 0.95, cv: float = 1.5, interactive_frac: float = 0.7,
            kv_blocks: int | None = None) -> Workload:
    cfg = _engine(base, kv_blocks)
    n = max(int(4000 * scale), 50)
    rng = np.random.default_rng(seed)
    inter = rng.random(n) < interactive_frac
    prompt = np.where(inter,
                      np.clip(np.rint(rng.lognormal(math.log(400), 0.7, n)), 16, 4000),
                      np.clip(np.rint(rng.lognormal(math.log(4000), 0.6, n)), 500, 24_000)
                      ).astype(np.int64)
    output = np.where(inter,
                      np.clip(np.rint(rng.lognormal(math.log(150), 0.7, n)), 4, 1500),
                      np.clip(np.rint(rng.lognormal(math.log(600), 0.8, n)), 16, 6000)
                      ).astype(np.int64)
    slo = ["interactive" if i else "batch" for i in inter.tolist()]
    tr = Trace(name="slo-mix", arrival_s=_gamma_arrivals(rng, n, 1.0, cv),
               prompt_tokens=prompt, output_tokens=output, classes=list(slo),
               slo_classes=slo, meta={"format": "suite", "seed": seed})
    tr = _at_load(tr, load, cfg, model)
    return Workload("slo-mix", tr, cfg, _slo_metrics(),
                    shape=f"{n} requests, {interactive_frac:.0%} interactive (TTFT SLO 2 s) / "
                          f"{1 - interactive_frac:.0%} batch (TTFT SLO 60 s), Gamma CV {cv:g}, "
                          f"{load} load, {_kv_text(cfg)}",
                    why="per-request SLO classes: urgency must beat size-only ordering",
                    target_load=load, offered_load=offered_load(tr, cfg, model),
                    meta={"seed": seed})


def _prefill_ms_per_token(config: EngineConfig, model: StepTimeModel) -> float:
    chunk = float(config.max_num_batched_tokens)
    return (model.prefill_per_token_ms + model.prefill_quad_ms * chunk
            + model.prefill_fixed_ms / chunk)


def _load_net_of_cache(trace: Trace, cached: npt.NDArray[np.float64] | npt.NDArray[np.int64],
                       config: EngineConfig, model: StepTimeModel) -> float:
    """Offered load when ``cached[i]`` prompt tokens of request ``i`` cost nothing (the
    work model's prefill cost is linear in tokens, so the discount is exact)."""
    work = request_work_ms(trace, config, model) - _prefill_ms_per_token(config, model) * cached
    return float(work.sum()) / 1000.0 / trace.duration_s


def cached_offered_load(trace: Trace, config: EngineConfig, model: StepTimeModel) -> float:
    """Offered load with an ideal prefix cache: prompt segments seen in any earlier
    request are free. An upper bound on reuse (a real cache evicts)."""
    if trace.hash_ids is None:
        return offered_load(trace, config, model)
    seen: set[int] = set()
    cached = np.zeros(len(trace))
    for i, ids in enumerate(trace.hash_ids):
        k = 0
        while k < len(ids) and ids[k] in seen:
            k += 1
        cached[i] = k * config.hash_block_tokens
        seen.update(ids)
    return _load_net_of_cache(trace, cached, config, model)


def realised_cache_load(trace: Trace, config: EngineConfig, model: StepTimeModel) -> float:
    """Offered load net of the prefix-cache hits an FCFS replay actually gets.

    With long prompts and a KV cache that holds ~25 of them, an ideal cache overstates
    reuse by ~40%; the realised hits say what load the engine really faces. FCFS is the
    reference because it is the policy-neutral default."""
    from tailwise.scorer.baselines import Fcfs
    from tailwise.simulator.engine import simulate

    res = simulate(trace, Fcfs(), config, model)
    return _load_net_of_cache(trace, res.records.cached_tokens, config, model)


_BUILDERS: dict[str, Callable[..., Workload]] = {
    "azure-code": azure_code,
    "azure-conv": azure_conv,
    "bursty-reasoning": bursty_reasoning,
    "long-context-chat": long_context_chat,
    "slo-mix": slo_mix,
}


#: engine knobs every workload takes (:class:`EngineConfig` fields; default: the suite's
#: 256 sequences and 8,192-token steps): the scheduler limits an operator sets, under which
#: a policy meets other bottlenecks (``vllm serve`` steps 2,048 tokens on an A100 or a GPU
#: under 70 GiB; few sequences make the engine slot-bound before it is memory-bound). The
#: load is set against the engine so configured
ENGINE_KNOBS: tuple[str, ...] = ("max_num_seqs", "max_num_batched_tokens")

#: the shape knobs each workload takes: its builder's keyword-only arguments (defaults =
#: the suite's shape), then :data:`ENGINE_KNOBS`, for held-out variants of the suite
#: (``benchmarks/heldout_shapes.py``)
SHAPE_KNOBS: dict[str, tuple[str, ...]] = {
    name: tuple(p.name for p in inspect.signature(b).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY) + ENGINE_KNOBS
    for name, b in _BUILDERS.items()}
_FRACTIONS = ("heavy_frac", "interactive_frac")
_INT_KNOBS = ("kv_blocks", "skip", *ENGINE_KNOBS)
#: bounded Pareto's α above this overflows (``lo ** α``) and is no tail at all
MAX_ALPHA = 10.0


def check_shape(name: str, shape: dict[str, Any]) -> None:
    """Raise :class:`TraceError` naming the workload and knob if ``shape`` does not fit
    workload ``name`` (an unknown knob, a non-finite or out-of-range value, a fraction of
    a KV block or of a request)."""
    for k, v in shape.items():
        if k not in SHAPE_KNOBS[name]:
            raise TraceError(f"{name} has no shape knob {k!r}; choose from: "
                             f"{', '.join(SHAPE_KNOBS[name])}")
        if k == "kv_blocks" and v is None:
            continue
        if k in _INT_KNOBS:
            if isinstance(v, bool) or not isinstance(v, int):
                raise TraceError(f"{name}: {k} must be a whole number, got {v!r}")
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise TraceError(f"{name}: {k} must be a finite number, got {v!r}")
        if k in _FRACTIONS and not 0.0 < v < 1.0:
            raise TraceError(f"{name}: {k} must be in (0, 1), got {v!r}")
        if k == "skip" and v < 0:
            raise TraceError(f"{name}: skip must be >= 0, got {v!r}")
        if k == "alpha" and not 0.0 < v <= MAX_ALPHA:
            raise TraceError(f"{name}: alpha must be in (0, {MAX_ALPHA:g}], got {v!r}")
        if k not in _FRACTIONS and k != "skip" and v <= 0:
            raise TraceError(f"{name}: {k} must be > 0, got {v!r}")


def build(name: str, *, model: StepTimeModel = H100_LLAMA3_8B, seed: int = 0,
          scale: float = 1.0, **shape: Any) -> Workload:
    """The named suite workload; ``scale`` multiplies its request count; ``shape``
    overrides its shape knobs (:data:`SHAPE_KNOBS`; none: the suite's workload)."""
    if name not in _BUILDERS:
        raise UnknownWorkloadError(f"unknown workload {name!r}; choose from: {', '.join(SUITE)}")
    if not math.isfinite(scale) or scale <= 0:
        raise TraceError(f"scale must be > 0, got {scale!r}")
    check_shape(name, shape)
    base = replace(EngineConfig(), **{k: shape.pop(k) for k in ENGINE_KNOBS if k in shape})
    if base.max_num_batched_tokens < base.max_num_seqs:  # vLLM's SchedulerConfig refuses it
        raise TraceError(f"{name}: max_num_batched_tokens ({base.max_num_batched_tokens}) must "
                         f"be >= max_num_seqs ({base.max_num_seqs}), as vLLM requires")
    return _BUILDERS[name](model, seed, scale, base, **shape)


def parse_shape(spec: str | None) -> dict[str, Any]:
    """``KNOB=V,KNOB=V`` (``tailwise bench --shape``) as knob values: integers for
    ``kv_blocks``, ``skip`` and the engine knobs, floats otherwise. Which knobs a workload
    takes is checked by :func:`check_shape`.

    >>> parse_shape("kv_blocks=8000, load=1.1")
    {'kv_blocks': 8000, 'load': 1.1}
    """
    out: dict[str, Any] = {}
    for item in (s.strip() for s in (spec or "").split(",") if s.strip()):
        key, eq, value = (x.strip() for x in item.partition("="))
        if not eq or not key or not value:
            raise TraceError(f"shape: want KNOB=VALUE, got {item!r}")
        if key in out:
            raise TraceError(f"shape: {key} given twice")
        try:
            out[key] = int(value) if key in _INT_KNOBS else float(value)
        except ValueError:
            what = "a whole number" if key in _INT_KNOBS else "a number"
            raise TraceError(f"shape: {key} must be {what}, got {value!r}") from None
    return out


def parse_names(spec: str | None) -> list[str]:
    """Comma-separated workload names (``None`` = the whole suite), validated."""
    if spec is None:
        return list(SUITE)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise UnknownWorkloadError("give at least one workload name")
    for n in names:
        if n not in _BUILDERS:
            raise UnknownWorkloadError(f"unknown workload {n!r}; choose from: {', '.join(SUITE)}")
    return list(dict.fromkeys(names))

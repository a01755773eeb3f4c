"""Synthetic workloads and load scaling.

Generators: Poisson arrivals or Gamma-distributed inter-arrival times (coefficient of
variation > 1 gives bursts), with a mix of request classes (e.g. 80% short / 20% long),
each class drawing prompt and output lengths from a log-normal distribution.

Load: ``offered_load(trace, config, model)`` is the engine work the trace offers per
second of its duration divided by one (1.0 = the engine is busy all the time), with a
request's work taken at the engine's efficient operating point:

* prefill: ``p1·p + p2·p·C`` ms for a prompt of ``p`` tokens (marginal cost inside full
  chunks of ``C`` = ``max_num_batched_tokens`` tokens; the per-step fixed cost is paid
  once per chunk and amortised);
* decode: each output token costs ``(d0 + d1·B)/B + d2·ctx`` ms, where ``B`` is the
  decode batch the engine can hold (``min(max_num_seqs, KV tokens / mean context)``) and
  ``ctx`` the request's mean context while decoding (``p + o/2``).

``rate_scale_for_load(trace, L, ...)`` returns the factor X such that
``trace.scaled(X)`` offers ≈ ``L`` × capacity (``--target-load``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tailwise.records.trace import Trace, TraceError
from tailwise.scorer.step_time import StepTimeModel
from tailwise.simulator.engine import EngineConfig


@dataclass(frozen=True)
class LengthClass:
    """A request class: share of requests and log-normal length parameters."""

    name: str
    share: float
    prompt_median: float
    output_median: float
    prompt_sigma: float = 0.6
    output_sigma: float = 0.6
    max_prompt: int = 32_000
    max_output: int = 8_000


SHORT = LengthClass("short", 0.8, prompt_median=256, output_median=64)
LONG = LengthClass("long", 0.2, prompt_median=3072, output_median=512)


def generate(n: int, rate_rps: float, *, classes: tuple[LengthClass, ...] = (SHORT, LONG),
             arrival: str = "poisson", cv: float = 2.0, seed: int = 0,
             name: str | None = None) -> Trace:
    """``n`` requests at mean ``rate_rps``; ``arrival`` is "poisson" or "gamma" (with
    coefficient of variation ``cv`` of the inter-arrival times)."""
    if n < 1:
        raise TraceError(f"n must be >= 1, got {n}")
    if not math.isfinite(rate_rps) or rate_rps <= 0:
        raise TraceError(f"rate must be > 0 requests/s, got {rate_rps!r}")
    shares = np.array([c.share for c in classes], dtype=float)
    if len(classes) == 0 or (shares < 0).any() or shares.sum() <= 0:
        raise TraceError("class shares must be >= 0 and sum to > 0")
    rng = np.random.default_rng(seed)
    mean_gap = 1.0 / rate_rps
    if arrival == "poisson":
        gaps = rng.exponential(mean_gap, n)
    elif arrival == "gamma":
        if not math.isfinite(cv) or cv <= 0:
            raise TraceError(f"cv must be > 0, got {cv!r}")
        shape = 1.0 / (cv * cv)
        gaps = rng.gamma(shape, mean_gap / shape, n)
    else:
        raise TraceError(f"arrival must be 'poisson' or 'gamma', got {arrival!r}")
    gaps[0] = 0.0
    t = np.cumsum(gaps)
    which = rng.choice(len(classes), size=n, p=shares / shares.sum())
    prompt = np.empty(n, np.int64)
    output = np.empty(n, np.int64)
    for k, c in enumerate(classes):
        m = which == k
        cnt = int(m.sum())
        prompt[m] = np.clip(np.rint(rng.lognormal(math.log(c.prompt_median), c.prompt_sigma, cnt)),
                            1, c.max_prompt)
        output[m] = np.clip(np.rint(rng.lognormal(math.log(c.output_median), c.output_sigma, cnt)),
                            1, c.max_output)
    labels = [classes[k].name for k in which.tolist()]
    return Trace(name=name or f"synthetic-{arrival}", arrival_s=t, prompt_tokens=prompt,
                 output_tokens=output, classes=labels,
                 meta={"format": "synthetic", "seed": seed, "arrival": arrival})


def concat(first: Trace, second: Trace, gap_s: float = 0.0, name: str | None = None) -> Trace:
    """``second`` starting ``gap_s`` after ``first``'s last arrival (workload shifts)."""
    off = (float(first.arrival_s[-1]) if len(first) else 0.0) + gap_s
    def join(a: list[str] | None, b: list[str] | None, na: int, nb: int) -> list[str] | None:
        if a is None and b is None:
            return None
        return (a or [""] * na) + (b or [""] * nb)
    hashes = None
    if first.hash_ids is not None or second.hash_ids is not None:
        hashes = (first.hash_ids or [()] * len(first)) + (second.hash_ids or [()] * len(second))
    return Trace(
        name=name or f"{first.name}+{second.name}",
        arrival_s=np.concatenate([first.arrival_s, second.arrival_s + off]),
        prompt_tokens=np.concatenate([first.prompt_tokens, second.prompt_tokens]),
        output_tokens=np.concatenate([first.output_tokens, second.output_tokens]),
        hash_ids=hashes,
        classes=join(first.classes, second.classes, len(first), len(second)),
        slo_classes=join(first.slo_classes, second.slo_classes, len(first), len(second)),
        meta={"format": "concat", "shift_at_s": off},
    )


def request_work_ms(trace: Trace, config: EngineConfig, model: StepTimeModel) -> np.ndarray:
    """Engine milliseconds each request costs at the efficient operating point."""
    p = trace.prompt_tokens.astype(float)
    o = trace.output_tokens.astype(float)
    chunk = float(config.max_num_batched_tokens)
    prefill = model.prefill_per_token_ms * p + model.prefill_quad_ms * p * chunk
    prefill += model.prefill_fixed_ms * p / chunk
    ctx = p + o / 2.0
    mean_ctx = float(ctx.mean()) if len(ctx) else 1.0
    batch = max(1.0, min(float(config.max_num_seqs), config.kv_tokens / max(mean_ctx, 1.0)))
    per_token = (model.decode_fixed_ms + model.decode_per_req_ms * batch) / batch
    decode = o * (per_token + model.decode_per_ctx_ms * ctx)
    return np.asarray(prefill + decode)


def offered_load(trace: Trace, config: EngineConfig, model: StepTimeModel) -> float:
    """Offered work per second of trace duration, as a fraction of engine capacity."""
    if len(trace) < 2 or trace.duration_s <= 0:
        raise TraceError(f"{trace.name}: need >= 2 requests spread over time to define load")
    return float(request_work_ms(trace, config, model).sum()) / 1000.0 / trace.duration_s


def rate_scale_for_load(trace: Trace, target_load: float, config: EngineConfig,
                        model: StepTimeModel) -> float:
    """The ``--rate-scale`` that makes ``trace`` offer ``target_load`` × capacity."""
    if not math.isfinite(target_load) or target_load <= 0:
        raise TraceError(f"target load must be > 0, got {target_load!r}")
    return target_load / offered_load(trace, config, model)

"""Workload-shift scenarios for the closed loop (``tailwise simulate --scenario``).

Every scenario is a deterministic trace (seeded) with a known shift time, built from the
bundled Azure samples and the synthetic generators. Requests carry no class labels, so
reports keep the short/long prompt classes; phases are told apart by the shift time.

* ``code-to-conv`` — the Azure code trace, then the Azure conversation trace, each scaled
  to the target load on its own (prefill-heavy → decode-heavy).
* ``load-ramp`` — the conversation trace with its arrival rate ramped so offered load
  climbs linearly from 50% to 120% of capacity.
* ``long-burst`` — the code trace at the target load with a 60-second burst of
  long-context requests (16k–32k-token prompts) in the middle.
* ``reasoning`` — the conversation trace at the target load where, from the middle on,
  30% of requests produce reasoning-style long outputs (2k–8k tokens).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from tailwise.scorer.step_time import StepTimeModel
from tailwise.simulator.engine import EngineConfig
from tailwise.simulator.traces import Trace, TraceError, load_trace
from tailwise.simulator.workload import concat, offered_load, rate_scale_for_load

SCENARIOS = ("code-to-conv", "load-ramp", "long-burst", "reasoning")


@dataclass(frozen=True)
class Scenario:
    name: str
    trace: Trace
    #: engine time at which the workload shifts
    shift_s: float
    description: str


def _at_load(trace: Trace, load: float, cfg: EngineConfig, model: StepTimeModel) -> Trace:
    return trace.scaled(rate_scale_for_load(trace, load, cfg, model))


def build(name: str, cfg: EngineConfig, model: StepTimeModel, *, load: float = 0.9,
          requests: int = 3000, seed: int = 0) -> Scenario:
    """The named scenario with about ``requests`` requests per phase."""
    rng = np.random.default_rng(seed)
    if name == "code-to-conv":
        a = _at_load(load_trace("azure-code").head(requests), load, cfg, model)
        b = _at_load(load_trace("azure-conv").head(requests), load, cfg, model)
        gap = float(np.median(np.diff(a.arrival_s)))
        tr = concat(a, b, gap_s=gap, name="code-to-conv")
        return Scenario(name, tr, float(a.arrival_s[-1]) + gap,
                        f"Azure code → conversation at load {load}")
    if name == "load-ramp":
        base = load_trace("azure-conv").head(2 * requests)
        base = _at_load(base, 1.0, cfg, model)  # now at 100%: scale gaps by 1/target
        gaps = np.diff(base.arrival_s, prepend=0.0)
        target = np.linspace(0.5, 1.2, len(gaps))
        arr = np.cumsum(gaps / target)
        tr = replace(base, name="load-ramp", arrival_s=arr - arr[0])
        cross = int(np.searchsorted(target, 1.0))
        return Scenario(name, tr, float(tr.arrival_s[cross]), "conversation, load 50% → 120%")
    if name == "long-burst":
        base = _at_load(load_trace("azure-code").head(2 * requests), load, cfg, model)
        mid = float(base.arrival_s[len(base) // 2])
        n_burst = max(int(60.0 * len(base) / max(base.duration_s, 1e-9) * 0.2), 10)
        t = np.sort(rng.uniform(mid, mid + 60.0, n_burst))
        p = rng.integers(16_000, 32_000, n_burst)
        o = rng.integers(20, 200, n_burst)
        tr = _merge(base, t, p, o, "long-burst")
        return Scenario(name, tr, mid, f"code at load {load} + {n_burst} long-context requests")
    if name == "reasoning":
        base = _at_load(load_trace("azure-conv").head(2 * requests), load, cfg, model)
        half = len(base) // 2
        out = base.output_tokens.copy()
        pick = np.flatnonzero(rng.random(len(base)) < 0.3)
        pick = pick[pick >= half]
        out[pick] = rng.integers(2_000, 8_000, len(pick))
        tr = replace(base, name="reasoning", output_tokens=out)
        # keep the post-shift phase at the same offered load: stretch its arrivals
        shift = float(base.arrival_s[half])
        after = tr.select(np.arange(half, len(tr)))
        stretch = offered_load(after, cfg, model) / load
        arr = tr.arrival_s.copy()
        arr[half:] = shift + (arr[half:] - shift) * stretch
        tr = replace(tr, arrival_s=arr)
        return Scenario(name, tr, shift,
                        f"conversation at load {load}; 30% reasoning outputs after the shift")
    raise TraceError(f"unknown scenario {name!r}; choose from: {', '.join(SCENARIOS)}")


def _merge(base: Trace, t: np.ndarray, p: np.ndarray, o: np.ndarray, name: str) -> Trace:
    arr = np.concatenate([base.arrival_s, t])
    order = np.argsort(arr, kind="stable")
    return Trace(name=name, arrival_s=arr[order],
                 prompt_tokens=np.concatenate([base.prompt_tokens, p]).astype(np.int64)[order],
                 output_tokens=np.concatenate([base.output_tokens, o]).astype(np.int64)[order],
                 meta={"format": "scenario"})


def describe_load(s: Scenario, cfg: EngineConfig, model: StepTimeModel) -> dict[str, float]:
    """Offered load before and after the shift."""
    before = s.trace.arrival_s < s.shift_s
    out = {}
    for label, m in (("before", before), ("after", ~before)):
        idx = np.flatnonzero(m)
        if len(idx) >= 2:
            out[label] = round(offered_load(s.trace.select(idx), cfg, model), 3)
    return out

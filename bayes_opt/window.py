"""Replay windows: bounding their size, naming them, and measuring workload drift.

Bounding (:func:`cap_window`). Replay cost grows with the window, so a window longer than
``max_requests`` is cut deterministically:

* ``"tail"`` (default) keeps the most recent ``max_requests`` requests, contiguous, so the
  arrival process and the load are exactly those of the recent past;
* ``"thin"`` keeps every k-th request (k = ⌈n / max_requests⌉) and divides the timestamps
  by k, which keeps the arrival rate (hence the load) and the length mix of the *whole*
  window while dropping its fine-grained burst structure.

Stress (:func:`stressed`): the window's own traffic with its arrivals compressed in time
until it offers a given load (its carried-in backlog kept at the start), or None when it
already offers that much (unless a minimum rate factor is asked for). The tuner scores
candidates on it beside the window (``TunerConfig.stress_load``): the congestion a calm
window does not show.

Naming (:func:`fingerprint`): a short sha256 of the arrays, so caches (the FCFS baseline
replay) and Optuna user attributes can refer to "the same window".

Drift (:func:`drift`): river's ADWIN decides, through
:class:`tailwise.partitioner.drift.DriftDetector` (one ADWIN per length, on ``log1p``).
It is fed the previous window's sample (shuffled with a fixed seed) and then this
window's requests in arrival order; a drift is detected when it fires during this
window. The figure (``Drift.value``) is the size of the detected shift: the largest
``|Δ mean log1p length|`` (1 = the geometric mean moved ×e) among the lengths whose
detector fired, 0 when none did — so "no drift" is the detector's verdict, not a
threshold on a statistic. The previous window is kept as a :class:`LengthSketch` — 256
evenly spaced quantiles of each length (inverted-CDF, so they are actual lengths) plus
the arrival rate — small enough to persist in the study so drift survives a sidecar
restart, and the verdict is the same after a restart (no detector state lives elsewhere).

>>> import numpy as np
>>> from tailwise.simulator.traces import Trace
>>> t = Trace("t", np.arange(10.0), np.arange(1, 11), np.full(10, 5))
>>> w = cap_window(t, 4)
>>> len(w), w.prompt_tokens.tolist(), w.arrival_s.tolist()
(4, [7, 8, 9, 10], [0.0, 1.0, 2.0, 3.0])
>>> drift(LengthSketch.of(t), t).value
0.0
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tailwise.partitioner.drift import DriftDetector
from tailwise.records.trace import Trace
from tailwise.scorer.step_time import StepTimeModel
from tailwise.simulator.engine import EngineConfig
from tailwise.simulator.workload import offered_load

SKETCH_POINTS = 256
#: the most a stressed window's arrival rate is raised: a nearly idle window compressed to
#: the stress load would be one burst and a drain, not traffic at that load
MAX_STRESS_RATE = 4.0
#: seed of the shuffle of the reference sample fed to the detector first
DRIFT_SHUFFLE_SEED = 0


class WindowError(ValueError):
    """A window or a persisted sketch is malformed; the message names the field."""


def cap_window(trace: Trace, max_requests: int, how: str = "tail") -> Trace:
    """At most ``max_requests`` requests of ``trace``, chosen deterministically (see above)."""
    if isinstance(max_requests, bool) or not isinstance(max_requests, int) or max_requests < 1:
        raise WindowError(f"max_requests: must be an integer >= 1, got {max_requests!r}")
    n = len(trace)
    if n <= max_requests:
        return trace
    if how == "tail":
        idx = np.arange(n - max_requests, n)
        out = trace.select(idx)
    elif how == "thin":
        k = math.ceil(n / max_requests)
        idx = np.arange(0, n, k)
        out = trace.select(idx).scaled(float(k))
    else:
        raise WindowError(f"how: must be 'tail' or 'thin', got {how!r}")
    carried = trace.meta.get("carried_in")
    if isinstance(carried, int):  # the leading carried-in rows that were kept
        out = dataclasses.replace(out, meta={**out.meta, "carried_in": int((idx < carried).sum())})
    return out


def stressed(window: Trace, load: float, engine: EngineConfig,
             model: StepTimeModel, min_rate: float = 1.0) -> tuple[Trace, float] | None:
    """``window`` with its arrival rate raised until its traffic offers ``load`` × the
    engine's capacity, and at least ``min_rate`` × its own rate (at most
    ``MAX_STRESS_RATE``×), and the rate factor; None when that asks for no raise (with
    ``min_rate`` 1: the window offers ``load`` already) or its load is not defined (fewer
    than two arrivals after the carried-in rows, no span).
    The carried-in rows (placed at the window's start) stay where they are and do not
    count towards the load: they are backlog, not traffic."""
    if not math.isfinite(load) or load <= 0:
        raise WindowError(f"load: must be finite and > 0, got {load!r}")
    if not math.isfinite(min_rate) or min_rate < 1:
        raise WindowError(f"min_rate: must be finite and >= 1, got {min_rate!r}")
    carried = _carried_in(window)
    skip = carried if 0 <= carried < len(window) else 0
    traffic = window.select(np.arange(skip, len(window)))
    try:
        have = offered_load(traffic, engine, model)
    except ValueError:
        return None
    if not have > 0:
        return None
    k = min(max(load / have, min_rate), MAX_STRESS_RATE)
    if k <= 1.0:
        return None
    t0 = float(window.arrival_s[skip])  # select() re-bases its copy to 0
    arr = window.arrival_s.copy()
    arr[skip:] = t0 + (arr[skip:] - t0) / k
    return dataclasses.replace(window, name=f"{window.name}@x{k:.3g}", arrival_s=arr,
                               meta={**window.meta, "stress_rate": k}), k


def reshuffled(window: Trace, seed: int) -> Trace:
    """``window`` with its requests dealt to its arrival instants in a random order
    (``seed``): the same requests (lengths, prefixes, classes) and the same arrival
    instants, another sample path. The carried-in rows (the backlog at the window's
    start) stay where they are. The tuner's gate replays a few of these
    (``TunerConfig.reshuffles``): a candidate whose win over the champion comes from which
    request happened to arrive when does not hold up on them.

    >>> import numpy as np
    >>> w = Trace("w", np.array([0.0, 1.0, 2.0]), np.array([10, 20, 30]), np.array([1, 2, 3]))
    >>> r = reshuffled(w, 1)
    >>> r.arrival_s.tolist(), sorted(r.prompt_tokens.tolist()) == [10, 20, 30], r.name
    ([0.0, 1.0, 2.0], True, 'w~1')
    """
    skip = min(max(_carried_in(window), 0), len(window))
    rng = np.random.default_rng(seed)
    order = np.concatenate([np.arange(skip), skip + rng.permutation(len(window) - skip)])
    return dataclasses.replace(window.select(order.astype(np.intp)), name=f"{window.name}~{seed}",
                               arrival_s=window.arrival_s.copy(),
                               meta={**window.meta, "reshuffle_seed": seed})


def _carried_in(window: Trace) -> int:
    """The window's ``carried_in`` rows as its metadata says (0 when unreadable)."""
    try:
        return int(window.meta.get("carried_in", 0))
    except (TypeError, ValueError):
        return 0


def fingerprint(trace: Trace) -> str:
    """16 hex digits of sha256 over arrival times and lengths (stable across processes)."""
    h = hashlib.sha256()
    for arr in (trace.arrival_s, trace.prompt_tokens, trace.output_tokens):
        a = np.ascontiguousarray(arr)
        h.update(str(a.dtype).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class LengthSketch:
    """Quantiles of prompt and output lengths, and the mean arrival rate, of a window."""

    prompt: tuple[float, ...]
    output: tuple[float, ...]
    rate_rps: float | None

    @classmethod
    def of(cls, trace: Trace, points: int = SKETCH_POINTS) -> LengthSketch:
        if len(trace) == 0:
            raise WindowError("window: empty")
        levels = (np.arange(points) + 0.5) / points
        p = np.quantile(trace.prompt_tokens.astype(np.float64), levels, method="inverted_cdf")
        o = np.quantile(trace.output_tokens.astype(np.float64), levels, method="inverted_cdf")
        dur = trace.duration_s
        rate = len(trace) / dur if dur > 0 else None
        return cls(tuple(float(x) for x in p), tuple(float(x) for x in o), rate)

    def to_json(self) -> dict[str, Any]:
        return {"prompt": list(self.prompt), "output": list(self.output), "rate_rps": self.rate_rps}

    @classmethod
    def from_json(cls, data: Any) -> LengthSketch:
        if not isinstance(data, dict):
            raise WindowError(f"sketch: must be an object, got {type(data).__name__}")
        out: dict[str, tuple[float, ...]] = {}
        for key in ("prompt", "output"):
            v = data.get(key)
            if not isinstance(v, list) or not v or not all(
                isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
                for x in v
            ):
                raise WindowError(f"sketch.{key}: must be a non-empty list of finite numbers")
            out[key] = tuple(float(x) for x in v)
        rate = data.get("rate_rps")
        if rate is not None and (
            isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate)
        ):
            raise WindowError(f"sketch.rate_rps: must be null or a finite number, got {rate!r}")
        return cls(out["prompt"], out["output"], None if rate is None else float(rate))


@dataclass(frozen=True)
class Drift:
    """ADWIN's verdict per length, the shift sizes (``|Δ mean log1p|``) and the rate change
    ``rate_log_ratio`` = |ln(rate / ref)|; ``at_request`` is the window index of the
    first detection (None: no drift)."""

    prompt_detected: bool
    output_detected: bool
    prompt_shift: float
    output_shift: float
    rate_log_ratio: float | None
    at_request: int | None = None

    @property
    def detected(self) -> bool:
        return self.prompt_detected or self.output_detected

    @property
    def value(self) -> float:
        """Largest detected shift (0 when ADWIN detected none)."""
        shifts = [s for s, d in ((self.prompt_shift, self.prompt_detected),
                                 (self.output_shift, self.output_detected)) if d]
        return max(shifts, default=0.0)

    def as_attrs(self) -> dict[str, float | bool | int | None]:
        return {
            "drift": self.value,
            "drift_detected": self.detected,
            "drift_prompt_shift": self.prompt_shift,
            "drift_output_shift": self.output_shift,
            "drift_rate_log_ratio": self.rate_log_ratio,
            "drift_at_request": self.at_request,
        }


def drift(reference: LengthSketch, trace: Trace) -> Drift:
    """How far ``trace``'s lengths moved from ``reference``, by river's ADWIN (module doc)."""
    if len(trace) == 0:
        raise WindowError("window: empty")
    det = DriftDetector(("prompt", "output"))
    rng = np.random.default_rng(DRIFT_SHUFFLE_SEED)
    ref_p = np.asarray(reference.prompt, dtype=np.float64)
    ref_o = np.asarray(reference.output, dtype=np.float64)
    for p, o in zip(rng.permutation(ref_p), rng.permutation(ref_o), strict=False):
        det.learn_one({"prompt": float(p), "output": float(o)})
    order = np.argsort(trace.arrival_s, kind="stable")
    prompts = trace.prompt_tokens[order].astype(np.float64)
    outputs = trace.output_tokens[order].astype(np.float64)
    fired: set[str] = set()
    at: int | None = None
    for i, (p, o) in enumerate(zip(prompts, outputs, strict=True)):
        if det.learn_one({"prompt": float(p), "output": float(o)}):
            fired.update(det.drifted)
            at = i if at is None else at
    rate: float | None = None
    dur = trace.duration_s
    if reference.rate_rps and dur > 0:
        rate = abs(math.log((len(trace) / dur) / reference.rate_rps))
    return Drift("prompt" in fired, "output" in fired, _shift(ref_p, prompts),
                 _shift(ref_o, outputs), rate, at)


def _shift(ref: Any, x: Any) -> float:
    return float(abs(np.mean(np.log1p(x)) - np.mean(np.log1p(ref))))

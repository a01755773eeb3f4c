"""Backlog model, time models and the schedule evaluator — the single source of truth.

The model (DESIGN.md §Sorted-F, seed 004): ``n`` requests wait at time 0; request ``i``
has prompt ``p_i`` and output ``o_i`` tokens (known: the planner is an oracle planner;
pass predicted lengths to plan with an estimator). The engine runs *steps*; each step is
one batch mixing prefills and decodes. A request **started at step a** (its prefill step)
runs for exactly ``o_i`` consecutive steps ``a … a+o_i−1``: the prefill step produces its
first token, every later step one more. During its ``j``-th step (``j = 1 … o_i``) it
holds ``p_i + j`` KV tokens (prompt plus the token being generated — the paper's
convention), so its peak is ``p_i + o_i`` in its last step, after which all is freed.
A step is feasible when the KV held by all running requests is ``<= M``. There is no
preemption, and a whole prompt is prefilled in its start step: a schedule is just the
start step of every request.

Time models:

* **unit** — every step costs 1 (the paper's analysis); request ``i`` completes at
  ``a_i + o_i``. Idle steps (nothing running) still cost 1: time is the step index.
* **step** — a step costs :meth:`tailwise.scorer.step_time.StepTimeModel.step_s` of its
  ``N`` prefill tokens (prompts started that step), ``B`` decode requests (running,
  started earlier) and ``S`` their context (``p_i + j − 1`` for a request in its
  ``j``-th step). Idle steps cost 0 (an engine with nothing to run does not step).
  The prefill formula is quadratic in ``N`` and calibrated for one engine iteration, so
  a plan step whose prefills exceed the engine's per-step token budget ``C`` (default
  8,192, as in the simulator) is charged as chunked prefill: ``⌊N/C⌋·prefill(C) +
  prefill(N mod C)`` plus the decode terms once (decodes ride along with the last chunk).

Objective: sum (and mean) of completion times; makespan is reported too.
:func:`evaluate` checks KV feasibility at every step exactly and is what every method and
every test is scored by.

>>> inst = Instance.from_lengths([4, 2], [2, 3], kv_budget=9)
>>> ev = evaluate(inst, [0, 1])
>>> ev.completion.tolist(), ev.kv_usage.tolist(), ev.total
([2.0, 4.0], [5, 9, 4, 5], 6.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tailwise.scorer.step_time import StepTimeModel

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Refuse schedules longer than this many steps (a guard against runaway start values).
MAX_HORIZON_STEPS = 50_000_000


class PlanInputError(ValueError):
    """Bad backlog input; the message names the request (0-based index) and the value."""


class InfeasibleScheduleError(ValueError):
    """A schedule exceeds the KV budget at some step, or is malformed."""


# -- instance ---------------------------------------------------------------------------------
def _as_lengths(values: Sequence[int] | npt.ArrayLike, what: str) -> IntArray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise PlanInputError(f"{what} lengths must be a 1-D sequence, got shape {arr.shape}")
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        if arr.size:
            raise PlanInputError(f"{what} lengths must be integers, got dtype {arr.dtype}")
        return np.zeros(0, dtype=np.int64)
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise PlanInputError(f"request {i}: {what} length must be an integer, got {arr[i]!r}")
    out = arr.astype(np.int64)
    low = out < 1
    if low.any():
        i = int(np.flatnonzero(low)[0])
        raise PlanInputError(f"request {i}: {what} length must be >= 1 token, got {int(out[i])}")
    return out


@dataclass(frozen=True)
class Instance:
    """A validated backlog: parallel ``prompts``/``outputs`` arrays and the KV budget."""

    prompts: IntArray
    outputs: IntArray
    kv_budget: int
    name: str = "backlog"

    @classmethod
    def from_lengths(
        cls,
        prompts: Sequence[int] | npt.ArrayLike,
        outputs: Sequence[int] | npt.ArrayLike,
        kv_budget: int,
        name: str = "backlog",
    ) -> Instance:
        """Validate at the boundary: positive integer lengths, every request fits alone.

        >>> try:
        ...     Instance.from_lengths([5, 3], [2, 9], kv_budget=10)
        ... except PlanInputError as exc:
        ...     print(exc)
        request 1: prompt 3 + output 9 = 12 KV tokens exceeds the whole budget of 10 tokens
        """
        if isinstance(kv_budget, bool) or not isinstance(kv_budget, int | np.integer):
            raise PlanInputError(f"kv budget must be an integer number of tokens, got {kv_budget!r}")
        budget = int(kv_budget)
        if budget < 1:
            raise PlanInputError(f"kv budget must be >= 1 token, got {budget}")
        p = _as_lengths(prompts, "prompt")
        o = _as_lengths(outputs, "output")
        if len(p) != len(o):
            raise PlanInputError(f"{len(p)} prompt lengths but {len(o)} output lengths")
        too_big = p + o > budget
        if too_big.any():
            i = int(np.flatnonzero(too_big)[0])
            raise PlanInputError(
                f"request {i}: prompt {int(p[i])} + output {int(o[i])} = {int(p[i] + o[i])} "
                f"KV tokens exceeds the whole budget of {budget} tokens"
            )
        p.setflags(write=False)
        o.setflags(write=False)
        return cls(prompts=p, outputs=o, kv_budget=budget, name=name)

    @property
    def n(self) -> int:
        return len(self.prompts)

    @property
    def footprint(self) -> IntArray:
        """Peak KV of each request alone (``p_i + o_i``)."""
        return self.prompts + self.outputs

    def subset(self, idx: Sequence[int] | IntArray) -> Instance:
        ids = np.asarray(idx, dtype=np.int64)
        return Instance(self.prompts[ids], self.outputs[ids], self.kv_budget, self.name)


# -- time models ------------------------------------------------------------------------------
#: the simulator's default per-step token budget (DESIGN.md §Simulator)
DEFAULT_PREFILL_CHUNK = 8192


@dataclass(frozen=True)
class TimeModel:
    """Unit time (``step_model is None``) or the engine's step-time model.

    ``prefill_chunk``: per-step prefill token budget used to charge large prefills as
    chunked (``None``: one iteration whatever the size).
    """

    step_model: StepTimeModel | None = None
    prefill_chunk: int | None = DEFAULT_PREFILL_CHUNK

    def __post_init__(self) -> None:
        if self.prefill_chunk is not None and self.prefill_chunk < 1:
            raise ValueError(f"prefill_chunk must be >= 1 token, got {self.prefill_chunk}")

    @classmethod
    def unit(cls) -> TimeModel:
        return cls(None)

    @property
    def is_unit(self) -> bool:
        return self.step_model is None

    @property
    def name(self) -> str:
        return "unit" if self.step_model is None else f"step:{self.step_model.name}"

    @property
    def time_unit(self) -> str:
        return "steps" if self.step_model is None else "s"

    def step_durations(self, n_prefill: IntArray, n_decode: IntArray,
                       ctx_decode: IntArray) -> FloatArray:
        """Vectorised ``StepTimeModel.step_s`` (same formula; idle steps cost 0 there)."""
        if self.step_model is None:
            return np.ones(len(n_prefill), dtype=np.float64)
        m = self.step_model

        def prefill(x: FloatArray) -> FloatArray:
            out = m.prefill_fixed_ms + m.prefill_per_token_ms * x + m.prefill_quad_ms * x * x
            return np.where(x > 0, out, 0.0)

        n = n_prefill.astype(np.float64)
        b = n_decode.astype(np.float64)
        s = ctx_decode.astype(np.float64)
        decode_marginal = m.decode_per_req_ms * b + m.decode_per_ctx_ms * s
        if self.prefill_chunk is None:
            mixed = prefill(n)
        else:
            c = float(self.prefill_chunk)
            full = np.floor(n / c)
            mixed = full * prefill(np.array([c]))[0] + prefill(n - full * c)
        ms = np.where(
            n > 0,
            mixed + decode_marginal,
            np.where(b > 0, m.decode_fixed_ms + decode_marginal, 0.0),
        )
        return np.asarray(ms / 1000.0, dtype=np.float64)


UNIT = TimeModel.unit()


# -- schedules --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Schedule:
    """A plan: the start (prefill) step of every request, plus how it was made.

    ``order`` is the admission order the plan was dispatched in (what a waiting queue
    would serve); ``batches`` the planned batch membership when the method forms batches.
    """

    method: str
    start: IntArray
    order: IntArray
    batches: tuple[tuple[int, ...], ...] | None = None
    dispatch: str = ""
    runtime_s: float = 0.0
    info: dict[str, float | int | str] = field(default_factory=dict)

    @classmethod
    def from_starts(cls, method: str, start: Sequence[int] | IntArray, *, dispatch: str = "",
                    runtime_s: float = 0.0) -> Schedule:
        """A schedule given only start steps; its order is by start step (stable)."""
        s = np.asarray(start, dtype=np.int64)
        order = np.argsort(s, kind="stable").astype(np.int64)
        return cls(method=method, start=s, order=order, dispatch=dispatch, runtime_s=runtime_s)

    def admission_order(self) -> IntArray:
        """Requests by start step; ties keep the dispatch order."""
        pos = np.empty(len(self.order), dtype=np.int64)
        pos[self.order] = np.arange(len(self.order), dtype=np.int64)
        out: IntArray = np.lexsort((pos, self.start)).astype(np.int64)
        return out

    def batch_of(self) -> IntArray:
        """Planned batch index per request (-1 when the method forms no batches)."""
        out = np.full(len(self.start), -1, dtype=np.int64)
        for b, members in enumerate(self.batches or ()):
            out[list(members)] = b
        return out


@dataclass(frozen=True)
class StepTrace:
    """Per-step aggregates of a schedule (no feasibility check)."""

    kv_usage: IntArray
    n_prefill: IntArray
    n_decode: IntArray
    ctx_decode: IntArray
    step_end: FloatArray


def step_trace(prompts: IntArray, outputs: IntArray, start: IntArray,
               time_model: TimeModel = UNIT) -> StepTrace:
    """KV usage and step times per step via difference arrays: O(n + horizon)."""
    if len(start) == 0:
        z = np.zeros(0, dtype=np.int64)
        return StepTrace(z, z, z, z, np.zeros(0, dtype=np.float64))
    end = start + outputs
    horizon = int(end.max())
    if horizon > MAX_HORIZON_STEPS:
        raise InfeasibleScheduleError(
            f"schedule spans {horizon} steps (limit {MAX_HORIZON_STEPS})")
    size = horizon + 1
    # running count and the part of Σ(p_i + t − a_i + 1) that does not depend on t
    cnt = np.bincount(start, minlength=size) - np.bincount(end, minlength=size)
    base_w = (prompts - start + 1).astype(np.float64)
    base = np.bincount(start, weights=base_w, minlength=size) - np.bincount(
        end, weights=base_w, minlength=size)
    t = np.arange(horizon, dtype=np.int64)
    count = np.cumsum(cnt)[:horizon]
    kv = np.rint(np.cumsum(base)[:horizon]).astype(np.int64) + t * count
    n_prefill = np.bincount(start, weights=prompts.astype(np.float64), minlength=size)[:horizon]
    n_prefill_i = np.rint(n_prefill).astype(np.int64)
    starts_here = np.bincount(start, minlength=size)[:horizon].astype(np.int64)
    n_decode = count - starts_here
    if time_model.is_unit:
        ctx = np.zeros(horizon, dtype=np.int64)
    else:
        # a request decoding at step t (a_i < t < end_i) attends p_i + (t − a_i) tokens
        w = (prompts - start).astype(np.float64)
        d = np.bincount(start + 1, weights=w, minlength=size + 1) - np.bincount(
            end, weights=w, minlength=size + 1)
        ctx = np.rint(np.cumsum(d)[:horizon]).astype(np.int64) + t * n_decode
    dur = time_model.step_durations(n_prefill_i, n_decode, ctx)
    return StepTrace(kv, n_prefill_i, n_decode, ctx, np.cumsum(dur))


# -- evaluation -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Evaluation:
    """Completion times (in the time model's unit) and KV usage of one schedule."""

    time_model: str
    time_unit: str
    start_time: FloatArray
    first_token: FloatArray
    completion: FloatArray
    kv_usage: IntArray
    step_end: FloatArray
    kv_budget: int

    @property
    def n(self) -> int:
        return len(self.completion)

    @property
    def total(self) -> float:
        """Sum of completion times (the objective)."""
        return float(self.completion.sum())

    @property
    def mean(self) -> float:
        return float(self.completion.mean()) if self.n else 0.0

    @property
    def makespan(self) -> float:
        return float(self.completion.max()) if self.n else 0.0

    @property
    def peak_kv(self) -> int:
        return int(self.kv_usage.max()) if len(self.kv_usage) else 0

    @property
    def steps(self) -> int:
        return len(self.kv_usage)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.completion, q)) if self.n else 0.0

    def summary(self) -> dict[str, float | int | str]:
        return {
            "requests": self.n,
            "time_model": self.time_model,
            "time_unit": self.time_unit,
            "sum_completion": self.total,
            "mean_completion": self.mean,
            "p50_completion": self.percentile(50),
            "p90_completion": self.percentile(90),
            "p99_completion": self.percentile(99),
            "makespan": self.makespan,
            "steps": self.steps,
            "peak_kv_tokens": self.peak_kv,
            "peak_kv_fraction": self.peak_kv / self.kv_budget,
        }


def evaluate(instance: Instance, start: Sequence[int] | IntArray | Schedule,
             time_model: TimeModel = UNIT) -> Evaluation:
    """Check ``start`` exactly against the KV budget and compute completion times.

    Raises :class:`InfeasibleScheduleError` naming the first overfull step and the
    requests running in it.
    """
    s = start.start if isinstance(start, Schedule) else np.asarray(start)
    if s.shape != (instance.n,):
        raise InfeasibleScheduleError(
            f"schedule has {s.shape} start steps for {instance.n} requests")
    if s.size and (not np.issubdtype(s.dtype, np.integer) or s.min() < 0):
        raise InfeasibleScheduleError("start steps must be integers >= 0")
    s = s.astype(np.int64)
    p, o = instance.prompts, instance.outputs
    tr = step_trace(p, o, s, time_model)
    over = np.flatnonzero(tr.kv_usage > instance.kv_budget)
    if over.size:
        t = int(over[0])
        running = np.flatnonzero((s <= t) & (s + o > t))
        names = ", ".join(str(int(i)) for i in running[:10])
        more = f" and {len(running) - 10} more" if len(running) > 10 else ""
        raise InfeasibleScheduleError(
            f"step {t}: KV usage {int(tr.kv_usage[t])} exceeds the budget of "
            f"{instance.kv_budget} tokens (running requests: {names}{more})")
    if s.size:
        completion = tr.step_end[s + o - 1]
        first = tr.step_end[s]
        dur0 = np.diff(np.concatenate(([0.0], tr.step_end)))
        begin = first - dur0[s]
    else:
        completion = first = begin = np.zeros(0, dtype=np.float64)
    return Evaluation(
        time_model=time_model.name,
        time_unit=time_model.time_unit,
        start_time=begin,
        first_token=first,
        completion=completion,
        kv_usage=tr.kv_usage,
        step_end=tr.step_end,
        kv_budget=instance.kv_budget,
    )


# -- batches ----------------------------------------------------------------------------------
def batch_peak(prompts: IntArray, outputs: IntArray) -> int:
    """Peak KV of requests that all start in the same step and run alone.

    Memory in the batch's ``j``-th step is ``Σ_{o_i ≥ j} (p_i + j)``; it rises between
    completions, so the peak is at a step ``j`` equal to some ``o_i``. O(k log k).

    >>> batch_peak(np.array([2, 2]), np.array([3, 3])), batch_peak(np.array([8, 1]), np.array([1, 4]))
    (10, 11)
    """
    if len(outputs) == 0:
        return 0
    idx = np.argsort(-outputs, kind="stable")
    o = outputs[idx]
    cum_p = np.cumsum(prompts[idx])
    k = np.arange(1, len(o) + 1, dtype=np.int64)
    return int((cum_p + k * o).max())


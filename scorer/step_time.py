"""Step-time model of one engine iteration (pure; shared by simulator, scorer and planner).

A step runs one batch: ``N`` prefill tokens (chunks of requests still computing their
prompt, or recomputing after preemption) and ``B`` decode requests whose contexts total
``S`` tokens. The cost model (DESIGN.md §Simulator) is::

    prefill_ms(N) = p0 + p1·N + p2·N²
    decode_ms(B, S) = d0 + d1·B + d2·S
    step_ms = prefill_ms(N) + d1·B + d2·S   if N > 0  (mixed step: fixed cost paid once)
            = decode_ms(B, S)                 if N == 0 and B > 0
            = 0                               for an empty step

>>> m = StepTimeModel(name="toy", prefill_fixed_ms=1.0, prefill_per_token_ms=0.5,
...                   prefill_quad_ms=0.0, decode_fixed_ms=2.0, decode_per_req_ms=0.25,
...                   decode_per_ctx_ms=0.01)
>>> m.step_ms(4, 0, 0), m.step_ms(0, 2, 100), m.step_ms(4, 2, 100)
(3.0, 3.5, 4.5)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

#: reference operating point for converting tokens into engine work
WORK_REF_CHUNK = 8192
WORK_REF_BATCH = 64
WORK_REF_CONTEXT = 1024


class StepTimeModelError(ValueError):
    """A step-time model has a missing, non-finite or negative coefficient."""


@dataclass(frozen=True, slots=True)
class StepTimeModel:
    """Coefficients in milliseconds; see the module docstring for the formula."""

    name: str
    prefill_fixed_ms: float
    prefill_per_token_ms: float
    prefill_quad_ms: float
    decode_fixed_ms: float
    decode_per_req_ms: float
    decode_per_ctx_ms: float
    provenance: str = ""

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name in ("name", "provenance"):
                continue
            v = getattr(self, f.name)
            if not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise StepTimeModelError(
                    f"step-time model {self.name!r}: {f.name} must be a finite number >= 0, "
                    f"got {v!r}"
                )

    def prefill_ms(self, n_tokens: int) -> float:
        """Time of a pure prefill step of ``n_tokens`` tokens."""
        if n_tokens <= 0:
            return 0.0
        n = float(n_tokens)
        return self.prefill_fixed_ms + self.prefill_per_token_ms * n + self.prefill_quad_ms * n * n

    def decode_ms(self, batch: int, context_tokens: int) -> float:
        """Time of a pure decode step of ``batch`` requests with ``context_tokens`` in total."""
        if batch <= 0:
            return 0.0
        return (
            self.decode_fixed_ms
            + self.decode_per_req_ms * batch
            + self.decode_per_ctx_ms * context_tokens
        )

    def step_ms(self, prefill_tokens: int, decode_batch: int, decode_context: int) -> float:
        """Time of one (possibly mixed) step in milliseconds."""
        if prefill_tokens > 0:
            return (
                self.prefill_ms(prefill_tokens)
                + self.decode_per_req_ms * decode_batch
                + self.decode_per_ctx_ms * decode_context
            )
        return self.decode_ms(decode_batch, decode_context)

    def step_s(self, prefill_tokens: int, decode_batch: int, decode_context: int) -> float:
        """Time of one step in seconds."""
        return self.step_ms(prefill_tokens, decode_batch, decode_context) / 1000.0

    # -- tokens -> engine work (γ-boost's attained service, oracle job sizes) -----------
    @property
    def prefill_token_s(self) -> float:
        """Engine seconds of work per prompt token: its marginal cost inside a full chunk
        of :data:`WORK_REF_CHUNK` tokens (fixed step cost amortised over the chunk)."""
        c = WORK_REF_CHUNK
        return (self.prefill_per_token_ms + self.prefill_quad_ms * c
                + self.prefill_fixed_ms / c) / 1000.0

    @property
    def decode_token_s(self) -> float:
        """Engine seconds of work per decode token: a request's share of a decode step at
        the reference batch :data:`WORK_REF_BATCH` and context :data:`WORK_REF_CONTEXT`.

        Work, not latency: a batched engine serves many decode tokens per iteration, so a
        decode token costs a few prefill tokens' worth (about 6× with the H100 model), not
        a whole iteration. Fixed reference points keep a request's attained work a
        function of its own progress only.
        """
        b = WORK_REF_BATCH
        return ((self.decode_fixed_ms + self.decode_per_req_ms * b) / b
                + self.decode_per_ctx_ms * WORK_REF_CONTEXT) / 1000.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepTimeModel:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise StepTimeModelError(f"step-time model: unknown field(s) {unknown}")
        missing = sorted(
            f.name for f in fields(cls) if f.name not in data and f.name != "provenance"
        )
        if missing:
            raise StepTimeModelError(f"step-time model: missing field(s) {missing}")
        return cls(**data)


#: Llama-3-8B on one H100 with vLLM (DESIGN.md; provenance in simulator/data/h100_llama3_8b.json).
H100_LLAMA3_8B = StepTimeModel(
    name="h100-llama3-8b",
    prefill_fixed_ms=3.77,
    prefill_per_token_ms=0.01793,
    prefill_quad_ms=7.33e-7,
    decode_fixed_ms=6.36,
    decode_per_req_ms=0.01152,
    decode_per_ctx_ms=4.10e-5,
)

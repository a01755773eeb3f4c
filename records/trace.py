"""A trace: requests in arrival order (arrival, prompt and output lengths, classes).

The loaders of trace files live in :mod:`tailwise.simulator.traces`; the telemetry
window of the sidecar builds traces directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class TraceError(ValueError):
    """A trace file or row is malformed; the message names the file and line."""


@dataclass(frozen=True)
class Trace:
    """Requests in arrival order. Arrays are parallel; times in seconds from the start."""

    name: str
    arrival_s: FloatArray
    prompt_tokens: IntArray
    output_tokens: IntArray
    #: per-request prefix-cache block hashes (Mooncake ``hash_ids``), or None
    hash_ids: list[tuple[int, ...]] | None = None
    #: per-request class label from the trace itself (e.g. "short"/"long"), or None
    classes: list[str] | None = None
    #: per-request SLO class ("interactive"/"batch"), or None
    slo_classes: list[str] | None = None
    skipped: int = 0
    skip_reasons: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        if len(self.prompt_tokens) != n or len(self.output_tokens) != n:
            raise TraceError(f"{self.name}: arrival/prompt/output arrays differ in length")
        for name, extra in (("hash_ids", self.hash_ids), ("classes", self.classes),
                            ("slo_classes", self.slo_classes)):
            if extra is not None and len(extra) != n:
                raise TraceError(f"{self.name}: {name} has {len(extra)} entries for {n} requests")

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def duration_s(self) -> float:
        return float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) else 0.0

    def scaled(self, rate_scale: float) -> Trace:
        """Arrival rate × ``rate_scale`` (timestamps divided by it, lengths unchanged)."""
        if not math.isfinite(rate_scale) or rate_scale <= 0:
            raise TraceError(f"rate scale must be a positive finite number, got {rate_scale!r}")
        return replace(self, arrival_s=self.arrival_s / rate_scale,
                       meta={**self.meta, "rate_scale": rate_scale})

    def head(self, n: int) -> Trace:
        """The first ``n`` requests."""
        return self.select(np.arange(min(n, len(self))))

    def select(self, idx: npt.NDArray[np.intp]) -> Trace:
        def pick(xs: list[Any] | None) -> Any:
            return None if xs is None else [xs[i] for i in idx]

        arr = self.arrival_s[idx]
        if len(arr):
            arr = arr - arr[0]
        return replace(self, arrival_s=arr, prompt_tokens=self.prompt_tokens[idx],
                       output_tokens=self.output_tokens[idx], hash_ids=pick(self.hash_ids),
                       classes=pick(self.classes), slo_classes=pick(self.slo_classes))

    def summary(self) -> dict[str, Any]:
        n = len(self)
        out: dict[str, Any] = {"name": self.name, "requests": n, "skipped_rows": self.skipped}
        if n:
            out.update(
                duration_s=round(self.duration_s, 3),
                mean_rate_rps=round(n / self.duration_s, 4) if self.duration_s > 0 else None,
                prompt_tokens_mean=round(float(self.prompt_tokens.mean()), 1),
                prompt_tokens_p50=int(np.percentile(self.prompt_tokens, 50)),
                prompt_tokens_p99=int(np.percentile(self.prompt_tokens, 99)),
                output_tokens_mean=round(float(self.output_tokens.mean()), 1),
                output_tokens_p50=int(np.percentile(self.output_tokens, 50)),
                output_tokens_p99=int(np.percentile(self.output_tokens, 99)),
                has_hash_ids=self.hash_ids is not None,
            )
        out.update({k: v for k, v in self.meta.items() if isinstance(v, int | float | str)})
        return out

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

    def continued(self, copies: int, skip: int = 0) -> Trace:
        """This trace followed by ``copies`` repeats of its requests from index ``skip``
        on, each shifted by one period (the span of those arrivals plus their mean gap),
        so the original requests meet the load that would go on arriving after them.
        ``skip`` leaves out leading rows that are not traffic (a replay's carried-in
        backlog). The original requests keep their indices ``0..len(self)-1``.

        >>> t = Trace("w", np.array([0.0, 1.0, 2.0]), np.array([5, 6, 7]), np.array([1, 2, 3]))
        >>> c = t.continued(2, skip=1)
        >>> c.arrival_s.tolist(), c.prompt_tokens.tolist()
        ([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [5, 6, 7, 6, 7, 6, 7])
        """
        if isinstance(copies, bool) or not isinstance(copies, int) or copies < 0:
            raise TraceError(f"copies must be an integer >= 0, got {copies!r}")
        if not 0 <= skip < len(self) or copies == 0:
            return self
        arr = self.arrival_s[skip:]
        n = len(arr)
        period = float(arr[-1] - arr[0]) * (n / (n - 1)) if n > 1 else 1.0
        if period <= 0:
            period = 1.0
        idx = np.concatenate([np.arange(len(self))] + [np.arange(skip, len(self))] * copies)
        shift = np.concatenate([np.zeros(len(self))]
                               + [np.full(n, k * period) for k in range(1, copies + 1)])
        return replace(self.select(idx), arrival_s=self.arrival_s[idx] + shift,
                       meta={**self.meta, "continued": copies})

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

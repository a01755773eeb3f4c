"""Per-request outcomes of a run: the engine's measured times and counts per request."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from tailwise.records.trace import Trace


@dataclass
class RequestRecords:
    """Per-request outcomes, parallel numpy arrays indexed like the trace."""

    arrival: npt.NDArray[np.float64]
    prompt: npt.NDArray[np.int64]
    output: npt.NDArray[np.int64]
    first_scheduled: npt.NDArray[np.float64]
    first_token: npt.NDArray[np.float64]
    finish: npt.NDArray[np.float64]
    preemptions: npt.NDArray[np.int64]
    wasted_tokens: npt.NDArray[np.int64]
    cached_tokens: npt.NDArray[np.int64]
    #: True for requests rejected because they can never fit in KV
    rejected: npt.NDArray[np.bool_]
    classes: list[str] | None = None
    slo_classes: list[str] | None = None

    def head(self, n: int) -> RequestRecords:
        """The records of the first ``n`` requests (every per-request field cut)."""
        return replace(self, **{f.name: v[:n] for f in fields(self)
                                if (v := getattr(self, f.name)) is not None})

    def subset(self, idx: npt.NDArray[np.int64]) -> RequestRecords:
        """The records of the requests at positions ``idx``, in that order (every
        per-request field cut).

        >>> import numpy as np
        >>> from tailwise.records.trace import Trace
        >>> t = Trace("t", np.array([0.0, 1.0, 2.0]), np.array([5, 6, 7]),
        ...           np.array([1, 2, 3]), classes=["a", "b", "c"])
        >>> r = RequestRecords.empty(t).subset(np.array([2, 0]))
        >>> r.prompt.tolist(), r.classes
        ([7, 5], ['c', 'a'])
        """
        pos = idx.tolist()

        def cut(v: Any) -> Any:
            return [v[i] for i in pos] if isinstance(v, list) else v[idx]

        return replace(self, **{f.name: cut(v) for f in fields(self)
                                if (v := getattr(self, f.name)) is not None})

    @classmethod
    def empty(cls, trace: Trace) -> RequestRecords:
        n = len(trace)
        nan = np.full(n, np.nan)
        return cls(arrival=trace.arrival_s.copy(), prompt=trace.prompt_tokens.copy(),
                   output=trace.output_tokens.copy(), first_scheduled=nan.copy(),
                   first_token=nan.copy(), finish=nan.copy(),
                   preemptions=np.zeros(n, np.int64), wasted_tokens=np.zeros(n, np.int64),
                   cached_tokens=np.zeros(n, np.int64), rejected=np.zeros(n, np.bool_),
                   classes=trace.classes, slo_classes=trace.slo_classes)

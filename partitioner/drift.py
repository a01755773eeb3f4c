"""Workload drift on the request stream, detected by river's ADWIN (pure, no I/O).

:class:`DriftDetector` runs one :class:`river.drift.ADWIN` per named feature on
``log1p`` of its values. Why ADWIN: it keeps an adaptive window and signals when two
sub-windows have means that differ beyond a Hoeffding bound (confidence ``delta``), so it
needs no reference window and no threshold in tokens. Why ``log1p``: request lengths are
heavy-tailed; in log space a shift is a *relative* change (×e of the geometric mean is a
step of 1) and one huge prompt does not fire the detector. On 6,000-request lognormal
streams (5 seeds) ADWIN at the default ``delta`` fired on none of the stationary streams
and on every stream whose median length grows ×e, within ~40 requests of the shift
(``tests/partitioner/test_partitioner_drift.py`` checks both on fixed seeds).
River's PageHinkley fired on every stationary stream at its defaults and KSWIN was
~2,000x slower, so ADWIN is the detector here.

Three users: :class:`~tailwise.partitioner.refine_prune.RefinePrune` feeds it the routing
feature and refreshes early when it fires; the tuner (:mod:`tailwise.bayes_opt.window`)
measures each round's drift with it (previous window, then this one); and the learning
loop watches the arrival stream after a tuned policy's window with
:class:`ArrivalDrift` (prompt lengths and, optionally, the gaps between arrivals).

>>> import random
>>> rng = random.Random(0)
>>> d = DriftDetector(("prompt",))
>>> fired = [d.learn_one({"prompt": rng.lognormvariate(6 if i < 500 else 8, 0.5)})
...          for i in range(1000)]
>>> any(fired[:500]), any(fired[500:])
(False, True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from river.drift import ADWIN

#: ADWIN's confidence (river's default): the false-alarm bound per check
DEFAULT_DELTA = 0.002


class DriftDetector:
    """ADWIN per feature on ``log1p(value)``; ``learn_one`` says whether a drift fired."""

    def __init__(self, features: Sequence[str] = ("x",), delta: float = DEFAULT_DELTA) -> None:
        if not features or len(set(features)) != len(features):
            raise ValueError(f"features: must be distinct names, got {list(features)!r}")
        if not (isinstance(delta, int | float) and 0.0 < delta < 1.0):
            raise ValueError(f"delta: must be in (0, 1), got {delta!r}")
        self.features = tuple(features)
        self.delta = float(delta)
        self._adwin = {f: ADWIN(delta=self.delta) for f in self.features}
        #: samples seen, detections so far, and the features that fired on the last sample
        self.n = 0
        self.detections = 0
        self.drifted: tuple[str, ...] = ()

    def learn_one(self, x: Mapping[str, float]) -> bool:
        """Feed one sample (missing or non-finite/negative features are skipped)."""
        self.n += 1
        fired = []
        for f in self.features:
            v = x.get(f)
            if v is None or not isinstance(v, int | float) or not 0.0 <= v < math.inf:
                continue
            a = self._adwin[f]
            a.update(math.log1p(float(v)))
            if a.drift_detected:
                fired.append(f)
        self.drifted = tuple(fired)
        if fired:
            self.detections += 1
        return bool(fired)

    def estimate(self, feature: str) -> float:
        """Mean of ``log1p(value)`` over ADWIN's current window (0 before any sample)."""
        return float(self._adwin[feature].estimation)

    def width(self, feature: str) -> int:
        """Number of samples in ADWIN's current window for ``feature``."""
        return int(self._adwin[feature].width)

    def reset(self) -> None:
        """Forget everything (new detectors, counters kept)."""
        self._adwin = {f: ADWIN(delta=self.delta) for f in self.features}
        self.drifted = ()

    def __repr__(self) -> str:
        return f"DriftDetector({list(self.features)}, n={self.n}, detections={self.detections})"


#: what :class:`ArrivalDrift` can watch: each arrival's prompt tokens, and the time since
#: the previous arrival in milliseconds (the arrival rate: a load shift)
ARRIVAL_FEATURES = ("prompt", "gap")


class ArrivalDrift:
    """ADWIN on an arrival stream, fed in arrival order.

    ``"prompt"`` is the request's prompt tokens; ``"gap"`` the milliseconds since the
    previous arrival (``log1p`` as every feature: a rate ×e is a step of about 1). Both are
    known when a request arrives, so nothing waits for a request to finish.

    >>> import random
    >>> rng = random.Random(1)
    >>> def stream(rate, n, t=0.0):
    ...     out = []
    ...     for _ in range(n):
    ...         t += rng.expovariate(rate)
    ...         out.append((t, 500.0))
    ...     return out
    >>> calm = stream(5.0, 400)
    >>> busy = stream(30.0, 400, calm[-1][0])
    >>> d = ArrivalDrift(("prompt",))
    >>> d.learn([t for t, _ in calm + busy], [p for _, p in calm + busy])
    False
    >>> d = ArrivalDrift(("prompt", "gap"))
    >>> d.learn([t for t, _ in calm], [p for _, p in calm])
    False
    >>> d.learn([t for t, _ in busy], [p for _, p in busy])
    True
    """

    def __init__(self, features: Sequence[str] = ("prompt",),
                 delta: float = DEFAULT_DELTA) -> None:
        bad = [f for f in features if f not in ARRIVAL_FEATURES]
        if bad:
            raise ValueError(f"features: unknown {bad}; choose from {list(ARRIVAL_FEATURES)}")
        self._det = DriftDetector(features, delta)
        self._last: float | None = None

    def learn(self, times: Sequence[float] | np.ndarray,
              prompts: Sequence[float] | np.ndarray) -> bool:
        """Feed arrivals in arrival order (times in seconds); whether drift fired on any
        of them. An arrival earlier than one already fed (a late report) adds its prompt
        but no gap."""
        now = False
        for t, p in zip(times, prompts, strict=True):
            x = {"prompt": float(p)}
            if self._last is not None and t >= self._last:
                x["gap"] = (float(t) - self._last) * 1000.0
            if self._last is None or t > self._last:
                self._last = float(t)
            if self._det.learn_one(x):
                now = True
        return now

"""EWSJF's Refine-and-Prune: a streaming interval partition of the routing feature.

Our reading of the paper, with every ambiguity resolved here (tests check the properties):

One object learns and routes (river's shape): ``learn_one(x)`` feeds a request's routing
feature, ``predict_one(x)`` routes it to its queue index (or :data:`BUBBLE`), exactly as
the engine's EWSJF queue does (``tests/partitioner`` checks both against a linear scan
and against :class:`~tailwise.scorer.ewsjf.EwsjfPolicy`).

Reservoir
    A *sliding window* of the ``params.reservoir_size`` most recent accepted values
    (river's :class:`~river.utils.SortedWindow`, kept sorted so a refresh needs no sort),
    not uniform reservoir sampling: the partition should follow the *recent* workload, so
    old traffic must age out, and a window does that deterministically. Values that are
    NaN, infinite, negative or above :data:`MAX_X` are bad telemetry: skipped and counted
    in ``skipped``.

Streaming statistics (between refreshes, O(1) per value, river)
    Each accepted value is routed with ``predict_one`` and counted into its queue's
    :class:`river.stats.Mean` (or the bubble's), so :meth:`RefinePrune.queue_stats` shows
    how the live stream falls on the partition in force, and a
    :class:`river.stats.Quantile` per level in :data:`QUANTILES` tracks the routing
    feature's distribution. A :class:`~tailwise.partitioner.drift.DriftDetector` (river's
    ADWIN on ``log1p x``) is warmed at every refresh with the last :data:`DRIFT_WARMUP`
    reservoir values (what the partition was fitted on) and then fed the new ones; when
    it fires, the partition no longer fits the stream and a refresh falls due at once.

Refresh trigger
    Due when ``params.refresh_requests`` values were accepted since the last refresh, or
    when at least one was and ``params.refresh_s`` engine seconds passed since it, or when
    at least one was and the drift detector fired (whichever comes first). ``now`` comes
    from an injected clock. The first ``refresh`` call only starts the clock; a clock that
    goes backwards (engine restart) restarts it. No new data means nothing to refresh, so
    an idle engine does no k-means.

Refine (one pass per refresh; the partition deepens over successive refreshes)
    The reservoir is grouped by the current queues; a value in a gap or outside every
    queue joins the *nearest* queue (cut at the middle of each gap); queues left with no
    values are dropped. With no queues the whole reservoir is one group. Each group gets a
    1-D k-means with k = 3 (scikit-learn, weighted by counts of distinct values) on
    ``u = log1p(x)``; a group with <= 3 distinct values uses those values as its centres
    (the exact k-means solution), so one with a single distinct value never splits.
    The **mean gap** is the mean of the differences between adjacent sorted centres
    (in ``u``) *within* a group, pooled over all groups of this pass (at most 2 per
    group; gaps between queues are not counted). A group is split at the midpoint (in
    ``u``) of every adjacent centre pair whose gap is strictly greater than
    ``alpha x mean gap``. A pass with a single group has no other queue to compare with,
    so it splits at every centre gap (the bootstrap: up to 3 queues).

    Why log1p: prompt lengths are heavy-tailed. In raw tokens k-means spends its centres
    on the tail and the pooled rule only ever splits tail queues, leaving most requests
    in one head queue; in ``u`` the gaps are relative, so resolution spreads across size
    classes (as in geometric SJF size classes). Why pooled: a rule relative to the
    queue's own two gaps only fires on lopsided queues; pooled, the queues that are wide
    compared with the others split first, and alpha sets how much wider.

Prune
    While there are more than ``params.max_queues`` queues, merge the adjacent pair with
    the smallest ``(rho_i + rho_{i+1}) / (|b_{i+1} - b_i| + eps)`` (ties: lowest index),
    ``eps`` = :data:`PRUNE_EPS` token. Sparse queues far apart merge first, so resolution
    stays where the requests are. **Density** ``rho = (n / N) / (hi - lo)``: the queue's
    share of reservoir values per token of interval width (1/token); ``b`` is the mean of
    the queue's members.

Intervals
    A queue covers ``[min, max + 1)`` of its members (token counts are integers), clipped
    to the next queue's ``lo`` for fractional features, so queues are sorted and disjoint;
    the gaps between them are where the bubble queue catches requests. Right after a
    refresh every reservoir value routes to a queue. Weights are
    ``params.base/urg/fair.at(b)``.

Initial partition: the empty tuple (everything goes to the bubble queue) until the first
refresh with data. Deterministic given ``seed`` (k-means ``random_state``) and the input.
State (``to_state``) carries the drift detector's warm-up values, so a restored
partitioner replays them and the values since the last refresh and resumes identically
(exactly so while ``since_refresh`` <= the reservoir's length).

>>> rp = RefinePrune(EwsjfParams(refresh_requests=20))
>>> for x in [100] * 10 + [1000] * 6 + [10_000] * 4:
...     rp.learn_one(x)
>>> rp.refresh(now=0.0)
True
>>> [(q.lo, q.hi, q.mean_len, q.density) for q in rp.partition()]
[(100.0, 101.0, 100.0, 0.5), (1000.0, 1001.0, 1000.0, 0.3), (10000.0, 10001.0, 10000.0, 0.2)]
>>> [rp.predict_one(x) for x in (100, 500, 1000, 10_000.5, 20_000)]
[0, -1, 1, 2, -1]
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
from numpy.typing import NDArray
from river import stats
from river.utils import SortedWindow
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from tailwise.partitioner.drift import DEFAULT_DELTA, DriftDetector
from tailwise.partitioner.interface import BUBBLE, Partitioner, PartitionerStateError
from tailwise.scorer.policy import SCHEMA_VERSION, EwsjfParams, Policy, PolicyError, QueueSpec

#: largest routing-feature value accepted (tokens); beyond it is a telemetry bug
MAX_X = 1e12
#: the epsilon of the prune score, in tokens (keeps equal means from dividing by zero)
PRUNE_EPS = 1.0
#: k of the per-queue k-means
K = 3
#: k-means restarts (1-D, k=3: a few are plenty)
N_INIT = 3
#: reservoir values (the latest) the drift detector is warmed with at each refresh
DRIFT_WARMUP = 256
#: levels of the streaming quantiles of the routing feature (:meth:`RefinePrune.quantiles`)
QUANTILES = (0.5, 0.9, 0.99)

STATE_KIND = "refine_prune"
STATE_VERSION = 1
_STATE_KEYS = frozenset(
    {
        "kind",
        "state_version",
        "seed",
        "params",
        "reservoir",
        "since_refresh",
        "last_refresh_t",
        "skipped",
        "refreshes",
        "queues",
    }
)
#: optional state fields (older states lack them): drift detector settings and warm-up
_OPTIONAL_KEYS = frozenset({"drift_delta", "drift_warmup", "drift_pending", "drift_detections"})

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Span:
    """A queue under construction: interval, share of the reservoir, mean (b̄)."""

    lo: float
    hi: float
    share: float
    mean: float

    @property
    def density(self) -> float:
        """ρ: share of reservoir values per token of interval width."""
        return self.share / (self.hi - self.lo)


def prune_score(a: Span, b: Span, eps: float = PRUNE_EPS) -> float:
    """``(ρ_a + ρ_b) / (|b̄_b − b̄_a| + eps)``: the adjacent pair with the smallest merges.

    >>> prune_score(Span(0, 10, 0.5, 5), Span(10, 20, 0.5, 15))  # (0.05 + 0.05) / 11
    0.009090909090909092
    """
    return (a.density + b.density) / (abs(b.mean - a.mean) + eps)


def merge(a: Span, b: Span) -> Span:
    """The union of two adjacent spans (covers the gap between them)."""
    share = a.share + b.share
    mean = (a.share * a.mean + b.share * b.mean) / share if share > 0 else (a.mean + b.mean) / 2
    return Span(a.lo, b.hi, share, mean)


def prune_spans(spans: Sequence[Span], max_queues: int, eps: float = PRUNE_EPS) -> list[Span]:
    """Merge the lowest-scoring adjacent pair until at most ``max_queues`` spans remain.

    O(q²) worst case with q <= 3 x max_queues; only the two scores next to a merge are
    recomputed, so the constant is small.
    """
    out = list(spans)
    scores = [prune_score(out[i], out[i + 1], eps) for i in range(len(out) - 1)]
    while len(out) > max(max_queues, 1):
        i = min(range(len(scores)), key=scores.__getitem__)
        out[i : i + 2] = [merge(out[i], out[i + 1])]
        del scores[i]
        if i > 0:
            scores[i - 1] = prune_score(out[i - 1], out[i], eps)
        if i < len(out) - 1:
            scores[i] = prune_score(out[i], out[i + 1], eps)
    return out


class RefinePrune(Partitioner):
    """Refine-and-Prune over a sliding-window reservoir; see the module docstring.

    ``drift_delta`` is the ADWIN confidence of the early-refresh drift detector; ``None``
    turns early refresh off (the count and time triggers remain).
    """

    def __init__(self, params: EwsjfParams | None = None, seed: int = 0, *,
                 drift_delta: float | None = DEFAULT_DELTA) -> None:
        params = EwsjfParams() if params is None else params
        _check_params(params)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise ValueError(f"seed: must be an integer in [0, 2**32), got {seed!r}")
        if drift_delta is not None and not (
            isinstance(drift_delta, int | float) and 0.0 < drift_delta < 1.0
        ):
            raise ValueError(f"drift_delta: must be None or in (0, 1), got {drift_delta!r}")
        self._params = params
        self._seed = seed
        self._reservoir: SortedWindow[float] = SortedWindow(params.reservoir_size)
        self._since = 0
        self._last_t: float | None = None
        self._queues: tuple[QueueSpec, ...] = ()
        self._los: tuple[float, ...] = ()
        self._his: tuple[float, ...] = ()
        self.skipped = 0
        #: number of Refine-and-Prune runs so far
        self.refreshes = 0
        self._drift_delta = None if drift_delta is None else float(drift_delta)
        self._drift: DriftDetector | None = None
        self._warmup: list[float] = []
        #: the drift detector fired since the last refresh (a refresh is due)
        self.drift_pending = False
        #: drift detections so far
        self.drift_detections = 0
        self._reset_stream_stats()
        self._quantiles = {q: stats.Quantile(q) for q in QUANTILES}

    # -- river-style streaming API ----------------------------------------------------
    @property
    def params(self) -> EwsjfParams:
        return self._params

    def learn_one(self, x: float) -> None:
        t = type(x)
        if (
            (t is not float and t is not int) and (isinstance(x, bool) or not isinstance(x, numbers.Real))
        ) or not 0.0 <= float(x) <= MAX_X:  # False for NaN
            self.skipped += 1
            return
        v = float(x)
        self._reservoir.append(v)
        self._since += 1
        for q in self._quantiles.values():
            q.update(v)
        self._observe(v)

    def predict_one(self, x: float) -> int:
        """Queue index whose ``[lo, hi)`` holds ``x`` in the current partition, else
        :data:`BUBBLE` (gaps, outside every queue, NaN). O(log queues)."""
        i = bisect_right(self._los, x) - 1
        if i >= 0 and x < self._his[i]:
            return i
        return BUBBLE

    def _observe(self, v: float) -> None:
        """Streaming per-queue statistics and the drift detector for one accepted value."""
        i = self.predict_one(v)
        self._stream_stats[i + 1].update(v)
        if self._drift is not None and self._drift.learn_one({"x": v}):
            self.drift_pending = True
            self.drift_detections += 1

    def _reset_stream_stats(self) -> None:
        # index 0 is the bubble, i + 1 is queue i
        self._stream_stats = [stats.Mean() for _ in range(len(self._queues) + 1)]

    def queue_stats(self) -> list[tuple[int, float, float]]:
        """Since the last refresh, per queue (bubble first, index -1): ``(queue, share of
        accepted values, their mean)`` from river's streaming means."""
        total = sum(m.n for m in self._stream_stats)
        return [(i - 1, m.n / total if total else 0.0, float(m.get()))
                for i, m in enumerate(self._stream_stats)]

    def quantiles(self) -> dict[float, float | None]:
        """Streaming quantiles of every accepted routing-feature value (river's P²)."""
        return {q: est.get() for q, est in self._quantiles.items()}

    def partition(self) -> tuple[QueueSpec, ...]:
        return self._queues

    def _set_queues(self, queues: tuple[QueueSpec, ...]) -> None:
        self._queues = queues
        self._los = tuple(q.lo for q in queues)
        self._his = tuple(q.hi for q in queues)

    def due(self, now: float) -> bool:
        """Whether :meth:`refresh` at ``now`` would recompute (without side effects)."""
        if self._since >= self._params.refresh_requests:
            return True
        if self._since == 0 or self._last_t is None:
            return False
        if self.drift_pending:
            return True
        if now < self._last_t:
            return False
        return now - self._last_t >= self._params.refresh_s

    def refresh(self, now: float, *, force: bool = False) -> bool:
        if isinstance(now, bool) or not isinstance(now, numbers.Real) or not math.isfinite(now):
            raise ValueError(f"now: must be a finite number, got {now!r}")
        now = float(now)
        if self._last_t is None or now < self._last_t:
            self._last_t = now  # first call, or the engine clock restarted
        if not (force or self.due(now)):
            return False
        self._last_t = now
        self._since = 0
        self.refreshes += 1
        if not self._reservoir:
            self._rewarm()
            return False
        values = np.asarray(self._reservoir, dtype=np.float64)  # SortedWindow: sorted
        # single-threaded k-means: the data are tiny, the sidecar shares its host with the
        # engine (OpenMP spin-waiting under contention made fits ~20x slower), and results
        # then cannot depend on the machine's thread count
        with threadpool_limits(limits=1, user_api="openmp"):
            new = self._specs(self._refine_prune(values))
        changed = new != self._queues
        self._set_queues(new)
        self._rewarm()
        return changed

    def _rewarm(self) -> None:
        """After a refresh: new drift detector warmed with the latest reservoir values,
        fresh per-queue statistics for the new partition."""
        self.drift_pending = False
        self._reset_stream_stats()
        if self._drift_delta is None:
            return
        self._warmup = list(self._reservoir.unsorted_window)[-DRIFT_WARMUP:]
        self._drift = DriftDetector(("x",), self._drift_delta)
        for v in self._warmup:
            self._drift.learn_one({"x": v})
        self._drift.detections = 0

    def update_params(self, params: EwsjfParams) -> bool:
        """Adopt new (e.g. Bayesian-optimised) parameters; ``True`` iff the partition changed.

        The reservoir keeps its most recent values under the new size, weights are
        recomputed, and the partition is pruned at once if ``max_queues`` shrank.
        """
        _check_params(params)
        self._params = params
        if self._reservoir.size != params.reservoir_size:
            old = list(self._reservoir.unsorted_window)
            self._reservoir = SortedWindow(params.reservoir_size)
            for v in old[-params.reservoir_size:]:
                self._reservoir.append(v)
        if len(self._queues) > params.max_queues:
            spans = [Span(q.lo, q.hi, q.density * (q.hi - q.lo), q.mean_len) for q in self._queues]
            new = self._specs(prune_spans(spans, params.max_queues))
        else:
            new = tuple(self._reweight(q) for q in self._queues)
        changed = new != self._queues
        self._set_queues(new)
        if changed:
            self._reset_stream_stats()
        return changed

    # -- the algorithm ------------------------------------------------------------------
    def _refine_prune(self, values: FloatArray) -> list[Span]:
        groups = self._group(values)
        centres = [self._centres(np.log1p(g)) for g in groups]
        if len(groups) == 1:
            threshold = 0.0  # bootstrap: nothing to compare with, split at every gap
        else:
            gaps = np.concatenate([np.diff(c) for c in centres])
            mean_gap = float(gaps.mean()) if gaps.size else 0.0
            threshold = self._params.alpha * mean_gap if mean_gap > 0.0 else math.inf
        pieces: list[FloatArray] = []
        for g, c in zip(groups, centres, strict=True):
            pieces.extend(_split(g, c, threshold))
        return prune_spans(_spans(pieces, len(values)), self._params.max_queues)

    def _group(self, values: FloatArray) -> list[FloatArray]:
        """Sorted values grouped by the current queues (gap values join the nearest)."""
        qs = self._queues
        cuts = [(qs[i].hi + qs[i + 1].lo) / 2 for i in range(len(qs) - 1)]
        idx = np.searchsorted(values, cuts, side="left")
        return [g for g in np.split(values, idx) if g.size]

    def _centres(self, group: FloatArray) -> FloatArray:
        """Sorted 1-D k-means centres (k = min(3, distinct values)) of sorted values."""
        uniq, counts = np.unique(group, return_counts=True)
        if uniq.size <= K:
            return uniq.astype(np.float64)
        lo, width = float(uniq[0]), float(uniq[-1] - uniq[0])
        # fit on [0, 1]-scaled values rounded to 1e-9: k-means is affine-invariant, the
        # scaling keeps sklearn's tolerances meaningful for any range, and values closer
        # than that merge, so k-means never sees fewer distinct points than k
        z, inverse = np.unique(np.round((uniq - lo) / width, 9), return_inverse=True)
        weight = np.bincount(inverse, weights=counts.astype(np.float64))
        if z.size <= K:
            return z * width + lo
        km = KMeans(n_clusters=K, n_init=N_INIT, random_state=self._seed)
        km.fit(z.reshape(-1, 1), sample_weight=weight)
        c: FloatArray = np.sort(np.asarray(km.cluster_centers_, dtype=np.float64).ravel())
        return c * width + lo

    def _specs(self, spans: Iterable[Span]) -> tuple[QueueSpec, ...]:
        p = self._params
        out = []
        for s in spans:
            # the mean of values in [lo, hi) is in it, but a float sum can round it just
            # below lo (three copies of 357913942.1681403 average 357913942.16814023)
            mean = min(max(float(s.mean), float(s.lo)), math.nextafter(float(s.hi), -math.inf))
            out.append(QueueSpec(lo=float(s.lo), hi=float(s.hi), mean_len=mean,
                                 density=float(s.density), w_base=p.base.at(mean),
                                 w_urg=p.urg.at(mean), w_fair=p.fair.at(mean)))
        return tuple(out)

    def _reweight(self, q: QueueSpec) -> QueueSpec:
        p = self._params
        b = q.mean_len
        return dataclasses.replace(q, w_base=p.base.at(b), w_urg=p.urg.at(b), w_fair=p.fair.at(b))

    # -- persistence -------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        plain = Policy(queues=self._queues, ewsjf=self._params).to_dict()
        return {
            "kind": STATE_KIND,
            "state_version": STATE_VERSION,
            "seed": self._seed,
            "params": plain["ewsjf"],
            "reservoir": list(self._reservoir.unsorted_window),
            "since_refresh": self._since,
            "last_refresh_t": self._last_t,
            "skipped": self.skipped,
            "refreshes": self.refreshes,
            "queues": plain["queues"],
            "drift_delta": self._drift_delta,
            "drift_warmup": list(self._warmup),
            "drift_pending": self.drift_pending,
            "drift_detections": self.drift_detections,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Self:
        if not isinstance(state, Mapping):
            raise PartitionerStateError("state", f"must be an object, got {type(state).__name__}")
        unknown = sorted(set(state) - _STATE_KEYS - _OPTIONAL_KEYS, key=str)
        if unknown:
            raise PartitionerStateError(str(unknown[0]), "unknown field")
        missing = sorted(_STATE_KEYS - set(state))
        if missing:
            raise PartitionerStateError(missing[0], "missing")
        if state["kind"] != STATE_KIND:
            raise PartitionerStateError("kind", f"must be {STATE_KIND!r}, got {state['kind']!r}")
        if state["state_version"] != STATE_VERSION or isinstance(state["state_version"], bool):
            raise PartitionerStateError(
                "state_version", f"must be {STATE_VERSION}, got {state['state_version']!r}"
            )
        seed = _int_field(state, "seed", hi=2**32 - 1)
        params, queues = _load_policy_parts(state["params"], state["queues"])
        reservoir = _load_reservoir(state["reservoir"], params.reservoir_size)
        last_t = state["last_refresh_t"]
        if last_t is not None and (
            isinstance(last_t, bool) or not isinstance(last_t, int | float) or not math.isfinite(last_t)
        ):
            raise PartitionerStateError("last_refresh_t", f"must be null or a finite number, got {last_t!r}")
        delta = state.get("drift_delta", DEFAULT_DELTA)
        if delta is not None and (isinstance(delta, bool) or not isinstance(delta, int | float)
                                  or not 0.0 < delta < 1.0):
            raise PartitionerStateError("drift_delta", f"must be null or in (0, 1), got {delta!r}")
        warmup = _load_reservoir(state.get("drift_warmup", []), DRIFT_WARMUP, "drift_warmup")
        pending = state.get("drift_pending", False)
        if not isinstance(pending, bool):
            raise PartitionerStateError("drift_pending", f"must be a boolean, got {pending!r}")
        self = cls(params, seed=seed, drift_delta=delta)
        for v in reservoir:
            self._reservoir.append(v)
        self._since = _int_field(state, "since_refresh")
        self._last_t = None if last_t is None else float(last_t)
        self.skipped = _int_field(state, "skipped")
        self.refreshes = _int_field(state, "refreshes")
        # weights always derive from params; bounds, mean and density load as saved
        self._set_queues(tuple(self._reweight(q) for q in queues))
        # streaming statistics: replay the warm-up, then the values since the last refresh
        self._reset_stream_stats()
        self._warmup = warmup
        if delta is not None and self.refreshes > 0:
            self._drift = DriftDetector(("x",), float(delta))
            for v in warmup:
                self._drift.learn_one({"x": v})
        recent = reservoir[len(reservoir) - min(self._since, len(reservoir)):]
        for v in reservoir:
            for q in self._quantiles.values():
                q.update(v)
        for v in recent:
            self._observe(v)
        self.drift_pending = pending
        self.drift_detections = _int_field(state, "drift_detections") if "drift_detections" in \
            state else self.drift_detections
        return self

    def __repr__(self) -> str:
        return (
            f"RefinePrune(queues={len(self._queues)}, reservoir={len(self._reservoir)}/"
            f"{self._params.reservoir_size}, since_refresh={self._since}, "
            f"drift_detections={self.drift_detections})"
        )


# -- helpers ------------------------------------------------------------------------------
def _split(group: FloatArray, centres: FloatArray, threshold: float) -> list[FloatArray]:
    """Cut a sorted group where adjacent ``log1p`` centres are more than ``threshold`` apart.

    The cut is the midpoint of the two centres in ``log1p`` space (their geometric-style
    middle in tokens); values at or below it go left.
    """
    cuts = [
        math.expm1((centres[j] + centres[j + 1]) / 2)
        for j in range(centres.size - 1)
        if centres[j + 1] - centres[j] > threshold
    ]
    if not cuts:
        return [group]
    idx = np.searchsorted(group, cuts, side="right")
    return [p for p in np.split(group, idx) if p.size]


def _spans(pieces: Sequence[FloatArray], n_total: int) -> list[Span]:
    """Spans of consecutive sorted pieces: ``[min, min(max + 1, next min))``."""
    out: list[Span] = []
    for i, p in enumerate(pieces):
        top = float(p[-1])
        hi = top + 1.0
        if i + 1 < len(pieces):
            hi = min(hi, float(pieces[i + 1][0]))
        out.append(Span(float(p[0]), hi, p.size / n_total, float(p.mean())))
    return out


def _check_params(params: EwsjfParams) -> None:
    if not isinstance(params, EwsjfParams):
        raise TypeError(f"params: must be EwsjfParams, got {type(params).__name__}")
    Policy(ewsjf=params).validate()  # raises PolicyError naming e.g. "ewsjf.alpha"


def _int_field(state: Mapping[str, Any], name: str, hi: int | None = None) -> int:
    v = state[name]
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or (hi is not None and v > hi):
        bound = f"[0, {hi}]" if hi is not None else ">= 0"
        raise PartitionerStateError(name, f"must be an integer {bound}, got {v!r}")
    return v


def _load_policy_parts(params: Any, queues: Any) -> tuple[EwsjfParams, tuple[QueueSpec, ...]]:
    """Parse params and queues with the Policy codec, renaming ``ewsjf.*`` to ``params.*``."""
    try:
        # params alone first, so a bad max_queues is blamed on params, not on the queues
        Policy.from_dict({"schema_version": SCHEMA_VERSION, "ewsjf": params})
        p = Policy.from_dict({"schema_version": SCHEMA_VERSION, "ewsjf": params, "queues": queues})
    except PolicyError as exc:
        name = exc.field
        if name == "ewsjf" or name.startswith("ewsjf."):
            name = "params" + name[len("ewsjf") :]
        raise PartitionerStateError(name, str(exc)[len(exc.field) + 2 :]) from exc
    return p.ewsjf, p.queues


def _load_reservoir(values: Any, size: int, name: str = "reservoir") -> list[float]:
    if not isinstance(values, list | tuple):
        raise PartitionerStateError(name, f"must be a list, got {type(values).__name__}")
    if len(values) > size:
        bound = f"params.reservoir_size={size}" if name == "reservoir" else str(size)
        raise PartitionerStateError(name, f"holds {len(values)} values, more than {bound}")
    out: list[float] = []
    for i, v in enumerate(values):
        if (
            isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v <= MAX_X  # False for NaN
        ):
            raise PartitionerStateError(
                f"{name}[{i}]", f"must be a finite number in [0, {MAX_X:g}], got {v!r}"
            )
        out.append(float(v))
    return out

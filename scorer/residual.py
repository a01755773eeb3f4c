"""Mean residual life of output lengths, from finished requests only (prediction-free).

``residual(a)`` is the mean of ``x − a`` over the recently finished requests whose output
``x`` exceeded ``a``: how many more tokens a request that has generated ``a`` is expected
to generate, *given the workload's distribution*, never its own length. It is what
victim choice needs under KV pressure: a request's KV footprint lasts as long as its
remaining output, so evicting the running request with the longest expected remainder
frees the most block-time per token recomputed (the recompute cost is its context, which
it frees in the same proportion).

The shape of the curve is what generalises:

* heavy tails (reasoning outputs): the residual grows with ``a``, so long runners are the
  victims and the KV they hold goes to new arrivals, as least-attained-service does;
* light tails (chat): the residual shrinks with ``a``, so the newest request is the victim,
  as vLLM's default rule chooses;
* bounded lengths (``max_tokens``): the residual falls to 0 near the bound, so a request
  about to finish is kept.

A request longer than every finished one has residual 0 (nothing is known beyond the
window), so it is evicted last among equals.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Iterable


class ResidualLife:
    """Empirical mean residual output over a sliding window of finished requests.

    >>> r = ResidualLife(window=8, update_every=1, min_samples=1)
    >>> for x in (100, 100, 100, 1000):
    ...     r.observe(x)
    >>> r.residual(0), r.residual(100), r.residual(1000)
    (325.0, 900.0, 0.0)
    """

    def __init__(self, window: int = 512, update_every: int = 32, min_samples: int = 16) -> None:
        if window < 1 or update_every < 1 or min_samples < 1:
            raise ValueError("window, update_every and min_samples must be >= 1")
        self._window: deque[int] = deque(maxlen=window)
        self._every = update_every
        self._min = min_samples
        self._since = 0
        self._xs: list[int] = []
        #: ``_suffix[i]`` = sum of ``_xs[i:]``
        self._suffix: list[float] = []

    @property
    def ready(self) -> bool:
        """Enough finished requests have been seen for the curve to mean something."""
        return bool(self._xs)

    def observe(self, output_tokens: int) -> None:
        """Record one finished request's output length; the curve is rebuilt every
        ``update_every`` observations (once ``min_samples`` are in the window)."""
        self._window.append(max(int(output_tokens), 0))
        self._since += 1
        if len(self._window) >= self._min and (self._since >= self._every or not self._xs):
            self._since = 0
            self._rebuild(self._window)

    def extend(self, other: ResidualLife) -> None:
        """Take over another estimator's window and curve (a policy swap keeps what was
        measured, and the curve is next rebuilt when ``other``'s would have been)."""
        self._window.extend(other._window)
        if other._xs:
            self._xs, self._suffix, self._since = other._xs, other._suffix, other._since
        elif len(self._window) >= self._min:
            self._rebuild(self._window)

    def _rebuild(self, data: Iterable[int]) -> None:
        xs = sorted(data)
        suffix = [0.0] * (len(xs) + 1)
        for i in range(len(xs) - 1, -1, -1):
            suffix[i] = suffix[i + 1] + xs[i]
        self._xs, self._suffix = xs, suffix

    def residual(self, attained: float) -> float:
        """Expected further output tokens of a request that has generated ``attained``
        (0 before the curve is built, and beyond the longest finished request)."""
        xs = self._xs
        i = bisect_right(xs, attained)
        n = len(xs) - i
        if n == 0:
            return 0.0
        return self._suffix[i] / n - attained

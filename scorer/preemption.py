"""Cache-aware victim ranking and MemGuard hysteresis (seed 000/001), pure functions.

An engine preempts from the *end* of the running order, so ranking running requests is
choosing victims. The rank of a running request is, highest priority first:

1. protection — a request restored after preemption is protected (anti-thrash) until its
   attained work crosses its next MemGuard threshold;
2. its priority band: the policy's priority key (γ-boost: ``arrival − boost``, lower is
   higher priority) in bands of ``priority_band_s`` seconds, so that requests of
   practically equal priority are told apart by what evicting them costs;
3. its re-admission cost, most expensive first — among equally ranked requests the one
   cheapest to bring back is evicted first (with ``cache_aware`` off: vLLM's default, the
   most recently admitted is evicted first);
4. its exact priority key.

Re-admission cost counts what eviction actually loses: with recompute, the uncached
tokens (prefix-cache hits are shared with other requests and stay cached, so they are
cheap to lose and cheap to recompute) at the marginal prefill cost; with swap, copying the
whole context out and back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from tailwise.scorer.policy import PreemptMode
from tailwise.scorer.request import ReqInfo

#: host<->GPU KV transfer time per token (128 KiB/token over ~25 GB/s)
SWAP_S_PER_TOKEN = 5e-6


def memguard_level(w: float, theta: float, ratio: float) -> int:
    """0 below θ, else k+1 for θ·r^k ≤ w < θ·r^(k+1).

    >>> [memguard_level(w, 1.0, 2.0) for w in (0.0, 0.99, 1.0, 1.99, 2.0, 7.9, 8.0)]
    [0, 0, 1, 1, 2, 3, 4]
    """
    if w < theta:
        return 0
    k = math.floor(math.log(w / theta) / math.log(ratio))
    # guard against floating-point error at the exact thresholds
    while theta * ratio ** (k + 1) <= w:
        k += 1
    while k > 0 and theta * ratio**k > w:
        k -= 1
    return k + 1


def quantized_work(level: int, theta: float, ratio: float) -> float:
    """The work value priorities are computed from at a level: its lower threshold."""
    return 0.0 if level == 0 else theta * ratio ** (level - 1)


def readmission_cost_s(req: ReqInfo, prefill_token_s: float, mode: PreemptMode) -> float:
    """Engine seconds needed to bring ``req`` back after evicting it now."""
    if mode is PreemptMode.SWAP:
        return 2.0 * req.num_computed_tokens * SWAP_S_PER_TOKEN
    uncached = max(req.num_computed_tokens - req.cached_tokens, 0)
    return uncached * prefill_token_s


def rank_running(running: Sequence[ReqInfo], key: Callable[[ReqInfo], float],
                 cost: Callable[[ReqInfo], float], protected: Callable[[ReqInfo], bool],
                 band_s: float) -> list[ReqInfo]:
    """Running requests highest priority first (victims at the end); see module doc."""
    def rank(r: ReqInfo) -> tuple[bool, float, float, float]:
        k = key(r)
        band = math.floor(k / band_s) if band_s > 0 else k
        return (not protected(r), band, -cost(r), k)

    return sorted(running, key=rank)

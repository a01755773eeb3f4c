"""Fleet routers: which replica serves an arriving request (pure; no I/O).

A :class:`Router` sees the request (prompt tokens, prefix hash ids) and one
:class:`~tailwise.scorer.hints.ReplicaHints` per replica — the same hints the sidecar
serves to a gateway — and returns a replica index. Models of the routers in use:

* ``round-robin`` — Kubernetes Service / Dynamo ``--router-mode round_robin``.
* ``least-loaded`` — llm-d's queue scorer: fewest waiting requests (ties: fewer
  engine-seconds of queued prefill, then fewer running requests).
* ``prefix-affinity`` — llm-d's prefix-cache scorer with a load cap: among replicas
  whose queue depth is within ``load_cap`` of the least loaded, the longest prefix
  match wins (ties: least loaded). Without prefix hashes it is ``least-loaded``.
* ``kv-aware`` — NVIDIA Dynamo's KV router: cost = ``overlap_weight`` · prefill
  blocks + decode blocks, where prefill blocks are the request's blocks not covered by
  the replica's cached prefix and decode blocks are the replica's active blocks (KV in
  use plus its queued prompt blocks, which Dynamo counts from routing time) plus the
  request's own; lowest cost wins (temperature 0).

Prefix overlap is known the way llm-d's approximate prefix scorer and Dynamo's
no-KV-events mode know it: the router remembers which prefix segments it sent to each
replica, in an LRU sized like the replica's KV cache. Ties rotate, so equal replicas
share work instead of the first one taking it all.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from tailwise.scorer.hints import ReplicaHints

ROUTER_NAMES = ("round-robin", "least-loaded", "prefix-affinity", "kv-aware")


class UnknownRouterError(ValueError):
    """A router name is not one of :data:`ROUTER_NAMES`."""


@dataclass(frozen=True, slots=True)
class RouteRequest:
    prompt_tokens: int
    hash_ids: tuple[int, ...] = ()


class PrefixIndex:
    """Per-replica LRU of prefix segments the router has sent there (approximate)."""

    def __init__(self, n_replicas: int, capacity_segments: int) -> None:
        self.capacity = max(capacity_segments, 1)
        self._lru: list[OrderedDict[int, None]] = [OrderedDict() for _ in range(n_replicas)]

    def match(self, replica: int, hash_ids: Sequence[int]) -> int:
        """Leading segments of ``hash_ids`` the replica is believed to cache."""
        lru = self._lru[replica]
        k = 0
        for h in hash_ids:
            if h not in lru:
                break
            k += 1
        return k

    def record(self, replica: int, hash_ids: Sequence[int]) -> None:
        lru = self._lru[replica]
        for h in hash_ids:
            lru[h] = None
            lru.move_to_end(h)
        while len(lru) > self.capacity:
            lru.popitem(last=False)


class Router(ABC):
    """Contract: ``pick`` returns an index into ``hints`` and may update only the
    router's own memory (rotation pointer, prefix index)."""

    name: str

    def __init__(self) -> None:
        self._rot = 0

    @abstractmethod
    def pick(self, req: RouteRequest, hints: Sequence[ReplicaHints]) -> int: ...

    def _argmin(self, keys: Sequence[tuple[float, ...]]) -> int:
        """Index of the smallest key; among equal keys the first after the last pick."""
        n = len(keys)
        best = min(keys)
        for j in range(n):
            i = (self._rot + j) % n
            if keys[i] == best:
                self._rot = (i + 1) % n
                return i
        raise AssertionError("unreachable")


class RoundRobin(Router):
    name = "round-robin"

    def pick(self, req: RouteRequest, hints: Sequence[ReplicaHints]) -> int:
        i = self._rot % len(hints)
        self._rot = i + 1
        return i


def _load_key(h: ReplicaHints) -> tuple[float, float, float]:
    return (float(h.queue_depth), h.queue_s, float(h.running))


class LeastLoaded(Router):
    name = "least-loaded"

    def pick(self, req: RouteRequest, hints: Sequence[ReplicaHints]) -> int:
        return self._argmin([_load_key(h) for h in hints])


class PrefixAffinity(Router):
    name = "prefix-affinity"

    def __init__(self, n_replicas: int, *, load_cap: int = 4, hash_block_tokens: int = 512,
                 kv_tokens: int = 457_600) -> None:
        super().__init__()
        if load_cap < 0:
            raise ValueError(f"load_cap must be >= 0, got {load_cap!r}")
        self.load_cap = load_cap
        self.index = PrefixIndex(n_replicas, kv_tokens // hash_block_tokens)

    def pick(self, req: RouteRequest, hints: Sequence[ReplicaHints]) -> int:
        floor = min(h.queue_depth for h in hints)
        keys = []
        for i, h in enumerate(hints):
            if h.queue_depth > floor + self.load_cap:
                keys.append((1.0, 0.0, *_load_key(h)))  # over the cap: last resort
            else:
                keys.append((0.0, -float(self.index.match(i, req.hash_ids)), *_load_key(h)))
        i = self._argmin(keys)
        self.index.record(i, req.hash_ids)
        return i


class KvAware(Router):
    name = "kv-aware"

    def __init__(self, n_replicas: int, *, overlap_weight: float = 1.0, block_size: int = 16,
                 hash_block_tokens: int = 512, kv_tokens: int = 457_600) -> None:
        super().__init__()
        if not overlap_weight >= 0:
            raise ValueError(f"overlap_weight must be >= 0, got {overlap_weight!r}")
        self.overlap_weight = overlap_weight
        self.block_size = block_size
        self.hash_block_tokens = hash_block_tokens
        self.index = PrefixIndex(n_replicas, kv_tokens // hash_block_tokens)

    def cost(self, req: RouteRequest, h: ReplicaHints, overlap_segments: int) -> float:
        """Dynamo's logit: weight · prefill blocks + decode blocks (lower is better)."""
        bs = self.block_size
        req_blocks = -(-req.prompt_tokens // bs)
        cached = min(overlap_segments * self.hash_block_tokens, req.prompt_tokens)
        prefill_blocks = -(-(req.prompt_tokens - cached) // bs)
        decode_blocks = h.kv_used_blocks + -(-h.queue_tokens // bs) + req_blocks
        return self.overlap_weight * prefill_blocks + decode_blocks

    def pick(self, req: RouteRequest, hints: Sequence[ReplicaHints]) -> int:
        keys = [(self.cost(req, h, self.index.match(i, req.hash_ids)), *_load_key(h))
                for i, h in enumerate(hints)]
        i = self._argmin(keys)
        self.index.record(i, req.hash_ids)
        return i


def make_router(name: str, n_replicas: int, *, block_size: int = 16,
                hash_block_tokens: int = 512, kv_tokens: int = 457_600) -> Router:
    """A router by CLI name (see :data:`ROUTER_NAMES`)."""
    if n_replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {n_replicas!r}")
    if name == "round-robin":
        return RoundRobin()
    if name == "least-loaded":
        return LeastLoaded()
    if name == "prefix-affinity":
        return PrefixAffinity(n_replicas, hash_block_tokens=hash_block_tokens,
                              kv_tokens=kv_tokens)
    if name == "kv-aware":
        return KvAware(n_replicas, block_size=block_size, hash_block_tokens=hash_block_tokens,
                       kv_tokens=kv_tokens)
    raise UnknownRouterError(f"unknown router {name!r}; choose from: {', '.join(ROUTER_NAMES)}")

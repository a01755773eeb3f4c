"""Baseline heuristics for large backlogs: FCFS, shortest-first, greedy max-packing.

The order-based baselines (``fcfs``, ``shortest-prompt``, ``shortest-output``) only
choose an order; :func:`tailwise.planner.dispatch.eager` turns it into start steps the way a
serving engine with a FIFO waiting queue and whole-decode KV reservation would (ties by
request index, i.e. arrival). Seed 004 shows each can be arbitrarily worse than optimal
when prompt lengths vary widely.

``greedy-pack`` is "fill the GPU": whenever memory frees (at step 0 and at every step in
which a request completed) it scans the waiting requests in ascending KV footprint
``p+o`` — the order that admits the most requests — and admits *every* one that fits
now for its whole decode, skipping those that don't (backfilling, not FIFO). The scan
stops after ``max_failures`` misfits per admission point so the work per event stays
bounded (CONVENTIONS: bounded per-iteration work); admitted entries are skipped in
amortised O(α(n)) with a path-compressed "next waiting" array.
"""

from __future__ import annotations

import heapq
import time

import numpy as np

from tailwise.planner.dispatch import KvProfile, eager
from tailwise.planner.model import Instance, Schedule


def fcfs(instance: Instance) -> Schedule:
    """Arrival (index) order."""
    return eager(instance, np.arange(instance.n, dtype=np.int64), "fcfs")


def shortest_prompt_first(instance: Instance) -> Schedule:
    t0 = time.perf_counter()
    order = np.argsort(instance.prompts, kind="stable")
    return eager(instance, order, "shortest-prompt", runtime_s=time.perf_counter() - t0)


def shortest_output_first(instance: Instance) -> Schedule:
    t0 = time.perf_counter()
    order = np.argsort(instance.outputs, kind="stable")
    return eager(instance, order, "shortest-output", runtime_s=time.perf_counter() - t0)


def greedy_pack(instance: Instance, max_failures: int = 64) -> Schedule:
    """Admit as many waiting requests as fit whenever memory frees (footprint order)."""
    t0 = time.perf_counter()
    n = instance.n
    p, o = instance.prompts, instance.outputs
    by_size = np.argsort(p + o, kind="stable").astype(np.int64)
    sizes_p = p[by_size].tolist()
    sizes_o = o[by_size].tolist()
    nxt = list(range(n + 1))  # nxt[j]: first still-waiting position >= j (n = sentinel)

    def find(j: int) -> int:
        root = j
        while nxt[root] != root:
            root = nxt[root]
        while nxt[j] != root:
            nxt[j], j = root, nxt[j]
        return root

    prof = KvProfile(instance.kv_budget, horizon=int(o.max()) * 4 if n else 16)
    start = np.zeros(n, dtype=np.int64)
    admitted: list[int] = []
    ends: list[int] = []  # heap of completion steps of running requests
    waiting = n
    k = 0
    while waiting:
        failures = 0
        j = find(0)
        while j < n and failures < max_failures:
            pj, oj = sizes_p[j], sizes_o[j]
            if prof.fits(pj, oj, k):
                prof.commit(pj, oj, k)
                i = int(by_size[j])
                start[i] = k
                admitted.append(i)
                heapq.heappush(ends, k + oj)
                nxt[j] = j + 1
                waiting -= 1
            else:
                failures += 1
            j = find(j + 1)
        # next admission point: the next step in which memory is freed
        while ends and ends[0] <= k:
            heapq.heappop(ends)
        if ends:
            k = ends[0]
            while ends and ends[0] <= k:
                heapq.heappop(ends)
        elif waiting:
            k += 1  # unreachable in practice: with nothing running every request fits
    return Schedule(method="greedy-pack", start=start,
                    order=np.asarray(admitted, dtype=np.int64), dispatch="pack",
                    runtime_s=time.perf_counter() - t0)

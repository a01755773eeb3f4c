"""Per-decision cost of each policy, measured next to FCFS in the same run.

A decision is what an engine asks every step: ``peek`` + ``pop`` of the waiting head (the
queue kept at N requests by re-adding one), and ranking 256 running requests for budget
and victims. Prints µs per decision at N = 10, 1,000 and 10,000 waiting and the ratio to
FCFS. Timings are noisy on shared machines; compare the ratios.

    python benchmarks/policy_overhead.py [--decisions 2000]
"""

from __future__ import annotations

import argparse
import random
import time

from tailwise.scorer.policy import QueueSpec
from tailwise.scorer.registry import build_scheduler, default_policy
from tailwise.scorer.request import ReqInfo
from tailwise.scorer.step_time import H100_LLAMA3_8B

MODES = ["fcfs", "uniboost", "ewsjf", "kairos", "tailwise"]
QUEUES = (QueueSpec(0, 300, 120, 0.002), QueueSpec(300, 1500, 800, 0.0005),
          QueueSpec(1500, 9000, 4000, 0.00005))


def make(name: str) -> object:
    p = default_policy(name, H100_LLAMA3_8B)
    assert p is not None
    if name in ("ewsjf", "tailwise"):
        p = p.replace(queues=QUEUES)
    return build_scheduler(p)


def bench(name: str, n_wait: int, decisions: int, rng: random.Random) -> tuple[float, float]:
    pol = make(name)
    t = 0.0
    for i in range(n_wait):
        t += 0.001
        pol.add(ReqInfo(str(i), t, rng.randint(1, 8000)), t)  # type: ignore[attr-defined]
    running = [ReqInfo(f"r{i}", rng.uniform(0, t), rng.randint(1, 8000),
                       num_output_tokens=rng.randint(1, 500), num_computed_tokens=1000)
               for i in range(256)]
    for r in running:
        r.first_token_time = r.arrival_time + 0.5
    k = n_wait
    t0 = time.perf_counter()
    for _ in range(decisions):
        t += 0.01
        pol.peek(t)  # type: ignore[attr-defined]
        pol.pop(t)  # type: ignore[attr-defined]
        k += 1
        pol.add(ReqInfo(str(k), t, rng.randint(1, 8000)), t)  # type: ignore[attr-defined]
    waiting_us = (time.perf_counter() - t0) / decisions * 1e6
    reps = max(decisions // 20, 10)
    t0 = time.perf_counter()
    for _ in range(reps):
        pol.order_running(running, t)  # type: ignore[attr-defined]
    running_us = (time.perf_counter() - t0) / reps * 1e6
    return waiting_us, running_us


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decisions", type=int, default=2000)
    args = ap.parse_args()
    print(f"{'waiting':>8} {'policy':<10}{'peek+pop µs':>12}{'× fcfs':>8}{'rank 256 µs':>13}{'× fcfs':>8}")
    for n in (10, 1_000, 10_000):
        base: tuple[float, float] | None = None
        for name in MODES:
            w, r = bench(name, n, args.decisions, random.Random(0))
            if base is None:
                base = (w, r)
            print(f"{n:>8} {name:<10}{w:>12.1f}{w / base[0]:>8.1f}{r:>13.1f}{r / base[1]:>8.1f}")


if __name__ == "__main__":
    main()

"""Sorted-F against the exact optimum on random small instances (the paper's bound is 48)."""

from __future__ import annotations

import numpy as np

from tailwise.planner import Instance, evaluate, run_method, solve_exact

PAPER_BOUND = 48.0


def _random_instances(count: int, seed: int) -> list[Instance]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n = int(rng.integers(2, 8))
        p = rng.integers(1, 20, n)
        o = rng.integers(1, 8, n)
        # from "one request at a time" up to "several fit together"
        budget = int((p + o).max() * rng.uniform(1.0, 3.0))
        out.append(Instance.from_lengths(p, o, budget))
    return out


def test_sorted_f_over_exact_ratio_on_200_random_instances() -> None:
    ratios: dict[str, list[float]] = {"sorted-f": [], "sorted-f-eager": [], "sorted-f-ls": []}
    for inst in _random_instances(200, seed=2024):
        opt = evaluate(inst, solve_exact(inst)).total
        for name, rs in ratios.items():
            rs.append(evaluate(inst, run_method(name, inst)).total / opt)
    for name, rs in ratios.items():
        print(f"{name}: Sorted-F/exact over {len(rs)} instances: "
              f"mean {np.mean(rs):.4f}, max {max(rs):.4f}")
    assert min(min(rs) for rs in ratios.values()) >= 1.0 - 1e-12  # exact is a lower bound
    assert max(ratios["sorted-f"]) <= PAPER_BOUND
    # the local search keeps the best of what it starts from
    for a, b, c in zip(ratios["sorted-f-ls"], ratios["sorted-f"], ratios["sorted-f-eager"],
                       strict=True):
        assert a <= min(b, c) + 1e-12

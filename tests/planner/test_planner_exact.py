"""The exact solver against hand-derived optima and a brute-force oracle; every
heuristic is checked to be no better than the proven optimum."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tailwise.planner import UNIT, ExactSolverError, Instance, evaluate, run_method, solve_exact
from tailwise.planner.methods import METHODS


def _naive_feasible(p: list[int], o: list[int], start: tuple[int, ...], budget: int) -> bool:
    """Independent of the evaluator: walk every step, sum p_i + j for running requests."""
    horizon = max(a + oi for a, oi in zip(start, o, strict=True))
    for t in range(horizon):
        used = sum(pi + (t - a + 1) for pi, oi, a in zip(p, o, start, strict=True)
                   if a <= t < a + oi)
        if used > budget:
            return False
    return True


def _brute_force(p: list[int], o: list[int], budget: int) -> int:
    # any optimal start is <= (value of a feasible schedule) - Σ o; FCFS gives one
    inst = Instance.from_lengths(p, o, budget)
    slack = int(evaluate(inst, run_method("fcfs", inst)).total) - sum(o)
    best = None
    for start in itertools.product(range(slack + 1), repeat=len(p)):
        total = sum(a + oi for a, oi in zip(start, o, strict=True))
        if (best is None or total < best) and _naive_feasible(p, o, start, budget):
            best = total
    assert best is not None
    return best


# (prompts, outputs, budget, optimum, reason)
HAND_CHECKED = [
    # Two requests p=2, o=3, M=10: together they peak at 2·(2+3) = 10 <= 10, so both start
    # at step 0 and complete at 3: sum 6 = Σ o, which no schedule can beat.
    ([2, 2], [3, 3], 10, 6),
    # Same with M=9: both at step 0 would need 10 > 9, so one starts at >= 1 and the sum
    # is >= 6 + 1 = 7. A at 0, B at 1 fits: step 1: 4+3=7, step 2: 5+4=9, step 3: 5.
    # Optimum 7 (back to back would give 3 + 6 = 9).
    ([2, 2], [3, 3], 9, 7),
    # L (p=8, o=1) holds 9, so with M=10 it can share no step (every request holds >= 2).
    # L at step 0, then S1, S2 (p=1, o=4) together from step 1 (peak 2·5 = 10): 1+5+5 = 11.
    # L at step s >= 1: an S started before s must end before s (needs s >= 4, then
    # L >= 5 and the sum >= 4+4+5 = 13); otherwise both S start > s: sum >= 3s+11 > 11.
    # Optimum 11 — shortest-prompt-first (S1, S2, then L) gets 13.
    ([8, 1, 1], [1, 4, 4], 10, 11),
    # R (p=1, o=10) holds t+2 at step t; C (p=1, o=20) started at k holds t-k+2.
    # With M=21 they cannot both start at 0 (step 9: 11 + 11 = 22). R at 0, C at 1 fits
    # (step 9: 11 + 10 = 21; C alone peaks at 21): 10 + 21 = 31. C first forces R to wait
    # until C ends (R's last step would need >= 22): 20 + 10 + 20 = 50; both delayed
    # gives >= 11 + 21 = 32. Optimum 31 — and C starts at a step where nothing completed.
    ([1, 1], [10, 20], 21, 31),
    # All three at step 0: step 0 holds 2+3+4 = 9, step 1 holds 4+5 = 9, step 2 holds 6;
    # all within M=9, so every request starts at 0 and the optimum is Σ o = 1+2+3 = 6.
    ([1, 2, 3], [1, 2, 3], 9, 6),
]


@pytest.mark.parametrize(("p", "o", "budget", "optimum"), HAND_CHECKED)
def test_exact_matches_hand_checked_optimum(p: list[int], o: list[int], budget: int,
                                            optimum: int) -> None:
    inst = Instance.from_lengths(p, o, budget)
    sched = solve_exact(inst)
    assert evaluate(inst, sched, UNIT).total == optimum
    assert _brute_force(p, o, budget) == optimum


def test_shortest_prompt_first_is_suboptimal_on_the_long_prompt_instance() -> None:
    inst = Instance.from_lengths([8, 1, 1], [1, 4, 4], 10)
    assert evaluate(inst, run_method("shortest-prompt", inst)).total == 13
    assert evaluate(inst, run_method("greedy-pack", inst)).total == 13
    assert evaluate(inst, run_method("sorted-f", inst)).total == 11


def test_a_start_between_completions_is_found() -> None:
    inst = Instance.from_lengths([1, 1], [10, 20], 21)
    assert solve_exact(inst).start.tolist() == [0, 1]
    # admission only when memory frees (greedy-pack) has to wait for R to finish
    assert evaluate(inst, run_method("greedy-pack", inst)).total == 40


def test_exact_equals_brute_force_on_random_tiny_instances() -> None:
    rng = np.random.default_rng(7)
    for _ in range(25):
        n = int(rng.integers(1, 5))
        p = [int(x) for x in rng.integers(1, 7, n)]
        o = [int(x) for x in rng.integers(1, 5, n)]
        budget = max(a + b for a, b in zip(p, o, strict=True)) + int(rng.integers(0, 9))
        inst = Instance.from_lengths(p, o, budget)
        assert evaluate(inst, solve_exact(inst)).total == _brute_force(p, o, budget)


def test_no_method_beats_the_exact_optimum() -> None:
    rng = np.random.default_rng(11)
    for _ in range(30):
        n = int(rng.integers(2, 8))
        p = rng.integers(1, 25, n)
        o = rng.integers(1, 9, n)
        inst = Instance.from_lengths(p, o, int((p + o).max() * rng.uniform(1.0, 2.5)))
        opt = evaluate(inst, solve_exact(inst)).total
        for name in METHODS:
            assert evaluate(inst, run_method(name, inst)).total >= opt - 1e-9, name


def test_exact_refuses_large_backlogs() -> None:
    inst = Instance.from_lengths([1] * 20, [1] * 20, 100)
    with pytest.raises(ExactSolverError, match="n <= 14"):
        solve_exact(inst)

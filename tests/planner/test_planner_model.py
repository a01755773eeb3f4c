"""The evaluator (single source of truth) on hand-worked schedules, input validation,
and the vectorised step-time formula against scorer's scalar one."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest

from tailwise.planner import (
    UNIT,
    InfeasibleScheduleError,
    Instance,
    PlanInputError,
    TimeModel,
    batch_peak,
    evaluate,
)
from tailwise.scorer.step_time import H100_LLAMA3_8B, StepTimeModel

TOY = StepTimeModel(name="toy", prefill_fixed_ms=1.0, prefill_per_token_ms=0.5,
                    prefill_quad_ms=0.0, decode_fixed_ms=2.0, decode_per_req_ms=0.25,
                    decode_per_ctx_ms=0.01)


def test_evaluator_hand_worked_schedule_unit_and_step() -> None:
    # A: p=4, o=2 starts at step 0; B: p=2, o=3 starts at step 1. Budget 9.
    # KV per step (request holds p + j in its j-th step):
    #   step 0: A(j=1)=5                    -> 5
    #   step 1: A(j=2)=6 + B(j=1)=3         -> 9  (exactly the budget)
    #   step 2: B(j=2)=4                    -> 4
    #   step 3: B(j=3)=5                    -> 5
    # Unit time: A completes at 0+2 = 2, B at 1+3 = 4; sum 6, makespan 4.
    inst = Instance.from_lengths([4, 2], [2, 3], kv_budget=9)
    ev = evaluate(inst, [0, 1], UNIT)
    assert ev.kv_usage.tolist() == [5, 9, 4, 5]
    assert ev.completion.tolist() == [2.0, 4.0]
    assert ev.total == 6.0 and ev.mean == 3.0 and ev.makespan == 4.0 and ev.peak_kv == 9
    # Step time with the toy model (ms): p0=1, p1=0.5, d0=2, d1=0.25, d2=0.01.
    #   step 0: prefill N=4, no decode              -> 1 + 0.5·4            = 3.00
    #   step 1: prefill N=2 + decode A (ctx 4+1=5)  -> 1 + 1 + 0.25 + 0.05  = 2.30
    #   step 2: decode B (ctx 2+1=3)                -> 2 + 0.25 + 0.03      = 2.28
    #   step 3: decode B (ctx 2+2=4)                -> 2 + 0.25 + 0.04      = 2.29
    # A completes at the end of step 1: 5.30 ms; B at the end of step 3: 9.87 ms.
    ev_s = evaluate(inst, [0, 1], TimeModel(TOY))
    assert ev_s.completion * 1000 == pytest.approx([5.30, 9.87])
    assert ev_s.first_token * 1000 == pytest.approx([3.00, 5.30])
    assert ev_s.start_time * 1000 == pytest.approx([0.0, 3.00])


def test_evaluator_rejects_overflow_naming_step_and_requests() -> None:
    inst = Instance.from_lengths([4, 2], [2, 3], kv_budget=8)
    with pytest.raises(InfeasibleScheduleError, match=r"step 1: KV usage 9 exceeds .* 0, 1"):
        evaluate(inst, [0, 1])


def test_evaluator_rejects_malformed_starts() -> None:
    inst = Instance.from_lengths([1, 1], [1, 1], kv_budget=8)
    with pytest.raises(InfeasibleScheduleError):
        evaluate(inst, [0])
    with pytest.raises(InfeasibleScheduleError):
        evaluate(inst, [0, -1])


def test_idle_steps_cost_one_in_unit_time_and_nothing_in_step_time() -> None:
    inst = Instance.from_lengths([1], [2], kv_budget=8)
    assert evaluate(inst, [3]).completion.tolist() == [5.0]
    ev = evaluate(inst, [3], TimeModel(TOY))
    # step 3: prefill 1 token (1.5 ms); step 4: decode ctx 2 (2.27 ms)
    assert ev.completion[0] * 1000 == pytest.approx(1.5 + 2.27)


def test_step_durations_match_scorer_formula() -> None:
    rng = np.random.default_rng(0)
    n = rng.integers(0, 3000, 200)
    n[:20] = 0
    b = rng.integers(0, 300, 200)
    b[:5] = 0
    s = b * rng.integers(1, 2000, 200)
    tm = TimeModel(H100_LLAMA3_8B, prefill_chunk=None)
    got = tm.step_durations(n, b, s)
    want = [H100_LLAMA3_8B.step_s(int(x), int(y), int(z)) for x, y, z in zip(n, b, s, strict=True)]
    assert got == pytest.approx(want)


def test_large_prefills_are_charged_as_chunks() -> None:
    tm = TimeModel(H100_LLAMA3_8B, prefill_chunk=1000)
    got = tm.step_durations(np.array([2500]), np.array([3]), np.array([30]))[0]
    m = H100_LLAMA3_8B
    want = (2 * m.prefill_ms(1000) + m.prefill_ms(500) + m.decode_per_req_ms * 3
            + m.decode_per_ctx_ms * 30) / 1000
    assert got == pytest.approx(want)


def test_batch_peak_matches_step_by_step_count() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        k = int(rng.integers(1, 8))
        p = rng.integers(1, 30, k)
        o = rng.integers(1, 12, k)
        naive = max(sum(int(p[i]) + j for i in range(k) if o[i] >= j)
                    for j in range(1, int(o.max()) + 1))
        assert batch_peak(p, o) == naive


@pytest.mark.parametrize(
    ("prompts", "outputs", "budget", "pattern"),
    [
        ([5, -3], [2, 2], 100, r"request 1: prompt length must be >= 1 token, got -3"),
        ([5, 3], [2, 0], 100, r"request 1: output length must be >= 1 token, got 0"),
        ([5, 3.5], [2, 2], 100, r"request 1: prompt length must be an integer"),
        ([5, 60, 3], [2, 50, 1], 100, r"request 1: prompt 60 \+ output 50 = 110 KV tokens "
                                      r"exceeds the whole budget of 100"),
        ([5], [2], 0, r"kv budget must be >= 1"),
        ([5, 3], [2], 100, r"2 prompt lengths but 1 output lengths"),
    ],
)
def test_bad_input_names_the_request(prompts: list[float], outputs: list[int], budget: int,
                                     pattern: str) -> None:
    with pytest.raises(PlanInputError, match=pattern):
        Instance.from_lengths(prompts, outputs, budget)


@pytest.mark.parametrize("module", [
    "tailwise.planner.model", "tailwise.planner.sorted_f", "tailwise.planner.methods",
    "tailwise.planner.policy",
])
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0 and result.attempted > 0

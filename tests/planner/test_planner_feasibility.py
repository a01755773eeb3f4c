"""Property tests: every method's plan is KV-feasible (checked step by step by a naive
counter independent of the evaluator), complete, and consistent with its dispatch rule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tailwise.planner import Instance, TimeModel, batch_peak, evaluate, run_method, sorted_f_batches
from tailwise.planner.dispatch import KvProfile
from tailwise.planner.methods import METHODS
from tailwise.scorer.step_time import H100_LLAMA3_8B

HEURISTICS = [m for m in METHODS if m != "exact"]


@st.composite
def instances(draw: st.DrawFn, max_n: int = 25) -> Instance:
    n = draw(st.integers(1, max_n))
    p = draw(st.lists(st.integers(1, 60), min_size=n, max_size=n))
    o = draw(st.lists(st.integers(1, 30), min_size=n, max_size=n))
    need = max(a + b for a, b in zip(p, o, strict=True))
    budget = draw(st.integers(need, need * 4))
    return Instance.from_lengths(p, o, budget)


def _naive_peak(inst: Instance, start: np.ndarray) -> int:
    p, o = inst.prompts.tolist(), inst.outputs.tolist()
    s = start.tolist()
    horizon = max(a + b for a, b in zip(s, o, strict=True))
    usage = [0] * horizon
    for pi, oi, a in zip(p, o, s, strict=True):
        for j in range(1, oi + 1):
            usage[a + j - 1] += pi + j
    return max(usage)


@settings(max_examples=60, deadline=None)
@given(instances())
def test_every_method_respects_the_kv_budget(inst: Instance) -> None:
    step = TimeModel(H100_LLAMA3_8B)
    for name in HEURISTICS:
        sched = run_method(name, inst, step, ls_budget_s=0.2)
        assert sched.start.shape == (inst.n,) and (sched.start >= 0).all()
        assert sorted(sched.order.tolist()) == list(range(inst.n)), name
        assert _naive_peak(inst, sched.start) <= inst.kv_budget, name
        ev = evaluate(inst, sched, step)  # raises if infeasible
        assert ev.peak_kv == _naive_peak(inst, sched.start)
        assert (ev.completion > 0).all()
        if sched.dispatch == "eager":  # FIFO admission: starts never go backwards
            assert (np.diff(sched.start[sched.order]) >= 0).all(), name
        if sched.batches is not None:
            members = sorted(i for b in sched.batches for i in b)
            assert members == list(range(inst.n)), name


@settings(max_examples=60, deadline=None)
@given(instances(max_n=40))
def test_sorted_f_batches_fit_alone_and_partition_the_backlog(inst: Instance) -> None:
    batches = sorted_f_batches(inst)
    members = sorted(i for b in batches for i in b.members)
    assert members == list(range(inst.n))
    for b in batches:
        ids = np.asarray(b.members)
        assert batch_peak(inst.prompts[ids], inst.outputs[ids]) <= inst.kv_budget
        assert b.f == pytest.approx(float(inst.outputs[ids].sum()) / len(ids) ** 2)
    assert [b.f for b in batches] == sorted(b.f for b in batches)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 20), st.integers(1, 15), st.integers(0, 30)),
                min_size=1, max_size=10),
       st.integers(1, 20), st.integers(1, 15), st.integers(0, 40))
def test_earliest_start_is_the_first_feasible_step(committed: list[tuple[int, int, int]],
                                                   p: int, o: int, k0: int) -> None:
    budget = 120
    prof = KvProfile(budget, horizon=16)
    for cp, co, ck in committed:
        if prof.fits(cp, co, ck):
            prof.commit(cp, co, ck)
    k = prof.earliest_start(p, o, k0)
    assert prof.fits(p, o, k)
    assert not any(prof.fits(p, o, j) for j in range(k0, k))


def test_empty_backlog_plans_to_nothing() -> None:
    inst = Instance.from_lengths([], [], 100)
    for name in METHODS:
        ev = evaluate(inst, run_method(name, inst))
        assert ev.n == 0 and ev.total == 0.0 and ev.makespan == 0.0

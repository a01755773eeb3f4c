"""Backlog mode: the planner's order run as the waiting-queue policy of the simulator."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tailwise.planner import TimeModel
from tailwise.planner.policy import PlannedOrder
from tailwise.scorer.interface import FcfsQueue
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import EngineConfig, simulate
from tailwise.simulator.traces import Trace, load_trace


@pytest.fixture(scope="module")
def backlog() -> Trace:
    trace = load_trace("azure-conv").head(600)
    return dataclasses.replace(trace, arrival_s=np.zeros(len(trace)))  # all waiting at t=0


CONFIG = EngineConfig(num_gpu_blocks=2048)  # 32,768 KV tokens: memory binds


def _mean_ttlt(trace: Trace, policy: PlannedOrder | FcfsQueue) -> tuple[float, np.ndarray]:
    rec = simulate(trace, policy, CONFIG).records
    assert not np.isnan(rec.finish).any()
    return float(np.mean(rec.finish - rec.arrival)), rec.first_scheduled


def test_planned_fcfs_order_is_the_fcfs_queue(backlog: Trace) -> None:
    planned = PlannedOrder.from_backlog(backlog.prompt_tokens, backlog.output_tokens,
                                        CONFIG.kv_tokens, "fcfs")
    assert _mean_ttlt(backlog, planned)[0] == _mean_ttlt(backlog, FcfsQueue())[0]


def test_sorted_f_order_admits_in_plan_order_and_beats_fcfs(backlog: Trace) -> None:
    tm = TimeModel(H100_LLAMA3_8B)
    planned = PlannedOrder.from_backlog(backlog.prompt_tokens, backlog.output_tokens,
                                        CONFIG.kv_tokens, "sorted-f", time_model=tm)
    mean, first = _mean_ttlt(backlog, planned)
    order = sorted(range(len(backlog)), key=lambda i: planned.rank(str(i)) or 0)
    assert (np.diff(first[order]) >= 0).all()  # FIFO by plan rank
    assert mean < 0.9 * _mean_ttlt(backlog, FcfsQueue())[0]

"""Shared by the swap tests of both engines: a small simulator run and state markers."""

from __future__ import annotations

import numpy as np

from tailwise.records.trace import Trace
from tailwise.scorer.policy import Policy
from tailwise.scorer.registry import build_scheduler
from tailwise.scorer.request import ReqInfo
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import EngineConfig, Simulator

SENTINEL = (7.5, 3, 2, 4)


def sched_state(info: ReqInfo) -> tuple[float, int, int, int]:
    return (info.sched_key, info.sched_tag, info.sched_queue, info.sched_protect_level)


def mark(info: ReqInfo) -> None:
    info.sched_key, info.sched_tag, info.sched_queue, info.sched_protect_level = SENTINEL


class Source:
    """A policy source a test swaps by assignment."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def current(self) -> Policy:
        return self.policy


def small_sim(source: Source) -> Simulator:
    """Six equal requests, three running and three waiting after three iterations."""
    n = 6
    trace = Trace("t", np.arange(n, dtype=np.float64) * 1e-3, np.full(n, 400, np.int64),
                  np.full(n, 300, np.int64))
    cfg = EngineConfig(max_num_seqs=3, num_gpu_blocks=2000)
    sim = Simulator(trace, build_scheduler(source.policy), cfg, H100_LLAMA3_8B, source=source)
    for i in range(n):
        sim.advance(trace.arrival_s[i])
        sim.offer(i)
    for _ in range(3):
        sim.advance(sim.now + 1e-9)  # exactly one iteration
    return sim


def live(sim: Simulator) -> list[ReqInfo]:
    return [*sim.running, *sim.policy.waiting()]

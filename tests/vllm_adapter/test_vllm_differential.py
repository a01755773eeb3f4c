"""Differential: neutral policy => the same schedule as stock vLLM, step by step.

Seeded random workloads (arrivals over time, shared prompt prefixes, priorities, stop
tokens, EOS, aborts of waiting and running requests, KV pressure that forces
preemption, chunked prefill, FCFS and priority scheduling, sync and async scheduling)
are replayed in lockstep on stock vLLM and on the tailwise subclass with the neutral
policy, telemetry on. Every SchedulerOutput is compared (admissions with their
prefix-cache hits, scheduled ids and token counts, resumed, preempted and finished ids),
plus the running order, the waiting count, free KV blocks and each request's end state.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from typing import Any

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (pip install 'tailwise[vllm]')")

from vllm.v1.request import RequestStatus

pytestmark = pytest.mark.vllm


@dataclass(frozen=True)
class Spec:
    rid: str
    prompt: tuple[int, ...]
    max_tokens: int
    priority: int
    stop: tuple[int, ...]
    ignore_eos: bool


@dataclass(frozen=True)
class Workload:
    config: dict[str, Any]
    arrivals: dict[int, list[Spec]]  # step -> requests arriving before it
    aborts: dict[int, list[str]]  # step -> request ids aborted before it
    steps: int


def make_workload(seed: int) -> Workload:
    rng = random.Random(seed)
    config = {
        "num_blocks": rng.choice([12, 24, 48, 400]),
        "max_num_seqs": rng.choice([2, 4, 8, 32]),
        "max_num_batched_tokens": rng.choice([64, 256, 2048]),
        "long_prefill_token_threshold": rng.choice([0, 0, 48]),
        "enable_prefix_caching": rng.random() < 0.75,
        "policy": rng.choice(["fcfs", "fcfs", "priority"]),
        "async_scheduling": seed % 3 == 2,
    }
    # like vLLM at startup: max_model_len must fit in the KV cache (1 block is the null block)
    config["max_model_len"] = min(2048, (config["num_blocks"] - 1) * 16)
    prefixes = [tuple(rng.randrange(3, 900) for _ in range(rng.choice([16, 32, 48]))) for _ in range(3)]
    arrivals: dict[int, list[Spec]] = {}
    aborts: dict[int, list[str]] = {}
    steps = 160
    n = 0
    live: list[str] = []
    for step in range(steps):
        for _ in range(rng.choice([0, 0, 0, 1, 1, 2, 4]) if step < 100 else 0):
            prefix = rng.choice(prefixes) if rng.random() < 0.4 else ()
            suffix = tuple(rng.randrange(3, 900) for _ in range(rng.randint(1, 120)))
            max_tokens = rng.randint(1, 40)
            spec = Spec(
                rid=f"s{seed}-{n}",
                prompt=(prefix + suffix)[: config["max_model_len"] - max_tokens - 1],
                max_tokens=max_tokens,
                priority=rng.randint(0, 3),
                stop=(77,) if rng.random() < 0.3 else (),
                ignore_eos=rng.random() < 0.2,
            )
            n += 1
            arrivals.setdefault(step, []).append(spec)
            live.append(spec.rid)
        if live and rng.random() < 0.06:
            aborts.setdefault(step, []).append(live.pop(rng.randrange(len(live))))
    return Workload(config, arrivals, aborts, steps)


def token_fn(req: Any) -> list[int]:
    """Deterministic per (request, position): ~3% EOS, ~3% the stop token 77."""
    h = zlib.crc32(f"{req.request_id}:{req.num_output_tokens}".encode()) % 100
    if h < 3:
        return [2]
    if h < 6:
        return [77]
    return [100 + h]


class Driver:
    """Feeds one scheduler the workload, in vLLM's sync or async engine-loop order."""

    def __init__(self, scheduler: Any, vh: Any, async_mode: bool) -> None:
        self.s = scheduler
        self.vh = vh
        self.async_mode = async_mode
        self.pending: list[tuple[Any, Any]] = []
        self.requests: dict[str, Any] = {}

    def before_step(self, wl: Workload, step: int) -> None:
        for spec in wl.arrivals.get(step, ()):
            req = self.vh.make_request(
                spec.rid,
                list(spec.prompt),
                max_tokens=spec.max_tokens,
                priority=spec.priority,
                arrival_time=float(step),
                stop_token_ids=list(spec.stop) or None,
                ignore_eos=spec.ignore_eos,
            )
            self.requests[spec.rid] = req
            self.s.add_request(req)
        if step in wl.aborts:
            self.s.finish_requests(wl.aborts[step], RequestStatus.FINISHED_ABORTED)

    def step(self) -> Any:
        out = self.s.schedule()
        rec = self.vh.record(self.s, out)
        mro = self.vh.fake_output(self.s, out, token_fn)
        if not self.async_mode:
            self.s.update_from_output(out, mro)
            return rec
        self.pending.append((out, mro))
        while len(self.pending) >= 2 or (self.pending and out.total_num_scheduled_tokens == 0):
            prev, prev_mro = self.pending.pop(0)
            self.s.update_from_output(prev, prev_mro)
        return rec

    def end_state(self) -> list[tuple[str, str, int, int]]:
        return [
            (rid, str(r.status), r.num_output_tokens, r.num_preemptions)
            for rid, r in sorted(self.requests.items())
        ]


def run_lockstep(make_scheduler: Any, vh: Any, seed: int) -> dict[str, int]:
    wl = make_workload(seed)
    async_mode = wl.config["async_scheduling"]
    sink = vh.RecordingSink()
    stock = Driver(make_scheduler("stock", **wl.config), vh, async_mode)
    ours = Driver(make_scheduler("tailwise", telemetry_sink=sink, **wl.config), vh, async_mode)
    stats = {"steps": 0, "preemptions": 0, "cache_hits": 0, "finished": 0}
    step = 0
    while step < wl.steps or stock.s.has_unfinished_requests() or stock.pending:
        assert step < wl.steps + 5000, "workload did not drain"
        for d in (stock, ours):
            d.before_step(wl, step)
        a, b = stock.step(), ours.step()
        assert b == a, f"seed {seed}: step {step} diverged"
        stats["steps"] += 1
        stats["preemptions"] += len(a.preempted)
        stats["cache_hits"] += sum(1 for _, hit in a.new if hit)
        stats["finished"] += len(a.finished)
        step += 1
    assert ours.end_state() == stock.end_state()
    assert not ours.s.tailwise_active
    # telemetry saw every arrival and every finish, and every preemption
    assert sorted(sink.of("arrival")) == sorted(stock.requests)
    assert sorted(sink.of("finish")) == sorted(stock.requests)
    assert len(sink.of("preempt")) == stats["preemptions"]
    return stats


SEEDS = list(range(24))


@pytest.mark.parametrize("seed", SEEDS)
def test_neutral_policy_matches_stock_step_by_step(make_scheduler: Any, vh: Any, seed: int) -> None:
    run_lockstep(make_scheduler, vh, seed)


def test_workloads_exercise_the_interesting_paths(make_scheduler: Any, vh: Any) -> None:
    """Guard against a vacuous differential test: the seeds must hit preemption,
    prefix-cache hits, async scheduling, priority scheduling and aborts."""
    totals = {"preemptions": 0, "cache_hits": 0}
    for seed in SEEDS[:9]:
        stats = run_lockstep(make_scheduler, vh, seed)
        for k in totals:
            totals[k] += stats[k]
    assert totals["preemptions"] > 0
    assert totals["cache_hits"] > 0
    wls = [make_workload(s) for s in SEEDS]
    assert any(w.config["async_scheduling"] for w in wls)
    assert any(w.config["policy"] == "priority" for w in wls)
    assert any(w.aborts for w in wls)

"""``schedule()`` cost: stock vLLM vs TailwiseScheduler (neutral and active policy).

Three schedulers are driven in lockstep over the same steady-state workload — N requests
waiting (topped up after every step), up to 256 running, an 8,192-token budget, prefix
caching on, requests finishing after a few tokens so admissions happen every step — and
only the ``schedule()`` call is timed (fake model outputs and ``update_from_output`` are
outside the timer). Variants are interleaved step by step, in a rotating order, so
machine noise hits all of them alike; the table shows the median µs per ``schedule()``
and the median over steps of the paired ratio (variant / stock in the same step), which
is what to read on a shared machine. Target: ≤ 1.2× stock at 1,000 waiting.

    VLLM_TARGET_DEVICE=cpu python benchmarks/adapter_overhead.py [--steps 400]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import time
from typing import Any

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tailwise.lab.vllm_harness import make_vllm_scheduler
from tailwise.scorer.interface import KeyedQueue
from tailwise.scorer.policy import QueueSpec
from tailwise.scorer.registry import build_scheduler, default_policy
from tailwise.scorer.request import ReqInfo
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import EngineConfig

QUEUES = (QueueSpec(0, 300, 120, 0.002), QueueSpec(300, 1500, 800, 0.0005),
          QueueSpec(1500, 9000, 4000, 0.00005))


class ArrivalOrder(KeyedQueue):
    """An active policy that decides exactly like stock FCFS: measures the adapter's own
    cost on the active path (queue seam, ranking hook, bookkeeping) with the same work."""

    name = "arrival-order"

    def waiting_key(self, req: ReqInfo, now: float) -> float:
        return req.arrival_time


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


class Variant:
    def __init__(self, label: str, scheduler: Any) -> None:
        self.label = label
        self.s = scheduler
        self.times: list[float] = []


def make_variants(cfg: EngineConfig, clock: Clock, always_rank: bool = False) -> list[Variant]:
    from vllm.v1.core.sched.scheduler import Scheduler

    policy = default_policy("tailwise", H100_LLAMA3_8B)
    assert policy is not None
    active = build_scheduler(policy.replace(queues=QUEUES))
    variants = [
        Variant("stock vLLM", make_vllm_scheduler(cfg, scheduler_cls=Scheduler)),
        Variant("tailwise neutral (fcfs)", make_vllm_scheduler(cfg, clock=clock)),
        Variant("tailwise active (fcfs-equiv)",
                make_vllm_scheduler(cfg, clock=clock, scheduling_policy=ArrivalOrder())),
        Variant("tailwise active (tailwise)",
                make_vllm_scheduler(cfg, clock=clock, scheduling_policy=active)),
    ]
    if always_rank:  # worst case: rank running requests every step (no fast path)
        for v in variants[2:]:
            v.s._tw_fast_ok = False
    return variants


def request_factory(seed: int) -> Any:
    from vllm.sampling_params import SamplingParams
    from vllm.utils.hashing import sha256
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
    from vllm.v1.request import Request

    init_none_hash(sha256)
    hasher = get_request_block_hasher(16, sha256)
    rng = random.Random(seed)
    prefixes = [[rng.randrange(3, 900) for _ in range(64)] for _ in range(8)]
    counter = [0]

    def spec(now: float) -> tuple[str, list[int], int, float]:
        counter[0] += 1
        body = [rng.randrange(3, 900) for _ in range(rng.randint(32, 512))]
        prompt = (rng.choice(prefixes) + body) if rng.random() < 0.3 else body
        return f"q{counter[0]}", prompt, rng.randint(2, 24), now

    def build(s: tuple[str, list[int], int, float]) -> Any:
        rid, prompt, out, arrival = s
        return Request(request_id=rid, prompt_token_ids=list(prompt),
                       sampling_params=SamplingParams(max_tokens=out, ignore_eos=True),
                       pooling_params=None, arrival_time=arrival, block_hasher=hasher)

    return spec, build


def fake_output(s: Any, out: Any) -> Any:
    from vllm.v1.outputs import ModelRunnerOutput

    ids = list(out.num_scheduled_tokens)
    return ModelRunnerOutput(
        req_ids=ids, req_id_to_index={r: i for i, r in enumerate(ids)},
        sampled_token_ids=[[] if s.requests[r].is_prefill_chunk else [5] for r in ids])


def bench(n_waiting: int, steps: int, warmup: int, cfg: EngineConfig,
          always_rank: bool = False) -> list[Variant]:
    clock = Clock()
    variants = make_variants(cfg, clock, always_rank)
    spec, build = request_factory(n_waiting)
    for _ in range(n_waiting):
        sp = spec(clock.t)
        for v in variants:
            v.s.add_request(build(sp))
    gc.collect()
    gc.disable()
    try:
        for step in range(warmup + steps):
            clock.t += 0.02
            k = step % len(variants)
            for v in variants[k:] + variants[:k]:
                t0 = time.perf_counter()
                out = v.s.schedule()
                dt = time.perf_counter() - t0
                if step >= warmup:
                    v.times.append(dt)
                v.s.update_from_output(out, fake_output(v.s, out))
            # top the queue back up to N (same requests for every variant)
            missing = max(n_waiting - len(variants[0].s.waiting), 0)
            for _ in range(missing):
                sp = spec(clock.t)
                for v in variants:
                    v.s.add_request(build(sp))
            if step % 50 == 0:
                gc.collect()
    finally:
        gc.enable()
    return variants


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--waiting", default="10,1000,5000")
    ap.add_argument("--always-rank", action="store_true",
                    help="call order_running every step (disable the everyone-fits fast path)")
    args = ap.parse_args()
    cfg = EngineConfig()  # 28,600 blocks, 256 seqs, 8,192-token budget, prefix caching
    print(f"schedule() cost, median of {args.steps} steps after {args.warmup} warm-up "
          f"(max_num_seqs={cfg.max_num_seqs}, budget={cfg.max_num_batched_tokens}"
          f"{', always rank' if args.always_rank else ''})")
    print(f"{'waiting':>8}  {'variant':<28}{'median µs':>11}{'p90 µs':>10}"
          f"{'ratio of medians':>18}{'median paired ratio':>21}")
    for n in [int(x) for x in args.waiting.split(",")]:
        variants = bench(n, args.steps, args.warmup, cfg, args.always_rank)
        stock = variants[0].times
        base = statistics.median(stock)
        for v in variants:
            med = statistics.median(v.times)
            p90 = statistics.quantiles(v.times, n=10)[-1]
            paired = statistics.median(a / b for a, b in zip(v.times, stock, strict=True))
            print(f"{n:>8}  {v.label:<28}{med * 1e6:>11.0f}{p90 * 1e6:>10.0f}"
                  f"{med / base:>17.2f}x{paired:>20.2f}x")


if __name__ == "__main__":
    main()

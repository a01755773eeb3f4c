"""Where do the simulator and vLLM's real scheduler part ways? A step-by-step differential.

Runs one policy on a slice of a suite workload through the built-in simulator and the
vLLM-in-the-loop harness (small KV cache so that preemption happens in a short run),
logs per engine step the preempted and the admitted request ids, and prints the first
step where the two logs differ. A second pass then prints, for that step, every running
request whose policy-visible fields (``ReqInfo``, as handed to ``order_running``) differ
between the engines: that is the bookkeeping that made the policy choose differently.

    VLLM_TARGET_DEVICE=cpu python benchmarks/regime_fidelity.py [--policy tailwise]
        [--requests 300] [--blocks 5000]

Found with it (issue 12 part 5; FCFS logs are identical, tailwise's differed):
(1) the adapter called ``on_admit`` after crediting the admission step's prefill chunk,
so anti-thrash protection was one level higher than in the simulator (fixed in the
adapter); (2) the simulator kept a re-admitted request's stale waiting
``cached_tokens`` estimate where the adapter sets the real prefix hit, which changes
the cache-aware victim cost (fixed in the simulator); (3) the simulator put a freed
request's partial (unhashed) block at the LRU tail where vLLM 0.32's
``BlockPool.free_blocks`` puts it at the front of the free queue, so the next
allocation evicted a preempted request's cached block instead (fixed in the
simulator; found from the admission checks this script prints and a clock that parted
by one block's prefill time). Since then tailwise's logs are identical on 2,000
bursty-reasoning requests with the default 28,600 blocks.

long-context-chat (hash_ids prefix sharing) then still parted at eventful step 67 of 600
requests (5,000 blocks). Three more simulator causes, found by also diffing the policy's
prefix probes and the per-step free blocks: (4) a segment with some tail blocks evicted
missed entirely, where vLLM's ``find_longest_cache_hit`` still hits its leading blocks
(block-granular hits, and a request completing such a segment makes it whole again);
(5) segments were registered after a step ran, where vLLM's ``allocate_slots`` caches
the blocks of a chunk when it is scheduled, so a request admitted later in the same step
hits them; (6) the pure-decode jump skipped scheduling rounds in which vLLM asks the
waiting queue for its head, and tailwise re-probes the prefix cache round-robin in each
(``prefix_rekey``), so its head could change in a skipped step. Since then tailwise's
and FCFS's logs are identical on 1,000 long-context-chat requests (5,000 blocks), 600
azure-conv requests (3,000 blocks) and 2,000 bursty-reasoning requests (28,600 blocks).

Since FCFS's drain time D also raises the envelope (D₇₅) and sets the queue-relative
horizon, long-context-chat parts again: (7) the drain sample depended on the engine's
pop/admit interleaving (the simulator admits each request as it pops it, vLLM pops the
round first); fixed in the policy (a request popped this round counts as waiting until
its ``on_admit``), which moved the first divergence on 600 requests from eventful step
111 to 340 of 410. (8) There one waiting request's add-time prefix estimate differed
(26,400 uncached tokens in the simulator, 23,616 in vLLM): two requests of different
sessions finished in the same step, and the simulator freed them by request index where
vLLM frees them in its scheduling order (the running list, admission order unless the
policy ranked it that step), so the LRU queue evicted the other session's prefix first.
Fixed in the simulator (and the adapter now tells the policy of finished requests in
that order, not in the order of vLLM's set). Since then tailwise's logs are identical
on 600 and 1,000 long-context-chat requests (5,000 blocks), 1,500 azure-conv requests
(3,000 blocks) and 2,000 bursty-reasoning requests (28,600 blocks).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable
from typing import Any

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tailwise.engine_adapter.vllm import TailwiseScheduler
from tailwise.lab.experiment import Arm
from tailwise.lab.vllm_harness import run_vllm
from tailwise.scorer.interface import QueueDiscipline
from tailwise.scorer.registry import make_named
from tailwise.scorer.request import ReqInfo
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator import engine as sim_engine
from tailwise.simulator.suite import build

FIELDS = ("prefill_tokens_done", "num_output_tokens", "num_computed_tokens", "cached_tokens",
          "sched_protect_level", "num_preemptions")
Event = tuple[tuple[int, ...], tuple[int, ...]]  # (preempted ids, admitted ids)


def run_both(args: argparse.Namespace, watch: int | None) -> tuple[dict[str, list[Event]],
                                                                    dict[str, dict[int, Any]]]:
    """Event log per engine (one entry per engine step) and, at step ``watch``, the
    fields of every running request as ``order_running`` saw them."""
    wl = build(args.workload, model=H100_LLAMA3_8B)
    cfg = dataclasses.replace(wl.engine, num_gpu_blocks=args.blocks)
    trace = wl.trace.head(args.requests)
    logs: dict[str, list[Event]] = {"sim": [], "vllm": []}
    seen: dict[str, dict[int, Any]] = {"sim": {}, "vllm": {}}
    #: per engine step: the admission checks asked of the policy (inputs and answer)
    checks: dict[str, list[list[tuple[Any, ...]]]] = {"sim": [], "vllm": []}
    cur = {"engine": "sim", "step": 0}

    def policy() -> QueueDiscipline:
        pol = make_named(args.policy, H100_LLAMA3_8B)
        inner = pol.order_running

        def order_running(running: Any, now: float) -> list[ReqInfo]:
            if cur["step"] == watch:
                for r in running:
                    rid = int(getattr(r, "idx", None) if hasattr(r, "idx") else r.request_id)
                    seen[str(cur["engine"])][rid] = tuple(getattr(r, f) for f in FIELDS)
            return inner(running, now)

        allowed = pol.admission_allowed

        def admission_allowed(free: int, head: int, decoding: int, bs: int) -> bool:
            ok = allowed(free, head, decoding, bs)
            log = checks[str(cur["engine"])]
            if log:
                log[-1].append((free, head, decoding, ok))
            return ok

        pol.order_running = order_running  # type: ignore[method-assign]
        pol.admission_allowed = admission_allowed  # type: ignore[method-assign]
        return pol

    sim_cls: Any = sim_engine.Simulator
    saved = (sim_cls._step, sim_cls._preempt, sim_cls._admit_waiting, TailwiseScheduler.schedule)

    def sim_step(self: Any) -> Any:
        self._fid = ([], [])
        checks["sim"].append([])
        cur["step"] = self.counters["steps"] + 1
        ret = saved[0](self)
        logs["sim"].append((tuple(sorted(self._fid[0])), tuple(sorted(self._fid[1]))))
        return ret

    def sim_preempt(self: Any, r: Any) -> None:
        self._fid[0].append(r.idx)
        saved[1](self, r)

    def sim_admit(self: Any, budget: int, chunks: Any) -> Any:
        before = {r.idx for r in self.running}
        ret = saved[2](self, budget, chunks)
        self._fid[1].extend(r.idx for r in self.running if r.idx not in before)
        return ret

    def vllm_schedule(self: Any, *a: Any, **k: Any) -> Any:
        cur["step"] = len(logs["vllm"]) + 1
        checks["vllm"].append([])
        out = saved[3](self, *a, **k)
        admitted = [int(n.req_id) for n in out.scheduled_new_reqs]
        admitted += [int(r) for r in out.scheduled_cached_reqs.resumed_req_ids]
        logs["vllm"].append((tuple(sorted(int(r) for r in out.preempted_req_ids or ())),
                             tuple(sorted(admitted))))
        return out

    patches: list[tuple[Any, str, Callable[..., Any]]] = [
        (sim_cls, "_step", sim_step), (sim_cls, "_preempt", sim_preempt),
        (sim_cls, "_admit_waiting", sim_admit), (TailwiseScheduler, "schedule", vllm_schedule)]
    try:
        for owner, name, fn in patches:
            setattr(owner, name, fn)
        cur["engine"] = "sim"
        sim_engine.simulate(trace, policy(), cfg, H100_LLAMA3_8B)
        cur["engine"] = "vllm"
        run_vllm(trace, Arm(policy()), cfg, H100_LLAMA3_8B)
    finally:
        for (owner, name, _), orig in zip(patches, saved, strict=True):
            setattr(owner, name, orig)
    run_both.checks = checks  # type: ignore[attr-defined]
    return logs, seen


def first_divergence(logs: dict[str, list[Event]]) -> tuple[int, int] | None:
    """(index among eventful steps, engine step number) of the first differing event.
    The simulator skips pure-decode runs in one jump, so eventful steps are aligned."""
    ev = {k: [(i + 1, e) for i, e in enumerate(v) if e[0] or e[1]] for k, v in logs.items()}
    for j, (a, b) in enumerate(zip(ev["sim"], ev["vllm"], strict=False)):
        if a[1] != b[1]:
            return j, b[0]
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", default="tailwise")
    ap.add_argument("--workload", default="bursty-reasoning")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--blocks", type=int, default=5000, help="KV blocks (small: preemption)")
    args = ap.parse_args()
    logs, _ = run_both(args, None)
    eventful = {k: sum(1 for e in v if e[0] or e[1]) for k, v in logs.items()}
    print(f"{args.policy} on {args.requests} {args.workload} requests, {args.blocks} KV blocks: "
          f"eventful steps simulator {eventful['sim']}, vLLM {eventful['vllm']}")
    div = first_divergence(logs)
    if div is None:
        print("identical preemption/admission logs")
        return
    j, step = div
    sim_ev = [e for e in logs["sim"] if e[0] or e[1]]
    vllm_ev = [e for e in logs["vllm"] if e[0] or e[1]]
    print(f"first divergence at eventful step {j} (vLLM step {step}):")
    print(f"  simulator preempted {list(sim_ev[j][0])} admitted {list(sim_ev[j][1])}")
    print(f"  vLLM      preempted {list(vllm_ev[j][0])} admitted {list(vllm_ev[j][1])}")
    checks = run_both.checks  # type: ignore[attr-defined]
    for k in ("sim", "vllm"):
        idx = [i for i, e in enumerate(logs[k]) if e[0] or e[1]][j]
        print(f"  {k:4s} admission checks (free blocks, head tokens, decoding, allowed): "
              f"{checks[k][idx]}")
    _, seen = run_both(args, step)
    print(f"running requests whose policy-visible fields differ at that step {FIELDS}:")
    for rid in sorted(seen["sim"].keys() | seen["vllm"].keys()):
        a, b = seen["sim"].get(rid), seen["vllm"].get(rid)
        if a != b:
            print(f"  {rid}: simulator {a}  vLLM {b}")


if __name__ == "__main__":
    main()

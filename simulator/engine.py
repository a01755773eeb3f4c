"""Discrete-event model of one vLLM-style engine replica (continuous batching, paged KV).

The step loop mirrors vLLM v1's ``Scheduler.schedule()``:

1. *Running* requests, in the policy's ``order_running`` order, each get
   ``min(num_tokens − num_computed_tokens, budget)`` tokens (1 for a decode). When KV
   blocks run out the engine preempts from the *end* of that order — possibly the
   request itself, which ends the running pass (vLLM's ``break``).
2. *Waiting* requests are admitted head-first (``peek``/``pop``) only in steps without
   preemption, while token budget, ``max_num_seqs`` and KV allow. Admission needs the
   whole current sequence to fit (vLLM ``scheduler_reserve_full_isl``); a head that does
   not fit blocks the queue (vLLM ``break``), which is what makes the aging guarantee hold.
3. The step costs ``model.step_s(prefill tokens, decode requests, decode context)``; a
   request whose prefill (or recompute) completes samples a token in that step.

KV: ``num_gpu_blocks`` blocks of ``block_size`` tokens. A running request holds
``ceil((num_computed − shared)/block_size)`` private blocks plus references to shared
prefix segments. Prefix caching has two sources: Mooncake ``hash_ids`` segments
(``hash_block_tokens`` each, shared across requests) and a preempted request's own full
blocks (vLLM keeps freed full blocks cached until they are evicted, so a victim that is
re-admitted soon recomputes little). As in vLLM's block pool, every freed block joins one
LRU free queue (a request's blocks tail-first) and stays cached until it is reused;
never-used blocks go first, then the queue's head is evicted (a segment tail first, so a
partly evicted segment still hits its leading blocks, as vLLM's block-hash lookup does).
A chunk's segments are cached when it is scheduled (vLLM ``allocate_slots``), so a
request admitted later in the same step hits them. Free plus cached blocks are what
admission counts as free.

Speed: decoding requests are not touched per step. All decodes advance together, so a
request's output count is ``D + dbase`` for a global decode counter ``D``; block demand
per step comes from a 16-bucket histogram of block phases; finishes come from a heap.
Runs in which nothing but decoding happens (no arrival, no finish, no admission
possible, KV sufficient, no waiting request for a policy that probes the prefix cache
each round) are skipped in one jump with the closed-form sum of their step times.
Differences to vLLM, by design: speculative decoding, LoRA, encoders and structured
output are not modelled; the ``vllm-priority`` victim rule is approximated
by the policy's running order; swap preemption (not in vLLM v1) moves a victim's whole
context to host memory and back at ``swap_ms_per_token``.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from tailwise.records.requests import RequestRecords
from tailwise.records.trace import Trace
from tailwise.scorer.hooks import PolicySource, StepStats, TelemetrySink
from tailwise.scorer.interface import QueueDiscipline
from tailwise.scorer.policy import Policy
from tailwise.scorer.request import ReqInfo
from tailwise.scorer.step_time import H100_LLAMA3_8B, StepTimeModel
from tailwise.scorer.swap import PolicySwap, SwapFailed

PENDING, WAITING, PREFILL, DECODE, DONE, REJECTED = range(6)


class EngineConfigError(ValueError):
    """An engine configuration value is out of range; the message names it."""


@dataclass(frozen=True)
class EngineConfig:
    """vLLM-equivalent knobs; defaults = Llama-3-8B on one H100 (DESIGN.md §Simulator)."""

    num_gpu_blocks: int = 28_600
    block_size: int = 16
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    enable_prefix_caching: bool = True
    #: "recompute" (vLLM's only mode) or "swap"
    preemption_mode: str = "recompute"
    #: host<->GPU transfer per token of KV (128 KiB/token at ~25 GB/s)
    swap_ms_per_token: float = 0.005
    #: tokens covered by one Mooncake hash id
    hash_block_tokens: int = 512
    #: fraction of blocks kept free when admitting (vLLM ``watermark``)
    watermark: float = 0.0
    #: sample the KV/queue time series at most this often (engine seconds)
    sample_every_s: float = 1.0

    def validate(self) -> None:
        def need(ok: bool, name: str, value: Any, what: str) -> None:
            if not ok:
                raise EngineConfigError(f"{name} must be {what}, got {value!r}")

        need(self.num_gpu_blocks >= 1, "num_gpu_blocks", self.num_gpu_blocks, ">= 1")
        need(self.block_size >= 1, "block_size", self.block_size, ">= 1")
        need(self.max_num_seqs >= 1, "max_num_seqs", self.max_num_seqs, ">= 1")
        need(self.max_num_batched_tokens >= 1, "max_num_batched_tokens",
             self.max_num_batched_tokens, ">= 1")
        need(self.preemption_mode in ("recompute", "swap"), "preemption_mode",
             self.preemption_mode, "'recompute' or 'swap'")
        need(math.isfinite(self.swap_ms_per_token) and self.swap_ms_per_token >= 0,
             "swap_ms_per_token", self.swap_ms_per_token, "finite and >= 0")
        need(self.hash_block_tokens >= self.block_size
             and self.hash_block_tokens % self.block_size == 0, "hash_block_tokens",
             self.hash_block_tokens, "a positive multiple of block_size")
        need(0.0 <= self.watermark < 1.0, "watermark", self.watermark, "in [0, 1)")
        need(self.sample_every_s > 0, "sample_every_s", self.sample_every_s, "> 0")

    @property
    def kv_tokens(self) -> int:
        return self.num_gpu_blocks * self.block_size


class SimRequest(ReqInfo):
    """A request inside the simulator: the policy-visible view plus engine bookkeeping."""

    __slots__ = ("blocks", "dbase", "hash_ids", "idx", "lost_computed", "output_len", "phase",
                 "pre_shared", "shared_segs", "shared_tokens", "state", "swapped_tokens")

    def __init__(self, idx: int, rid: str, arrival: float, prompt: int, output: int,
                 hash_ids: tuple[int, ...], slo_class: str) -> None:
        super().__init__(request_id=rid, arrival_time=arrival, prompt_tokens=prompt,
                         slo_class=slo_class, true_output_tokens=output,
                         max_output_tokens=output)
        self.idx = idx
        self.output_len = output
        self.hash_ids = hash_ids
        self.state = PENDING
        self.blocks = 0  # private blocks held
        self.shared_segs: list[int] = []
        self.shared_tokens = 0
        self.pre_shared = 0  # shared tokens held when last preempted
        self.dbase = 0
        self.phase = 0
        self.lost_computed = 0
        self.swapped_tokens = 0


@dataclass
class SimResult:
    trace: Trace
    config: EngineConfig
    model: StepTimeModel
    policy_name: str
    records: RequestRecords
    #: sampled time series: t, kv_usage, waiting, running
    timeseries: dict[str, npt.NDArray[np.float64]]
    counters: dict[str, int]
    end_time: float
    wall_s: float
    #: (engine time, policy version) each time the policy in force changed
    policy_changes: list[tuple[float, int]] = field(default_factory=list)
    #: (engine time, policy) each time the policy in force changed (timeline reports)
    policy_timeline: list[tuple[float, Policy]] = field(default_factory=list)


class KvPool:
    """Block accounting: free blocks, evictable cached segments (LRU), shared segments."""

    __slots__ = ("evictable", "evictable_total", "free", "shared", "total")

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        #: key -> blocks; oldest first. Keys: hash id (int) or ("r", request idx)
        self.evictable: OrderedDict[Any, int] = OrderedDict()
        self.evictable_total = 0
        #: hash id -> [refcount, blocks] for segments held by running requests
        self.shared: dict[int, list[int]] = {}

    @property
    def available(self) -> int:
        return self.free + self.evictable_total

    def take(self, n: int) -> None:
        """Allocate ``n`` blocks, evicting LRU cached segments (tail blocks first)."""
        if n <= self.free:
            self.free -= n
            return
        n -= self.free
        self.free = 0
        ev = self.evictable
        while n > 0:
            key, blocks = next(iter(ev.items()))
            if blocks <= n:
                del ev[key]
                n -= blocks
                self.evictable_total -= blocks
            else:
                ev[key] = blocks - n
                self.evictable_total -= n
                n = 0
        # evicted blocks are reused by the allocation; nothing returns to `free`

    def cache(self, key: Any, blocks: int) -> None:
        if blocks <= 0:
            return
        self.evictable[key] = self.evictable.get(key, 0) + blocks
        self.evictable.move_to_end(key)
        self.evictable_total += blocks

    def uncache(self, key: Any) -> int:
        blocks = self.evictable.pop(key, 0)
        self.evictable_total -= blocks
        return blocks

    @property
    def used(self) -> int:
        return self.total - self.free - self.evictable_total


class Simulator:
    """One run of one policy over one trace. Use :func:`simulate`."""

    def __init__(self, trace: Trace, scheduler: QueueDiscipline, config: EngineConfig,
                 model: StepTimeModel, *, source: PolicySource | None = None,
                 builder: Callable[[Policy], QueueDiscipline] | None = None,
                 sink: TelemetrySink | None = None, debug: bool = False,
                 progress: Callable[[int, int], None] | None = None) -> None:
        config.validate()
        self.trace = trace
        self.policy = scheduler
        self.cfg = config
        self.model = model
        self.source = source
        self.builder = builder
        self.sink = sink
        self.debug = debug
        self.progress = progress
        self.bs = config.block_size
        self.seg_blocks = config.hash_block_tokens // config.block_size
        self.kv = KvPool(config.num_gpu_blocks)
        self.watermark_blocks = int(config.watermark * config.num_gpu_blocks)
        self.now = 0.0
        self.records = RequestRecords.empty(trace)
        self.running: dict[SimRequest, None] = {}
        self.prefillers: dict[SimRequest, None] = {}
        self.n_dec = 0
        self.D = 0
        self.cnt = [0] * self.bs
        self.sum_pd = 0
        self.fin_heap: list[tuple[int, int, SimRequest]] = []
        self.n_waiting = 0
        self.finished = 0
        self.next_arrival = 0
        self.counters: dict[str, int] = {"steps": 0, "skipped_steps": 0, "jumps": 0,
                                         "preemptions": 0, "swaps": 0, "rejected": 0,
                                         "policy_swaps": 0, "policy_build_errors": 0}
        self.ts_t: list[float] = []
        self.ts_kv: list[float] = []
        self.ts_wait: list[float] = []
        self.ts_run: list[float] = []
        #: the policy's waiting envelope (QueueDiscipline.envelope): E and the oldest wait,
        #: NaN while the policy in force has none (the adapter's gauges, sampled here)
        self.ts_env: list[float] = []
        self.ts_oldest: list[float] = []
        self._last_sample = -math.inf
        self._policy_obj: Policy | None = None
        self._swap: PolicySwap[QueueDiscipline] = PolicySwap(self._build)
        self._anon = 0  # names for anonymous freed-block runs in the LRU queue
        self._old_counters: Counter[str] = Counter()
        self.policy_changes: list[tuple[float, int]] = []
        self.policy_timeline: list[tuple[float, Policy]] = []
        self._swap_ms = 0.0
        self._hash = trace.hash_ids if config.enable_prefix_caching else None
        self._slo = trace.slo_classes
        self._arr = trace.arrival_s.tolist()
        self._prm = trace.prompt_tokens.tolist()
        self._out = trace.output_tokens.tolist()
        self._preempted_this_step = 0
        #: the running order the policy ranked this step (None: admission order)
        self._step_order: list[SimRequest] | None = None
        #: fleet mode (:meth:`offer`/:meth:`advance`): the fleet's next arrival time;
        #: None = this engine reads its own arrivals from the trace
        self._fleet_next: float | None = None
        self._install_probe(self.policy)
        if source is not None:
            self._check_policy()

    # ---------------------------------------------------------------- main loop
    def run(self) -> SimResult:
        t0 = time.perf_counter()
        n = len(self.trace)
        report_every = max(n // 100, 1)
        last_report = 0
        while self.finished < n:
            self._admit_arrivals()
            if not self.running and self.n_waiting == 0:
                if self.next_arrival >= n:
                    break
                self.now = max(self.now, self._arr[self.next_arrival])
                continue
            blocked = self._step()
            if self.debug:
                self.check_invariants()
            if blocked is not None:
                self._maybe_jump(blocked)
                if self.debug:
                    self.check_invariants()
            if self.progress is not None and self.finished - last_report >= report_every:
                last_report = self.finished
                self.progress(self.finished, n)
        self._sample(force=True)
        if self.progress is not None:
            self.progress(self.finished, n)
        return self._result(t0)

    # ---------------------------------------------------------------- fleet (step-wise) API
    def offer(self, i: int) -> None:
        """Fleet mode: request ``i`` of the trace arrives now, sent here by a router.

        Call :meth:`advance` up to its arrival time first, so that the engine's clock is
        not behind it."""
        self._fleet_next = self._fleet_next if self._fleet_next is not None else math.inf
        if self.now < self._arr[i]:
            self.now = self._arr[i]  # only an idle engine can be behind the fleet clock
        self._arrive(i)

    def advance(self, until: float, next_arrival: float = math.inf) -> None:
        """Fleet mode: run every iteration that starts before ``until`` (all of them when
        ``until`` is inf). ``next_arrival`` bounds decode jumps like a trace arrival does
        (any replica may receive it)."""
        self._fleet_next = next_arrival
        while self.now < until and (self.running or self.n_waiting):
            blocked = self._step()
            if self.debug:
                self.check_invariants()
            if blocked is not None:
                self._maybe_jump(blocked)

    def result(self, wall_s: float = 0.0) -> SimResult:
        """Fleet mode: the outcome so far (requests never offered stay NaN)."""
        self._sample(force=True)
        return self._result(time.perf_counter() - wall_s)

    @property
    def policy_in_force(self) -> Policy | None:
        """The policy whose queue is installed (None without a source)."""
        return self._policy_obj

    def _result(self, t0: float) -> SimResult:
        return SimResult(
            trace=self.trace, config=self.cfg, model=self.model, policy_name=self.policy.name,
            records=self.records,
            timeseries={"t": np.asarray(self.ts_t), "kv_usage": np.asarray(self.ts_kv),
                        "waiting": np.asarray(self.ts_wait), "running": np.asarray(self.ts_run),
                        "envelope_s": np.asarray(self.ts_env),
                        "oldest_wait_s": np.asarray(self.ts_oldest)},
            counters={**self.counters, **{f"policy.{k}": v for k, v in
                                          (self._old_counters + self.policy.counters).items()}},
            end_time=self.now, wall_s=time.perf_counter() - t0,
            policy_changes=self.policy_changes, policy_timeline=self.policy_timeline,
        )

    def _admit_arrivals(self) -> None:
        if self._fleet_next is not None:
            return  # fleet mode: the router offers arrivals
        n = len(self._arr)
        i = self.next_arrival
        while i < n and self._arr[i] <= self.now:
            self._arrive(i)
            i += 1
        self.next_arrival = i

    def _arrive(self, i: int) -> None:
        prompt, output = self._prm[i], self._out[i]
        r = SimRequest(i, str(i), self._arr[i], prompt, output,
                       self._hash[i] if self._hash is not None else (),
                       self._slo[i] if self._slo is not None else "")
        if -(-(prompt + output) // self.bs) > self.cfg.num_gpu_blocks:
            r.state = REJECTED
            self.records.rejected[i] = True
            self.counters["rejected"] += 1
            self.finished += 1
            return
        r.state = WAITING
        self.n_waiting += 1
        r.cached_tokens = self._cached_estimate(r)
        self.policy.add(r, r.arrival_time)
        if self.sink is not None:
            self.sink.on_arrival(r, r.arrival_time)

    # ---------------------------------------------------------------- policy swaps
    def cached_prefix_tokens(self, r: ReqInfo) -> int:
        """The read-only prefix probe policies get (``QueueDiscipline.set_prefix_probe``):
        prompt tokens of a live request a prefix-cache lookup would hit now."""
        assert isinstance(r, SimRequest)
        return self._cached_estimate(r)

    def _install_probe(self, pol: QueueDiscipline) -> None:
        """Give a policy that ranks waiting requests by live prefix-cache hits (SGLang
        LPM, HRRN, tailwise's prefix re-keying) this engine's lookup, as the vLLM adapter
        gives it vLLM's."""
        if pol.uses_prefix_probe:
            pol.set_prefix_probe(self.cached_prefix_tokens)

    def _build(self, policy: Policy) -> QueueDiscipline:
        if self.builder is None:
            from tailwise.scorer.registry import build_scheduler
            self.builder = build_scheduler
        return self.builder(policy)

    def _check_policy(self) -> None:
        assert self.source is not None
        outcome = self._swap.offer(self.source.current())
        if outcome is None:
            return
        if isinstance(outcome, SwapFailed):
            self.counters["policy_build_errors"] += 1
            return
        new, p = outcome.built, outcome.policy
        new.carry_over(self.policy)
        self._install_probe(new)
        self._policy_obj = p
        PolicySwap.forget(self.running)
        waiting = sorted(self.policy.waiting(), key=lambda r: (r.arrival_time, r.request_id))
        PolicySwap.forget(waiting)
        for r in waiting:
            new.add(r, self.now)
        self._old_counters.update(self.policy.counters)
        self.policy = new
        self.policy_changes.append((self.now, p.version))
        self.policy_timeline.append((self.now, p))
        if not outcome.first:
            self.counters["policy_swaps"] += 1

    # ---------------------------------------------------------------- decoders
    def _sync(self, r: SimRequest) -> None:
        """Materialise a decoding request's lazy progress fields."""
        if r.state == DECODE:
            out = self.D + r.dbase
            r.num_output_tokens = out
            r.num_computed_tokens = r.prompt_tokens + out - 1
            r.blocks = -(-(r.num_computed_tokens - r.shared_tokens) // self.bs)

    def _join_decode(self, r: SimRequest) -> None:
        """``r`` just sampled a token and continues decoding; D is already advanced."""
        r.state = DECODE
        r.dbase = r.num_output_tokens - self.D
        # a new block is needed at decode counter D' iff (private computed) % bs == 0
        priv0 = r.prompt_tokens - r.shared_tokens + r.dbase - 1  # private computed = priv0 + D'
        r.phase = (-priv0) % self.bs
        self.cnt[r.phase] += 1
        self.sum_pd += r.prompt_tokens + r.dbase
        self.n_dec += 1
        heapq.heappush(self.fin_heap, (r.output_len - r.dbase, r.idx, r))

    def _leave_decode(self, r: SimRequest) -> None:
        self._sync(r)
        self.cnt[r.phase] -= 1
        self.sum_pd -= r.prompt_tokens + r.dbase
        self.n_dec -= 1
        r.state = PREFILL  # caller sets the final state

    def _hold_back(self, r: SimRequest) -> None:
        """A decoder that was not scheduled this step: it does not advance with D."""
        self.cnt[r.phase] -= 1
        r.dbase -= 1
        r.phase = (r.phase + 1) % self.bs
        self.cnt[r.phase] += 1
        self.sum_pd -= 1
        heapq.heappush(self.fin_heap, (r.output_len - r.dbase, r.idx, r))

    # ---------------------------------------------------------------- blocks
    def _blocks_for(self, r: SimRequest, tokens: int) -> int:
        """Private blocks ``r`` needs to hold ``tokens`` computed tokens."""
        return -(-(tokens - r.shared_tokens) // self.bs)

    def _release(self, r: SimRequest, cache_own: bool) -> None:
        """Free ``r``'s KV in vLLM's order (``BlockPool.free_blocks``): blocks without a
        hash (the partial tail block) go to the front of the free queue and are reused
        first; the request's full blocks, hashed as they filled, go to the LRU tail, tail
        block first (kept as its own cache for re-admission if ``cache_own``, else
        anonymous: nothing else shares them), then its shared prefix segments."""
        kv = self.kv
        if not self.cfg.enable_prefix_caching:
            kv.free += r.blocks
        else:
            full = max(min((r.num_computed_tokens - r.shared_tokens) // self.bs, r.blocks), 0)
            kv.free += r.blocks - full
            if cache_own:
                kv.cache(("r", r.idx), full)
            else:
                self._cache_anonymous(full)
        r.blocks = 0
        for h in reversed(r.shared_segs):
            seg = kv.shared[h]
            seg[0] -= 1
            if seg[0] == 0:
                del kv.shared[h]
                kv.cache(h, seg[1])
        r.pre_shared = r.shared_tokens
        r.shared_segs = []
        r.shared_tokens = 0

    def _cache_anonymous(self, blocks: int, *, evict_first: bool = False) -> None:
        """Cached blocks no lookup finds by a request's or a segment's name (a freed run, a
        dropped duplicate copy, an unusable rest) join the LRU queue under a fresh name;
        ``evict_first`` puts them at its head, to be evicted before anything else."""
        self._anon += 1
        key = ("x", self._anon)
        self.kv.cache(key, blocks)
        if evict_first and blocks > 0:
            self.kv.evictable.move_to_end(key, last=False)

    def _register_segments(self, r: SimRequest, upto: int) -> None:
        """Turn prompt segments with hash ids that are fully computed once ``r`` holds
        ``upto`` tokens into shared cache entries. Called when a chunk is scheduled, as
        vLLM's ``KVCacheManager.allocate_slots`` caches the blocks of the tokens it
        allocates for (``cache_blocks``): lookups later in the same step hit them.

        A segment whose leading blocks ``r`` hit (its tail had been evicted) is completed
        with the blocks ``r`` computed for the rest, as vLLM's ``cache_full_blocks`` hashes
        them: later lookups hit the whole segment again."""
        hs = r.hash_ids
        if not hs:
            return
        kv, H, sb, bs = self.kv, self.cfg.hash_block_tokens, self.seg_blocks, self.bs
        k = len(r.shared_segs)
        limit = min(upto, r.prompt_tokens)
        if k and r.shared_tokens < k * H and k * H <= limit:
            last = kv.shared[r.shared_segs[-1]]
            mine = k * sb - r.shared_tokens // bs  # the blocks of it that r computed
            if last[1] < sb:  # r completes it
                assert last[1] + mine == sb
                last[1] = sb
            else:  # another holder completed it first: our copy is dropped
                self._cache_anonymous(mine)
            r.blocks -= mine
            r.shared_tokens = k * H
        while k < len(hs) and (k + 1) * H <= limit:
            h = hs[k]
            seg = kv.shared.get(h)
            part = kv.evictable.get(h, 0) if seg is None else 0
            if seg is not None and seg[1] < sb:
                # a holder is still computing its evicted tail: our blocks complete it
                seg[0] += 1
                self._cache_anonymous(seg[1])  # our copy of its cached blocks
                seg[1] = sb
            elif seg is not None or part == sb:
                if seg is not None:
                    seg[0] += 1
                else:
                    kv.shared[h] = [1, kv.uncache(h)]
                self._cache_anonymous(sb)  # our duplicate copy is dropped
            else:
                if part:
                    # a partly evicted stale copy (nearest eviction): ours is the segment
                    kv.uncache(h)
                    self._cache_anonymous(part, evict_first=True)
                kv.shared[h] = [1, sb]
            r.blocks -= sb
            r.shared_segs.append(h)
            r.shared_tokens += H
            k += 1

    def _cached_estimate(self, r: SimRequest) -> int:
        """Prompt tokens a prefix-cache lookup would hit now: what the policy sees as
        ``cached_tokens`` while ``r`` waits (the vLLM adapter refreshes the same estimate
        whenever a request is (re)queued); admission then records the real hit."""
        if not self.cfg.enable_prefix_caching:
            return 0
        _, seg_blocks, own, _ = self._prefix_hit(r)
        return min((seg_blocks + own) * self.bs, r.prompt_tokens)

    def _prefix_hit(self, r: SimRequest) -> tuple[list[int], int, int, int]:
        """(shared segments hit, blocks hit in them, own cached blocks hit, blocks among
        them now evictable).

        Block-granular like vLLM's ``FullAttentionManager.find_longest_cache_hit``, which
        walks the request's chained block hashes and stops at the first miss: LRU
        eviction takes a cached segment's blocks tail first, so a partly evicted segment
        still hits its remaining leading blocks (the lookup then stops there)."""
        kv, H, bs, sb = self.kv, self.cfg.hash_block_tokens, self.bs, self.seg_blocks
        cap = (r.num_tokens - 1) // bs * bs  # vLLM always recomputes at least one token
        segs: list[int] = []
        got = evictable = 0
        if not self.cfg.enable_prefix_caching:
            return segs, 0, 0, 0
        for h in r.hash_ids:
            if (len(segs) + 1) * H > cap or (len(segs) + 1) * H > r.prompt_tokens:
                break
            seg = kv.shared.get(h)
            if seg is not None:
                n = seg[1]
            else:
                n = kv.evictable.get(h, 0)
                evictable += n
            if n == 0:
                break
            segs.append(h)
            got += n
            if n < sb:
                break  # its tail blocks were evicted: the hash chain ends inside it
        own = 0
        if r.num_preemptions and got * bs == r.pre_shared:
            own = kv.evictable.get(("r", r.idx), 0)
            own = min(own, (cap - got * bs) // bs)
            evictable += own
        return segs, got, own, evictable

    # ---------------------------------------------------------------- preemption
    def _preempt(self, r: SimRequest) -> None:
        self.counters["preemptions"] += 1
        self._preempted_this_step += 1
        if r.state == DECODE:
            self._leave_decode(r)
        else:
            self.prefillers.pop(r, None)
        del self.running[r]
        if self.cfg.preemption_mode == "swap":
            r.swapped_tokens = r.num_computed_tokens
            self._swap_ms += r.swapped_tokens * self.cfg.swap_ms_per_token
            self.counters["swaps"] += 1
            self._release(r, cache_own=False)
        else:
            r.lost_computed = r.num_computed_tokens
            self._release(r, cache_own=True)
        r.num_computed_tokens = 0
        r.num_preemptions += 1
        self.records.preemptions[r.idx] += 1
        r.state = WAITING
        self.n_waiting += 1
        self.policy.on_preempt(r, self.now)
        if self.sink is not None:
            self.sink.on_preempt(r, self.now)
        r.cached_tokens = self._cached_estimate(r)
        self.policy.requeue(r, self.now)

    # ---------------------------------------------------------------- one step
    def _step(self) -> str | None:
        """Run one iteration. Returns why admission stopped when the step was pure
        decode with nothing left to admit (the engine may then jump ahead), else None."""
        if self.source is not None:
            self._check_policy()
        pol, kv, bs, now = self.policy, self.kv, self.bs, self.now
        budget = self.cfg.max_num_batched_tokens
        self._preempted_this_step = 0
        self._swap_ms = 0.0
        self._step_order = None
        cap = None
        if pol.caps_decode:
            for r in self.running:  # the cap reads decode progress: materialise it
                self._sync(r)
            cap = pol.decode_cap(list(self.running), now)
        B = self.n_dec
        need_dec = self.cnt[self.D % bs] if B else 0
        chunks: list[tuple[SimRequest, int]] = []
        fast = cap is None or cap >= B
        if fast:
            demand = B
            need = need_dec
            for r in self.prefillers:
                n = r.num_tokens - r.num_computed_tokens
                demand += n
                need += self._blocks_for(r, r.num_computed_tokens + n) - r.blocks
            fast = demand <= budget and need <= kv.available
        held: list[SimRequest] = []
        if fast:
            kv.take(need_dec)
            for r in self.prefillers:
                n = r.num_tokens - r.num_computed_tokens
                extra = self._blocks_for(r, r.num_computed_tokens + n) - r.blocks
                kv.take(extra)
                r.blocks += extra
                chunks.append((r, n))
                self._register_segments(r, r.num_computed_tokens + n)
            budget -= B
            for _, n in chunks:
                budget -= n
            dec_batch = B
            dec_ctx = self.sum_pd + B * self.D
        else:
            budget, dec_batch, dec_ctx, held = self._slow_running(budget, cap, chunks)
        # -- admissions (vLLM: only in steps without preemption)
        blocked: str | None = None
        if self._preempted_this_step == 0:
            blocked, budget = self._admit_waiting(budget, chunks)
        # -- execute
        n_prefill = 0
        for r, n in chunks:
            if r.num_output_tokens > 0 and r.num_tokens - r.num_computed_tokens == 1:
                dec_batch += 1
                dec_ctx += r.num_tokens
            else:
                n_prefill += n
        dt = self.model.step_s(n_prefill, dec_batch, dec_ctx) + self._swap_ms / 1000.0
        self.now = now = now + dt
        self.counters["steps"] += 1
        self.D += 1
        finished_before = self.finished
        for r in held:
            self._hold_back(r)
        for r, n in chunks:
            r.num_computed_tokens += n
            if r.state == PREFILL:
                r.prefill_tokens_done += n
            if r.num_computed_tokens == r.num_tokens:
                self.prefillers.pop(r, None)
                self._sampled(r, now)
        self._finish_due(now)
        if self.sink is not None:
            self.sink.on_step(StepStats(
                now=now, step_time_s=dt, prefill_tokens=n_prefill, decode_requests=dec_batch,
                running=len(self.running), waiting=self.n_waiting,
                kv_usage=kv.used / kv.total, preempted=self._preempted_this_step,
                policy_version=self._policy_obj.version if self._policy_obj else 0,
                decode_context=dec_ctx))
        self._sample()
        # a finish in this step may have made room: let the next step try to admit.
        # A policy with a prefix probe re-reads the cache each round it is asked for its
        # head (vLLM calls ``peek_request`` every step; tailwise re-probes round-robin),
        # so its queue order may change in any step: no skipping while requests wait.
        if (blocked is not None and not self.prefillers and self.n_dec
                and self.finished == finished_before
                and self._preempted_this_step == 0 and not pol.caps_decode
                and not (pol.uses_prefix_probe and self.n_waiting)):
            return blocked
        return None

    def _slow_running(self, budget: int, cap: int | None,
                      chunks: list[tuple[SimRequest, int]]) -> tuple[int, int, int, list[SimRequest]]:
        """The running pass in policy order, with preemption from the tail."""
        kv, now = self.kv, self.now
        for r in self.running:
            self._sync(r)
        order = cast(list[SimRequest], self.policy.order_running(list(self.running), now))
        if len(order) != len(self.running) or len(set(order)) != len(order) or any(
                r not in self.running for r in order):
            # a policy must return a permutation; never let a bad one corrupt the engine
            self.counters["bad_running_order"] = self.counters.get("bad_running_order", 0) + 1
            order = list(self.running)
        scheduled_dec: set[SimRequest] = set()
        dec_batch = dec_ctx = 0
        i = 0
        while i < len(order) and budget > 0:
            r = order[i]
            if r.state == DECODE:
                if cap is not None and dec_batch >= cap:
                    i += 1
                    continue
                n = 1
            else:
                n = min(r.num_tokens - r.num_computed_tokens, budget)
            need = self._blocks_for(r, r.num_computed_tokens + n) - r.blocks
            preempted_self = False
            while need > kv.available:
                victim = order.pop()
                # victims come from beyond position i, which nothing has scheduled yet
                assert victim not in scheduled_dec
                self._preempt(victim)
                if victim is r:
                    preempted_self = True
                    break
            if preempted_self:
                break
            kv.take(need)
            if r.state == DECODE:
                r.blocks += need
                scheduled_dec.add(r)
                dec_batch += 1
                dec_ctx += r.num_tokens
            else:
                r.blocks += need
                chunks.append((r, n))
                self._register_segments(r, r.num_computed_tokens + n)
            budget -= n
            i += 1
        self._step_order = order
        held = [r for r in self.running if r.state == DECODE and r not in scheduled_dec]
        return budget, dec_batch, dec_ctx, held

    def _admit_waiting(self, budget: int, chunks: list[tuple[SimRequest, int]]) -> tuple[str | None, int]:
        pol, kv, bs, now = self.policy, self.kv, self.bs, self.now
        while True:
            if budget <= 0:
                return "budget", budget
            if len(self.running) >= self.cfg.max_num_seqs:
                return "seqs", budget
            head = pol.peek(now)
            if head is None:
                return "empty", budget
            assert isinstance(head, SimRequest)
            r = head
            wm = self.watermark_blocks if self.running else 0
            if self.running and not pol.admission_allowed(kv.available, r.num_tokens,
                                                          self.n_dec, bs):
                self.counters["paced_admissions"] = self.counters.get("paced_admissions", 0) + 1
                return "kv", budget
            if r.swapped_tokens:
                restore = r.swapped_tokens
                full = -(-r.num_tokens // bs)
                if full + wm > kv.available:
                    return "kv", budget
                got = pol.pop(now)
                assert got is r, "peek/pop disagree"
                kv.take(-(-restore // bs))
                r.blocks = -(-restore // bs)
                r.num_computed_tokens = restore
                self._swap_ms += restore * self.cfg.swap_ms_per_token
                r.swapped_tokens = 0
                n = min(r.num_tokens - restore, budget)
                extra = self._blocks_for(r, restore + n) - r.blocks
                kv.take(extra)
                r.blocks += extra
                hit = 0
            else:
                segs, seg_blocks, own, ev = self._prefix_hit(r)
                shared_hit = seg_blocks * bs
                hit = shared_hit + own * bs
                full_new = -(-(r.num_tokens - shared_hit) // bs) - own
                if full_new + ev + wm > kv.available:
                    return "kv", budget
                got = pol.pop(now)
                assert got is r, "peek/pop disagree"
                for h in segs:
                    seg = kv.shared.get(h)
                    if seg is None:
                        kv.shared[h] = [1, kv.uncache(h)]
                    else:
                        seg[0] += 1
                r.shared_segs = list(segs)
                r.shared_tokens = shared_hit
                # own cached blocks: `own` are reused; an unusable rest is evicted first
                rest = kv.uncache(("r", r.idx)) - own
                if rest:
                    self._cache_anonymous(rest, evict_first=True)
                r.blocks = own
                r.num_computed_tokens = hit
                # the policy sees the real hit from now on (the waiting estimate may be
                # stale), as the vLLM adapter sets it at every (re)admission
                r.cached_tokens = min(hit, r.prompt_tokens)
                if r.num_preemptions:
                    wasted = max(r.lost_computed - hit, 0)
                    self.records.wasted_tokens[r.idx] += wasted
                else:
                    self.records.cached_tokens[r.idx] = r.cached_tokens
                n = min(r.num_tokens - hit, budget)
                extra = self._blocks_for(r, hit + n) - r.blocks
                kv.take(extra)
                r.blocks += extra
            self.n_waiting -= 1
            r.state = PREFILL
            r.last_admit_time = now
            if math.isnan(self.records.first_scheduled[r.idx]):
                self.records.first_scheduled[r.idx] = now
            self.running[r] = None
            self.prefillers[r] = None
            chunks.append((r, n))
            self._register_segments(r, r.num_computed_tokens + n)
            budget -= n
            pol.on_admit(r, now)

    def _sampled(self, r: SimRequest, now: float) -> None:
        """``r`` completed its prefill/recompute in this step and sampled a token."""
        r.num_output_tokens += 1
        if r.first_token_time is None:
            r.first_token_time = now
            self.records.first_token[r.idx] = now
            self.policy.on_first_token(r, now)
            if self.sink is not None:
                self.sink.on_first_token(r, now)
        if r.num_output_tokens >= r.output_len:
            self._finish(r, now)
        else:
            self._join_decode(r)

    def _finish_due(self, now: float) -> None:
        heap, D = self.fin_heap, self.D
        due: list[SimRequest] = []
        while heap and heap[0][0] <= D:
            key, _, r = heapq.heappop(heap)
            if r.state != DECODE or r.output_len - r.dbase != key:
                continue  # stale entry (held back or left decode)
            due.append(r)
        if len(due) > 1:
            # vLLM frees a step's finished requests in its scheduling order (the
            # SchedulerOutput's num_scheduled_tokens: the running list, in admission order
            # unless the policy ranked it this step), each tail block first: that order
            # decides whose cached prefix the LRU queue evicts first
            order = self._step_order if self._step_order is not None else self.running
            pos = {r: i for i, r in enumerate(order)}
            due.sort(key=lambda r: pos.get(r, len(pos)))
        for r in due:
            self._leave_decode(r)
            self._finish(r, now)

    def _finish(self, r: SimRequest, now: float) -> None:
        self.running.pop(r, None)
        self.prefillers.pop(r, None)
        r.num_output_tokens = r.output_len
        self._release(r, cache_own=False)
        r.state = DONE
        self.records.finish[r.idx] = now
        self.finished += 1
        self.policy.on_finish(r, now)
        if self.sink is not None:
            self.sink.on_finish(r, now)

    def _sample(self, force: bool = False) -> None:
        if force or self.now - self._last_sample >= self.cfg.sample_every_s:
            self._last_sample = self.now
            self.ts_t.append(self.now)
            self.ts_kv.append(self.kv.used / self.kv.total)
            self.ts_wait.append(float(self.n_waiting))
            self.ts_run.append(float(len(self.running)))
            env = self.policy.envelope(self.now)
            self.ts_env.append(math.nan if env is None else env.bound_s)
            self.ts_oldest.append(math.nan if env is None else env.oldest_wait_s or 0.0)

    # ---------------------------------------------------------------- event skipping
    def _valid_fin_top(self) -> int | None:
        heap = self.fin_heap
        while heap:
            key, _, r = heap[0]
            if r.state == DECODE and r.output_len - r.dbase == key:
                return key
            heapq.heappop(heap)
        return None

    def _maybe_jump(self, blocked: str) -> None:
        """Skip a run of pure-decode steps in which nothing can change."""
        B = self.n_dec
        fin = self._valid_fin_top()
        if B == 0 or fin is None:
            return
        k = fin - self.D  # steps until (and including) the next finish
        if k <= 1:
            return
        # KV: blocks needed over the next k steps must fit without preemption
        bs, cnt, D = self.bs, self.cnt, self.D
        avail = self.kv.available
        cycles = min(avail // B, k // bs + 1)
        rem = avail - cycles * B
        j = 0
        while j < bs and cnt[(D + j) % bs] <= rem:
            rem -= cnt[(D + j) % bs]
            j += 1
        k = min(k, cycles * bs + j)
        # time: step j costs a + c·B·j (ms); stop before the next arrival / quantum
        m = self.model
        a = m.decode_fixed_ms + m.decode_per_req_ms * B + m.decode_per_ctx_ms * (
            self.sum_pd + B * D)
        c = m.decode_per_ctx_ms * B
        horizon = math.inf
        if self._fleet_next is not None:
            horizon = self._fleet_next
        elif self.next_arrival < len(self._arr):
            horizon = self._arr[self.next_arrival]
        if self.policy.time_dependent and self.n_waiting:
            horizon = min(horizon, self.now + 0.25)
        if horizon < math.inf:
            # largest k with now + T(k−1) < horizon, T(x) = a·x + c·x(x−1)/2 (ms)
            budget_ms = (horizon - self.now) * 1000.0
            if budget_ms <= 0:
                return
            if c > 0:
                x = (-(a - c / 2) + math.sqrt((a - c / 2) ** 2 + 2 * c * budget_ms)) / c
            else:
                x = budget_ms / a
            steps = int(x)
            while steps > 0 and a * steps + c * steps * (steps - 1) / 2 >= budget_ms:
                steps -= 1
            while a * (steps + 1) + c * (steps + 1) * steps / 2 < budget_ms:
                steps += 1
            k = min(k, steps + 1)
        if k <= 1:
            return
        total_ms = a * k + c * k * (k - 1) / 2
        ctx0 = self.sum_pd + B * D
        blocks = (k // bs) * B + sum(cnt[(D + j) % bs] for j in range(k % bs))
        self.kv.take(blocks)
        self.now += total_ms / 1000.0
        self.D += k
        self.counters["steps"] += k
        self.counters["skipped_steps"] += k
        self.counters["jumps"] += 1
        self._step_order = None  # pure-decode steps that all fit: vLLM does not rank them
        self._finish_due(self.now)
        if self.sink is not None:
            self.sink.on_step(StepStats(
                now=self.now, step_time_s=total_ms / 1000.0, prefill_tokens=0,
                decode_requests=B, running=len(self.running), waiting=self.n_waiting,
                kv_usage=self.kv.used / self.kv.total, preempted=0,
                policy_version=self._policy_obj.version if self._policy_obj else 0,
                decode_context=ctx0, steps=k))
        self._sample()

    # ---------------------------------------------------------------- invariants
    def check_invariants(self) -> None:
        """KV accounting balances and every request is in exactly one place."""
        kv = self.kv
        private = 0
        for r in self.running:
            self._sync(r)
            expect = self._blocks_for(r, r.num_computed_tokens)
            if r.blocks < expect:
                raise AssertionError(f"request {r.request_id}: holds {r.blocks} blocks, "
                                     f"needs {expect}")
            private += r.blocks
        refs: dict[int, int] = {}
        for r in self.running:
            for h in r.shared_segs:
                refs[h] = refs.get(h, 0) + 1
        if refs != {h: s[0] for h, s in kv.shared.items()}:
            raise AssertionError("shared segment refcounts do not match holders")
        shared_blocks = sum(s[1] for s in kv.shared.values())
        if kv.evictable_total != sum(kv.evictable.values()):
            raise AssertionError("evictable total out of sync")
        if private + shared_blocks + kv.free + kv.evictable_total != kv.total:
            raise AssertionError(
                f"blocks: private {private} + shared {shared_blocks} + free {kv.free} + "
                f"evictable {kv.evictable_total} != total {kv.total}")
        if min(kv.free, kv.evictable_total) < 0:
            raise AssertionError("negative free/evictable blocks")
        if len(self.running) > self.cfg.max_num_seqs:
            raise AssertionError("more running requests than max_num_seqs")
        dec = sum(1 for r in self.running if r.state == DECODE)
        if dec != self.n_dec or sum(self.cnt) != dec:
            raise AssertionError("decoder aggregates out of sync")
        if len(self.policy) != self.n_waiting:
            raise AssertionError(f"waiting count {self.n_waiting} != policy queue {len(self.policy)}")


def simulate(trace: Trace, scheduler: QueueDiscipline, config: EngineConfig | None = None,
             model: StepTimeModel = H100_LLAMA3_8B, **kwargs: Any) -> SimResult:
    """Replay ``trace`` through one engine with ``scheduler``; see :class:`Simulator`."""
    return Simulator(trace, scheduler, config or EngineConfig(), model, **kwargs).run()

"""vLLM in the loop: replay a trace through vLLM's *real* scheduler on a virtual clock.

``tailwise simulate --engine vllm`` runs each policy through :func:`run_vllm` instead of
the built-in simulator. The scheduler is vLLM's own ``Scheduler`` + ``KVCacheManager``
(our :class:`~tailwise.engine_adapter.vllm.TailwiseScheduler` subclass, which is stock vLLM for
FCFS), driven the way vLLM's own tests drive it on CPU: fake ``ModelRunnerOutput``s (one
sampled token for every request whose prompt is complete after the step), no model, no
GPU. Time is virtual: each step advances the clock by
``StepTimeModel.step_s(prefill tokens, decode requests, decode context)`` computed from
the SchedulerOutput, exactly the simulator's cost model, so the two engines differ only
in scheduling semantics. The result is a :class:`tailwise.simulator.engine.SimResult`, summarised
by :mod:`tailwise.simulator.metrics` like any simulator run.

Mapping of :class:`~tailwise.simulator.engine.EngineConfig`: ``num_gpu_blocks`` usable blocks
(vLLM reserves one more as its null block), ``block_size``, ``max_num_seqs``,
``max_num_batched_tokens``, ``enable_prefix_caching``, ``watermark``; chunked prefill on,
``max_model_len`` = the KV capacity. Requests whose prompt + output cannot fit in the KV
cache are rejected up front (as the simulator does). Prompts are synthetic token ids
built so that prefix caching sees exactly the sharing the trace describes: Mooncake
``hash_ids`` segments (``hash_block_tokens`` each) are identical across requests that
share them, everything else is unique to its request. Outputs are exactly the trace's
lengths (``max_tokens``, EOS ignored). Only recompute preemption exists in vLLM v1.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tailwise.lab.experiment import Arm
from tailwise.records.requests import RequestRecords
from tailwise.records.trace import Trace
from tailwise.scorer.interface import QueueDiscipline
from tailwise.scorer.request import ReqInfo
from tailwise.scorer.step_time import StepTimeModel
from tailwise.simulator.engine import EngineConfig, EngineConfigError, SimResult

#: the scheduler needs a model config; this one never has weights
TINY_MODEL_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "num_hidden_layers": 2,
    "vocab_size": 1024,
    "max_position_embeddings": 1 << 22,
    "rms_norm_eps": 1e-5,
    "torch_dtype": "float32",
    "bos_token_id": 1,
    "eos_token_id": 2,
}
_SAMPLED_TOKEN = 5
_SEGMENT_MARK, _REQUEST_MARK, _FILL = 1021, 1022, 7


class HarnessError(RuntimeError):
    """The replay cannot continue (vLLM scheduled nothing while requests wait)."""


@dataclass
class _Clock:
    t: float = 0.0

    def __call__(self) -> float:
        return self.t


@dataclass
class _ModelDir:
    """A temp dir holding only :data:`TINY_MODEL_CONFIG`, made once per process."""

    path: Path | None = None

    def get(self) -> Path:
        if self.path is None:
            d = Path(tempfile.mkdtemp(prefix="tailwise-harness-model-"))
            (d / "config.json").write_text(json.dumps(TINY_MODEL_CONFIG))
            atexit.register(shutil.rmtree, d, True)
            self.path = d
        return self.path


_MODEL_DIR = _ModelDir()


def make_vllm_scheduler(
    config: EngineConfig,
    *,
    scheduler_cls: Any = None,
    max_model_len: int | None = None,
    **scheduler_kwargs: Any,
) -> Any:
    """A vLLM scheduler (default: ``TailwiseScheduler``) configured like ``config``.

    ``scheduler_kwargs`` go to the scheduler (``policy_source``, ``telemetry_sink``,
    ``scheduling_policy``, ``clock``, ... for the tailwise classes).
    """
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")  # the scheduler never needs a GPU
    from vllm.config import CacheConfig, ModelConfig, SchedulerConfig, VllmConfig
    from vllm.v1.structured_output import StructuredOutputManager

    from tailwise.engine_adapter.vllm import TailwiseScheduler

    config.validate()
    if config.preemption_mode != "recompute":
        raise EngineConfigError(
            f"preemption_mode must be 'recompute' for the vLLM engine (vLLM v1 has no swap), "
            f"got {config.preemption_mode!r}"
        )
    cls = scheduler_cls if scheduler_cls is not None else TailwiseScheduler
    kv_tokens = config.num_gpu_blocks * config.block_size
    max_len = min(max_model_len or kv_tokens, kv_tokens)
    model_config = ModelConfig(
        model=str(_MODEL_DIR.get()),
        skip_tokenizer_init=True,
        dtype="float32",
        seed=0,
        max_model_len=max_len,
    )
    scheduler_config = SchedulerConfig(
        max_num_seqs=config.max_num_seqs,
        max_num_batched_tokens=config.max_num_batched_tokens,
        max_model_len=max_len,
        enable_chunked_prefill=True,
        is_encoder_decoder=False,
        watermark=config.watermark,
        async_scheduling=False,
    )
    cache_config = CacheConfig(
        block_size=config.block_size, enable_prefix_caching=config.enable_prefix_caching
    )
    vllm_config = VllmConfig(
        scheduler_config=scheduler_config, model_config=model_config, cache_config=cache_config
    )
    num_blocks = config.num_gpu_blocks + 1  # + vLLM's null block
    cache_config.num_gpu_blocks = num_blocks
    return cls(
        vllm_config=vllm_config,
        kv_cache_config=block_only_kv_cache(num_blocks, config.block_size),
        structured_output_manager=StructuredOutputManager(vllm_config),
        block_size=config.block_size,
        log_stats=False,
        **scheduler_kwargs,
    )


def block_only_kv_cache(num_blocks: int, block_size: int) -> Any:
    """vLLM's ``KVCacheConfig`` for ``num_blocks`` blocks in one full-attention group and no
    tensors: all a scheduler needs, since it only counts blocks."""
    import torch
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec

    return KVCacheConfig(
        num_blocks=num_blocks,
        kv_cache_tensors=[],
        kv_cache_groups=[
            KVCacheGroupSpec(
                ["layer"],
                FullAttentionSpec(block_size=block_size, num_kv_heads=1, head_size=1,
                                  dtype=torch.float32),
            )
        ],
    )


def prompt_token_ids(
    idx: int, length: int, hash_ids: tuple[int, ...], hash_block_tokens: int
) -> list[int]:
    """Token ids whose prefix-cache sharing is exactly the trace's.

    A block hash chains over all earlier blocks, so making the *first* block of each
    segment distinct is enough: ``hash_ids`` segments start with the segment's id, the
    request's own tail starts with the request index, the rest is filler.

    >>> a = prompt_token_ids(0, 40, (9, 4), 16)
    >>> b = prompt_token_ids(1, 40, (9, 5), 16)
    >>> a[:16] == b[:16], a[16:32] == b[16:32]
    (True, False)
    """
    out: list[int] = []
    for h in hash_ids:
        if len(out) >= length:
            break
        seg = [_FILL] * hash_block_tokens
        seg[0] = _SEGMENT_MARK
        seg[1:5] = _digits(h)
        out.extend(seg)
    if len(out) < length:
        tail = [_FILL] * (length - len(out))
        head = [_REQUEST_MARK, *_digits(idx)][: len(tail)]
        tail[: len(head)] = head
        out.extend(tail)
    return out[:length]


def _digits(x: int) -> list[int]:
    """Four base-1000 digits (token ids 8..1007) of ``x`` (mod 1000**4)."""
    x %= 1000**4
    return [8 + (x // 1000**k) % 1000 for k in range(4)]


def _harness_class() -> Any:
    """TailwiseScheduler that hands oracle fields (true output length) to policies."""
    from tailwise.engine_adapter.vllm import TailwiseScheduler

    class HarnessScheduler(TailwiseScheduler):
        harness_true_output: dict[str, int] = {}  # noqa: RUF012 - replaced per instance

        def _tw_new_info(self, request: Any) -> ReqInfo:
            info = super()._tw_new_info(request)
            info.true_output_tokens = self.harness_true_output.get(request.request_id)
            return info

    return HarnessScheduler


def run_vllm(
    trace: Trace,
    arm: Arm,
    config: EngineConfig,
    model: StepTimeModel,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> SimResult:
    """Replay ``trace`` through vLLM's scheduler with ``arm``'s policy; see the module doc.

    Same signature as :func:`tailwise.lab.experiment.builtin_runner` (a ``Runner``). With
    ``arm.source`` the adapter follows that source (adaptive policies; ``arm.sink`` gets
    the telemetry); otherwise ``arm.scheduler`` is pinned (FCFS = stock vLLM).
    """
    from vllm.sampling_params import SamplingParams
    from vllm.utils.hashing import sha256
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
    from vllm.v1.outputs import ModelRunnerOutput
    from vllm.v1.request import Request

    t_wall = time.perf_counter()
    clock = _Clock()
    kwargs: dict[str, Any] = {"clock": clock}
    if arm.source is not None:
        kwargs["policy_source"] = arm.source
    else:
        kwargs["scheduling_policy"] = arm.scheduler
    if arm.sink is not None:
        kwargs["telemetry_sink"] = arm.sink
    sched = make_vllm_scheduler(config, scheduler_cls=_harness_class(), **kwargs)
    n = len(trace)
    arrival = trace.arrival_s.tolist()
    prompt = trace.prompt_tokens.tolist()
    output = trace.output_tokens.tolist()
    sched.harness_true_output = {str(i): int(o) for i, o in enumerate(output)}
    hash_ids = trace.hash_ids if config.enable_prefix_caching else None
    init_none_hash(sha256)
    hasher = get_request_block_hasher(config.block_size, sha256)
    recs = RequestRecords.empty(trace)
    counters: dict[str, int] = {"steps": 0, "preemptions": 0, "rejected": 0, "empty_steps": 0}
    ts: dict[str, list[float]] = {"t": [], "kv_usage": [], "waiting": [], "running": []}
    policy_changes: list[tuple[float, int]] = []
    last_policy: Any = None
    lost: dict[str, int] = {}  # computed tokens held at the last preemption
    computed: dict[str, int] = {}
    finished = 0
    nxt = 0
    last_sample = -math.inf
    report_every = max(n // 100, 1)
    last_report = 0

    def sample(force: bool = False) -> None:
        nonlocal last_sample
        if force or clock.t - last_sample >= config.sample_every_s:
            last_sample = clock.t
            running, waiting = sched.get_request_counts()
            ts["t"].append(clock.t)
            ts["kv_usage"].append(float(sched.kv_cache_manager.usage))
            ts["waiting"].append(float(waiting))
            ts["running"].append(float(running))

    while finished < n:
        # arrivals up to now (rejecting what can never fit, like the simulator)
        while nxt < n and arrival[nxt] <= clock.t:
            i, nxt = nxt, nxt + 1
            if -(-(prompt[i] + output[i]) // config.block_size) > config.num_gpu_blocks:
                recs.rejected[i] = True
                counters["rejected"] += 1
                finished += 1
                continue
            params = SamplingParams(max_tokens=int(output[i]), ignore_eos=True)
            hids = tuple(hash_ids[i]) if hash_ids is not None else ()
            tokens = prompt_token_ids(i, int(prompt[i]), hids, config.hash_block_tokens)
            sched.add_request(
                Request(
                    request_id=str(i),
                    prompt_token_ids=tokens,
                    sampling_params=params,
                    pooling_params=None,
                    arrival_time=float(arrival[i]),
                    block_hasher=hasher,
                )
            )
        if not sched.has_unfinished_requests():
            if nxt >= n:
                break
            clock.t = max(clock.t, arrival[nxt])
            continue

        now = clock.t
        out = sched.schedule()
        policy = sched.tailwise_policy
        if policy is not last_policy and policy is not None:
            policy_changes.append((now, policy.version))
            last_policy = policy
        for rid in out.preempted_req_ids or ():
            counters["preemptions"] += 1
            recs.preemptions[int(rid)] += 1
            lost[rid] = computed.get(rid, 0)
        num_sched = out.num_scheduled_tokens
        for new in out.scheduled_new_reqs:
            i = int(new.req_id)
            if math.isnan(recs.first_scheduled[i]):
                recs.first_scheduled[i] = now
            recs.cached_tokens[i] = min(new.num_computed_tokens, prompt[i])
        for rid in out.scheduled_cached_reqs.resumed_req_ids:
            hit = sched.requests[rid].num_computed_tokens - num_sched[rid]
            recs.wasted_tokens[int(rid)] += max(lost.pop(rid, 0) - hit, 0)
        prefill = decodes = context = 0
        req_ids = list(num_sched)
        sampled: list[list[int]] = []
        for rid in req_ids:
            req = sched.requests[rid]
            k = num_sched[rid]
            computed[rid] = req.num_computed_tokens
            if req.num_computed_tokens - k >= req.num_tokens - 1:
                decodes += 1
                context += req.num_tokens
            else:
                prefill += k
            sampled.append([] if req.is_prefill_chunk else [_SAMPLED_TOKEN])
        if not req_ids:
            counters["empty_steps"] += 1
            if nxt >= n:
                raise HarnessError(
                    f"vLLM scheduled nothing with {sched.get_num_unfinished_requests()} "
                    "requests unfinished and no arrivals left"
                )
            clock.t = max(clock.t, arrival[nxt])
            sched.update_from_output(out, ModelRunnerOutput(req_ids=[], req_id_to_index={}))
            continue
        clock.t = now + model.step_s(prefill, decodes, context)
        counters["steps"] += 1
        mro = ModelRunnerOutput(
            req_ids=req_ids,
            req_id_to_index={rid: j for j, rid in enumerate(req_ids)},
            sampled_token_ids=sampled,
        )
        reqs = [sched.requests[rid] for rid in req_ids]
        sched.update_from_output(out, mro)
        for rid, req, toks in zip(req_ids, reqs, sampled, strict=True):
            if not toks:
                continue
            i = int(rid)
            if math.isnan(recs.first_token[i]):
                recs.first_token[i] = clock.t
            if req.is_finished():
                recs.finish[i] = clock.t
                finished += 1
                computed.pop(rid, None)
        sample()
        if progress is not None and finished - last_report >= report_every:
            last_report = finished
            progress(finished, n)
    sample(force=True)
    if progress is not None:
        progress(finished, n)
    sched_counters: dict[str, int] = {}
    active: QueueDiscipline | None = sched.tailwise_scheduling_policy
    if active is not None:
        sched_counters = {f"policy.{k}": int(v) for k, v in active.counters.items()}
    return SimResult(
        trace=trace,
        config=config,
        model=model,
        policy_name=arm.scheduler.name,
        records=recs,
        timeseries={k: np.asarray(v, dtype=np.float64) for k, v in ts.items()},
        counters={
            **counters,
            **{f"adapter.{k}": int(v) for k, v in sched.tailwise_counters.items()},
            **sched_counters,
        },
        end_time=clock.t,
        wall_s=time.perf_counter() - t_wall,
        policy_changes=policy_changes,
    )

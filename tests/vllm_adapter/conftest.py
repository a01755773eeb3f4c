"""Shared fixtures for the real-vLLM tests: a tiny local model config, a scheduler
factory for stock vLLM and the tailwise subclasses, requests, and fake model outputs.

vLLM runs its scheduler on CPU here, with fake ModelRunnerOutputs standing in for the
model (the way vLLM's own tests/v1/core drive it). No weights are ever loaded: the model
config points at a ``config.json`` written into a temp dir. vLLM is imported lazily, so
this file loads (and the test modules skip via ``pytest.importorskip``) without vLLM.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# vLLM reads these at import time; set them before any test module imports vllm.
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

EOS = 2
BLOCK = 16

TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "num_hidden_layers": 2,
    "vocab_size": 1000,
    "max_position_embeddings": 65536,
    "rms_norm_eps": 1e-5,
    "torch_dtype": "float32",
    "bos_token_id": 1,
    "eos_token_id": EOS,
}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding only a tiny llama ``config.json`` (never any weights)."""
    d = tmp_path_factory.mktemp("tiny-llama")
    (d / "config.json").write_text(json.dumps(TINY_LLAMA))
    return d


@dataclass
class Factory:
    """Builds schedulers sharing one (cheap-to-reuse) ModelConfig."""

    model_dir: Path
    _model_config: Any = None

    def model_config(self, max_model_len: int) -> Any:
        from vllm.config import ModelConfig

        if self._model_config is None or self._model_config.max_model_len != max_model_len:
            self._model_config = ModelConfig(
                model=str(self.model_dir),
                skip_tokenizer_init=True,
                dtype="float32",
                seed=0,
                max_model_len=max_model_len,
            )
        return self._model_config

    def __call__(
        self,
        cls: type[Any] | str = "stock",
        *,
        max_num_seqs: int = 16,
        max_num_batched_tokens: int = 8192,
        max_model_len: int | None = None,
        num_blocks: int = 10_000,
        block_size: int = BLOCK,
        enable_prefix_caching: bool = True,
        long_prefill_token_threshold: int = 0,
        policy: str = "fcfs",
        async_scheduling: bool = False,
        additional_config: dict[str, Any] | None = None,
        **extra: Any,
    ) -> Any:
        """A scheduler of ``cls`` ("stock", "tailwise", or a class); ``extra`` goes to it."""
        from vllm.config import CacheConfig, SchedulerConfig, VllmConfig
        from vllm.v1.core.sched.async_scheduler import AsyncScheduler
        from vllm.v1.core.sched.scheduler import Scheduler
        from vllm.v1.structured_output import StructuredOutputManager

        from tailwise.engine_adapter.vllm import TailwiseAsyncScheduler, TailwiseScheduler
        from tailwise.lab.vllm_harness import block_only_kv_cache

        if isinstance(cls, str):
            table = {
                ("stock", False): Scheduler,
                ("stock", True): AsyncScheduler,
                ("tailwise", False): TailwiseScheduler,
                ("tailwise", True): TailwiseAsyncScheduler,
            }
            cls = table[(cls, async_scheduling)]
        if max_model_len is None:
            max_model_len = max(max_num_batched_tokens, 4096)
        scheduler_config = SchedulerConfig(
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            max_model_len=max_model_len,
            long_prefill_token_threshold=long_prefill_token_threshold,
            enable_chunked_prefill=True,
            is_encoder_decoder=False,
            policy=policy,
            async_scheduling=async_scheduling,
        )
        cache_config = CacheConfig(block_size=block_size, enable_prefix_caching=enable_prefix_caching)
        vllm_config = VllmConfig(
            scheduler_config=scheduler_config,
            model_config=self.model_config(max_model_len),
            cache_config=cache_config,
            additional_config=additional_config or {},
        )
        cache_config.num_gpu_blocks = num_blocks
        return cls(
            vllm_config=vllm_config,
            kv_cache_config=block_only_kv_cache(num_blocks, block_size),
            structured_output_manager=StructuredOutputManager(vllm_config),
            block_size=block_size,
            log_stats=True,
            **extra,
        )


@pytest.fixture(scope="session")
def make_scheduler(tiny_model_dir: Path) -> Factory:
    return Factory(tiny_model_dir)


_HASHER: list[Callable[..., Any]] = []


def block_hasher() -> Callable[..., Any]:
    from vllm.utils.hashing import sha256
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash

    if not _HASHER:
        init_none_hash(sha256)
        _HASHER.append(get_request_block_hasher(BLOCK, sha256))
    return _HASHER[0]


def make_request(
    request_id: str,
    prompt: Sequence[int] | int,
    *,
    max_tokens: int = 16,
    arrival_time: float = 0.0,
    priority: int = 0,
    stop_token_ids: list[int] | None = None,
    ignore_eos: bool = False,
    extra_args: dict[str, Any] | None = None,
) -> Any:
    """A vLLM Request; ``prompt`` is token ids or a length (tokens derived from the id)."""
    from vllm.sampling_params import SamplingParams
    from vllm.v1.request import Request

    if isinstance(prompt, int):
        seed = sum(map(ord, request_id)) % 500 + 3
        prompt = [seed + (i % 7) for i in range(prompt)]
    params = SamplingParams(
        max_tokens=max_tokens,
        stop_token_ids=stop_token_ids,
        ignore_eos=ignore_eos,
        extra_args=extra_args,
    )
    params.update_from_generation_config({}, eos_token_id=EOS)
    return Request(
        request_id=request_id,
        prompt_token_ids=list(prompt),
        sampling_params=params,
        pooling_params=None,
        arrival_time=arrival_time,
        priority=priority,
        block_hasher=block_hasher(),
    )


TokenFn = Callable[[Any], list[int]]


def default_token(request: Any) -> list[int]:
    """A deterministic non-EOS token (depends only on the request's own history)."""
    return [10 + (request.num_output_tokens + len(request.request_id)) % 50]


def fake_output(scheduler: Any, out: Any, token_fn: TokenFn = default_token) -> Any:
    """A ModelRunnerOutput for ``out``: one sampled token for each request whose prompt
    is fully computed after this step, nothing for partial prefills. Build it right
    after ``schedule()`` (before the next one) so async scheduling sees the same view."""
    from vllm.v1.outputs import ModelRunnerOutput

    req_ids = list(out.num_scheduled_tokens)
    sampled: list[list[int]] = []
    for rid in req_ids:
        req = scheduler.requests[rid]
        sampled.append([] if req.is_prefill_chunk else list(token_fn(req)))
    return ModelRunnerOutput(
        req_ids=req_ids,
        req_id_to_index={rid: i for i, rid in enumerate(req_ids)},
        sampled_token_ids=sampled,
    )


@dataclass(frozen=True)
class StepRecord:
    """What a step decided, in comparable form (the differential tests' unit)."""

    new: tuple[tuple[str, int], ...]  # (req id, computed tokens at admission), in order
    cached: tuple[str, ...]
    resumed: tuple[str, ...]
    tokens: tuple[tuple[str, int], ...]
    preempted: tuple[str, ...]
    finished: tuple[str, ...]
    running: tuple[str, ...]
    waiting: int
    kv_free_blocks: int


def record(scheduler: Any, out: Any) -> StepRecord:
    return StepRecord(
        new=tuple((r.req_id, r.num_computed_tokens) for r in out.scheduled_new_reqs),
        cached=tuple(out.scheduled_cached_reqs.req_ids),
        resumed=tuple(sorted(out.scheduled_cached_reqs.resumed_req_ids)),
        tokens=tuple(out.num_scheduled_tokens.items()),
        preempted=tuple(sorted(out.preempted_req_ids)),
        finished=tuple(sorted(out.finished_req_ids)),
        running=tuple(r.request_id for r in scheduler.running),
        waiting=len(scheduler.waiting),
        kv_free_blocks=scheduler.kv_cache_manager.block_pool.get_num_free_blocks(),
    )


def step(scheduler: Any, token_fn: TokenFn = default_token) -> tuple[Any, StepRecord]:
    """One synchronous engine step: schedule, fake model, update."""
    out = scheduler.schedule()
    rec = record(scheduler, out)
    scheduler.update_from_output(out, fake_output(scheduler, out, token_fn))
    return out, rec


def run_until_idle(
    scheduler: Any, token_fn: TokenFn = default_token, max_steps: int = 10_000
) -> list[StepRecord]:
    recs: list[StepRecord] = []
    for _ in range(max_steps):
        if not scheduler.has_unfinished_requests():
            return recs
        recs.append(step(scheduler, token_fn)[1])
    raise AssertionError(f"not idle after {max_steps} steps")


def run_async(scheduler: Any, token_fn: TokenFn = default_token, max_steps: int = 10_000) -> list[StepRecord]:
    """vLLM's async loop: step N+1 is scheduled before the output of step N is processed."""
    pending: list[tuple[Any, Any]] = []
    recs: list[StepRecord] = []
    for _ in range(max_steps):
        if not scheduler.has_unfinished_requests() and not pending:
            return recs
        out = scheduler.schedule()
        recs.append(record(scheduler, out))
        pending.append((out, fake_output(scheduler, out, token_fn)))
        # keep one step in flight; an empty step drains the pipeline (outputs in order)
        while len(pending) >= 2 or (pending and out.total_num_scheduled_tokens == 0):
            prev, mro = pending.pop(0)
            scheduler.update_from_output(prev, mro)
    raise AssertionError(f"async run not idle after {max_steps} steps")


def add_all(scheduler: Any, requests: Iterable[Any]) -> None:
    for r in requests:
        scheduler.add_request(r)


class RecordingSink:
    """A TelemetrySink that keeps every event (tests only)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, float]] = []
        self.steps: list[Any] = []
        #: output tokens each PREEMPTED event reported (what the victim had produced)
        self.preempted_tokens: list[int] = []

    def on_arrival(self, req: Any, now: float) -> None:
        self.events.append(("arrival", req.request_id, now))

    def on_first_token(self, req: Any, now: float) -> None:
        self.events.append(("first_token", req.request_id, now))

    def on_preempt(self, req: Any, now: float) -> None:
        self.events.append(("preempt", req.request_id, now))
        self.preempted_tokens.append(req.num_output_tokens)

    def on_finish(self, req: Any, now: float) -> None:
        self.events.append(("finish", req.request_id, now))

    def on_step(self, stats: Any) -> None:
        self.steps.append(stats)

    def of(self, kind: str) -> list[str]:
        return [rid for k, rid, _ in self.events if k == kind]


class MutableSource:
    """A PolicySource whose policy a test can swap (as the gRPC client does)."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def current(self) -> Any:
        return self.policy


class FakeClock:
    """An injected clock a test advances by hand."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="session")
def vh() -> Any:
    """The helpers above, as one namespace (test modules don't import conftest)."""
    import types

    return types.SimpleNamespace(
        EOS=EOS,
        BLOCK=BLOCK,
        make_request=make_request,
        fake_output=fake_output,
        default_token=default_token,
        record=record,
        step=step,
        run_until_idle=run_until_idle,
        run_async=run_async,
        add_all=add_all,
        RecordingSink=RecordingSink,
        MutableSource=MutableSource,
        FakeClock=FakeClock,
    )

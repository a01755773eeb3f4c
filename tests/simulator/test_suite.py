"""The benchmark suite: deterministic, the documented shapes, and the intended pressure."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest

from tailwise.scorer.baselines import Fcfs
from tailwise.scorer.policy import SloParams
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import EngineConfig, simulate
from tailwise.simulator.suite import (
    ENGINE_KNOBS,
    SHAPE_KNOBS,
    SUITE,
    UnknownWorkloadError,
    bounded_pareto,
    build,
    cached_offered_load,
    parse_names,
)
from tailwise.simulator.traces import TraceError
from tailwise.simulator.workload import offered_load

SMALL = 0.1


@pytest.mark.parametrize("name", SUITE)
def test_same_seed_same_workload(name: str) -> None:
    a, b = build(name, scale=SMALL), build(name, scale=SMALL)
    assert np.array_equal(a.trace.arrival_s, b.trace.arrival_s)
    assert np.array_equal(a.trace.prompt_tokens, b.trace.prompt_tokens)
    assert np.array_equal(a.trace.output_tokens, b.trace.output_tokens)
    assert a.trace.hash_ids == b.trace.hash_ids
    assert a.describe()["name"] == name and a.shape and a.why


@pytest.mark.parametrize("name", ["bursty-reasoning", "long-context-chat", "slo-mix"])
def test_seed_changes_synthetic_workloads(name: str) -> None:
    a, b = build(name, scale=SMALL, seed=0), build(name, scale=SMALL, seed=1)
    assert not np.array_equal(a.trace.output_tokens[:20], b.trace.output_tokens[:20])


def test_azure_workloads_loads_and_kv() -> None:
    code, conv = build("azure-code"), build("azure-conv")
    assert code.offered_load == pytest.approx(0.9, rel=1e-6)
    assert conv.offered_load == pytest.approx(1.1, rel=1e-6)
    assert conv.engine.num_gpu_blocks == 3000
    assert code.engine.num_gpu_blocks == 28_600


def test_bursty_reasoning_shape() -> None:
    wl = build("bursty-reasoning")
    tr = wl.trace
    assert tr.prompt_tokens.min() >= 100 and tr.prompt_tokens.max() <= 4000
    heavy = np.asarray([c == "reasoning" for c in (tr.classes or [])])
    assert 0.45 <= heavy.mean() <= 0.55
    assert tr.output_tokens[heavy].min() >= 1000 and tr.output_tokens[heavy].max() <= 16_000
    assert tr.output_tokens[~heavy].max() <= 1000
    gaps = np.diff(tr.arrival_s)
    assert 1.6 <= gaps.std() / gaps.mean() <= 2.4  # Gamma CV 2
    assert 0.95 <= wl.offered_load <= 1.05
    assert offered_load(tr, wl.engine, H100_LLAMA3_8B) == pytest.approx(wl.offered_load)


def test_bounded_pareto_is_heavy_tailed_within_bounds() -> None:
    x = bounded_pareto(np.random.default_rng(3), 1.1, 1000, 16_000, 20_000)
    assert x.min() >= 1000 and x.max() <= 16_000
    assert np.median(x) < 2500 < x.mean()  # mean far above the median: a heavy tail


def test_long_context_chat_sessions_share_prefixes() -> None:
    wl = build("long-context-chat", scale=0.3)
    tr = wl.trace
    assert tr.hash_ids is not None
    assert tr.prompt_tokens.min() >= 4000 and tr.prompt_tokens.max() <= 64_000
    seg = wl.engine.hash_block_tokens
    for ids, p in zip(tr.hash_ids, tr.prompt_tokens.tolist(), strict=True):
        assert len(ids) == p // seg
        assert ids[:4] == (0, 1, 2, 3)  # the shared system prompt
    # a later turn of a session extends an earlier one's ids
    by_first: dict[int, tuple[int, ...]] = {}
    for ids in tr.hash_ids:
        if ids[4] in by_first:
            prev = by_first[ids[4]]
            short, long_ = sorted((prev, ids), key=len)
            assert long_[:len(short)] == short
        by_first[ids[4]] = ids
    assert cached_offered_load(tr, wl.engine, H100_LLAMA3_8B) < offered_load(
        tr, wl.engine, H100_LLAMA3_8B)
    assert 0.9 <= wl.offered_load <= 0.95


def test_slo_mix_tags_every_request_with_the_policy_classes() -> None:
    wl = build("slo-mix", scale=SMALL)
    assert set(wl.trace.slo_classes or []) == {"interactive", "batch"}
    slo = SloParams()
    for c in slo.classes:
        assert wl.metrics.slo_classes[c.name] == (c.ttft_s, c.tpot_s)
    assert 1.0 <= wl.metrics.slo_classes["interactive"][0] <= 2.0


def test_bursty_reasoning_has_queueing_and_kv_pressure_under_fcfs() -> None:
    wl = build("bursty-reasoning")
    res = simulate(wl.trace, Fcfs(), wl.engine, H100_LLAMA3_8B)
    queue = res.records.first_scheduled - res.records.arrival
    assert np.nanmean(queue) > 5.0
    assert res.counters["preemptions"] > 100


def test_unknown_workload_is_a_clear_error() -> None:
    with pytest.raises(UnknownWorkloadError, match="unknown workload 'nope'"):
        build("nope")
    with pytest.raises(UnknownWorkloadError, match="unknown workload 'x'"):
        parse_names("slo-mix,x")
    assert parse_names(None) == list(SUITE)
    assert parse_names("slo-mix, slo-mix") == ["slo-mix"]


# -- shape knobs: held-out variants of the suite ----------------------------------------------
#: digests of each workload (seed 0, scale 0.1) as built before the shape knobs existed
#: (commit 24def71): the knobs' defaults must not move the suite
PINNED = {
    "azure-code": "7c69f48b243a2859",
    "azure-conv": "b97169bd49f3f0b3",
    "bursty-reasoning": "a789532e00c2f668",
    "long-context-chat": "e01d5f58023061f1",
    "slo-mix": "c76df3f3e322a95b",
}


@pytest.mark.parametrize("name", SUITE)
def test_suite_workloads_are_the_ones_before_the_knobs(name: str) -> None:
    w = build(name, seed=0, scale=SMALL)
    t = w.trace
    h = hashlib.sha256()
    for a in (t.arrival_s, t.prompt_tokens, t.output_tokens):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(repr((t.classes, t.slo_classes, t.hash_ids, w.engine.num_gpu_blocks,
                   w.target_load)).encode())
    assert h.hexdigest()[:16] == PINNED[name]
    # the engine, whole: the suite's KV size on vLLM's scheduler limits as before the knobs
    assert w.engine == EngineConfig(num_gpu_blocks=w.engine.num_gpu_blocks)
    assert w.engine.num_gpu_blocks == (3000 if name == "azure-conv" else 28_600)


def test_scale_above_one_still_takes_the_whole_bundled_trace() -> None:
    """Without ``skip`` an Azure workload is the first requests, capped at the trace."""
    big = build("azure-code", scale=1.5)
    assert len(big.trace) == len(build("azure-code").trace) == 4000


def test_shape_knobs_are_the_builders_keyword_arguments() -> None:
    assert SHAPE_KNOBS["bursty-reasoning"] == ("load", "cv", "heavy_frac", "alpha",
                                                "kv_blocks", *ENGINE_KNOBS)
    assert SHAPE_KNOBS["azure-conv"] == ("load", "kv_blocks", "skip", *ENGINE_KNOBS)
    assert ENGINE_KNOBS == ("max_num_seqs", "max_num_batched_tokens")


@pytest.mark.parametrize("name", SUITE)
def test_default_knobs_are_the_suite_workload(name: str) -> None:
    """Passing every knob at its documented default builds the suite's workload."""
    defaults = {"azure-code": {"load": 0.9, "kv_blocks": None, "skip": 0},
                "azure-conv": {"load": 1.1, "kv_blocks": 3000, "skip": 0},
                "bursty-reasoning": {"load": 1.0, "cv": 2.0, "heavy_frac": 0.5, "alpha": 1.1,
                                     "kv_blocks": None},
                "long-context-chat": {"load": 0.92, "kv_blocks": None},
                "slo-mix": {"load": 0.95, "cv": 1.5, "interactive_frac": 0.7,
                            "kv_blocks": None}}[name]
    defaults |= {"max_num_seqs": 256, "max_num_batched_tokens": 8192}  # EngineConfig's
    assert set(defaults) == set(SHAPE_KNOBS[name])
    a, b = build(name, scale=SMALL), build(name, scale=SMALL, **defaults)
    assert np.array_equal(a.trace.arrival_s, b.trace.arrival_s)
    assert np.array_equal(a.trace.output_tokens, b.trace.output_tokens)
    assert a.engine == b.engine and a.target_load == b.target_load


def test_shape_knobs_move_the_workload() -> None:
    base = build("bursty-reasoning", scale=0.25, seed=3)
    small_kv = build("bursty-reasoning", scale=0.25, seed=3, kv_blocks=8000)
    assert small_kv.engine.num_gpu_blocks == 8000 and "8,000 KV blocks" in small_kv.shape
    assert np.array_equal(small_kv.trace.prompt_tokens, base.trace.prompt_tokens)
    heavy = build("bursty-reasoning", scale=0.25, seed=3, heavy_frac=0.8)
    frac = np.mean(np.asarray(heavy.trace.classes) == "reasoning")
    assert 0.7 < frac < 0.9 and "80% outputs" in heavy.shape
    hot = build("bursty-reasoning", scale=0.25, seed=3, load=1.2)
    assert hot.target_load == 1.2
    assert hot.trace.duration_s < base.trace.duration_s  # same requests, arriving faster
    inter = build("slo-mix", scale=SMALL, seed=3, interactive_frac=0.4)
    assert np.mean(np.asarray(inter.trace.slo_classes) == "interactive") < 0.55


def test_engine_knobs_configure_the_engine_the_load_is_set_against() -> None:
    """A smaller step budget or fewer sequences is another engine: the workload runs on
    it, says so in its shape line, and its load is set against it (fewer sequences lower
    the capacity of an engine whose batch is then smaller, so the same requests arrive
    more slowly at the same load), keeping its requests."""
    base = build("bursty-reasoning", scale=0.25, seed=3)
    few = build("bursty-reasoning", scale=0.25, seed=3, max_num_seqs=64)
    assert few.engine == replace(base.engine, max_num_seqs=64)
    assert "max_num_seqs 64" in few.shape and "max_num_seqs" not in base.shape
    assert np.array_equal(few.trace.output_tokens, base.trace.output_tokens)
    assert few.trace.duration_s > base.trace.duration_s
    small = build("azure-code", scale=SMALL, kv_blocks=5000, max_num_batched_tokens=2048)
    assert (small.engine.num_gpu_blocks, small.engine.max_num_batched_tokens) == (5000, 2048)
    assert "5,000 KV blocks, max_num_batched_tokens 2,048" in small.shape


def test_azure_skip_takes_another_slice_from_time_zero() -> None:
    a = build("azure-code", scale=SMALL)
    b = build("azure-code", scale=SMALL, skip=400)
    assert len(a.trace) == len(b.trace) and b.trace.arrival_s[0] == 0.0
    assert not np.array_equal(a.trace.prompt_tokens, b.trace.prompt_tokens)
    assert "requests 400-" in b.shape


@pytest.mark.parametrize(("name", "shape", "match"), [
    ("bursty-reasoning", {"skip": 10}, "no shape knob 'skip'"),
    ("slo-mix", {"heavy_frac": 0.3}, "no shape knob 'heavy_frac'"),
    ("bursty-reasoning", {"heavy_frac": 1.0}, r"heavy_frac must be in \(0, 1\)"),
    ("bursty-reasoning", {"cv": float("nan")}, "cv must be a finite number"),
    ("bursty-reasoning", {"load": 0.0}, "load must be > 0"),
    ("slo-mix", {"kv_blocks": -5}, "kv_blocks must be > 0"),
    ("azure-code", {"skip": -1}, "skip must be >= 0"),
    ("azure-code", {"skip": 10**7}, "skip must be in"),
    ("slo-mix", {"load": "1"}, "load must be a finite number"),
    ("bursty-reasoning", {"kv_blocks": 1000.9}, "kv_blocks must be a whole number"),
    ("bursty-reasoning", {"kv_blocks": True}, "kv_blocks must be a whole number"),
    ("azure-code", {"skip": 1.5}, "skip must be a whole number"),
    ("bursty-reasoning", {"alpha": 500}, r"alpha must be in \(0, 10\]"),
    ("slo-mix", {"max_num_seqs": 0}, "max_num_seqs must be > 0"),
    ("azure-code", {"max_num_batched_tokens": 2048.5},
     "max_num_batched_tokens must be a whole number"),
    ("slo-mix", {"max_num_batched_tokens": 128}, r"must be >= max_num_seqs \(256\)"),
])
def test_bad_shape_knobs_are_clear_errors(name: str, shape: dict[str, object],
                                          match: str) -> None:
    with pytest.raises(TraceError, match=match):
        build(name, scale=SMALL, **shape)

"""``benchmarks/heldout_shapes.py`` (and ``tail_anatomy.py``'s octiles): the variants are
valid suite shapes, and the trace files they write read back as the same workload."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest
from support.bench import load_benchmark

from tailwise.simulator.step_models import load_step_model
from tailwise.simulator.suite import SUITE, build, check_shape
from tailwise.simulator.traces import load_trace


@pytest.fixture(scope="module")
def heldout() -> ModuleType:
    return load_benchmark("heldout_shapes")


def test_every_variant_is_a_valid_shape_of_a_suite_workload(heldout: ModuleType) -> None:
    names = [v.name for v in heldout.VARIANTS]
    assert len(names) == len(set(names))
    for v in heldout.VARIANTS:
        # each moves something: a shape knob, an engine knob or the hardware
        assert v.workload in SUITE and (v.shape or v.model != "h100-llama3-8b") and v.why
        check_shape(v.workload, v.shape)  # raises on a knob the workload does not take
        load_step_model(v.model)  # a bundled step model
    assert [v.name for v in heldout.variants("bursty-kv-8k,slo-cv-3")] == [
        "bursty-kv-8k", "slo-cv-3"]
    with pytest.raises(SystemExit, match="unknown variant 'nope'"):
        heldout.variants("nope")


@pytest.mark.parametrize("name", ["slo-interactive-0.4", "bursty-kv-16k", "bursty-seqs-64",
                                  "bursty-a100"])
def test_written_trace_reads_back_as_the_variant(heldout: ModuleType, name: str,
                                                 tmp_path: Path) -> None:
    (v,) = heldout.variants(name)
    path = heldout.write_trace(v, tmp_path)
    got = load_trace(str(path))
    want = build(v.workload, model=load_step_model(v.model), seed=v.seed, scale=v.scale,
                 **v.shape).trace
    assert np.array_equal(got.arrival_s, want.arrival_s)  # exact: written with repr
    assert np.array_equal(got.prompt_tokens, want.prompt_tokens)
    assert np.array_equal(got.output_tokens, want.output_tokens)
    assert got.classes == want.classes
    assert got.slo_classes == want.slo_classes  # None for untagged traces


def test_prefix_hash_ids_cannot_be_written(heldout: ModuleType, tmp_path: Path) -> None:
    (v,) = heldout.variants("chat-kv-14k")
    with pytest.raises(SystemExit, match="hash ids"):
        heldout.write_trace(v, tmp_path)


def test_ttft_by_arrival_octile() -> None:
    anatomy = load_benchmark("tail_anatomy")
    arrival = np.arange(16.0)  # two requests per eighth of the span [0, 15]
    ttft = np.repeat(np.arange(8.0), 2)
    rec = SimpleNamespace(arrival=arrival, first_token=arrival + ttft)
    assert anatomy.by_octile(rec) == pytest.approx(list(np.arange(8.0)))


def test_slo_misses_split_by_preemption() -> None:
    from tailwise.records.requests import RequestRecords
    from tailwise.records.summary import MetricsConfig
    from tailwise.records.trace import Trace

    anatomy = load_benchmark("tail_anatomy")
    t = Trace("t", np.zeros(4), np.full(4, 10), np.full(4, 11))
    r = RequestRecords.empty(t)
    r.first_scheduled[:] = 0.0
    # TTFT 1 s (met), 20 s (missed), 1 s with a slow decode (missed), unfinished
    r.first_token[:] = [1.0, 20.0, 1.0, 1.0]
    r.finish[:] = [1.5, 20.5, 30.0, np.nan]
    r.preemptions[:] = [0, 0, 2, 0]
    att, pre, never = anatomy.slo_misses(r, MetricsConfig(ttft_slo_s=8.0, tpot_slo_s=0.1))
    assert (att, pre, never) == (pytest.approx(1 / 3), 1, 1)
    # a subset keeps the per-request fields aligned
    assert anatomy.slo_misses(r.subset(np.array([0, 3])), MetricsConfig())[1:] == (0, 0)


@pytest.mark.parametrize(("argv", "message"), [
    (["--scenario", "nope"], "unknown scenario 'nope'; choose from: code-reasoning-slo"),
    (["--scenario", "slo-flip", "--phase", "storm"],
     "unknown phase 'storm'; slo-flip has: batch-heavy, interactive flood, reasoning"),
    (["--phase", "chat"], "--phase needs --scenario"),
    (["--scenario", "slo-flip", "--variant", "bursty-kv-8k"], "alternatives"),
])
def test_scenario_arguments_are_checked(argv: list[str], message: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    anatomy = load_benchmark("tail_anatomy")
    monkeypatch.setattr(sys, "argv", ["tail_anatomy.py", *argv])
    with pytest.raises(SystemExit, match=message):
        anatomy.main()

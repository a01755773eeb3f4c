"""``tailwise policy ...`` and ``tailwise sidecar`` config handling (CLI edge)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tailwise import cmd_policy, cmd_sidecar
from tailwise.learner.config import ConfigError, LoopConfig, SidecarConfig, config_from_mapping
from tailwise.learner.server import Sidecar
from tailwise.scorer.policy import Mode, neutral_policy
from tailwise.wire.policy_file import save

pytestmark = pytest.mark.timeout(60)


def app() -> typer.Typer:
    a = typer.Typer()

    @a.callback()
    def main() -> None:
        """test app"""

    cmd_policy.register(a)
    cmd_sidecar.register(a)
    return a


runner = CliRunner()


def test_policy_validate_and_show(tmp_path: Path) -> None:
    good = save(neutral_policy().replace(mode=Mode.BOOST, version=5), tmp_path / "good.json")
    res = runner.invoke(app(), ["policy", "validate", str(good)])
    assert res.exit_code == 0, res.output
    assert "ok:" in res.output and "mode boost" in res.output
    res = runner.invoke(app(), ["policy", "show", str(good)])
    assert res.exit_code == 0
    shown = json.loads(res.output)
    assert shown["mode"] == "boost" and shown["version"] == 5 and shown["source"] == "frozen"

    tampered = tmp_path / "tampered.json"
    tampered.write_text(good.read_text().replace('"boost"', '"kairos"', 1))
    res = runner.invoke(app(), ["policy", "validate", str(tampered)])
    assert res.exit_code == 1
    assert "sha256 mismatch" in res.output

    bare = tmp_path / "bare.json"
    body = neutral_policy().to_dict()
    body["boost"]["gamma"] = -1.0
    bare.write_text(json.dumps(body))
    res = runner.invoke(app(), ["policy", "validate", str(bare)])
    assert res.exit_code == 1
    assert "boost.gamma" in res.output

    body["boost"]["gamma"] = 0.5
    bare.write_text(json.dumps(body))
    assert runner.invoke(app(), ["policy", "validate", str(bare)]).exit_code == 0

    res = runner.invoke(app(), ["policy", "validate", str(tmp_path / "missing.json")])
    assert res.exit_code == 1 and "cannot read" in res.output


def test_policy_kill_resume_push_current_against_a_sidecar(tmp_path: Path) -> None:
    cfg = SidecarConfig(listen="127.0.0.1:0", metrics_port=-1, state_dir=tmp_path / "s",
                        token="tkn", loop=LoopConfig(enabled=False))
    sc = Sidecar(cfg, use_default_learners=False).start()
    try:
        auth = ["--sidecar", sc.address, "--token", "tkn"]
        file = save(neutral_policy().replace(mode=Mode.BOOST), tmp_path / "p.json")
        res = runner.invoke(app(), ["policy", "push", str(file), *auth])
        assert res.exit_code == 0, res.output
        assert "version 2" in res.output
        res = runner.invoke(app(), ["policy", "kill", *auth, "--reason", "pager"])
        assert res.exit_code == 0, res.output
        assert "version 3" in res.output
        pub = sc.store.current()
        assert pub.policy is not None and pub.policy.mode is Mode.FCFS
        assert "pager" in pub.policy.note and sc.store.paused
        res = runner.invoke(app(), ["policy", "current", *auth])
        assert json.loads(res.output)["version"] == 3
        assert runner.invoke(app(), ["policy", "resume", *auth]).exit_code == 0
        assert not sc.store.paused
        res = runner.invoke(app(), ["policy", "kill", "--sidecar", sc.address, "--token", "bad"])
        assert res.exit_code == 1 and "token" in res.output
    finally:
        sc.stop(0.5)


def test_sidecar_config_errors_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text('listen = "127.0.0.1:0"\n[window]\ntrial_windw_s = 5\n')
    res = runner.invoke(app(), ["sidecar", "--config", str(bad), "--state-dir", str(tmp_path)])
    assert res.exit_code == 2
    assert "window.trial_windw_s: unknown key" in res.output
    tok = tmp_path / "t"
    tok.write_text("x")
    res = runner.invoke(app(), ["sidecar", "--token", "a", "--token-file", str(tok),
                                "--state-dir", str(tmp_path)])
    assert res.exit_code == 2 and "not both" in res.output


def test_config_mapping_types_and_overrides(tmp_path: Path) -> None:
    cfg = config_from_mapping({"listen": "127.0.0.1:7", "state_dir": str(tmp_path),
                               "loop": {"n_trials": 4}, "tuner": {"margin": 0.05}})
    assert cfg.state_dir == tmp_path and cfg.loop.n_trials == 4
    assert cfg.storage_url == str(tmp_path / "study.journal")
    assert cfg.tuner == {"margin": 0.05}
    for bad, msg in [({"listen": "nope"}, "listen"), ({"metrics_port": "x"}, "metrics_port"),
                     ({"loop": {"n_trials": 0}}, "loop.n_trials"),
                     ({"tls_cert": "a.pem"}, "tls_cert/tls_key"),
                     ({"window": 3}, "window: must be a table")]:
        with pytest.raises(ConfigError, match=msg):
            config_from_mapping(bad)

"""``tailwise sidecar``: run the learner sidecar (gRPC policy push + telemetry + tuning).

Configuration is loaded once here: the config file (TOML or JSON, keys of
:class:`tailwise.learner.config.SidecarConfig`), then the flags on top. Runnable on its own as
``python -m tailwise.cmd_sidecar sidecar ...`` (tests use that).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console


def register(app: typer.Typer) -> None:
    """Add the ``sidecar`` command to ``app``."""

    @app.command("sidecar")
    def sidecar(
        ctx: typer.Context,
        config: Annotated[Path | None, typer.Option(
            "--config", "-c", help="Config file (.toml or .json).")] = None,
        listen: Annotated[str | None, typer.Option(
            "--listen", help="HOST:PORT to bind (default 127.0.0.1:50051; port 0 = any).")] = None,
        metrics_port: Annotated[int | None, typer.Option(
            "--metrics-port", help="Prometheus port (default 9464; 0 = any; -1 = off).")] = None,
        metrics_host: Annotated[str | None, typer.Option(
            "--metrics-host", help="Prometheus bind address (default 127.0.0.1).")] = None,
        hints_port: Annotated[int | None, typer.Option(
            "--hints-port", help="Router hints HTTP/JSON port, GET /v1/hints "
                                 "(default off = -1; 0 = any).")] = None,
        hints_host: Annotated[str | None, typer.Option(
            "--hints-host", help="Router hints bind address (default 127.0.0.1).")] = None,
        storage: Annotated[str | None, typer.Option(
            "--storage", help="Optuna storage: journal file or RDB URL "
                              "(default STATE_DIR/study.journal).")] = None,
        study: Annotated[str | None, typer.Option("--study", help="Study name.")] = None,
        state_dir: Annotated[Path | None, typer.Option(
            "--state-dir", help="Where version counter, policy and partition persist.")] = None,
        token: Annotated[str | None, typer.Option(
            "--token", help="Bearer token clients must send (visible in ps: prefer "
                            "--token-file).")] = None,
        token_file: Annotated[Path | None, typer.Option(
            "--token-file", help="File holding the bearer token.")] = None,
        tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="PEM certificate.")] = None,
        tls_key: Annotated[Path | None, typer.Option("--tls-key", help="PEM private key.")] = None,
        insecure: Annotated[bool, typer.Option(
            "--insecure", help="Allow a non-local bind without TLS or token.")] = False,
        initial_policy: Annotated[str | None, typer.Option(
            "--initial-policy", help="What a fresh sidecar publishes first: a frozen policy "
                                     "FILE or a policy name (default tailwise, the adapter's "
                                     "default mode; match the adapters' mode/policy_file).")
        ] = None,
        trial_window_s: Annotated[float | None, typer.Option(
            "--trial-window-s", help="Replay window, engine seconds.")] = None,
        round_every_s: Annotated[float | None, typer.Option(
            "--round-every-s", help="Engine seconds between rounds (default: the window).")] = None,
        n_trials: Annotated[int | None, typer.Option(
            "--n-trials", help="Optuna trials per round.")] = None,
        mode: Annotated[str | None, typer.Option(
            "--mode", help="How candidates are scored: 'replay' (simulator replay of the "
                           "telemetry window, default) or 'live' (one trial per round, "
                           "scored from the engine's measured metrics).")] = None,
        min_requests: Annotated[int | None, typer.Option(
            "--min-requests", help="Finished requests a round needs in the window.")] = None,
        no_loop: Annotated[bool, typer.Option(
            "--no-loop", help="Serve policies and ingest telemetry, but do not tune.")] = False,
        testing_allow_unchecked_push: Annotated[bool, typer.Option(
            "--testing-allow-unchecked-push", hidden=True,
            help="TESTING ONLY: SetPolicy(unchecked) may publish unvalidated policies.")] = False,
        log_level: Annotated[str, typer.Option("--log-level", help="Logging level.")] = "INFO",
    ) -> None:
        """Run the learner sidecar beside one or more engines."""
        from tailwise.cli_flags import reject
        from tailwise.learner.config import (
            ConfigError,
            SidecarConfig,
            config_from_mapping,
            load_config_file,
        )
        from tailwise.learner.server import run_sidecar
        from tailwise.learner.state import StateError

        if no_loop:
            reject(ctx, ["trial_window_s", "round_every_s", "n_trials", "mode", "min_requests"],
                   "does not apply with --no-loop (nothing is tuned)")
        err = Console(stderr=True)
        logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        try:
            data: dict[str, Any] = load_config_file(config) if config else {}
            flags: dict[str, Any] = {
                "listen": listen, "metrics_port": metrics_port, "metrics_host": metrics_host,
                "storage": storage, "study": study, "state_dir": state_dir,
                "tls_cert": tls_cert, "tls_key": tls_key, "initial_policy": initial_policy,
            }
            data.update({k: v for k, v in flags.items() if v is not None})
            if token is not None and token_file is not None:
                raise ConfigError("token: give --token or --token-file, not both")
            if token_file is not None:
                try:
                    data["token"] = token_file.read_text().strip()
                except OSError as exc:
                    raise ConfigError(f"token_file: cannot read {token_file} "
                                      f"({exc.strerror})") from exc
            elif token is not None:
                data["token"] = token
            if insecure:
                data["insecure"] = True
            if testing_allow_unchecked_push:
                data["testing_allow_unchecked_push"] = True
            _override(data, "hints", port=hints_port, host=hints_host)
            _override(data, "window", trial_window_s=trial_window_s, min_requests=min_requests)
            _override(data, "loop", round_every_s=round_every_s, n_trials=n_trials, mode=mode,
                      enabled=False if no_loop else None)
            cfg = config_from_mapping(data, SidecarConfig())
            code = run_sidecar(cfg)
        except (ConfigError, StateError) as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(2) from None
        raise typer.Exit(code)


def _override(data: dict[str, Any], section: str, **flags: Any) -> None:
    """Command-line flags given (not None) override the config file's ``section``."""
    given = {k: v for k, v in flags.items() if v is not None}
    if given:
        data[section] = {**(data.get(section) or {}), **given}


def _standalone() -> typer.Typer:  # pragma: no cover - exercised through subprocesses
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.callback()
    def _main() -> None:
        """tailwise sidecar (standalone entry point)."""

    register(app)
    return app


if __name__ == "__main__":  # pragma: no cover
    _standalone()()

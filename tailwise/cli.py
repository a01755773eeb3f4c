"""The ``tailwise`` command line. Each command lives in ``tailwise/cmd_*.py``."""

from __future__ import annotations

import typer

from tailwise import (
    __version__,
    cmd_bench,
    cmd_dashboard,
    cmd_freeze,
    cmd_plan,
    cmd_policy,
    cmd_replay,
    cmd_sidecar,
    cmd_simulate,
)

app = typer.Typer(
    name="tailwise",
    help="Online-learning scheduler for LLM serving: simulate, tune, serve policies.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tailwise {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """tailwise: soft-boost, cache-aware, SLO-aware scheduling for vLLM."""


cmd_simulate.register(app)
cmd_sidecar.register(app)
cmd_policy.register(app)
cmd_freeze.register(app)
cmd_dashboard.register(app)
cmd_plan.register(app)
cmd_bench.register(app)
cmd_replay.register(app)


if __name__ == "__main__":  # pragma: no cover
    app()

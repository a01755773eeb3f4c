"""Flags that do not apply are errors: the shared check of every ``tailwise`` command.

A command names, per mode, the flags that mean something there; a flag the user typed
(on the command line or through the environment) that the chosen mode does not use
stops the command with one line and exit status 2 instead of being silently ignored.
"""

from __future__ import annotations

from collections.abc import Iterable

import typer

#: exit status of bad input
EXIT_BAD_INPUT = 2


def fail(msg: str) -> None:
    """One line on stderr, exit status 2 (bad input), no traceback."""
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def given(ctx: typer.Context, name: str) -> bool:
    """Whether the user set parameter ``name`` (not its default). Compared by the
    source's name: typer vendors click, and its ``ParameterSource`` is private."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def flag_of(ctx: typer.Context, name: str) -> str:
    """How the user spells parameter ``name``: its first long option (a boolean flag
    with its negation, ``--progress/--no-progress``)."""
    for param in ctx.command.params:
        if param.name == name:
            longs = [o for o in param.opts if o.startswith("--")]
            flag = longs[0] if longs else param.opts[0]
            off = getattr(param, "secondary_opts", [])
            return f"{flag}/{off[0]}" if off else flag
    return name


def reject(ctx: typer.Context, names: Iterable[str], why: str) -> None:
    """Fail on the first of ``names`` the user gave: ``--flag <why>``."""
    for name in names:
        if given(ctx, name):
            fail(f"{flag_of(ctx, name)} {why}")

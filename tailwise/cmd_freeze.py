"""``tailwise freeze``: export a study's best (or champion) policy as a frozen file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from tailwise.scorer.frozen import FrozenPolicyError
from tailwise.scorer.policy import PolicyError


def register(app: typer.Typer) -> None:
    """Add the ``freeze`` command to ``app``."""

    @app.command("freeze")
    def freeze(
        storage: Annotated[str, typer.Option(
            "--storage", help="The sidecar's study storage: journal file path or RDB URL.")],
        out: Annotated[Path, typer.Option("--out", help="Frozen policy file to write.")],
        study: Annotated[str, typer.Option("--study", help="Study name.")] = "tailwise",
        which: Annotated[str, typer.Option(
            "--which", help="best: best trial of the latest round; champion: the policy "
                            "in force.")] = "best",
        unpromoted: Annotated[bool, typer.Option(
            "--unpromoted", help="With --which best: export the latest round's best trial "
                                 "even if the round's gate did not promote it (or the "
                                 "learner did not publish it).")] = False,
    ) -> None:
        """Freeze a tuned policy into a hashed, schema-versioned file for production."""
        from tailwise.bayes_opt.freeze import WHICH, FreezeError
        from tailwise.lab.freeze import freeze_study

        err = Console(stderr=True, soft_wrap=True)
        if which not in WHICH:
            err.print(f"[bold red]error:[/] --which must be one of {', '.join(WHICH)}, "
                      f"got {which!r}", highlight=False)
            raise typer.Exit(2)
        if unpromoted and which != "best":
            err.print("[bold red]error:[/] --unpromoted applies to --which best only",
                      highlight=False)
            raise typer.Exit(2)
        try:
            path, policy, where = freeze_study(storage, study, out, which, unpromoted)
        except (FreezeError, FrozenPolicyError, PolicyError, OSError) as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from None
        typer.echo(f"froze {where} of study {study!r} ({policy.mode.value}, "
                   f"{len(policy.queues)} queues) to {path}")

"""``tailwise policy``: inspect and validate policy files; kill switch of a sidecar.

* ``show FILE`` — print a frozen policy file (or a plain policy JSON object) as JSON;
* ``validate FILE`` — exit 0 if the file loads (hash + schema + ``Policy.validate()``),
  else exit 1 with the reason;
* ``kill --sidecar ADDR`` — push ``mode=fcfs`` now and pause automatic promotion;
* ``resume --sidecar ADDR`` — re-enable automatic promotion;
* ``push FILE --sidecar ADDR`` — publish a policy file as the next version;
* ``current --sidecar ADDR`` — print the version and policy in force on the sidecar.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from tailwise.scorer.frozen import FrozenPolicyError, loads
from tailwise.scorer.policy import Policy, PolicyError


def _load_any(path: Path) -> Policy:
    """A frozen policy file, or a bare policy object (validated, no hash to check)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise FrozenPolicyError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FrozenPolicyError(f"{path}: not valid JSON ({exc})") from exc
    if isinstance(doc, dict) and "format" not in doc and "mode" in doc:
        try:
            return Policy.from_dict(doc)
        except PolicyError as exc:
            raise FrozenPolicyError(f"{path}: invalid policy: {exc}") from exc
    return loads(text, origin=str(path))


# option types shared by the commands that talk to a sidecar (module level: typer resolves
# the string annotations against module globals)
Sidecar = Annotated[str, typer.Option("--sidecar", help="Sidecar HOST:PORT.")]
Token = Annotated[str | None, typer.Option("--token", help="Bearer token.")]
TokenFile = Annotated[Path | None, typer.Option("--token-file", help="Token file.")]
TlsCa = Annotated[Path | None, typer.Option(
    "--tls-ca", help="PEM CA to verify the sidecar's TLS certificate (enables TLS).")]
Timeout = Annotated[float, typer.Option("--timeout", help="Deadline, seconds.")]


def register(app: typer.Typer) -> None:
    """Add the ``policy`` sub-app (show, validate, kill, resume, push, current)."""
    policy_app = typer.Typer(help="Inspect policy files; kill switch of a running sidecar.",
                             no_args_is_help=True)
    app.add_typer(policy_app, name="policy")

    def _client(sidecar: str, token: str | None, token_file: Path | None, tls_ca: Path | None,
                timeout: float) -> Any:
        from tailwise.learner.admin import AdminClient

        if token_file is not None:
            if token is not None:
                raise typer.BadParameter("give --token or --token-file, not both")
            token = token_file.read_text().strip()
        return AdminClient(sidecar, token=token, tls_ca=tls_ca, timeout_s=timeout)

    def _fail(exc: Exception, code: int = 1) -> typer.Exit:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False)
        return typer.Exit(code)

    @policy_app.command("show")
    def show(file: Annotated[Path, typer.Argument(help="Policy file.")]) -> None:
        """Print a policy file (verified) as JSON."""
        try:
            policy = _load_any(file)
        except FrozenPolicyError as exc:
            raise _fail(exc) from None
        typer.echo(json.dumps(policy.to_dict(), indent=2, sort_keys=True))

    @policy_app.command("validate")
    def validate(file: Annotated[Path, typer.Argument(help="Policy file.")]) -> None:
        """Exit 0 if FILE is a valid policy, else 1 with the reason."""
        try:
            policy = _load_any(file)
        except FrozenPolicyError as exc:
            raise _fail(exc) from None
        typer.echo(f"ok: {file} (version {policy.version}, mode {policy.mode.value}, "
                   f"{len(policy.queues)} queues, source {policy.source.value})")
        typer.echo(f"waiting bound: {policy.waiting_bound()}")

    @policy_app.command("kill")
    def kill(sidecar: Sidecar, token: Token = None, token_file: TokenFile = None,
             tls_ca: TlsCa = None, reason: Annotated[str, typer.Option(
                 "--reason", help="Recorded in the policy note.")] = "tailwise policy kill",
             timeout: Timeout = 10.0) -> None:
        """Kill switch: the sidecar pushes mode=fcfs now and stops promoting."""
        from tailwise.wire.errors import SidecarError

        try:
            with _client(sidecar, token, token_file, tls_ca, timeout) as c:
                version = c.kill(reason)
        except (SidecarError, OSError) as exc:
            raise _fail(exc) from None
        typer.echo(f"kill switch: FCFS published as version {version}; promotion paused "
                   "(tailwise policy resume to re-enable)")

    @policy_app.command("resume")
    def resume(sidecar: Sidecar, token: Token = None, token_file: TokenFile = None,
               tls_ca: TlsCa = None, timeout: Timeout = 10.0) -> None:
        """Re-enable automatic promotion after a kill or a manual push."""
        from tailwise.wire.errors import SidecarError

        try:
            with _client(sidecar, token, token_file, tls_ca, timeout) as c:
                c.resume()
        except (SidecarError, OSError) as exc:
            raise _fail(exc) from None
        typer.echo("automatic promotion resumed")

    @policy_app.command("push")
    def push(file: Annotated[Path, typer.Argument(help="Policy file.")], sidecar: Sidecar,
             token: Token = None, token_file: TokenFile = None, tls_ca: TlsCa = None,
             timeout: Timeout = 10.0) -> None:
        """Publish FILE as the next version (pauses automatic promotion)."""
        from tailwise.wire.errors import SidecarError

        try:
            policy = _load_any(file)
            with _client(sidecar, token, token_file, tls_ca, timeout) as c:
                version = c.push(policy, reason=f"tailwise policy push {file.name}")
        except (FrozenPolicyError, SidecarError, OSError) as exc:
            raise _fail(exc) from None
        typer.echo(f"published {file} as version {version}")

    @policy_app.command("current")
    def current(sidecar: Sidecar, token: Token = None, token_file: TokenFile = None,
                tls_ca: TlsCa = None, timeout: Timeout = 10.0) -> None:
        """Print the version and policy in force on the sidecar."""
        from tailwise.wire.errors import SidecarError

        try:
            with _client(sidecar, token, token_file, tls_ca, timeout) as c:
                version, policy = c.current()
        except (SidecarError, PolicyError, OSError) as exc:
            raise _fail(exc) from None
        typer.echo(json.dumps({"version": version, "policy": policy.to_dict()}, indent=2,
                              sort_keys=True))

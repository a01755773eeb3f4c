"""``tailwise dashboard``: optuna-dashboard on the sidecar's study storage.

Serves optuna-dashboard's WSGI app (``optuna_dashboard.wsgi``) with a threaded
``wsgiref`` server, which is what ``optuna_dashboard.run_server`` does too, but binds
first and prints the bound address, so ``--port 0`` (an ephemeral port) works. Binds
127.0.0.1 by default. Needs the ``[dashboard]`` extra.
"""

from __future__ import annotations

import socketserver
import sys
from typing import Annotated, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import typer
from rich.console import Console
from rich.markup import escape

INSTALL_HINT = "optuna-dashboard is not installed; pip install 'tailwise[dashboard]'"


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


def make_dashboard_server(storage: str, host: str = "127.0.0.1", port: int = 8080) -> WSGIServer:
    """A bound (not yet serving) dashboard server on ``storage``.

    Raises ``ImportError`` with an install hint when optuna-dashboard is missing and
    :class:`tailwise.bayes_opt.storage.StorageError` for a storage that does not exist.
    """
    try:
        import optuna_dashboard
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    from tailwise.bayes_opt.storage import open_storage

    st = open_storage(storage, heartbeat_interval=None, must_exist=True)
    app = optuna_dashboard.wsgi(st)
    return make_server(host, port, app, server_class=_ThreadingWSGIServer,
                       handler_class=_QuietHandler)


def register(app: typer.Typer) -> None:
    """Add the ``dashboard`` command to ``app``."""

    @app.command("dashboard")
    def dashboard(
        storage: Annotated[str, typer.Option(
            "--storage", help="The sidecar's study storage: journal file path or RDB URL.")],
        host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", help="Port (0: any free port).")] = 8080,
    ) -> None:
        """Inspect the tuning history in optuna-dashboard (blocks until interrupted)."""
        from tailwise.bayes_opt.storage import StorageError

        err = Console(stderr=True, soft_wrap=True)
        try:
            server = make_dashboard_server(storage, host, port)
        except ImportError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from None
        except (StorageError, OSError) as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from None
        bound_host, bound_port = server.server_address[:2]
        shown = bound_host if isinstance(bound_host, str) else bound_host.decode()
        typer.echo(f"optuna-dashboard serving {storage} on http://{shown}:{bound_port}/")
        sys.stdout.flush()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()

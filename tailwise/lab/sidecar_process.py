"""A ``tailwise sidecar`` subprocess, for the closed loop, the reliability tests and the
real-server tests (:class:`~tailwise.lab.real_server.SidecarServer`).

It binds 127.0.0.1 on port 0 and prints one JSON ready line (with the port) on stdout;
the rest of its output goes to a log file.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class SidecarLaunchError(RuntimeError):
    """The sidecar subprocess did not start."""


class SidecarSubprocess:
    """``python -m tailwise.cmd_sidecar sidecar ...`` on 127.0.0.1:0; parses its ready
    line, drains its output to ``log_path``; :meth:`stop` ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, args: Sequence[str], log_path: Path, *, timeout_s: float = 60.0,
                 env: dict[str, str] | None = None, python: str = sys.executable) -> None:
        cmd = [python, "-m", "tailwise.cmd_sidecar", "sidecar", *args]
        if "--listen" not in args:
            cmd += ["--listen", "127.0.0.1:0"]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log = log_path.open("a")
        self._log_lock = threading.Lock()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     env=env)
        ready: list[str] = []
        got = threading.Event()

        def pump() -> None:  # reads until the process exits (EOF), then closes the pipe
            out = self.proc.stdout
            assert out is not None
            with out:
                for i, line in enumerate(out):
                    if i == 0:
                        ready.append(line)
                        got.set()
                        continue
                    with self._log_lock:
                        if not self._log.closed:
                            self._log.write(line)
            got.set()

        threading.Thread(target=pump, name="tailwise-sidecar-stdout", daemon=True).start()
        if not got.wait(timeout_s) or not ready:
            self.stop()
            raise SidecarLaunchError(f"sidecar did not start within {timeout_s:g} s "
                                     f"(rc={self.proc.poll()}); see {log_path}")
        try:
            self.ready: dict[str, Any] = json.loads(ready[0])
            self.port = int(self.ready["port"])
        except (ValueError, KeyError, TypeError) as exc:
            self.stop()
            raise SidecarLaunchError(f"unexpected sidecar ready line {ready[0]!r}") from exc
        self.address = f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL (a crash); returns once the process is gone."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._close()

    def stop(self, grace_s: float = 15.0) -> int | None:
        """SIGTERM (graceful), then SIGKILL after ``grace_s``; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close()
        return self.proc.returncode

    def _close(self) -> None:
        with self._log_lock:
            self._log.close()

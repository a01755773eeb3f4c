"""Reliability suite fixtures: real sidecar processes on 127.0.0.1 (port 0), and the
closing figures.

Every test adds its measured figures to the session's ``figures`` dict; at the end of the
session they are written to ``reliability_figures.json`` in pytest's base temp dir (and
to ``$TAILWISE_RELIABILITY_FIGURES`` when set — ``benchmarks/reliability_figures.py``
reads it) and printed in the terminal summary.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tailwise.lab.sidecar_process import SidecarSubprocess

FIGURES: dict[str, Any] = {}
_WRITTEN: list[Path] = []


@pytest.fixture(scope="session")
def figures(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    yield FIGURES
    targets = [tmp_path_factory.getbasetemp() / "reliability_figures.json"]
    if os.environ.get("TAILWISE_RELIABILITY_FIGURES"):
        targets.append(Path(os.environ["TAILWISE_RELIABILITY_FIGURES"]))
    for path in targets:
        path.write_text(json.dumps(FIGURES, indent=2, sort_keys=True, default=str) + "\n")
        _WRITTEN.append(path)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("tailwise reliability figures")
    for key in sorted(FIGURES):
        terminalreporter.write_line(f"{key}: {FIGURES[key]}")
    for path in _WRITTEN:
        terminalreporter.write_line(f"(written to {path})")


SidecarFactory = Callable[..., SidecarSubprocess]


@pytest.fixture
def sidecar_factory(tmp_path: Path) -> Iterator[SidecarFactory]:
    """Start ``tailwise sidecar`` subprocesses; all are stopped at teardown."""
    started: list[SidecarSubprocess] = []

    def start(args: Sequence[str] = (), *, state_dir: Path | None = None,
              listen: str | None = None) -> SidecarSubprocess:
        state = state_dir or tmp_path / f"state{len(started)}"
        full = ["--state-dir", str(state), "--metrics-port", "0", "--log-level", "WARNING",
                *args]
        if listen is not None:
            full += ["--listen", listen]
        sc = SidecarSubprocess(full, tmp_path / f"sidecar{len(started)}.log", timeout_s=60.0)
        started.append(sc)
        return sc

    yield start
    for sc in started:
        sc.stop(grace_s=5.0)

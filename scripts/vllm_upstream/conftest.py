"""pytest plugin for vLLM's own scheduler tests run against the tailwise classes.

Copied as ``conftest.py`` next to the ``tests/`` tree extracted from vLLM's source
distribution by ``scripts/run_vllm_upstream_tests.sh``. After collection, every name
bound to vLLM's ``Scheduler`` / ``AsyncScheduler`` in the collected test modules and in
their helper modules (``tests.v1.core.utils``, ``tests.v1.kv_connector.unit.utils``) is
pointed at ``TailwiseScheduler`` / ``TailwiseAsyncScheduler`` (neutral policy: no
``--additional-config``). vLLM's own modules are not touched. The run fails if the
helper module was not swapped, so a green run cannot mean "stock vLLM was tested".
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.scheduler import Scheduler

from tailwise.engine_adapter.vllm import TailwiseAsyncScheduler, TailwiseScheduler

SWAP: dict[type[Any], type[Any]] = {Scheduler: TailwiseScheduler, AsyncScheduler: TailwiseAsyncScheduler}
HELPERS = ("tests.v1.core.utils", "tests.v1.kv_connector.unit.utils")
swapped: dict[str, list[str]] = {}


def _swap(mod: ModuleType) -> None:
    names = []
    for name, value in list(vars(mod).items()):
        if isinstance(value, type) and value in SWAP:
            setattr(mod, name, SWAP[value])
            names.append(name)
    if names:
        swapped[mod.__name__] = names


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    mods = {name: sys.modules[name] for name in HELPERS if name in sys.modules}
    for item in items:
        mod = getattr(item, "module", None)
        if mod is not None:
            mods[mod.__name__] = mod
    for mod in mods.values():
        _swap(mod)
    if "tests.v1.core.utils" not in swapped:
        raise pytest.UsageError("tests.v1.core.utils.Scheduler was not swapped for tailwise's class")


def pytest_report_header(config: pytest.Config) -> str:
    return ("scheduler classes under test: tailwise.engine_adapter.vllm."
            "TailwiseScheduler / TailwiseAsyncScheduler")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for mod, names in sorted(swapped.items()):
        terminalreporter.write_line(f"tailwise swap: {mod}: {', '.join(names)}")


@pytest.fixture()
def caplog_vllm(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """vLLM's own fixture (from its top-level conftest, not extracted): caplog at INFO
    with vLLM's logger propagating to the root."""
    vllm_logger = logging.getLogger("vllm")
    old = vllm_logger.propagate
    vllm_logger.propagate = True
    try:
        with caplog.at_level(logging.INFO):
            yield caplog
    finally:
        vllm_logger.propagate = old

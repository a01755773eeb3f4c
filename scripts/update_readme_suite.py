"""Regenerate the README's suite table from a ``tailwise bench`` results.json.

    tailwise bench --out bench && python scripts/update_readme_suite.py bench/results.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tailwise.lab.bench_report import update_readme


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: update_readme_suite.py RESULTS.json")
    results = json.loads(Path(sys.argv[1]).read_text())
    readme = Path(__file__).resolve().parent.parent / "README.md"
    readme.write_text(update_readme(readme.read_text(), results))
    print(f"updated {readme}")


if __name__ == "__main__":
    main()

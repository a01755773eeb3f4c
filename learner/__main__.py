"""``python -m learner --config FILE [--listen HOST:PORT] [--state-dir DIR]``.

A minimal entry point for supervisors that run the sidecar without the ``tailwise`` CLI
(which has every flag: ``tailwise sidecar --help``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from tailwise.learner.config import ConfigError, config_from_mapping, load_config_file
from tailwise.learner.server import run_sidecar
from tailwise.learner.state import StateError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m learner", description=__doc__)
    ap.add_argument("--config", type=Path, help="sidecar config file (.toml or .json)")
    ap.add_argument("--listen", help="HOST:PORT to bind")
    ap.add_argument("--state-dir", type=Path, help="state directory")
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        data: dict[str, Any] = load_config_file(args.config) if args.config else {}
        if args.listen:
            data["listen"] = args.listen
        if args.state_dir:
            data["state_dir"] = str(args.state_dir)
        return run_sidecar(config_from_mapping(data))
    except (ConfigError, StateError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Cell formatting for the reports people read (their tables: ``simulator.report``)."""

from __future__ import annotations

from typing import Any

#: what a missing value prints as
MISSING = "–"


def format_optional(value: float | None, fmt: str = ".2f") -> str:
    """``value`` formatted with ``fmt``, or a dash when there is none."""
    return MISSING if value is None else format(value, fmt)


def format_cell(value: Any) -> str:
    """A table cell: floats with two decimals, ``None`` as a dash, the rest as ``str``."""
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


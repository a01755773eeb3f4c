"""Markdown tables and cell formatting for the reports people read."""

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


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a GitHub-flavoured markdown table.

    >>> markdown_table(["a", "b"], [["1", "2"]])
    ['| a | b |', '|---|---|', '| 1 | 2 |']
    """
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows)]

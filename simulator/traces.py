"""Request traces: loaders for Azure 2023 CSV, Mooncake/FAST'25 JSONL and generic files.

Every loader returns a :class:`~tailwise.records.trace.Trace` with arrivals in seconds from the first request,
sorted. Bad rows (missing or negative lengths, unparsable timestamps, times going
backwards) raise :class:`TraceError` naming file and line, or with ``skip_bad=True`` are
skipped and counted in :attr:`Trace.skipped` (first reasons kept in
:attr:`Trace.skip_reasons`).

Bundled samples (so ``tailwise simulate`` runs with no extra files): ``azure-code`` and
``azure-conv`` are the first rows of the Azure LLM inference trace 2023 (CC-BY 4.0,
Patel et al., "Splitwise", ISCA 2024).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from tailwise.records.trace import Trace, TraceError

#: ``Trace`` and ``TraceError`` live in the data model; re-exported for loaders' users
__all__ = ["BUNDLED", "Trace", "TraceError", "bundled_path", "detect_format", "load_azure_csv",
           "load_generic", "load_mooncake_jsonl", "load_trace"]

BUNDLED = {
    "azure-code": "azure2023_code_sample.csv",
    "azure-conv": "azure2023_conv_sample.csv",
}


# -- row collection -------------------------------------------------------------------------
@dataclass
class _Rows:
    origin: str
    skip_bad: bool
    t: list[float] = field(default_factory=list)
    p: list[int] = field(default_factory=list)
    o: list[int] = field(default_factory=list)
    hashes: list[tuple[int, ...]] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    slo: list[str] = field(default_factory=list)
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)

    def bad(self, line: int, msg: str) -> None:
        text = f"{self.origin}:{line}: {msg}"
        if not self.skip_bad:
            raise TraceError(text)
        self.skipped += 1
        if len(self.reasons) < 20:
            self.reasons.append(text)

    def add(self, line: int, t: Any, p: Any, o: Any, *, hashes: Any = None,
            cls: Any = None, slo: Any = None) -> None:
        if t is None or (isinstance(t, float) and not math.isfinite(t)):
            self.bad(line, f"unparsable or missing timestamp {t!r}")
            return
        pi = _as_len(p)
        if pi is None or pi < 1:
            self.bad(line, f"prompt length must be an integer >= 1, got {p!r}")
            return
        oi = _as_len(o)
        if oi is None or oi < 1:
            self.bad(line, f"output length must be an integer >= 1, got {o!r}")
            return
        if self.t and t < self.t[-1]:
            self.bad(line, f"timestamp {t} is earlier than the previous row's {self.t[-1]} "
                           "(rows must be sorted by time)")
            return
        hv: tuple[int, ...] = ()
        if hashes is not None:
            if not isinstance(hashes, list) or not all(
                isinstance(h, int) and not isinstance(h, bool) for h in hashes
            ):
                self.bad(line, f"hash_ids must be a list of integers, got {hashes!r}")
                return
            hv = tuple(hashes)
        self.t.append(float(t))
        self.p.append(pi)
        self.o.append(oi)
        self.hashes.append(hv)
        self.classes.append("" if cls is None else str(cls))
        self.slo.append("" if slo is None else str(slo))

    def build(self, name: str, meta: dict[str, Any]) -> Trace:
        if not self.t:
            raise TraceError(f"{self.origin}: no valid requests"
                             + (f" ({self.skipped} bad rows skipped)" if self.skipped else ""))
        t = np.asarray(self.t, dtype=np.float64)
        t -= t[0]
        return Trace(
            name=name,
            arrival_s=t,
            prompt_tokens=np.asarray(self.p, dtype=np.int64),
            output_tokens=np.asarray(self.o, dtype=np.int64),
            hash_ids=self.hashes if any(self.hashes) else None,
            classes=self.classes if any(self.classes) else None,
            slo_classes=self.slo if any(self.slo) else None,
            skipped=self.skipped,
            skip_reasons=tuple(self.reasons),
            meta=meta,
        )


def _as_len(v: Any) -> int | None:
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v) if math.isfinite(v) and v == int(v) else None
    s = str(v).strip()
    try:
        return int(s)
    except ValueError:
        try:
            f = float(s)
        except ValueError:
            return None
        return int(f) if math.isfinite(f) and f == int(f) else None


def _parse_datetime(s: str) -> float | None:
    """Azure timestamps carry 7 fractional digits; Python parses at most 6."""
    s = s.strip()
    if not s:
        return None
    frac = ""
    if "." in s:
        s, frac = s.split(".", 1)
        frac = "".join(ch for ch in frac if ch.isdigit())
    try:
        base = datetime.fromisoformat(s)
    except ValueError:
        return None
    return base.timestamp() + (float("0." + frac) if frac else 0.0)


def _parse_number(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


# -- formats ------------------------------------------------------------------------------
_GENERIC_ALIASES = {
    "arrival": ("arrival", "arrival_s", "arrival_time", "timestamp", "time", "t"),
    "prompt": ("prompt_tokens", "prompt", "input_length", "input_tokens", "prompt_len",
               "contexttokens", "context_tokens"),
    "output": ("output_tokens", "output", "output_length", "generated_tokens", "output_len",
               "generatedtokens"),
    "class": ("class", "request_class", "label"),
    "slo": ("slo_class", "slo"),
    "hash_ids": ("hash_ids",),
}


def _pick_columns(header: Iterable[str], origin: str,
                  columns: dict[str, str] | None) -> dict[str, str]:
    names = list(header)
    lower = {h.strip().lower(): h for h in names}
    out: dict[str, str] = {}
    for role, aliases in _GENERIC_ALIASES.items():
        if columns and role in columns:
            if columns[role] not in names:
                raise TraceError(f"{origin}: column {columns[role]!r} (for {role}) not in {names}")
            out[role] = columns[role]
            continue
        for a in aliases:
            if a in lower:
                out[role] = lower[a]
                break
    for role in ("arrival", "prompt", "output"):
        if role not in out:
            raise TraceError(f"{origin}: no {role} column found in {names}; name it with "
                             f"--columns {role}=COLUMN")
    return out


def _open_lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(newline="") as fh:
        yield from enumerate(fh, start=1)


def load_azure_csv(path: Path, skip_bad: bool = False) -> Trace:
    """Azure LLM inference trace 2023: ``TIMESTAMP,ContextTokens,GeneratedTokens``."""
    rows = _Rows(str(path), skip_bad)
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        expected = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]
        if header is None or [h.strip() for h in header[:3]] != expected:
            raise TraceError(f"{path}:1: expected header {','.join(expected)}, got {header}")
        for line, rec in enumerate(reader, start=2):
            if not rec or all(not c.strip() for c in rec):
                continue
            if len(rec) < 3:
                rows.bad(line, f"expected 3 fields, got {len(rec)}")
                continue
            rows.add(line, _parse_datetime(rec[0]), rec[1], rec[2])
    return rows.build(path.stem, {"format": "azure"})


def _json_records(path: Path, rows: _Rows) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, object) for each JSONL line; blank lines skipped, bad ones reported."""
    for line, text in _open_lines(path):
        if not text.strip():
            continue
        try:
            rec = json.loads(text)
        except json.JSONDecodeError as exc:
            rows.bad(line, f"invalid JSON ({exc.msg})")
            continue
        if not isinstance(rec, dict):
            rows.bad(line, "expected a JSON object")
            continue
        yield line, rec


def load_mooncake_jsonl(path: Path, skip_bad: bool = False) -> Trace:
    """Mooncake / FAST'25: ``{"timestamp": ms, "input_length", "output_length", "hash_ids"}``."""
    rows = _Rows(str(path), skip_bad)
    for line, rec in _json_records(path, rows):
        ts = _parse_number(rec.get("timestamp"))
        rows.add(line, None if ts is None else ts / 1000.0, rec.get("input_length"),
                 rec.get("output_length"), hashes=rec.get("hash_ids"),
                 slo=rec.get("slo_class"))
    return rows.build(path.stem, {"format": "mooncake"})


def load_generic(path: Path, skip_bad: bool = False, columns: dict[str, str] | None = None,
                 time_unit: str = "s") -> Trace:
    """CSV or JSONL with named columns (see ``_GENERIC_ALIASES``); numeric times in
    ``time_unit`` ("s" or "ms") or ISO datetimes."""
    scale = {"s": 1.0, "ms": 1e-3}.get(time_unit)
    if scale is None:
        raise TraceError(f"time unit must be 's' or 'ms', got {time_unit!r}")
    rows = _Rows(str(path), skip_bad)

    def stamp(v: Any) -> float | None:
        num = _parse_number(v)
        if num is not None:
            return num * scale
        return _parse_datetime(str(v)) if isinstance(v, str) else None

    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        cols: dict[str, str] | None = None
        for line, rec in _json_records(path, rows):
            if cols is None:
                cols = _pick_columns(rec.keys(), str(path), columns)
            rows.add(line, stamp(rec.get(cols["arrival"])), rec.get(cols["prompt"]),
                     rec.get(cols["output"]),
                     hashes=rec.get(cols["hash_ids"]) if "hash_ids" in cols else None,
                     cls=rec.get(cols["class"]) if "class" in cols else None,
                     slo=rec.get(cols["slo"]) if "slo" in cols else None)
    else:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            cols = _pick_columns(reader.fieldnames or [], str(path), columns)
            for line, rec in enumerate(reader, start=2):
                rows.add(line, stamp(rec.get(cols["arrival"])), rec.get(cols["prompt"]),
                         rec.get(cols["output"]),
                         cls=rec.get(cols["class"]) if "class" in cols else None,
                         slo=rec.get(cols["slo"]) if "slo" in cols else None)
    return rows.build(path.stem, {"format": "generic"})


def detect_format(path: Path) -> str:
    """"azure", "mooncake" or "generic", from the header / first record."""
    with path.open(newline="") as fh:
        first = fh.readline()
    if first.startswith("TIMESTAMP,ContextTokens,GeneratedTokens"):
        return "azure"
    if first.lstrip().startswith("{"):
        try:
            rec = json.loads(first)
        except json.JSONDecodeError:
            return "generic"
        if isinstance(rec, dict) and {"timestamp", "input_length", "output_length"} <= set(rec):
            return "mooncake"
    return "generic"


def bundled_path(name: str) -> Path:
    ref = resources.files("tailwise.simulator").joinpath("data", BUNDLED[name])
    return Path(str(ref))


def load_trace(source: str | os.PathLike[str], fmt: str | None = None, *, skip_bad: bool = False,
               columns: dict[str, str] | None = None, time_unit: str = "s") -> Trace:
    """Load a bundled trace by name (``azure-code``, ``azure-conv``) or a file by path."""
    src = str(source)
    if src in BUNDLED:
        trace = load_azure_csv(bundled_path(src), skip_bad=skip_bad)
        return replace(trace, name=src)
    path = Path(src)
    if not path.exists():
        raise TraceError(f"{path}: no such file (bundled traces: {', '.join(BUNDLED)})")
    if not path.is_file():
        raise TraceError(f"{path}: not a file")
    kind = fmt or detect_format(path)
    if kind == "azure":
        return load_azure_csv(path, skip_bad=skip_bad)
    if kind == "mooncake":
        return load_mooncake_jsonl(path, skip_bad=skip_bad)
    if kind == "generic":
        return load_generic(path, skip_bad=skip_bad, columns=columns, time_unit=time_unit)
    raise TraceError(f"unknown trace format {kind!r} (azure, mooncake, generic)")

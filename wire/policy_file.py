"""Frozen policy files on disk: the I/O edge of :mod:`tailwise.scorer.frozen`.

The scorer owns the pure format (:func:`~tailwise.scorer.frozen.dumps` /
:func:`~tailwise.scorer.frozen.loads`: canonical JSON plus its sha256); this module
reads and writes the files, atomically, beside the policy's protobuf encoding
(:mod:`tailwise.wire.codec`). :func:`atomic_write_text` also keeps the sidecar's state.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tailwise.scorer.frozen import FrozenPolicyError, dumps, loads
from tailwise.scorer.policy import Policy


def atomic_write_text(target: Path, text: str) -> None:
    """Replace ``target`` with ``text`` so that a crash leaves the old file or the new
    one, never half of either: temp file in the same directory, fsync, rename, fsync of
    the directory."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}-", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def save(policy: Policy, path: str | os.PathLike[str]) -> Path:
    """Write ``policy`` as a frozen file, atomically (see :func:`atomic_write_text`)."""
    target = Path(path)
    atomic_write_text(target, dumps(policy))
    return target


def load(path: str | os.PathLike[str]) -> Policy:
    """Read, verify (sha256) and validate a frozen file; :class:`FrozenPolicyError`
    names the file on any problem."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise FrozenPolicyError(f"{p}: cannot read ({exc.strerror})") from exc
    return loads(text, origin=str(p))

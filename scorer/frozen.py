"""Frozen policy files: a policy plus the sha256 of its canonical JSON.

Layout::

    {"format": "tailwise-policy", "schema_version": 3, "sha256": "<hex>", "policy": {...}}

The hash covers ``canonical_json(policy)`` exactly, so any edit to the body (or a
truncated file) is refused with :class:`FrozenPolicyError`. Older schema versions load
through :func:`tailwise.scorer.policy.migrate`.

Pure: text in, text out. Reading and writing the files (atomically) is
:mod:`tailwise.wire.policy_file`'s job.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tailwise.scorer.policy import SCHEMA_VERSION, Policy, PolicyError, Source, canonical_json

FORMAT = "tailwise-policy"


class FrozenPolicyError(ValueError):
    """A frozen policy file is unreadable, tampered with, or invalid."""


def policy_digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def dumps(policy: Policy) -> str:
    """Serialise ``policy`` (marked ``source=frozen``) with its hash."""
    policy.validate()
    frozen = policy.replace(source=Source.FROZEN)
    body = frozen.to_dict()
    doc = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "sha256": policy_digest(body),
        "policy": body,
    }
    return json.dumps(doc, sort_keys=True, indent=2, allow_nan=False) + "\n"


def loads(text: str, origin: str = "<string>") -> Policy:
    """Parse, verify and validate a frozen policy document."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FrozenPolicyError(f"{origin}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise FrozenPolicyError(f"{origin}: not a tailwise policy file (format != {FORMAT!r})")
    body = doc.get("policy")
    digest = doc.get("sha256")
    if not isinstance(body, dict) or not isinstance(digest, str):
        raise FrozenPolicyError(f"{origin}: missing 'policy' object or 'sha256' string")
    try:
        actual = policy_digest(body)
    except ValueError as exc:  # NaN/inf in the body
        raise FrozenPolicyError(f"{origin}: policy body is not canonical JSON ({exc})") from exc
    if actual != digest:
        raise FrozenPolicyError(
            f"{origin}: sha256 mismatch (file says {digest[:12]}…, body hashes to {actual[:12]}…); "
            "the file was modified or corrupted"
        )
    try:
        return Policy.from_dict(body)
    except PolicyError as exc:
        raise FrozenPolicyError(f"{origin}: invalid policy: {exc}") from exc

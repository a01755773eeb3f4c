"""The adapter's configuration: the ``"tailwise"`` object of vLLM's ``--additional-config``.

::

    vllm serve MODEL --scheduler-cls tailwise.engine_adapter.vllm.TailwiseScheduler \\
        --additional-config '{"tailwise": {"policy_file": "/etc/tailwise/policy.json"}}'

Keys (all optional; unknown keys are refused so a typo never silently runs stock vLLM):

``sidecar``
    ``host:port`` of the tailwise sidecar. Policies then arrive over gRPC; until the
    first one does (and whenever the sidecar is gone) the startup policy stays in force.
``policy_file``
    A frozen policy file (:mod:`tailwise.scorer.frozen`): the startup policy. A missing, corrupt
    or tampered file is an error at startup, never a silent fallback.
``mode``
    A mode name (``fcfs``, ``boost``, ``ewsjf``, ``kairos``, ``tailwise``): the startup
    policy is that mode's defaults. Mutually exclusive with ``policy_file``. Neither
    given: ``fcfs``, which is exactly stock vLLM.
``telemetry``
    Report per-request and per-step events to the sidecar (default: on when a sidecar
    is configured). Requires ``sidecar``.
``sidecar_token``, ``sidecar_tls_ca``
    Bearer token and CA bundle path for a sidecar that is not on localhost.

Validation happens once, at scheduler construction, and raises :class:`ConfigError`
naming the key and the value.

>>> TailwiseConfig.from_additional_config({"tailwise": {"mode": "fcfs"}}).mode
'fcfs'
>>> try:
...     TailwiseConfig.from_additional_config({"tailwise": {"mdoe": "fcfs"}})
... except ConfigError as exc:
...     print(exc)  # doctest: +ELLIPSIS
tailwise.mdoe: unknown key; expected one of: mode, policy_file, sidecar, ...
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tailwise.scorer.frozen import FrozenPolicyError
from tailwise.scorer.policy import Mode, Policy, Source
from tailwise.wire.policy_file import load as load_frozen

#: the key under ``--additional-config`` that belongs to tailwise
SECTION = "tailwise"
_KEYS = ("mode", "policy_file", "sidecar", "sidecar_tls_ca", "sidecar_token", "telemetry")


class ConfigError(ValueError):
    """Bad ``--additional-config``; the message names the key and the value."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{SECTION}.{key}: {message}")
        self.key = key


@dataclass(frozen=True, slots=True)
class TailwiseConfig:
    """Validated adapter settings (see the module docstring)."""

    sidecar: str | None = None
    policy_file: Path | None = None
    mode: str | None = None
    telemetry: bool = False
    sidecar_token: str | None = None
    sidecar_tls_ca: Path | None = None

    @classmethod
    def from_additional_config(cls, additional_config: Any) -> TailwiseConfig:
        """Validate vLLM's ``additional_config`` (a dict, possibly without our section)."""
        if additional_config is None:
            return cls()
        if not isinstance(additional_config, dict):
            raise ConfigError(
                "", f"additional_config must be a JSON object, got {type(additional_config).__name__}"
            )
        section = additional_config.get(SECTION)
        if section is None:
            return cls()
        return cls.from_dict(section)

    @classmethod
    def from_dict(cls, data: Any) -> TailwiseConfig:
        """Validate the ``"tailwise"`` object itself."""
        if not isinstance(data, dict):
            raise ConfigError("", f"must be a JSON object, got {type(data).__name__}")
        for key in data:
            if key not in _KEYS:
                raise ConfigError(str(key), f"unknown key; expected one of: {', '.join(_KEYS)}")

        sidecar = data.get("sidecar")
        if sidecar is not None:
            if not isinstance(sidecar, str) or not sidecar.strip():
                raise ConfigError("sidecar", f"must be a non-empty 'host:port' string, got {sidecar!r}")
            host, sep, port = sidecar.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError("sidecar", f"must be 'host:port' with a port in 1..65535, got {sidecar!r}")
            sidecar = sidecar.strip()

        policy_file = data.get("policy_file")
        path: Path | None = None
        if policy_file is not None:
            if not isinstance(policy_file, str | os.PathLike) or not str(policy_file):
                raise ConfigError("policy_file", f"must be a file path string, got {policy_file!r}")
            path = Path(policy_file)

        mode = data.get("mode")
        if mode is not None:
            values = [m.value for m in Mode]
            if not isinstance(mode, str) or mode not in values:
                raise ConfigError("mode", f"must be one of {values}, got {mode!r}")
            if path is not None:
                raise ConfigError("mode", "give either 'mode' or 'policy_file', not both")

        telemetry = data.get("telemetry", sidecar is not None)
        if not isinstance(telemetry, bool):
            raise ConfigError("telemetry", f"must be true or false, got {telemetry!r}")
        if telemetry and sidecar is None:
            raise ConfigError("telemetry", "requires 'sidecar' (telemetry is sent to the sidecar)")

        token = data.get("sidecar_token")
        if token is not None and (not isinstance(token, str) or not token):
            raise ConfigError("sidecar_token", "must be a non-empty string")
        tls_ca = data.get("sidecar_tls_ca")
        if tls_ca is not None and (not isinstance(tls_ca, str) or not tls_ca):
            raise ConfigError("sidecar_tls_ca", f"must be a file path string, got {tls_ca!r}")
        for key, value in (("sidecar_token", token), ("sidecar_tls_ca", tls_ca)):
            if value is not None and sidecar is None:
                raise ConfigError(key, "requires 'sidecar'")

        return cls(
            sidecar=sidecar,
            policy_file=path,
            mode=mode,
            telemetry=telemetry,
            sidecar_token=token,
            sidecar_tls_ca=Path(tls_ca) if tls_ca is not None else None,
        )

    def startup_policy(self) -> Policy:
        """The policy in force before (or without) a sidecar: frozen file, mode, or FCFS."""
        if self.policy_file is not None:
            try:
                return load_frozen(self.policy_file)
            except FrozenPolicyError as exc:
                raise ConfigError("policy_file", str(exc)) from exc
        mode = Mode(self.mode) if self.mode is not None else Mode.FCFS
        return Policy(mode=mode, source=Source.BASELINE)

"""Admin client of a running sidecar: kill switch, manual policy, resume, read, status.

Used by ``tailwise policy kill|push|resume|current`` and by ``tailwise simulate
--online`` (``status``: pacing in engine time); every call has a deadline and a
failed call raises the domain error of :mod:`tailwise.wire.errors`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from tailwise.scorer.policy import Policy
from tailwise.wire import codec, rpc
from tailwise.wire.errors import SidecarError, from_rpc_error
from tailwise.wire.v1 import policy_pb2 as pb


class AdminClient:
    def __init__(self, address: str, *, token: str | None = None,
                 tls_ca: Path | bytes | None = None, tls_server_name: str | None = None,
                 timeout_s: float = 10.0) -> None:
        ca = tls_ca.read_bytes() if isinstance(tls_ca, Path) else tls_ca
        self._channel: Any = rpc.open_channel(address, tls_ca=ca,
                                              tls_server_name=tls_server_name)
        self._stub = rpc.PolicyStub(self._channel)
        self._md = rpc.bearer_metadata(token)
        self.timeout_s = timeout_s

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _set(self, req: pb.SetPolicyRequest) -> pb.SetPolicyResponse:
        try:
            return self._stub.set_policy(req, timeout=self.timeout_s, metadata=self._md)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc

    def kill(self, reason: str = "") -> int:
        """Kill switch: the sidecar publishes mode=fcfs now; returns its version."""
        return int(self._set(pb.SetPolicyRequest(action=pb.SET_POLICY_ACTION_KILL,
                                                 reason=reason)).version)

    def resume(self) -> bool:
        """Re-enable automatic promotion; returns the paused flag (False)."""
        return bool(self._set(pb.SetPolicyRequest(action=pb.SET_POLICY_ACTION_RESUME)).paused)

    def push(self, policy: Policy, reason: str = "") -> int:
        """Publish ``policy`` (validated on both ends) as the next version."""
        return int(self._set(pb.SetPolicyRequest(
            action=pb.SET_POLICY_ACTION_SET, policy=codec.policy_to_proto(policy),
            reason=reason)).version)

    def push_unchecked(self, msg: pb.Policy, reason: str = "") -> int:
        """Testing hook: publish a wire policy without validation (adapters NACK it)."""
        return int(self._set(pb.SetPolicyRequest(
            action=pb.SET_POLICY_ACTION_SET, policy=msg, unchecked=True,
            reason=reason)).version)

    def status(self, *, wait_loop_engine_time: float | None = None, wait_timeout_s: float = 0.0,
               max_rounds: int = 0) -> pb.LearnerStatus:
        """The learner's progress (``GetStatus``). With ``wait_loop_engine_time`` the call
        returns once the loop has completed an iteration at that engine time, or after
        ``wait_timeout_s`` (then ``waited_ok`` is False); the deadline covers the wait."""
        req = pb.GetStatusRequest(wait_loop_engine_time=wait_loop_engine_time or 0.0,
                                  wait_timeout_s=wait_timeout_s, max_rounds=max_rounds)
        try:
            return self._stub.get_status(req, timeout=self.timeout_s + max(wait_timeout_s, 0.0),
                                         metadata=self._md)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc

    def current(self) -> tuple[int, Policy]:
        """Version and (validated) policy in force on the sidecar."""
        try:
            upd = self._stub.get_policy(timeout=self.timeout_s, metadata=self._md)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        return int(upd.version), codec.policy_from_proto(upd.policy)


__all__ = ["AdminClient", "SidecarError"]

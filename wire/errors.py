"""gRPC status codes ↔ tailwise domain exceptions, in one place.

Both sides of the wire use this module (the sidecar in ``learner`` raises domain errors
and :func:`abort_with` turns them into a status; the engine-side client in
``engine_adapter`` turns a failed call back into a domain error with
:func:`from_rpc_error`), so the mapping lives with the wire contract, which both may
import.

>>> import grpc
>>> status_of(Unauthenticated("bad token")) is grpc.StatusCode.UNAUTHENTICATED
True
>>> type(error_for(grpc.StatusCode.INVALID_ARGUMENT, "x")).__name__
'InvalidArgument'
"""

from __future__ import annotations

from typing import Any, NoReturn

import grpc


class SidecarError(Exception):
    """Base of every error that crosses the tailwise wire."""

    #: name of the grpc.StatusCode member this error travels as
    code_name = "UNKNOWN"
    #: worth retrying with backoff (the condition may clear by itself)
    retryable = False


class InvalidArgument(SidecarError):
    """A request or policy failed validation; the message names the field."""

    code_name = "INVALID_ARGUMENT"


class Unauthenticated(SidecarError):
    """Missing or wrong bearer token."""

    code_name = "UNAUTHENTICATED"


class PermissionDenied(SidecarError):
    code_name = "PERMISSION_DENIED"


class FailedPrecondition(SidecarError):
    """The sidecar is not in a state to do this (e.g. a testing hook that is off)."""

    code_name = "FAILED_PRECONDITION"


class Unimplemented(SidecarError):
    """The sidecar does not offer this call (an older or reduced server)."""

    code_name = "UNIMPLEMENTED"


class Unavailable(SidecarError):
    """The sidecar is unreachable or shutting down; retry with backoff."""

    code_name = "UNAVAILABLE"
    retryable = True


class DeadlineExceeded(SidecarError):
    code_name = "DEADLINE_EXCEEDED"
    retryable = True


class ResourceExhausted(SidecarError):
    """Message too large, or the server is at its concurrency limit."""

    code_name = "RESOURCE_EXHAUSTED"
    retryable = True


class Cancelled(SidecarError):
    code_name = "CANCELLED"
    retryable = True


class Internal(SidecarError):
    code_name = "INTERNAL"
    retryable = True


_BY_CODE: dict[str, type[SidecarError]] = {
    cls.code_name: cls
    for cls in (InvalidArgument, Unauthenticated, PermissionDenied, FailedPrecondition,
                Unimplemented, Unavailable, DeadlineExceeded, ResourceExhausted, Cancelled,
                Internal)
}


def status_of(exc: SidecarError) -> Any:
    """The ``grpc.StatusCode`` a domain error travels as."""
    return getattr(grpc.StatusCode, exc.code_name)


def error_for(code: Any, details: str) -> SidecarError:
    """The domain error for a status code (unknown codes → :class:`SidecarError`)."""
    name = getattr(code, "name", str(code))
    cls = _BY_CODE.get(name, SidecarError)
    err = cls(f"{name}: {details}" if cls is SidecarError else details)
    return err


def from_rpc_error(exc: BaseException) -> SidecarError:
    """Map a failed call (``grpc.RpcError``) to its domain error."""
    code_fn = getattr(exc, "code", None)
    details_fn = getattr(exc, "details", None)
    code = code_fn() if callable(code_fn) else None
    details = details_fn() if callable(details_fn) else None
    if code is None:
        return Unavailable(str(exc) or type(exc).__name__)
    return error_for(code, str(details or ""))


def abort_with(context: Any, exc: SidecarError) -> NoReturn:
    """Abort the current RPC with ``exc``'s status (server side)."""
    context.abort(status_of(exc), str(exc))
    raise AssertionError("context.abort returned")  # pragma: no cover

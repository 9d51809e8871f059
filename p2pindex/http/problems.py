"""Errors as ``application/problem+json`` (RFC 9457), saying whether anything was written.

``outcome`` is the field a client branches on: ``definite`` means nothing was written (safe
to retry or report as failed), ``indeterminate`` means the write may have landed (read
before retrying a non-idempotent change). ``type`` names the error in the same words the
binary protocol uses (``p2pindex.errors`` codes).
"""

from __future__ import annotations

from typing import TypedDict

from p2pindex.errors import (
    ConnectionLost,
    DefiniteError,
    IndeterminateError,
    InvalidRequest,
    NotReady,
    Overloaded,
    P2PIndexError,
    PermissionDenied,
    QuorumFailed,
    SiblingLimitExceeded,
    StorageFailure,
    Timeout,
    Unavailable,
)
from p2pindex.http.server import PROBLEM_TYPE, Response, problem

__all__ = ["PROBLEM_TYPE", "outcome_of", "problem", "problem_for", "status_for"]

_STATUS: tuple[tuple[type[P2PIndexError], int], ...] = (
    (SiblingLimitExceeded, 409),
    (InvalidRequest, 400),
    (PermissionDenied, 403),
    (Unavailable, 503),
    (NotReady, 503),
    (Overloaded, 429),
    (StorageFailure, 507),
    (Timeout, 504),
    (QuorumFailed, 502),
    (ConnectionLost, 502),
)


def status_for(error: P2PIndexError) -> int:
    for cls, status in _STATUS:
        if isinstance(error, cls):
            return status
    return 500


def outcome_of(error: P2PIndexError) -> str:
    if isinstance(error, IndeterminateError):
        return "indeterminate"
    if isinstance(error, DefiniteError):
        return "definite"
    return "definite"


class _Counts(TypedDict, total=False):
    """The replica counts a problem adds for the errors that carry them: named keys, so
    the type checker knows none of them lands on ``problem``'s own keyword parameters."""

    required: int
    reachable: int
    acknowledged: int


def problem_for(error: P2PIndexError, *, read: bool = False) -> Response:
    """``error`` as a problem. A failed read (``read``) is ``definite`` whatever the error:
    a read writes nothing, so there is no write whose fate is open."""
    extra: _Counts = {}
    if isinstance(error, Unavailable):
        extra = {"required": error.required, "reachable": error.alive}
    elif isinstance(error, Timeout | QuorumFailed):
        extra = {"required": error.required, "acknowledged": error.acknowledged}
    status = status_for(error)
    # Refusals that pass (a cut, a start, a burst) say when to ask again, as HTTP has it.
    headers = [("retry-after", "1")] if status in (429, 503) else None
    return problem(
        status,
        error.code,
        str(error),
        outcome="definite" if read else outcome_of(error),
        headers=headers,
        **extra,
    )

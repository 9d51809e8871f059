"""One exception tree for the whole system.

Failures are split by what the caller can conclude about the data:
a ``DefiniteError`` means the operation did not take effect anywhere, so it is safe to retry
or to report as failed; an ``IndeterminateError`` means it may or may not have been applied
(a write that timed out after some replicas may have stored it).
"""

from __future__ import annotations


class P2PIndexError(Exception):
    """Base of every error p2pindex raises on purpose."""

    code = "error"
    trace: object | None = None
    """For a request that asked for a trace (``trace=True``): the coordinator's steps that
    led to this failure (a ``p2pindex.client.Trace``), set by the client."""


class DefiniteError(P2PIndexError):
    """The operation had no effect."""


class IndeterminateError(P2PIndexError):
    """The operation may or may not have taken effect."""


class Unavailable(DefiniteError):
    """Too few replicas were reachable to try the request; nothing was written."""

    code = "unavailable"

    def __init__(self, required: int, alive: int, detail: str = "") -> None:
        self.required = required
        self.alive = alive
        message = f"{required} replicas required but only {alive} reachable"
        super().__init__(f"{message}: {detail}" if detail else message)


class InvalidRequest(DefiniteError, ValueError):
    """The request is malformed or breaks a limit; it was refused before doing anything.

    Also a ``ValueError``, so code written against the built-in error (``except
    ValueError``) keeps catching the client's refusals of bad arguments.
    """

    code = "invalid_request"


class InvalidArgumentType(InvalidRequest, TypeError):
    """An argument of the wrong type (a key that is neither text nor bytes, ...); also a
    ``TypeError``, the built-in error such a mistake raises elsewhere in Python."""


class SiblingLimitExceeded(InvalidRequest):
    """The write would push a key past the configured maximum number of siblings."""

    code = "too_many_siblings"


class RecordLimitExceeded(InvalidRequest):
    """The write would make the key's record (every sibling and its context) larger than the
    configured record limit, which keeps every record small enough to replicate and repair."""

    code = "record_too_large"


class Overloaded(DefiniteError):
    """The node refused the request before doing anything, to protect its memory or to keep
    a client within its share (connections, request rate); retrying later or elsewhere is
    safe."""

    code = "overloaded"


class PermissionDenied(DefiniteError):
    """The caller is not allowed to do this; nothing happened."""

    code = "permission_denied"


class MemberRemoved(PermissionDenied):
    """A node was removed from the cluster (`p2pindex remove`) and may not rejoin until it
    is admitted again; a seed refuses its handshake with this, and the node stops."""

    code = "member_removed"


class ClientClosed(DefiniteError, RuntimeError):
    """The client was closed (or never opened) when it was called: nothing was sent.

    Definite, since the request never left the caller; also a ``RuntimeError``, what the
    client raised before this class existed, so ``except RuntimeError`` keeps working.
    """

    code = "client_closed"


class NoNodeReachable(DefiniteError):
    """The client could not reach any of the nodes it was given; nothing was sent."""

    code = "no_node_reachable"


class NotReady(DefiniteError):
    """The node cannot serve requests yet (still starting, or shutting down); it did
    nothing, so a client tries the next node."""

    code = "not_ready"


class LeaveAbandoned(DefiniteError):
    """A leaving node could not hand its ranges to the nodes that take its place: it stays
    a member and keeps serving, and the operator runs the leave again later."""

    code = "leave_abandoned"


class StorageFailure(DefiniteError):
    """Local storage refused a write (disk full, unreadable file); it was not acknowledged."""

    code = "storage_failure"


class Timeout(IndeterminateError):
    """The deadline passed before enough replicas answered; the write may have landed."""

    code = "timeout"

    def __init__(self, message: str = "", *, required: int = 0, acknowledged: int = 0) -> None:
        self.required = required
        self.acknowledged = acknowledged
        super().__init__(message or f"timed out with {acknowledged} of {required} required replies")


class QuorumFailed(IndeterminateError):
    """Too few replicas acknowledged a write that some replicas may already hold."""

    code = "quorum_failed"

    def __init__(self, message: str = "", *, required: int = 0, acknowledged: int = 0) -> None:
        self.required = required
        self.acknowledged = acknowledged
        super().__init__(message or f"{acknowledged} of {required} replicas acknowledged")


class ConnectionLost(IndeterminateError):
    """The connection broke after a request was sent; its outcome is unknown."""

    code = "connection_lost"


class ProtocolError(P2PIndexError):
    """Bytes on the wire broke the protocol (framing, CBOR, schema)."""

    code = "protocol_error"


class MessageTooLarge(ProtocolError):
    code = "too_large"


class ConfigError(P2PIndexError):
    """A configuration value or command-line option is wrong; raised before anything starts."""

    code = "config_error"


ERROR_CODES: dict[str, type[P2PIndexError]] = {
    cls.code: cls
    for cls in (
        Unavailable,
        InvalidRequest,
        SiblingLimitExceeded,
        RecordLimitExceeded,
        Overloaded,
        PermissionDenied,
        MemberRemoved,
        StorageFailure,
        Timeout,
        QuorumFailed,
        ConnectionLost,
        NoNodeReachable,
        NotReady,
        ProtocolError,
        MessageTooLarge,
        ConfigError,
    )
}

"""Translation between the exception tree and ErrorReply messages, in one place."""

from __future__ import annotations

from p2pindex.errors import (
    ERROR_CODES,
    P2PIndexError,
    ProtocolError,
    QuorumFailed,
    Timeout,
    Unavailable,
)
from p2pindex.wire.messages import ErrorReply


def reply_for_error(error: P2PIndexError) -> ErrorReply:
    if isinstance(error, Unavailable):
        return ErrorReply(error.code, str(error), error.required, error.alive)
    if isinstance(error, Timeout | QuorumFailed):
        return ErrorReply(error.code, str(error), error.required, error.acknowledged)
    return ErrorReply(error.code, str(error))


def error_from_reply(reply: ErrorReply) -> P2PIndexError:
    """The exception a caller should see for ``reply``; unknown codes become ProtocolError."""
    if reply.code == Unavailable.code:
        return Unavailable(reply.required or 0, reply.alive or 0, _detail(reply.message))
    if reply.code in (Timeout.code, QuorumFailed.code):
        cls = Timeout if reply.code == Timeout.code else QuorumFailed
        return cls(reply.message, required=reply.required or 0, acknowledged=reply.alive or 0)
    known = ERROR_CODES.get(reply.code)
    if known is None:
        return ProtocolError(f"remote error {reply.code!r}: {reply.message}")
    return known(reply.message)


def _detail(message: str) -> str:
    """Strip the standard Unavailable prefix so re-raising does not repeat it."""
    _, sep, rest = message.partition(" reachable: ")
    return rest if sep else ""

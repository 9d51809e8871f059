"""Security failures, as subclasses of the shared error tree, each with a statistics key.

``reason`` is a short stable key (``expired``, ``wrong_cluster``, ...) that names the counter
and the audit line; the message is the sentence an operator reads. Refusals are
``PermissionDenied`` (definite: nothing happened), broken handshakes are ``ProtocolError``.
"""

from __future__ import annotations

from p2pindex.errors import PermissionDenied, ProtocolError


class CredentialRejected(PermissionDenied):
    """A certificate, capability or revocation list that must not be trusted."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class ConnectionRefused(CredentialRejected):
    """A node declined a client whose credential is good: the node or the client key is at a
    connection limit, or the key broke too many sessions lately. Refused at the handshake,
    so nothing was sent, and another node may accept the same client."""

    REASONS = frozenset({"connections", "client_connections", "broken_sessions"})


class AccessDenied(PermissionDenied):
    """An authenticated peer asked for something its role does not allow."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class HandshakeFailed(ProtocolError):
    """The secure handshake broke off: truncated, malformed, timed out or not spoken."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)

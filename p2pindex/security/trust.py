"""What a party currently trusts: the authority keys and the newest revocation list it has seen.

Revocation lists are versioned and signed by the authority, so any peer may hand one over
(in a handshake hello, in a RevocationPush) and the newest valid one wins; nobody has to be
trusted to relay it faithfully, and an old list can never undo a newer one.
"""

from __future__ import annotations

from collections.abc import Callable

from p2pindex.core.newest import put_newest
from p2pindex.security.certs import (
    ClientCapability,
    Document,
    NodeCertificate,
    RevocationList,
    TrustSet,
    open_document,
    verify_revocations,
)
from p2pindex.security.errors import CredentialRejected

RevocationListener = Callable[[RevocationList], None]

OPENED_MAX = 1024
"""Documents whose signature this party has verified, kept so that the next handshake
presenting the same bytes skips the Ed25519 verification (a fifth of what accepting a
session cost, profiled under a client that reconnects after every frame)."""


class TrustState:
    def __init__(self, trust: TrustSet, revocations: RevocationList | None = None) -> None:
        self.trust = trust
        self.revocations = revocations
        self._listeners: list[RevocationListener] = []
        self._opened: dict[bytes, Document] = {}
        self._opened_under = trust

    def open(self, blob: object, trust: TrustSet, what: str = "document") -> Document:
        """``open_document``, remembering what verified under the current trust set.

        Only documents that verified are kept, keyed by their exact bytes, and all are
        forgotten when the trust set changes (a rotation): the same bytes under the same
        authority keys verify the same way every time. What changes with time (expiry,
        revocation) is not part of this and is checked on every use by the callers.
        """
        if trust is not self.trust or type(blob) is not bytes:
            return open_document(blob, trust, what)
        if self._opened_under is not trust:
            self._opened = {}
            self._opened_under = trust
        document = self._opened.get(blob)
        if document is None:
            document = open_document(blob, trust, what)
            put_newest(self._opened, blob, document, OPENED_MAX)
        return document

    def on_revocations(self, listener: RevocationListener) -> None:
        self._listeners.append(listener)

    @property
    def revocation_version(self) -> int:
        return self.revocations.version if self.revocations is not None else 0

    def offer(self, blob: bytes, presented: str = "the peer") -> bool:
        """Adopt ``blob`` if it is a valid list newer than ours; raises CredentialRejected
        when it is not a valid list of this cluster (the sender is misbehaving)."""
        revocations = verify_revocations(blob, self.trust, presented, self.open)
        if revocations.version <= self.revocation_version:
            return False
        self.revocations = revocations
        for listener in self._listeners:
            listener(revocations)
        return True

    def node_revoked(self, certificate: NodeCertificate) -> bool:
        revocations = self.revocations
        return revocations is not None and revocations.revokes_node(
            certificate.node_id, certificate.serial
        )

    def check_node(self, certificate: NodeCertificate) -> None:
        if self.node_revoked(certificate):
            raise CredentialRejected(
                "revoked",
                f"node {certificate.node_id} is revoked (revocation list version "
                f"{self.revocation_version})",
            )

    def check_capability(self, capability: ClientCapability) -> None:
        revocations = self.revocations
        if revocations is not None and revocations.revokes_serial(capability.serial):
            raise CredentialRejected(
                "revoked",
                f"client capability {capability.serial} is revoked (revocation list version "
                f"{self.revocation_version})",
            )

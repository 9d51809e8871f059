"""What a party currently trusts: the authority keys and the newest revocation list it has seen.

Revocation lists are versioned and signed by the authority, so any peer may hand one over
(in a handshake hello, in a RevocationPush) and the newest valid one wins; nobody has to be
trusted to relay it faithfully, and an old list can never undo a newer one.
"""

from __future__ import annotations

from collections.abc import Callable

from p2pindex.security.certs import (
    ClientCapability,
    NodeCertificate,
    RevocationList,
    TrustSet,
    verify_revocations,
)
from p2pindex.security.errors import CredentialRejected

RevocationListener = Callable[[RevocationList], None]


class TrustState:
    def __init__(self, trust: TrustSet, revocations: RevocationList | None = None) -> None:
        self.trust = trust
        self.revocations = revocations
        self._listeners: list[RevocationListener] = []

    def on_revocations(self, listener: RevocationListener) -> None:
        self._listeners.append(listener)

    @property
    def revocation_version(self) -> int:
        return self.revocations.version if self.revocations is not None else 0

    def offer(self, blob: bytes, presented: str = "the peer") -> bool:
        """Adopt ``blob`` if it is a valid list newer than ours; raises CredentialRejected
        when it is not a valid list of this cluster (the sender is misbehaving)."""
        revocations = verify_revocations(blob, self.trust, presented)
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

"""The node certificates this node has verified, by node id: whose key signs which datagrams.

A node learns certificates from every handshake (both sides present one) and by asking peers
(``CertificateRequest``): each one is verified against the trust set before it is stored, so
a peer that hands over certificates is never trusted for their content. Lookups of unknown
ids are remembered (bounded) so a background task can fetch them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from p2pindex.security.certs import NodeCertificate, verify_node_certificate
from p2pindex.security.errors import CredentialRejected
from p2pindex.security.trust import TrustState

MAX_WANTED = 1024
"""Unknown ids kept for fetching; forged datagrams naming random ids cannot grow it further."""


class Verdict(enum.Enum):
    OK = "ok"
    UNKNOWN = "uncertified"
    REVOKED = "revoked"
    EXPIRED = "expired"


class CertificateDirectory:
    def __init__(self, state: TrustState, wall_clock: Callable[[], float]) -> None:
        self._state = state
        self._wall_clock = wall_clock
        self._certificates: dict[str, NodeCertificate] = {}
        self.wanted: dict[str, None] = {}
        """Node ids seen without a certificate, oldest first."""

    def __len__(self) -> int:
        return len(self._certificates)

    def add(self, certificate: NodeCertificate) -> None:
        """Store a certificate the caller has verified; a newer one replaces an older one."""
        current = self._certificates.get(certificate.node_id)
        if current is None or certificate.expires >= current.expires:
            self._certificates[certificate.node_id] = certificate
        self.wanted.pop(certificate.node_id, None)

    def add_raw(self, blob: bytes) -> NodeCertificate:
        """Verify and store; raises CredentialRejected (revoked included)."""
        certificate = verify_node_certificate(blob, self._state.trust, self._wall_clock())
        self._state.check_node(certificate)
        self.add(certificate)
        return certificate

    def get(self, node_id: str) -> NodeCertificate | None:
        return self._certificates.get(node_id)

    def certificates(self, node_ids: list[str] | None = None) -> list[NodeCertificate]:
        if node_ids is None:
            return list(self._certificates.values())
        return [c for c in map(self._certificates.get, node_ids) if c is not None]

    def lookup(self, node_id: str) -> tuple[Verdict, NodeCertificate | None]:
        """The certificate to check a signature of ``node_id`` against, or why there is none."""
        certificate = self._certificates.get(node_id)
        if certificate is None:
            self.want(node_id)
            return Verdict.UNKNOWN, None
        if self._state.node_revoked(certificate):
            return Verdict.REVOKED, certificate
        if certificate.expires <= self._wall_clock():
            return Verdict.EXPIRED, certificate
        return Verdict.OK, certificate

    def want(self, node_id: str) -> None:
        if node_id in self.wanted or len(self.wanted) >= MAX_WANTED:
            return
        self.wanted[node_id] = None

    def forget_invalid(self) -> list[str]:
        """Drop certificates that the current trust set or revocations no longer accept."""
        dropped = []
        now = self._wall_clock()
        for node_id, certificate in list(self._certificates.items()):
            try:
                verify_node_certificate(certificate.raw, self._state.trust, now)
                self._state.check_node(certificate)
            except CredentialRejected:
                del self._certificates[node_id]
                dropped.append(node_id)
        return dropped

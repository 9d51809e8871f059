"""Signed membership claims: alive and leave by their subject, suspect and dead by the accuser.

A datagram signature proves who *sent* a datagram; gossip relays records from others, so the
records themselves carry a signature by whoever made the claim, and every node can check it
however many hops the record travelled. Only a node can say it is alive (or raise its
incarnation, or move to a new address), and a suspicion counts as one accuser's word — a
Byzantine member can add its own confirmation but cannot forge anyone else's, nor keep a
dead node alive.

The SWIM core needs two calls for this (``core.swim.claims.ClaimSigner``): ``sign`` where
it creates a record as its own claim, and ``verify`` before it merges a record it received.
Verification costs one Ed25519 check per *distinct* record; gossip delivers each record
many times, so results are cached.

A record whose signer's certificate this node has not learnt yet (a member that just joined)
is refused but kept aside: ``take_verifiable`` hands it back once the certificate arrives, so
the claim is not lost while gossip has moved on. For an alive claim the record itself says
where its signer lives, and ``locate`` is told, so the certificate can be fetched from there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey

from p2pindex.core.newest import put_newest
from p2pindex.core.swim.claims import Claim
from p2pindex.core.swim.codec import encode_record
from p2pindex.core.swim.messages import Alive, Record
from p2pindex.security.counting import Counts, Tally
from p2pindex.security.directory import CertificateDirectory, Verdict
from p2pindex.types import Address

DOMAIN = b"p2pindex/claim/v1\x00"
_CACHE_LIMIT = 1 << 16
_WAITING_LIMIT = 4096
"""Records held back for a missing certificate: enough for the whole table a node receives
when it joins a cluster of a few thousand members it has no certificates for yet; forged
ones naming made-up signers cannot grow it further (the oldest go first)."""


def signer_of(record: Record) -> str:
    """Whose claim a record is: the subject for alive and leave, the accuser otherwise."""
    return record.node_id if type(record) is Alive else record.accuser


def claim_bytes(cluster_id: bytes, record: Record) -> bytes:
    """What a claim's signature covers: the record's encoding without its signature."""
    unsigned = dataclasses.replace(record, signature=None)
    return DOMAIN + cluster_id + encode_record(unsigned)


class Claims:
    """Signs this node's claims and verifies everyone's (the hook for ``core.swim.Swim``)."""

    def __init__(
        self,
        signing_key: SigningKey,
        node_id: str,
        cluster_id: bytes,
        directory: CertificateDirectory,
        counts: Counts | None = None,
        locate: Callable[[str, Address], None] | None = None,
    ) -> None:
        _, self._secret = crypto_sign_seed_keypair(bytes(signing_key))
        self._node_id = node_id
        self._cluster_id = cluster_id
        self._directory = directory
        self.counts: Counts = counts if counts is not None else Tally()
        self._verified: dict[Record, None] = {}
        self._waiting: dict[Record, None] = {}
        self._certificates_seen = len(directory)
        self._locate = locate

    def sign(self, record: Claim) -> Claim:
        """``record`` with this node's signature; only for claims this node makes."""
        if signer_of(record) != self._node_id:
            raise ValueError(f"node {self._node_id} cannot sign a claim by {signer_of(record)}")
        message = claim_bytes(self._cluster_id, record)
        signature = crypto_sign(message, self._secret)[:64]
        return dataclasses.replace(record, signature=signature)

    def verify(self, record: Record) -> bool:
        """True when the record carries a valid signature by its signer; counts each failure."""
        if record in self._verified:
            return True
        incr = self.counts.incr
        signature = record.signature
        if signature is None or len(signature) != 64:
            incr("claims.unsigned")
            return False
        verdict, certificate = self._directory.lookup(signer_of(record))
        if verdict is not Verdict.OK or certificate is None:
            incr(f"claims.{verdict.value}_signer")
            if verdict is Verdict.UNKNOWN:
                self._wait(record)
            return False
        try:
            message = claim_bytes(self._cluster_id, record)
            crypto_sign_open(signature + message, certificate.public_key)
        except BadSignatureError:
            incr("claims.bad_signature")
            return False
        if len(self._verified) >= _CACHE_LIMIT:
            self._verified.clear()
        self._verified[record] = None
        return True

    def _wait(self, record: Record) -> None:
        put_newest(self._waiting, record, None, _WAITING_LIMIT)
        if self._locate is not None and type(record) is Alive:
            self._locate(record.node_id, record.address)

    @property
    def holding(self) -> bool:
        """Whether records are waiting for a certificate (``take_verifiable`` may have work)."""
        return bool(self._waiting)

    def take_verifiable(self) -> list[Record]:
        """Records refused for an unknown signer whose certificate is now known (to be
        received again); each is handed back once."""
        directory = self._directory
        if not self._waiting or len(directory) == self._certificates_seen:
            return []
        self._certificates_seen = len(directory)
        ready = [r for r in self._waiting if directory.get(signer_of(r)) is not None]
        for record in ready:
            del self._waiting[record]
        if ready:
            self.counts.incr("claims.retried", len(ready))
        return ready

    def forget_verified(self) -> None:
        """Check every record again from now on (a signer was revoked)."""
        self._verified.clear()

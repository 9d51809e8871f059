"""The seam through which the SWIM core signs its own membership claims and checks others'.

Gossip relays records made by other nodes, so a datagram signature (which names only the
last hop) cannot say who made a claim. A record therefore carries its maker's signature:
alive and leave by the subject, suspect and dead by the accuser. The core stays free of any
crypto library: whoever runs it plugs in an implementation (``p2pindex.security.claims``)
or nothing, and then records travel unsigned as before.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from .messages import Alive, Dead, Record, Suspect

Claim = TypeVar("Claim", Alive, Suspect, Dead)


class ClaimSigner(Protocol):
    def sign(self, record: Claim) -> Claim:
        """``record`` carrying this node's signature; only called for claims this node makes."""
        ...

    def verify(self, record: Record) -> bool:
        """True when ``record`` is signed by the node whose claim it is (and that node may
        still speak for itself: certified, not revoked)."""
        ...

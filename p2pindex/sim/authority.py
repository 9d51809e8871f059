"""The cluster authority of a simulated cluster, in memory and derived from the run's seed.

A real cluster is made secure by files: ``p2pindex cluster init`` makes an authority,
``cluster certify`` writes each node's certificate and the trust file into its data
directory, and ``token issue`` writes a client's credentials; the node process then builds
its ``SecurityManager`` from those files (``net.secure.loading``) and hands it to ``Node``.
A simulated node has no data directory, so this authority issues the same signed documents
in memory and builds the same ``SecurityManager`` from them: the node, the handshake, the
sessions and the signed SWIM datagrams and claims are the production ones.

Everything random is drawn from the seed: the authority key, certificate serials, and each
process's handshake randomness (ephemeral keys and nonces), so a run's bytes, which the trace
hashes, repeat exactly. Documents are dated from the simulated wall clock's fixed epoch, a
day back, so a node whose clock a fault moves stays inside their validity.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Final

from nacl.signing import SigningKey

from p2pindex.net.secure.connector import Connector, SecureConnector
from p2pindex.net.secure.manager import SecurityManager
from p2pindex.node.identity import NodeIdentity
from p2pindex.security.certs import (
    Role,
    TrustSet,
    cluster_id_of,
    issue_capability,
    issue_node_certificate,
)
from p2pindex.security.credentials import ClientCredentials
from p2pindex.sim.determinism import EPOCH, derive_rng

DAY: Final = 24 * 3600
ISSUED: Final = int(EPOCH) - DAY
"""When every document of a simulated cluster was issued: a day before virtual time 0."""
LIFETIME: Final = 365 * DAY
CLIENT_ROLE: Final = Role.WRITE
"""What a simulated client may do: read and write every key, as the workload does."""


class SimClusterAuthority:
    """Issues a simulated cluster's certificates and credentials and builds its nodes'
    security managers and clients' connectors."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self.key = SigningKey(derive_rng(seed, "authority").randbytes(32))
        public = bytes(self.key.verify_key)
        self.trust = TrustSet(cluster_id_of(public), frozenset({public}))
        self._serials = derive_rng(seed, "serials")

    def _serial(self) -> int:
        return self._serials.getrandbits(63)

    def certify(self, identity: NodeIdentity) -> bytes:
        """A node certificate for ``identity`` (what ``cluster certify`` writes to disk)."""
        return issue_node_certificate(
            self.key,
            self.trust.cluster_id,
            identity.public_key,
            issued=ISSUED,
            lifetime=LIFETIME,
            serial=self._serial(),
        )

    def credentials(self, name: str) -> ClientCredentials:
        """Client ``name``'s credentials (what ``token issue`` writes to its file)."""
        key = SigningKey(derive_rng(self._seed, f"client-key:{name}").randbytes(32))
        capability = issue_capability(
            self.key,
            self.trust.cluster_id,
            bytes(key.verify_key),
            CLIENT_ROLE,
            issued=ISSUED,
            lifetime=LIFETIME,
            serial=self._serial(),
        )
        return ClientCredentials(key, capability, self.trust)

    def manager(
        self,
        identity: NodeIdentity,
        certificate: bytes,
        process: str,
        wall_clock: Callable[[], float],
    ) -> SecurityManager:
        """The security of one node process (``process`` names it among the run's
        processes, so each draws its own random stream)."""
        return SecurityManager(
            identity.signing_key,
            certificate,
            self.trust,
            wall_clock=wall_clock,
            rng=derive_rng(self._seed, f"security:{process}"),
            random_bytes=_bytes_from(derive_rng(self._seed, f"handshakes:{process}")),
        )

    def connector(
        self, name: str, transport: Connector, wall_clock: Callable[[], float]
    ) -> SecureConnector:
        """How client ``name`` opens connections: the handshake with its credentials."""
        return SecureConnector(
            self.credentials(name),
            transport=transport,
            wall_clock=wall_clock,
            random_bytes=_bytes_from(derive_rng(self._seed, f"handshakes:{name}")),
        )


def _bytes_from(rng: random.Random) -> Callable[[int], bytes]:
    return rng.randbytes

"""The cluster authority: the key that certifies nodes, issues capabilities and revokes.

Its directory holds ``authority.key`` (the signing key, mode 0600; keep it offline in a real
deployment), ``cluster.trust`` (the public keys nodes and clients trust) and
``revocations.cbor`` (the latest signed revocation list). Everything a node needs is copied
into its data directory by ``provision``; that is the single step between "a machine with
p2pindex installed" and "a member of this cluster".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from nacl.signing import SigningKey

from p2pindex.errors import ConfigError
from p2pindex.security.certs import (
    NodeCertificate,
    Role,
    TrustSet,
    cluster_id_of,
    issue_capability,
    issue_node_certificate,
    issue_revocations,
    verify_node_certificate,
    verify_revocations,
)
from p2pindex.security.credentials import ClientCredentials
from p2pindex.security.errors import CredentialRejected
from p2pindex.security.files import CERT_FILE, REVOCATIONS_FILE, TRUST_FILE
from p2pindex.security.keys import (
    generate,
    key_id,
    read_private_key,
    write_file_atomically,
    write_private_key,
)

AUTHORITY_KEY = "authority.key"
NODE_KEY = "node.key"
"""The node key file of a data directory (as ``p2pindex.node.identity`` names it)."""
DAY = 24 * 3600
NODE_LIFETIME = 365 * DAY
CLIENT_LIFETIME = 30 * DAY


@dataclass(frozen=True, slots=True)
class Authority:
    directory: Path
    key: SigningKey
    trust: TrustSet

    @property
    def public_key(self) -> bytes:
        return bytes(self.key.verify_key)

    @property
    def cluster_id(self) -> bytes:
        return self.trust.cluster_id

    # --- creation and loading --------------------------------------------------------------

    @classmethod
    def init(cls, directory: Path) -> Authority:
        """A new cluster: a fresh authority key and a trust file listing it."""
        if (directory / AUTHORITY_KEY).exists():
            raise ConfigError(f"{directory} already holds an authority; refusing to replace it")
        key = generate()
        public = bytes(key.verify_key)
        trust = TrustSet(cluster_id_of(public), frozenset({public}))
        write_private_key(directory / AUTHORITY_KEY, key)
        directory.chmod(0o700)
        trust.save(directory / TRUST_FILE)
        return cls(directory, key, trust)

    @classmethod
    def load(cls, directory: Path) -> Authority:
        if not (directory / AUTHORITY_KEY).exists():
            raise ConfigError(
                f"{directory} holds no authority key; create one with "
                f"`p2pindex cluster init --dir {directory}`"
            )
        key = read_private_key(directory / AUTHORITY_KEY)
        trust = TrustSet.load(directory / TRUST_FILE)
        if bytes(key.verify_key) not in trust.authorities:
            raise ConfigError(f"the key in {directory} is not listed in its own trust file")
        return cls(directory, key, trust)

    @classmethod
    def load_or_init(cls, directory: Path) -> Authority:
        """For local clusters (`p2pindex dev`, tests): reuse the authority or make one."""
        if (directory / AUTHORITY_KEY).exists():
            return cls.load(directory)
        return cls.init(directory)

    # --- issuing ---------------------------------------------------------------------------

    def certify(self, public_key: bytes, lifetime: int = NODE_LIFETIME) -> bytes:
        return issue_node_certificate(
            self.key, self.cluster_id, public_key, issued=int(time.time()), lifetime=lifetime
        )

    def capability(
        self, public_key: bytes, role: Role, prefix: bytes = b"", lifetime: int = CLIENT_LIFETIME
    ) -> bytes:
        return issue_capability(
            self.key,
            self.cluster_id,
            public_key,
            role,
            prefix=prefix,
            issued=int(time.time()),
            lifetime=lifetime,
        )

    def credentials(
        self,
        role: Role,
        prefix: bytes = b"",
        lifetime: int = CLIENT_LIFETIME,
        key: SigningKey | None = None,
    ) -> ClientCredentials:
        """Client credentials for ``key`` (a fresh key when None)."""
        key = key or generate()
        capability = self.capability(bytes(key.verify_key), role, prefix, lifetime)
        return ClientCredentials(key, capability, self.trust)

    def provision(self, data_dir: Path, lifetime: int = NODE_LIFETIME) -> NodeCertificate:
        """Make ``data_dir`` a member: its key (created if missing), its certificate, the
        trust file and the current revocation list. Re-running renews the certificate."""
        key_path = data_dir / NODE_KEY
        if key_path.exists():
            node_key = read_private_key(key_path)
        else:
            node_key = generate()
            write_private_key(key_path, node_key)
        certificate = self.certify(bytes(node_key.verify_key), lifetime)
        write_file_atomically(data_dir / CERT_FILE, certificate)
        self.trust.save(data_dir / TRUST_FILE)
        revocations = self.revocations()
        if revocations is not None:
            write_file_atomically(data_dir / REVOCATIONS_FILE, revocations)
        return verify_node_certificate(certificate, self.trust, time.time(), "the new certificate")

    # --- revocation ------------------------------------------------------------------------

    def revocations(self) -> bytes | None:
        path = self.directory / REVOCATIONS_FILE
        return path.read_bytes() if path.exists() else None

    def revoke(self, node_ids: tuple[str, ...] = (), serials: tuple[int, ...] = ()) -> bytes:
        """A new revocation list: the current entries plus these, at a higher version.

        The version is at least the current time in seconds, so a list made after the saved
        one was lost still supersedes what nodes hold (it must then name every revocation
        again: nodes replace their list, they do not merge).
        """
        current = self.revocations()
        nodes: set[str] = set(node_ids)
        revoked_serials: set[int] = set(serials)
        version = 0
        if current is not None:
            try:
                previous = verify_revocations(current, self.trust, "the saved list")
            except CredentialRejected as exc:
                raise ConfigError(f"the saved revocation list is unusable: {exc}") from None
            nodes |= previous.node_ids
            revoked_serials |= previous.serials
            version = previous.version
        now = int(time.time())
        document = issue_revocations(
            self.key,
            self.cluster_id,
            version=max(version + 1, now),
            issued=now,
            node_ids=nodes,
            serials=revoked_serials,
        )
        write_file_atomically(self.directory / REVOCATIONS_FILE, document)
        return document

    # --- rotation --------------------------------------------------------------------------

    def rotate(self) -> Authority:
        """A new signing key, trusted next to the old one (kept as authority-<id>.key); the
        revocation list is re-signed with it, so it stays valid after the old key retires.

        Distribute the new trust file, re-certify nodes and re-issue capabilities, then
        ``retire`` the old key: nodes accept both keys in between, so nothing stops.
        """
        old_id = key_id(self.public_key).hex()
        write_private_key(self.directory / f"authority-{old_id}.key", self.key)
        key = generate()
        trust = self.trust.with_authority(bytes(key.verify_key))
        write_private_key(self.directory / AUTHORITY_KEY, key, overwrite=True)
        trust.save(self.directory / TRUST_FILE)
        rotated = Authority(self.directory, key, trust)
        if self.revocations() is not None:
            rotated.revoke()
        return rotated

    def retire(self, authority_id: str) -> Authority:
        """Stop trusting the authority key whose id is ``authority_id`` (hex)."""
        matches = [k for k in self.trust.authorities if key_id(k).hex() == authority_id.lower()]
        if not matches:
            known = ", ".join(sorted(key_id(k).hex() for k in self.trust.authorities))
            raise ConfigError(f"no trusted authority {authority_id} (trusted: {known})")
        if matches[0] == self.public_key:
            raise ConfigError("refusing to retire the current signing key; rotate first")
        trust = self.trust.without_authority(matches[0])
        trust.save(self.directory / TRUST_FILE)
        return Authority(self.directory, self.key, trust)

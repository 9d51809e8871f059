"""Signed documents of a cluster: node certificates, client capabilities, revocation lists.

Each document is the canonical CBOR ``[body, signature]`` where ``body`` is itself the
canonical CBOR of a map and ``signature`` is the authority's Ed25519 signature over a domain
label plus ``body``; verifying the exact bytes received (never a re-encoding) means there is
one thing to check and nothing to canonicalise.

A cluster is named by ``cluster_id``, 8 bytes derived from its first authority key. Every
document names its cluster and the authority key that signed it, so a node can tell "a key
from another cluster" from "an authority we no longer trust" from "a forgery", and say which.
A node trusts a *set* of authority keys (the trust file): adding a new key, re-issuing, then
removing the old one rotates the authority without stopping anything.
"""

from __future__ import annotations

import enum
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import cbor2
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from p2pindex.core import strict_cbor
from p2pindex.errors import ConfigError
from p2pindex.security.errors import CredentialRejected
from p2pindex.security.keys import KEY_ID_BYTES, key_id, write_file_atomically

DOMAIN = b"p2pindex/document/v1\x00"
CLOCK_SKEW = 300
"""Seconds a document's ``issued`` may lie in the future (clocks of issuer and node differ)."""
MAX_DOCUMENT = 1 << 20
MAX_PREFIX = 1024
MAX_REVOKED = 100_000
MAX_INT = 2**63 - 1
TRUST_FORMAT = "p2pindex-trust/1"

_NODE_ID = re.compile(r"[0-9a-f]{16}")


class Role(enum.Enum):
    """What a client may do; each role includes the ones before it."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


def node_id_of(public_key: bytes) -> str:
    """The node id a key stands for (the same derivation as ``p2pindex.node.identity``)."""
    return key_id(public_key).hex()


def cluster_id_of(first_authority_key: bytes) -> bytes:
    return key_id(first_authority_key)


def when(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# --- the trust file --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrustSet:
    """The authority public keys a node accepts, and the cluster they sign for."""

    cluster_id: bytes
    authorities: frozenset[bytes]

    def __post_init__(self) -> None:
        if len(self.cluster_id) != KEY_ID_BYTES:
            raise ConfigError("a cluster id is 8 bytes")
        if not self.authorities or any(len(key) != 32 for key in self.authorities):
            raise ConfigError("a trust set needs at least one 32-byte authority key")

    @property
    def cluster(self) -> str:
        return self.cluster_id.hex()

    def authority(self, authority_id: bytes) -> VerifyKey | None:
        for key in self.authorities:
            if key_id(key) == authority_id:
                return VerifyKey(key)
        return None

    def with_authority(self, public_key: bytes) -> TrustSet:
        return TrustSet(self.cluster_id, self.authorities | {public_key})

    def without_authority(self, public_key: bytes) -> TrustSet:
        if public_key not in self.authorities:
            raise ConfigError(f"authority {key_id(public_key).hex()} is not in the trust set")
        if len(self.authorities) == 1:
            raise ConfigError("refusing to remove the last trusted authority")
        return TrustSet(self.cluster_id, self.authorities - {public_key})

    def to_json(self) -> str:
        doc = {
            "format": TRUST_FORMAT,
            "cluster": self.cluster,
            "authorities": sorted(key.hex() for key in self.authorities),
        }
        return json.dumps(doc, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, origin: str = "trust file") -> TrustSet:
        """Parse a trust file; every problem is named in words, never in the parser's."""
        bad = f"{origin} is not a valid trust file"
        try:
            doc = json.loads(text)
        except ValueError:
            raise ConfigError(f"{bad}: it is not JSON") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"{bad}: it is not a JSON object")
        if doc.get("format") != TRUST_FORMAT:
            raise ConfigError(f"{bad}: format is {doc.get('format')!r}, expected {TRUST_FORMAT!r}")
        try:
            cluster_id = bytes.fromhex(doc["cluster"])
            authorities = frozenset(bytes.fromhex(key) for key in doc["authorities"])
        except KeyError as exc:
            raise ConfigError(f"{bad}: the {exc.args[0]!r} field is missing") from None
        except (ValueError, TypeError):
            raise ConfigError(f"{bad}: its cluster id and authority keys must be hex") from None
        try:
            return cls(cluster_id, authorities)
        except ConfigError as exc:
            raise ConfigError(f"{bad}: {exc}") from None

    @classmethod
    def load(cls, path: Path) -> TrustSet:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read trust file {path}: {exc.strerror}") from None
        return cls.from_json(text, str(path))

    def save(self, path: Path) -> None:
        write_file_atomically(path, self.to_json().encode())


# --- documents -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeCertificate:
    cluster_id: bytes
    public_key: bytes
    node_id: str
    issued: int
    expires: int
    serial: int
    authority_id: bytes
    raw: bytes
    """The signed encoding, forwarded as is (other nodes verify the same bytes)."""


@dataclass(frozen=True, slots=True)
class ClientCapability:
    cluster_id: bytes
    public_key: bytes
    role: Role
    prefix: bytes
    """Keys the client may read or write start with this (empty: every key)."""
    issued: int
    expires: int
    serial: int
    authority_id: bytes
    raw: bytes

    def allows_key(self, key: bytes) -> bool:
        return key.startswith(self.prefix)


@dataclass(frozen=True, slots=True)
class RevocationList:
    cluster_id: bytes
    version: int
    issued: int
    node_ids: frozenset[str]
    serials: frozenset[int]
    """Serials of revoked certificates and capabilities."""
    authority_id: bytes
    raw: bytes

    def revokes_node(self, node_id: str, serial: int) -> bool:
        return node_id in self.node_ids or serial in self.serials

    def revokes_serial(self, serial: int) -> bool:
        return serial in self.serials


Document = NodeCertificate | ClientCapability | RevocationList

_KINDS = {NodeCertificate: "node", ClientCapability: "client", RevocationList: "revocations"}
_NAMES = {
    "node": "a node certificate",
    "client": "a client capability",
    "revocations": "a revocation list",
}


def new_serial() -> int:
    return int.from_bytes(os.urandom(8), "big") & MAX_INT


def _sign(
    authority: SigningKey, cluster_id: bytes, kind: str, fields: Mapping[str, object]
) -> bytes:
    body = {
        "type": kind,
        "cluster": cluster_id,
        "authority": key_id(bytes(authority.verify_key)),
        **fields,
    }
    encoded = cbor2.dumps(body, canonical=True)
    signature = authority.sign(DOMAIN + encoded).signature
    return cbor2.dumps([encoded, signature], canonical=True)


def issue_node_certificate(
    authority: SigningKey,
    cluster_id: bytes,
    public_key: bytes,
    *,
    issued: int,
    lifetime: int,
    serial: int | None = None,
) -> bytes:
    if len(public_key) != 32:
        raise ConfigError("a node public key is 32 bytes")
    fields = {
        "key": public_key,
        "node": node_id_of(public_key),
        "issued": issued,
        "expires": issued + lifetime,
        "serial": new_serial() if serial is None else serial,
    }
    return _sign(authority, cluster_id, "node", fields)


def issue_capability(
    authority: SigningKey,
    cluster_id: bytes,
    public_key: bytes,
    role: Role,
    *,
    prefix: bytes = b"",
    issued: int,
    lifetime: int,
    serial: int | None = None,
) -> bytes:
    if len(public_key) != 32:
        raise ConfigError("a client public key is 32 bytes")
    if len(prefix) > MAX_PREFIX:
        raise ConfigError(f"a key prefix is at most {MAX_PREFIX} bytes")
    fields = {
        "key": public_key,
        "role": role.value,
        "prefix": prefix,
        "issued": issued,
        "expires": issued + lifetime,
        "serial": new_serial() if serial is None else serial,
    }
    return _sign(authority, cluster_id, "client", fields)


def issue_revocations(
    authority: SigningKey,
    cluster_id: bytes,
    *,
    version: int,
    issued: int,
    node_ids: Iterable[str] = (),
    serials: Iterable[int] = (),
) -> bytes:
    fields = {
        "version": version,
        "issued": issued,
        "nodes": sorted(set(node_ids)),
        "serials": sorted(set(serials)),
    }
    return _sign(authority, cluster_id, "revocations", fields)


# --- verification ----------------------------------------------------------------------------


def _malformed(what: str, detail: str) -> CredentialRejected:
    return CredentialRejected("malformed", f"malformed {what}: {detail}")


def _field(body: dict[object, object], name: str, kind: type, what: str) -> object:
    value = body.get(name)
    if type(value) is not kind:
        raise _malformed(what, f"field {name!r} is missing or not {kind.__name__}")
    return value


def _int_field(body: dict[object, object], name: str, what: str) -> int:
    value = _field(body, name, int, what)
    assert isinstance(value, int)
    if not 0 <= value <= MAX_INT:
        raise _malformed(what, f"field {name!r} is out of range")
    return value


def _bytes_field(body: dict[object, object], name: str, what: str, size: int) -> bytes:
    value = _field(body, name, bytes, what)
    assert isinstance(value, bytes)
    if len(value) != size:
        raise _malformed(what, f"field {name!r} must be {size} bytes")
    return value


def open_document(blob: object, trust: TrustSet, what: str = "document") -> Document:
    """Check structure, cluster, authority and signature; raises CredentialRejected.

    Times are not checked here (see ``check_validity``): a revocation list never expires,
    and callers word expiry differently.
    """
    if not isinstance(blob, bytes):
        raise _malformed(what, "not a byte string")
    if len(blob) > MAX_DOCUMENT:
        raise _malformed(what, f"{len(blob)} bytes is too large")
    try:
        envelope = strict_cbor.loads(blob)
        if type(envelope) is not list or len(envelope) != 2:
            raise strict_cbor.MalformedCbor("not a [body, signature] pair")
        encoded, signature = envelope
        if type(encoded) is not bytes or type(signature) is not bytes or len(signature) != 64:
            raise strict_cbor.MalformedCbor("body or signature has the wrong type")
        body = strict_cbor.loads(encoded)
        if type(body) is not dict:
            raise strict_cbor.MalformedCbor("body is not a map")
    except strict_cbor.MalformedCbor as exc:
        raise _malformed(what, str(exc)) from None
    kind = body.get("type")
    if kind not in _NAMES:
        raise _malformed(what, f"unknown document type {kind!r}")
    what = _NAMES[str(kind)]
    cluster_id = _bytes_field(body, "cluster", what, KEY_ID_BYTES)
    authority_id = _bytes_field(body, "authority", what, KEY_ID_BYTES)
    if cluster_id != trust.cluster_id:
        raise CredentialRejected(
            "wrong_cluster",
            f"{what} of cluster {cluster_id.hex()} was presented to cluster {trust.cluster}",
        )
    verify_key = trust.authority(authority_id)
    if verify_key is None:
        raise CredentialRejected(
            "untrusted_authority",
            f"{what} is signed by authority {authority_id.hex()}, which this cluster's trust "
            "file does not list (removed after a rotation, or never added)",
        )
    try:
        verify_key.verify(DOMAIN + encoded, signature)
    except BadSignatureError:
        raise CredentialRejected(
            "bad_signature", f"{what} has a signature that does not verify (forged or altered)"
        ) from None
    return _build(str(kind), body, cluster_id, authority_id, blob, what)


def _build(
    kind: str,
    body: dict[object, object],
    cluster_id: bytes,
    authority_id: bytes,
    blob: bytes,
    what: str,
) -> Document:
    if kind == "revocations":
        nodes = _field(body, "nodes", list, what)
        serials = _field(body, "serials", list, what)
        assert isinstance(nodes, list) and isinstance(serials, list)
        if len(nodes) + len(serials) > MAX_REVOKED:
            raise _malformed(what, "too many entries")
        if not all(type(n) is str and _NODE_ID.fullmatch(n) for n in nodes):
            raise _malformed(what, "a revoked node id is not 16 hex digits")
        if not all(type(s) is int and 0 <= s <= MAX_INT for s in serials):
            raise _malformed(what, "a revoked serial is not a serial number")
        return RevocationList(
            cluster_id,
            _int_field(body, "version", what),
            _int_field(body, "issued", what),
            frozenset(nodes),
            frozenset(serials),
            authority_id,
            blob,
        )
    public_key = _bytes_field(body, "key", what, 32)
    issued = _int_field(body, "issued", what)
    expires = _int_field(body, "expires", what)
    serial = _int_field(body, "serial", what)
    if kind == "node":
        node_id = _field(body, "node", str, what)
        if node_id != node_id_of(public_key):
            raise _malformed(what, "its node id does not belong to its key")
        return NodeCertificate(
            cluster_id,
            public_key,
            node_id_of(public_key),
            issued,
            expires,
            serial,
            authority_id,
            blob,
        )
    role_name = _field(body, "role", str, what)
    prefix = _field(body, "prefix", bytes, what)
    assert isinstance(prefix, bytes)
    if len(prefix) > MAX_PREFIX:
        raise _malformed(what, "key prefix is too long")
    try:
        role = Role(role_name)
    except ValueError:
        raise _malformed(what, f"unknown role {role_name!r}") from None
    return ClientCapability(
        cluster_id, public_key, role, prefix, issued, expires, serial, authority_id, blob
    )


def check_validity(document: NodeCertificate | ClientCapability, now: float) -> None:
    what = "node certificate" if isinstance(document, NodeCertificate) else "client capability"
    if document.issued > now + CLOCK_SKEW:
        raise CredentialRejected(
            "not_yet_valid", f"{what} is not valid before {when(document.issued)}"
        )
    if document.expires <= now:
        raise CredentialRejected(
            "expired", f"{what} expired at {when(document.expires)} (now {when(int(now))})"
        )


def _expect(document: Document, kind: type, presented: str) -> None:
    if not isinstance(document, kind):
        wanted = _NAMES[_KINDS[kind]]
        found = _NAMES[_KINDS[type(document)]]
        raise CredentialRejected(
            "wrong_document", f"{presented} presented {found} where {wanted} is required"
        )


Opener = Callable[[object, TrustSet, str], Document]
"""``open_document`` or a cache in front of it (``TrustState.open``)."""


def verify_node_certificate(
    blob: object,
    trust: TrustSet,
    now: float,
    presented: str = "the peer",
    opener: Opener = open_document,
) -> NodeCertificate:
    document = opener(blob, trust, "node certificate")
    _expect(document, NodeCertificate, presented)
    assert isinstance(document, NodeCertificate)
    check_validity(document, now)
    return document


def verify_capability(
    blob: object,
    trust: TrustSet,
    now: float,
    presented: str = "the client",
    opener: Opener = open_document,
) -> ClientCapability:
    document = opener(blob, trust, "client capability")
    _expect(document, ClientCapability, presented)
    assert isinstance(document, ClientCapability)
    check_validity(document, now)
    return document


def verify_revocations(
    blob: object, trust: TrustSet, presented: str = "the peer", opener: Opener = open_document
) -> RevocationList:
    document = opener(blob, trust, "revocation list")
    _expect(document, RevocationList, presented)
    assert isinstance(document, RevocationList)
    return document

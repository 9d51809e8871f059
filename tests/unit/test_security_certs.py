"""Keys, trust files and signed documents: every way a document can be wrong is refused,
with the reason that names it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from p2pindex.errors import ConfigError, PermissionDenied
from p2pindex.node.identity import NodeIdentity, node_id_for
from p2pindex.security.certs import (
    ClientCapability,
    NodeCertificate,
    RevocationList,
    Role,
    TrustSet,
    cluster_id_of,
    issue_capability,
    issue_node_certificate,
    issue_revocations,
    node_id_of,
    open_document,
    verify_capability,
    verify_node_certificate,
    verify_revocations,
)
from p2pindex.security.errors import CredentialRejected
from p2pindex.security.keys import key_id, read_private_key, write_private_key

NOW = 1_800_000_000
DAY = 86400


def make_authority(seed: int = 1) -> tuple[SigningKey, TrustSet]:
    key = SigningKey(bytes([seed]) * 32)
    public = bytes(key.verify_key)
    return key, TrustSet(cluster_id_of(public), frozenset({public}))


AUTHORITY, TRUST = make_authority(1)
OTHER_AUTHORITY, OTHER_TRUST = make_authority(2)
NODE_KEY = SigningKey(bytes([7]) * 32)
NODE_PUBLIC = bytes(NODE_KEY.verify_key)


def node_cert(authority: SigningKey = AUTHORITY, trust: TrustSet = TRUST, **kw: int) -> bytes:
    options = {"issued": NOW - DAY, "lifetime": 30 * DAY, **kw}
    return issue_node_certificate(authority, trust.cluster_id, NODE_PUBLIC, **options)


def capability(role: Role = Role.WRITE, prefix: bytes = b"", **kw: int) -> bytes:
    options = {"issued": NOW - DAY, "lifetime": 30 * DAY, **kw}
    cluster = TRUST.cluster_id
    return issue_capability(AUTHORITY, cluster, NODE_PUBLIC, role, prefix=prefix, **options)


def reason(call: Callable[[], object]) -> str:
    with pytest.raises(CredentialRejected) as info:
        call()
    assert isinstance(info.value, PermissionDenied)
    return info.value.reason


# --- keys and ids ------------------------------------------------------------------------


def test_node_id_matches_the_identity_derivation() -> None:
    identity = NodeIdentity(NODE_KEY)
    assert node_id_of(NODE_PUBLIC) == node_id_for(NODE_PUBLIC) == identity.node_id
    assert key_id(NODE_PUBLIC).hex() == identity.node_id


def test_key_files_are_private_and_never_overwritten_by_accident(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    write_private_key(path, NODE_KEY)
    assert path.stat().st_mode & 0o777 == 0o600
    assert bytes(read_private_key(path)) == bytes(NODE_KEY)
    with pytest.raises(ConfigError, match="already exists"):
        write_private_key(path, AUTHORITY)
    write_private_key(path, AUTHORITY, overwrite=True)
    assert bytes(read_private_key(path)) == bytes(AUTHORITY)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_private_key(path)
    (tmp_path / "short.key").write_bytes(b"x" * 5)
    with pytest.raises(ConfigError, match="not a key file"):
        read_private_key(tmp_path / "short.key")
    with pytest.raises(ConfigError, match="does not exist"):
        read_private_key(tmp_path / "missing.key")


def test_a_written_key_is_a_valid_node_key_for_a_data_directory(tmp_path: Path) -> None:
    write_private_key(tmp_path / "node.key", NODE_KEY)
    assert NodeIdentity.load_or_create(tmp_path).node_id == node_id_of(NODE_PUBLIC)


def test_trust_file_round_trips_and_rejects_garbage(tmp_path: Path) -> None:
    path = tmp_path / "cluster.trust"
    rotated = TRUST.with_authority(bytes(OTHER_AUTHORITY.verify_key))
    rotated.save(path)
    assert TrustSet.load(path) == rotated
    assert rotated.without_authority(bytes(AUTHORITY.verify_key)).cluster_id == TRUST.cluster_id
    with pytest.raises(ConfigError, match="last trusted authority"):
        TRUST.without_authority(bytes(AUTHORITY.verify_key))
    for text in ("{}", "not json", '{"format": "p2pindex-trust/1", "cluster": "zz"}'):
        with pytest.raises(ConfigError, match="not a valid trust file"):
            TrustSet.from_json(text)


# --- valid documents ---------------------------------------------------------------------


def test_a_valid_node_certificate_verifies() -> None:
    cert = verify_node_certificate(node_cert(), TRUST, NOW)
    assert isinstance(cert, NodeCertificate)
    assert cert.node_id == node_id_of(NODE_PUBLIC)
    assert cert.public_key == NODE_PUBLIC
    assert cert.expires == NOW - DAY + 30 * DAY
    assert cert.authority_id == key_id(bytes(AUTHORITY.verify_key))


def test_a_valid_capability_verifies_with_its_role_and_prefix() -> None:
    cap = verify_capability(capability(Role.READ, b"user:"), TRUST, NOW)
    assert isinstance(cap, ClientCapability)
    assert cap.role is Role.READ
    assert cap.allows_key(b"user:1") and not cap.allows_key(b"admin:1")


def test_a_revocation_list_verifies_and_names_what_it_revokes() -> None:
    blob = issue_revocations(
        AUTHORITY, TRUST.cluster_id, version=3, issued=NOW, node_ids=["00" * 8], serials=[5]
    )
    revocations = verify_revocations(blob, TRUST)
    assert isinstance(revocations, RevocationList)
    assert revocations.version == 3
    assert revocations.revokes_node("00" * 8, 1) and revocations.revokes_node("11" * 8, 5)
    assert not revocations.revokes_node("11" * 8, 6)


def test_documents_signed_by_a_second_trusted_authority_verify() -> None:
    rotated = TRUST.with_authority(bytes(OTHER_AUTHORITY.verify_key))
    blob = issue_node_certificate(
        OTHER_AUTHORITY, TRUST.cluster_id, NODE_PUBLIC, issued=NOW, lifetime=DAY
    )
    assert verify_node_certificate(blob, rotated, NOW).node_id == node_id_of(NODE_PUBLIC)
    assert reason(lambda: verify_node_certificate(blob, TRUST, NOW)) == "untrusted_authority"


# --- invalid documents -------------------------------------------------------------------


def test_expired_and_not_yet_valid_documents_are_refused() -> None:
    expired = node_cert(issued=NOW - 10 * DAY, lifetime=DAY)
    assert reason(lambda: verify_node_certificate(expired, TRUST, NOW)) == "expired"
    future = node_cert(issued=NOW + DAY, lifetime=DAY)
    assert reason(lambda: verify_node_certificate(future, TRUST, NOW)) == "not_yet_valid"
    expired_cap = capability(issued=NOW - 10 * DAY, lifetime=DAY)
    with pytest.raises(CredentialRejected, match="expired at"):
        verify_capability(expired_cap, TRUST, NOW)


def test_a_document_from_another_cluster_names_both_clusters() -> None:
    foreign = node_cert(OTHER_AUTHORITY, OTHER_TRUST)
    with pytest.raises(CredentialRejected, match=OTHER_TRUST.cluster) as info:
        verify_node_certificate(foreign, TRUST, NOW)
    assert info.value.reason == "wrong_cluster"
    assert TRUST.cluster in str(info.value)


def test_a_forged_signature_is_refused() -> None:
    encoded, _ = cbor2.loads(node_cert())
    forged = cbor2.dumps([encoded, os.urandom(64)])
    assert reason(lambda: verify_node_certificate(forged, TRUST, NOW)) == "bad_signature"
    # Signed by a key that claims to be the authority (same key id field, wrong key):
    body = cbor2.loads(encoded)
    body["expires"] += 1000 * DAY
    resigned = cbor2.dumps(body, canonical=True)
    signature = OTHER_AUTHORITY.sign(b"p2pindex/document/v1\x00" + resigned).signature
    blob = cbor2.dumps([resigned, signature])
    assert reason(lambda: verify_node_certificate(blob, TRUST, NOW)) == "bad_signature"


def test_every_altered_byte_of_the_body_is_detected() -> None:
    encoded, signature = cbor2.loads(node_cert())
    for index in range(len(encoded)):
        altered = bytearray(encoded)
        altered[index] ^= 0x01
        blob = cbor2.dumps([bytes(altered), signature])
        with pytest.raises(CredentialRejected):
            verify_node_certificate(blob, TRUST, NOW)


def test_truncated_documents_are_malformed() -> None:
    blob = node_cert()
    for cut in range(len(blob)):
        assert reason(lambda cut=cut: open_document(blob[:cut], TRUST)) == "malformed"


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\xff\xff",
        cbor2.dumps("text"),
        cbor2.dumps([b"x"]),
        cbor2.dumps([b"x", b"y"]),
        cbor2.dumps([cbor2.dumps([1, 2]), bytes(64)]),
        cbor2.dumps([cbor2.dumps({"type": "bogus"}), bytes(64)]),
        cbor2.dumps(cbor2.CBORTag(28, [1])),
        bytes([0xD9, 0xD9, 0xF7]) + cbor2.dumps([b"", b""]),
        "not bytes",
    ],
)
def test_malformed_documents_are_refused_with_a_reason(blob: object) -> None:
    assert reason(lambda: open_document(blob, TRUST)) == "malformed"


def test_a_document_of_the_wrong_kind_says_what_was_presented() -> None:
    with pytest.raises(CredentialRejected, match="node certificate where a client capa"):
        verify_capability(node_cert(), TRUST, NOW, "the client")
    with pytest.raises(CredentialRejected, match="client capability where a node cert"):
        verify_node_certificate(capability(), TRUST, NOW, "the connecting node")


def test_a_certificate_whose_node_id_is_not_its_key_is_refused() -> None:
    body = {
        "type": "node",
        "cluster": TRUST.cluster_id,
        "authority": key_id(bytes(AUTHORITY.verify_key)),
        "key": NODE_PUBLIC,
        "node": "00" * 8,
        "issued": NOW,
        "expires": NOW + DAY,
        "serial": 1,
    }
    encoded = cbor2.dumps(body, canonical=True)
    blob = cbor2.dumps([encoded, AUTHORITY.sign(b"p2pindex/document/v1\x00" + encoded).signature])
    with pytest.raises(CredentialRejected, match="does not belong to its key"):
        verify_node_certificate(blob, TRUST, NOW)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_are_never_accepted(blob: bytes) -> None:
    with pytest.raises(CredentialRejected):
        open_document(blob, TRUST)


@settings(max_examples=200, deadline=None)
@given(index=st.integers(0, 10_000), value=st.integers(1, 255))
def test_any_single_byte_change_of_a_document_is_refused(index: int, value: int) -> None:
    blob = bytearray(capability())
    blob[index % len(blob)] ^= value
    with pytest.raises(CredentialRejected):
        verify_capability(bytes(blob), TRUST, NOW)


def test_issued_documents_carry_a_fresh_random_serial() -> None:
    serials = {verify_node_certificate(node_cert(), TRUST, NOW).serial for _ in range(20)}
    assert len(serials) == 20
    assert verify_node_certificate(node_cert(serial=42), TRUST, NOW).serial == 42

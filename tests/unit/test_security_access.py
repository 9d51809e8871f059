"""The authorization matrix: what each role may send, prefixes, expiry, and nodes."""

from __future__ import annotations

import pytest
from nacl.signing import SigningKey

from p2pindex.errors import PermissionDenied
from p2pindex.security.access import REQUIRED_ROLE, Peer, PeerKind, authorize
from p2pindex.security.certs import (
    Role,
    TrustSet,
    cluster_id_of,
    issue_capability,
    issue_node_certificate,
    verify_capability,
    verify_node_certificate,
)
from p2pindex.security.errors import AccessDenied
from p2pindex.wire.codec import MESSAGE_TYPES
from p2pindex.wire.messages import (
    CertificateRequest,
    DeleteRequest,
    ExplainRequest,
    GetRequest,
    Hello,
    LeaveRequest,
    MembersRequest,
    Message,
    PushPull,
    PutRequest,
    QueryRequest,
    RangeScan,
    RemoveRequest,
    ReplicaRead,
    ReplicaWrite,
    ReplicaWriteBatch,
    RevocationPush,
    StatusRequest,
)

NOW = 1_800_000_000
AUTHORITY = SigningKey(bytes([1]) * 32)
TRUST = TrustSet(
    cluster_id_of(bytes(AUTHORITY.verify_key)), frozenset({bytes(AUTHORITY.verify_key)})
)
KEY = bytes(SigningKey(bytes([9]) * 32).verify_key)


def client(role: Role, prefix: bytes = b"", lifetime: int = 3600) -> Peer:
    blob = issue_capability(
        AUTHORITY, TRUST.cluster_id, KEY, role, prefix=prefix, issued=NOW - 10, lifetime=lifetime
    )
    return Peer(PeerKind.CLIENT, verify_capability(blob, TRUST, NOW))


NODE = Peer(
    PeerKind.NODE,
    verify_node_certificate(
        issue_node_certificate(AUTHORITY, TRUST.cluster_id, KEY, issued=NOW, lifetime=60),
        TRUST,
        NOW,
    ),
)

READS = [
    GetRequest(b"k", "quorum", 1000),
    StatusRequest(),
    MembersRequest(),
    ExplainRequest(b"k"),
]
WRITES = [PutRequest(b"k", b"v", None, "quorum", 1000), DeleteRequest(b"k", None, "one", 1000)]
ADMIN = [LeaveRequest(), RemoveRequest("00" * 8), RevocationPush(b"doc")]
NODE_ONLY = [
    Hello("n", "127.0.0.1:1", "p2pindex"),
    ReplicaWrite(b"k", b"r"),
    ReplicaWrite(b"k", b"r", hint_for="ab" * 8),
    ReplicaRead(b"k"),
    ReplicaWriteBatch([(b"k", b"r")]),
    RangeScan([0], [1], None, 10),
    PushPull(b"state"),
    CertificateRequest([]),
]

MATRIX = {
    Role.READ: READS,
    Role.WRITE: READS + WRITES,
    Role.ADMIN: READS + WRITES + ADMIN,
}


def denied(peer: Peer, message: Message) -> str:
    with pytest.raises(AccessDenied) as info:
        authorize(peer, message, NOW)
    assert isinstance(info.value, PermissionDenied)
    return info.value.reason


@pytest.mark.parametrize("role", list(Role))
def test_each_role_gets_exactly_its_messages(role: Role) -> None:
    peer = client(role)
    allowed = MATRIX[role]
    for message in allowed:
        authorize(peer, message, NOW)
    for message in READS + WRITES + ADMIN:
        if message not in allowed:
            assert denied(peer, message) == "role"
    for message in NODE_ONLY:
        assert denied(peer, message) == "node_only"


def test_a_client_is_refused_every_message_without_a_role_in_the_table() -> None:
    admin = client(Role.ADMIN)
    unlisted = [cls for cls in MESSAGE_TYPES.values() if cls not in REQUIRED_ROLE]
    assert ReplicaWrite in unlisted and PushPull in unlisted
    for message in NODE_ONLY:
        assert type(message) in unlisted
        assert denied(admin, message) == "node_only"


def test_nodes_may_send_everything() -> None:
    for message in READS + WRITES + ADMIN + NODE_ONLY:
        authorize(NODE, message, NOW)


def test_prefix_limits_keyed_requests_but_not_cluster_reads() -> None:
    peer = client(Role.WRITE, b"user:")
    authorize(peer, PutRequest(b"user:1", b"v", None, "quorum", 1000), NOW)
    authorize(peer, GetRequest(b"user:", "one", 1000), NOW)
    authorize(peer, StatusRequest(), NOW)
    authorize(peer, MembersRequest(), NOW)
    for message in (
        PutRequest(b"admin:1", b"v", None, "quorum", 1000),
        DeleteRequest(b"use", None, "one", 1000),
        GetRequest(b"x", "one", 1000),
        ExplainRequest(b"other"),
    ):
        assert denied(peer, message) == "prefix"


def test_a_query_outside_the_prefix_is_refused_saying_what_it_asked_for() -> None:
    """A query with no prefix was refused "(asked for 0x)"."""
    peer = client(Role.READ, b"t:")
    authorize(peer, QueryRequest("p", None, None, b"t:1", 10, None, "one", 1000), NOW)
    for prefix, asked in ((b"", "every key: no prefix"), (b"u:", "'u:'"), (b"\xff", "0xff")):
        with pytest.raises(AccessDenied) as info:
            authorize(peer, QueryRequest("p", None, None, prefix, 10, None, "one", 1000), NOW)
        assert info.value.reason == "prefix"
        assert str(info.value).endswith(f"inside it (asked for {asked})"), str(info.value)


def test_an_expired_capability_is_refused_mid_session() -> None:
    peer = client(Role.ADMIN, lifetime=60)
    authorize(peer, StatusRequest(), NOW)
    with pytest.raises(AccessDenied, match="expired at"):
        authorize(peer, StatusRequest(), NOW + 3600)


def test_audit_view_names_the_peer() -> None:
    doc = client(Role.READ, b"p").describe()
    assert doc["kind"] == "client" and doc["role"] == "read" and doc["prefix"] == b"p".hex()
    assert NODE.describe()["node_id"] == NODE.node_id

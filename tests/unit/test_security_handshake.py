"""The handshake and the sealed session over in-memory streams: mutual authentication, every
refusal with its reason, and records that cannot be forged, altered, replayed or reordered."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import pytest
import trio
import trio.testing
from nacl.bindings import crypto_secretbox_easy
from nacl.signing import SigningKey

from p2pindex.config import AdmissionLimits, Limits
from p2pindex.errors import PermissionDenied, ProtocolError
from p2pindex.net.secure.handshake import LocalParty, secure_client, secure_server
from p2pindex.net.secure.manager import SecurityManager
from p2pindex.net.secure.session import SecureStream, SessionBroken
from p2pindex.node.admission import Admission
from p2pindex.node.stats import StatisticsStore
from p2pindex.security.access import Peer, PeerKind
from p2pindex.security.certs import (
    Role,
    TrustSet,
    cluster_id_of,
    issue_capability,
    issue_node_certificate,
    issue_revocations,
    node_id_of,
)
from p2pindex.security.errors import ConnectionRefused, CredentialRejected, HandshakeFailed
from p2pindex.security.trust import TrustState
from p2pindex.types import Address
from p2pindex.wire.codec import FrameDecoder, encode_frame
from p2pindex.wire.messages import ErrorReply, StatusRequest

AUTHORITY = SigningKey(bytes([1]) * 32)
PUBLIC = bytes(AUTHORITY.verify_key)
TRUST = TrustSet(cluster_id_of(PUBLIC), frozenset({PUBLIC}))
OTHER = SigningKey(bytes([2]) * 32)
OTHER_TRUST = TrustSet(cluster_id_of(bytes(OTHER.verify_key)), frozenset({bytes(OTHER.verify_key)}))
PEER_ADDRESS = Address("127.0.0.1", 1)


def now() -> float:
    return time.time()


def node_party(seed: int, authority: SigningKey = AUTHORITY, lifetime: int = 3600) -> LocalParty:
    key = SigningKey(bytes([seed]) * 32)
    cluster = cluster_id_of(bytes(authority.verify_key))
    cert = issue_node_certificate(
        authority, cluster, bytes(key.verify_key), issued=int(now()) - 100, lifetime=lifetime
    )
    return LocalParty(key, cert, PeerKind.NODE)


def client_party(seed: int, role: Role = Role.WRITE, lifetime: int = 3600) -> LocalParty:
    key = SigningKey(bytes([seed]) * 32)
    cap = issue_capability(
        AUTHORITY,
        TRUST.cluster_id,
        bytes(key.verify_key),
        role,
        issued=int(now()) - 100,
        lifetime=lifetime,
    )
    return LocalParty(key, cap, PeerKind.CLIENT)


SERVER = node_party(10)


def server_manager() -> SecurityManager:
    return SecurityManager(SERVER.signing_key, SERVER.credential, TRUST)


Outcome = tuple[Any, Any, BaseException | None, SecurityManager]


async def handshake(client: LocalParty, manager: SecurityManager | None = None) -> Outcome:
    """(client session, server session, client error, the server's manager)."""
    manager = manager or server_manager()
    left, right = trio.testing.memory_stream_pair()
    results: dict[str, object] = {}

    async def serve() -> None:
        results["server"] = await manager.accept(right, PEER_ADDRESS)

    async def connect() -> None:
        try:
            results["client"] = await secure_client(left, client, TrustState(TRUST), now)
        except (CredentialRejected, HandshakeFailed) as exc:
            results["error"] = exc
            await left.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        nursery.start_soon(connect)
    client_side = results.get("client")
    return (
        getattr(client_side, "stream", None),
        results.get("server"),
        results.get("error"),
        manager,
    )


# --- mutual authentication ---------------------------------------------------------------


async def test_nodes_authenticate_each_other_and_exchange_data() -> None:
    client, server, error, manager = await handshake(node_party(11))
    assert error is None and server is not None
    assert server.peer.node_id == node_id_of(bytes(SigningKey(bytes([11]) * 32).verify_key))
    assert client.peer.node_id == node_id_of(bytes(SERVER.signing_key.verify_key))
    payload = os.urandom(600_000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, payload)
        received = b""
        while len(received) < len(payload):
            received += await server.receive_some()
    assert received == payload
    await server.send_all(b"reply")
    assert await client.receive_some() == b"reply"
    assert manager.directory.get(server.peer.node_id) is not None
    assert manager.stats["security.handshake.accepted.node"] == 1


async def test_a_client_session_carries_its_role() -> None:
    _, server, error, _ = await handshake(client_party(20, Role.READ))
    assert error is None
    assert server.peer.kind is PeerKind.CLIENT
    assert server.peer.credential.role is Role.READ


class Gate:
    """Refuses one client key for its conduct; records the places it holds."""

    def __init__(self, refused: bytes) -> None:
        self.refused = refused
        self.held: list[bytes] = []

    def screen(self, client: bytes) -> ConnectionRefused | None:
        if client == self.refused:
            return ConnectionRefused("broken_sessions", "refused for its conduct")
        self.held.append(client)
        return None

    def release(self, client: bytes) -> None:
        self.held.remove(client)


async def test_a_screened_client_is_refused_before_the_node_signs_anything() -> None:
    manager = server_manager()
    manager.gate = Gate(refused=bytes(SigningKey(bytes([21]) * 32).verify_key))
    signed: list[bytes] = []
    original = SigningKey.sign

    def spy(self: SigningKey, message: bytes) -> object:
        if self == SERVER.signing_key:
            signed.append(message)
        return original(self, message)

    party = client_party(21)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SigningKey, "sign", spy)
        _, server, error, _ = await handshake(party, manager)
    assert server is None and "refused for its conduct" in str(error)
    assert isinstance(error, ConnectionRefused)  # the client may try another node
    assert signed == []  # the node refused it before its own signature
    assert manager.stats["security.handshake.refused.broken_sessions"] == 1
    _, server, error, _ = await handshake(client_party(22), manager)
    assert error is None and server is not None  # another client key is not screened
    _, server, error, _ = await handshake(node_party(21), manager)
    assert error is None and server is not None  # nor a node, whatever its key


async def test_handshakes_admitted_together_cannot_overrun_a_client_connection_limit() -> None:
    """The gate holds each admitted handshake's place, so a second handshake of the key is
    refused with the reason even while the first is still running (no session counted)."""
    manager = server_manager()
    manager.gate = Admission(
        AdmissionLimits(max_client_connections=1), StatisticsStore(), lambda: 0.0
    )
    outcomes = []

    async def one() -> None:
        outcomes.append(await handshake(client_party(24), manager))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one)
        nursery.start_soon(one)
    assert sorted(server is None for _, server, _, _ in outcomes) == [False, True]
    (error,) = [error for _, _, error, _ in outcomes if error is not None]
    assert isinstance(error, ConnectionRefused) and error.reason == "client_connections"
    assert "(admission.max_client_connections)" in str(error)


async def test_a_handshake_that_fails_after_the_screen_gives_its_place_back() -> None:
    manager = server_manager()
    manager.gate = gate = Gate(refused=b"")
    left, right = trio.testing.memory_stream_pair()

    async def distrustful_client() -> None:  # refuses the node's certificate (another cluster)
        with pytest.raises(CredentialRejected):
            await secure_client(left, client_party(25), TrustState(OTHER_TRUST), now)
        await left.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(distrustful_client)
        assert await manager.accept(right, PEER_ADDRESS) is None
    assert gate.held == []
    # Cancelled mid-handshake (as its waiting room or the node's shutdown would), after the
    # screen: the client sent its hello and waits.
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(await recorded_hello(client_party(26)))
    with trio.move_on_after(0.5):
        await manager.accept(right, PEER_ADDRESS)
    assert gate.held == []
    _, server, error, _ = await handshake(client_party(27), manager)
    assert error is None and gate.held == [server.peer.credential.public_key]


async def test_a_client_and_a_node_of_another_cluster_never_connect() -> None:
    left, right = trio.testing.memory_stream_pair()
    foreign = node_party(12, OTHER)
    outcome: dict[str, BaseException] = {}

    async def serve() -> None:
        try:
            await secure_server(right, foreign, TrustState(OTHER_TRUST), now)
        except (CredentialRejected, HandshakeFailed) as exc:
            outcome["server"] = exc

    async def connect() -> None:
        try:
            await secure_client(left, client_party(21), TrustState(TRUST), now)
        except (CredentialRejected, HandshakeFailed) as exc:
            outcome["client"] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        nursery.start_soon(connect)
    # The foreign node already refuses the client's capability (wrong cluster for it).
    assert isinstance(outcome["client"], PermissionDenied)
    assert "cluster" in str(outcome["client"])


# --- refusals, each with its reason ------------------------------------------------------


@pytest.mark.parametrize(
    ("party", "reason", "words"),
    [
        (lambda: node_party(13, OTHER), "wrong_cluster", "cluster"),
        (lambda: node_party(14, lifetime=50), "expired", "expired at"),
        (lambda: client_party(22, lifetime=50), "expired", "expired at"),
        (
            lambda: LocalParty(
                SigningKey(bytes([15]) * 32), node_party(15).credential, PeerKind.CLIENT
            ),
            "wrong_document",
            "client presented a node certificate where a client capability is required",
        ),
        (
            lambda: LocalParty(
                SigningKey(bytes([23]) * 32), client_party(23).credential, PeerKind.NODE
            ),
            "wrong_document",
            "node presented a client capability where a node certificate is required",
        ),
        (
            lambda: LocalParty(
                SigningKey(bytes([16]) * 32), node_party(17).credential, PeerKind.NODE
            ),
            "bad_handshake_signature",
            "does not hold the key",
        ),
        (
            lambda: LocalParty(SigningKey(bytes([16]) * 32), b"\x82\x41", PeerKind.NODE),
            "malformed",
            "malformed",
        ),
    ],
)
async def test_bad_credentials_are_refused_counted_and_audited(party, reason, words) -> None:
    client, server, error, manager = await handshake(party())
    assert client is None and server is None
    assert isinstance(error, PermissionDenied)
    assert words in str(error)
    assert manager.stats[f"security.handshake.refused.{reason}"] == 1
    (line,) = manager.audit.lines
    assert line["event"] == "handshake_refused" and line["reason"] == reason


async def test_a_revoked_node_is_refused_and_revocations_travel_in_the_hello() -> None:
    revoked = node_party(18)
    node_id = node_id_of(bytes(revoked.signing_key.verify_key))
    blob = issue_revocations(AUTHORITY, TRUST.cluster_id, version=5, issued=0, node_ids=[node_id])
    manager = server_manager()
    manager.adopt(blob, "test")
    _, server, error, _ = await handshake(revoked, manager)
    assert server is None and "revoked" in str(error)
    assert manager.stats["security.handshake.refused.revoked"] == 1
    # A fresh peer that connects learns the list from the server's hello.
    state = TrustState(TRUST)
    left, right = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(manager.accept, right, PEER_ADDRESS)
        await secure_client(left, node_party(19), state, now)
    assert state.revocation_version == 5


async def recorded_hello(party: LocalParty) -> bytes:
    """The first message ``party``'s handshake sends (the rest never happens)."""
    hello = bytearray()

    class Recorder(trio.abc.SendStream):
        async def send_all(self, data: bytes) -> None:
            hello.extend(data)
            raise trio.BrokenResourceError

        async def wait_send_all_might_not_block(self) -> None:
            raise NotImplementedError

        async def aclose(self) -> None:
            return None

    with pytest.raises(trio.BrokenResourceError):
        stream = trio.StapledStream(Recorder(), trio.testing.memory_stream_pair()[0])
        await secure_client(stream, party, TrustState(TRUST), now)
    return bytes(hello)


async def test_a_truncated_handshake_is_counted_at_every_cut() -> None:
    manager = server_manager()
    hello = await recorded_hello(node_party(11))
    for cut in range(1, len(hello), 7):
        left, right = trio.testing.memory_stream_pair()
        await left.send_all(bytes(hello[:cut]))
        await left.aclose()
        assert await manager.accept(right, PEER_ADDRESS) is None
    expected = len(range(1, len(hello), 7))
    assert manager.stats["security.handshake.failed.truncated"] == expected
    assert all(line["reason"] == "truncated" for line in manager.audit.lines)


async def test_a_connection_closed_before_any_byte_is_counted_and_logged_only_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """TCP health checks and port scans open and close without a byte: each used to log an
    info line about a truncated handshake."""
    manager = server_manager()
    caplog.set_level(logging.DEBUG, logger="p2pindex.net.secure.manager")
    for _ in range(3):
        left, right = trio.testing.memory_stream_pair()
        await left.aclose()
        assert await manager.accept(right, PEER_ADDRESS) is None
    assert manager.stats["security.handshake.failed.closed_before_hello"] == 3
    assert manager.stats["security.handshake.failed.truncated"] == 0
    assert [line["reason"] for line in manager.audit.lines] == ["closed_before_hello"] * 3
    lines = [r for r in caplog.records if "without sending anything" in r.getMessage()]
    assert lines and all(r.levelno == logging.DEBUG for r in lines)


async def test_a_silent_peer_times_out(autojump_clock: trio.testing.MockClock) -> None:
    manager = server_manager()
    left, right = trio.testing.memory_stream_pair()
    assert await manager.accept(right, PEER_ADDRESS) is None
    assert manager.stats["security.handshake.failed.timeout"] == 1
    del left


async def test_a_plain_client_gets_permission_denied_in_its_own_protocol() -> None:
    manager = server_manager()
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(encode_frame(StatusRequest(), 7))
    assert await manager.accept(right, PEER_ADDRESS) is None
    (decoded,) = FrameDecoder(Limits()).feed(await left.receive_some())
    assert decoded.request_id == 7
    assert isinstance(decoded.message, ErrorReply)
    assert decoded.message.code == PermissionDenied.code
    assert "requires authenticated connections" in decoded.message.message
    assert manager.stats["security.handshake.failed.not_secure"] == 1


async def test_a_secure_client_recognises_a_plain_node() -> None:
    left, right = trio.testing.memory_stream_pair()
    await right.send_all(encode_frame(ErrorReply("too_large", "frame too large"), 0))
    with pytest.raises(HandshakeFailed, match="--insecure") as info:
        await secure_client(left, node_party(11), TrustState(TRUST), now)
    assert isinstance(info.value, ProtocolError)


# --- the session: records cannot be forged, altered, replayed or reordered ---------------


def session_pair(manager: SecurityManager) -> tuple[SecureStream, SecureStream]:
    """Two ends of a session with fresh keys, as a handshake leaves them (without its cost)."""
    left, right = trio.testing.memory_stream_pair()
    forward, backward = os.urandom(32), os.urandom(32)
    peer = Peer(PeerKind.NODE, manager.certificate)
    client = SecureStream(left, forward, backward, peer)
    server = SecureStream(right, backward, forward, peer, on_failure=manager._session_failed)
    return client, server


async def attack(kind: str, manager: SecurityManager, *, full_handshake: bool = True) -> bytes:
    """Open a session, inject one bad record of ``kind``; return what the server read."""
    if full_handshake:
        client, server, error, _ = await handshake(node_party(11), manager)
        assert error is None
    else:
        client, server = session_pair(manager)
    first = client._seal(b"first")
    second = client._seal(b"second")
    inner = client._inner
    if kind == "forged":
        sealed = crypto_secretbox_easy(b"evil", bytes(24), os.urandom(32))
        bad = len(sealed).to_bytes(4, "big") + sealed
        await inner.send_all(bad)
    elif kind == "altered":
        altered = bytearray(first)
        altered[4 + (len(altered) - 4) // 2] ^= 0x20
        await inner.send_all(bytes(altered))
    elif kind == "replayed":
        await inner.send_all(first + first)
    elif kind == "reordered":
        await inner.send_all(second + first)
    elif kind == "truncated":
        await inner.send_all(first[:-3])
        await inner.aclose()
    received = b""
    with pytest.raises(SessionBroken):
        while True:
            data = await server.receive_some()
            if not data:
                break
            received += data
    return received


@pytest.mark.parametrize(
    ("kind", "accepted_before"),
    [
        ("forged", b""),
        ("altered", b""),
        ("replayed", b"first"),
        ("reordered", b""),
        ("truncated", b""),
    ],
)
async def test_bad_records_break_the_session_and_are_counted(kind, accepted_before) -> None:
    manager = server_manager()
    assert await attack(kind, manager) == accepted_before
    reason = "truncated_record" if kind == "truncated" else "bad_record"
    assert manager.stats[f"security.session.{reason}"] == 1
    assert manager.audit.lines[-1]["event"] == "session_failed"


@pytest.mark.parametrize("kind", ["forged", "altered", "replayed", "reordered"])
async def test_a_thousand_bad_records_of_each_kind_none_accepted(kind: str) -> None:
    manager = server_manager()
    injected = 1000
    leaked = 0
    for _ in range(injected):
        received = await attack(kind, manager, full_handshake=False)
        leaked += len(received.replace(b"first", b"", 1)) if kind == "replayed" else len(received)
    print(
        f"{kind}: injected {injected}, accepted {leaked}, counted "
        f"{manager.stats['security.session.bad_record']}"
    )
    assert leaked == 0
    assert manager.stats["security.session.bad_record"] == injected


async def test_an_aborted_session_fails_pending_reads_and_later_calls() -> None:
    client, server, _, _ = await handshake(node_party(11))

    async def kill_soon() -> None:
        await trio.sleep(0.01)
        await server.abort("revoked")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(kill_soon)
        with pytest.raises(trio.ClosedResourceError):
            await server.receive_some()
    with pytest.raises(trio.ClosedResourceError, match="revoked"):
        await server.send_all(b"x")
    assert server.closed_reason == "revoked"
    assert await client.receive_some() == b""


@pytest.mark.parametrize("kind", ["revoked", "uncertified"])
async def test_a_thousand_handshakes_from_revoked_or_uncertified_nodes_none_admitted(
    kind: str,
) -> None:
    manager = server_manager()
    if kind == "revoked":
        party = node_party(40)
        node_id = node_id_of(bytes(party.signing_key.verify_key))
        manager.adopt(
            issue_revocations(AUTHORITY, TRUST.cluster_id, version=1, issued=0, node_ids=[node_id]),
            "test",
        )
        reason = "revoked"
    else:
        party = node_party(41, OTHER)
        reason = "wrong_cluster"
    injected = 1000
    admitted = 0
    for _ in range(injected):
        client, server, error, _ = await handshake(party, manager)
        admitted += (client is not None) + (server is not None)
        assert isinstance(error, PermissionDenied)
    refused = manager.stats[f"security.handshake.refused.{reason}"]
    print(f"{kind} handshakes: injected {injected}, admitted {admitted}, counted {refused}")
    assert admitted == 0
    assert refused == injected

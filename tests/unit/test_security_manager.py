"""The SecurityManager: starting up (or refusing to, saying why), the audit log, revocations
that cut sessions, reloading rotated files, and the request guard."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest
import trio
import trio.testing

from p2pindex.errors import ConfigError, PermissionDenied
from p2pindex.net.secure.loading import load_manager, node_security
from p2pindex.net.secure.manager import LOG_BURST, LOG_RATE, SecurityManager
from p2pindex.net.secure.session import SecureStream
from p2pindex.security.access import Peer, PeerKind
from p2pindex.security.audit import BURST, AuditLog
from p2pindex.security.authority import Authority
from p2pindex.security.certs import Role, node_id_of, verify_capability
from p2pindex.security.credentials import ClientCredentials
from p2pindex.security.files import SecurityFiles
from p2pindex.security.keys import generate, key_id, read_private_key, write_private_key
from p2pindex.types import Address
from p2pindex.wire.codec import encode_frame
from p2pindex.wire.messages import (
    CertificateReply,
    CertificateRequest,
    OkReply,
    PutRequest,
    RemoveRequest,
    StatusRequest,
)


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    return Authority.init(tmp_path / "authority")


def node_dir(authority: Authority, path: Path) -> tuple[Path, SecurityManager]:
    authority.provision(path)
    key = read_private_key(path / "node.key")
    return path, load_manager(SecurityFiles.for_data_dir(path), key)


def session_with(manager: SecurityManager, peer: Peer) -> SecureStream:
    left, _ = trio.testing.memory_stream_pair()
    stream = SecureStream(left, os.urandom(32), os.urandom(32), peer)
    manager._sessions.add(stream)
    return stream


# --- starting up -------------------------------------------------------------------------


def test_insecure_and_unconfigured_nodes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key = generate()
    with caplog.at_level(logging.WARNING):
        assert node_security(tmp_path, key, insecure=True) is None
    assert "INSECURE MODE" in caplog.text
    with pytest.raises(ConfigError, match="p2pindex cluster init"):
        node_security(tmp_path, key)


def test_a_provisioned_directory_starts_secure(authority: Authority, tmp_path: Path) -> None:
    data, manager = node_dir(authority, tmp_path / "n1")
    loaded = node_security(data, read_private_key(data / "node.key"))
    assert loaded is not None and loaded.node_id == manager.node_id
    assert loaded.files is not None and loaded.files.audit == data / "audit.log"


def test_missing_or_wrong_files_say_what_to_do(authority: Authority, tmp_path: Path) -> None:
    data = tmp_path / "n"
    authority.provision(data)
    stranger = generate()
    with pytest.raises(ConfigError, match="certify this data directory's key"):
        load_manager(SecurityFiles.for_data_dir(data), stranger)
    (data / "node.cert").unlink()
    with pytest.raises(ConfigError, match="cluster certify"):
        node_security(data, stranger)
    with pytest.raises(ConfigError, match="no trust file"):
        load_manager(SecurityFiles.for_data_dir(tmp_path / "empty"), stranger)


def test_an_expired_or_revoked_node_refuses_to_start(authority: Authority, tmp_path: Path) -> None:
    key = generate()
    expired = authority.certify(bytes(key.verify_key), lifetime=1)
    with pytest.raises(ConfigError, match="expired"):
        SecurityManager(key, expired, authority.trust, wall_clock=lambda: time.time() + 10)
    revoked = authority.revoke((node_id_of(bytes(key.verify_key)),))
    with pytest.raises(ConfigError, match="revoked"):
        SecurityManager(
            key, authority.certify(bytes(key.verify_key)), authority.trust, revocations=revoked
        )


# --- audit log ---------------------------------------------------------------------------


def test_the_audit_log_is_private_json_lines_and_rate_limited(tmp_path: Path) -> None:
    now = [1000.0]
    audit = AuditLog(tmp_path / "audit.log", lambda: now[0])
    for index in range(BURST + 30):
        audit.record("denied", index=index)
    now[0] += 10
    audit.record("admin", message="LeaveRequest")
    audit.close()
    path = tmp_path / "audit.log"
    assert path.stat().st_mode & 0o777 == 0o600
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == BURST + 1
    assert lines[-1]["event"] == "admin" and lines[-1]["suppressed_before"] == 30
    assert lines[0]["time"].startswith("1970-01-01T00:16:40")


async def test_a_flood_of_refused_handshakes_is_counted_whole_and_logged_within_a_budget(
    authority: Authority, caplog: pytest.LogCaptureFixture
) -> None:
    now = [time.time()]
    manager = SecurityManager.issued_by(authority, generate(), wall_clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="p2pindex.net.secure.manager")

    async def garbage_connection() -> bytes:
        server, client = trio.testing.memory_stream_pair()
        await client.send_all(encode_frame(StatusRequest(), 1))  # no handshake: plain protocol
        await client.send_eof()
        with trio.fail_after(5):
            assert await manager.accept(server, Address("127.0.0.1", 9)) is None
            await server.aclose()  # as the transport does once the handler returns
            answer = b""
            while chunk := await client.receive_some():
                answer += chunk
        return answer

    answers = [await garbage_connection() for _ in range(LOG_BURST + 80)]
    assert all(b"requires authenticated connections" in answer for answer in answers)
    assert manager.stats["security.handshake.failed.not_secure"] == LOG_BURST + 80
    lines = [r.getMessage() for r in caplog.records if "handshake with" in r.getMessage()]
    assert len(lines) == LOG_BURST and manager.log_suppressed == 80
    now[0] += 1 / LOG_RATE
    await garbage_connection()
    lines = [r.getMessage() for r in caplog.records if "handshake with" in r.getMessage()]
    assert len(lines) == LOG_BURST + 1
    assert lines[-1].endswith("(80 similar lines left out before this one)")
    assert "plain protocol" in lines[-1] and manager.log_suppressed == 0


# --- revocations -------------------------------------------------------------------------


def test_a_newer_revocation_list_cuts_sessions_and_is_saved(
    authority: Authority, tmp_path: Path
) -> None:
    _, manager = node_dir(authority, tmp_path / "n1")
    victim = SecurityManager.issued_by(authority, generate())
    bystander = SecurityManager.issued_by(authority, generate())
    cut = session_with(manager, Peer(PeerKind.NODE, victim.certificate))
    kept = session_with(manager, Peer(PeerKind.NODE, bystander.certificate))
    document = authority.revoke((victim.node_id,))
    assert manager.adopt(document, "test")
    assert not manager.adopt(document, "test")
    assert cut.closed_reason is not None and kept.closed_reason is None
    assert (tmp_path / "n1" / "revocations.cbor").read_bytes() == document
    assert manager.stats["security.revocations.adopted"] == 1
    assert manager.stats["security.sessions_cut"] == 1
    log = (tmp_path / "n1" / "audit.log").read_text()
    assert "revocations_adopted" in log and victim.node_id in log


def test_a_revocation_list_of_another_cluster_is_refused(tmp_path: Path) -> None:
    ours = Authority.init(tmp_path / "a")
    theirs = Authority.init(tmp_path / "b")
    manager = SecurityManager.issued_by(ours, generate())
    with pytest.raises(PermissionDenied, match="cluster"):
        manager.adopt(theirs.revoke(("ab" * 8,)), "a peer")
    assert manager.stats["security.revocations.rejected.wrong_cluster"] == 1


# --- rotation ----------------------------------------------------------------------------


def test_rotation_reloads_files_without_a_restart(authority: Authority, tmp_path: Path) -> None:
    data, manager = node_dir(authority, tmp_path / "n1")
    old_peer = session_with(
        manager, Peer(PeerKind.NODE, SecurityManager.issued_by(authority, generate()).certificate)
    )
    rotated = authority.rotate()
    rotated.provision(data)
    os.utime(data / "node.cert", (time.time() + 5, time.time() + 5))
    assert manager.reload_if_changed()
    assert len(manager.state.trust.authorities) == 2
    assert manager.certificate.authority_id == key_id(rotated.public_key)
    assert old_peer.closed_reason is None
    retired = rotated.retire(authority.trust.cluster)
    retired.trust.save(data / "cluster.trust")
    os.utime(data / "cluster.trust", (time.time() + 10, time.time() + 10))
    assert manager.reload_if_changed()
    assert manager.state.trust.authorities == frozenset({rotated.public_key})
    assert old_peer.closed_reason is not None
    assert not manager.reload_if_changed()


def test_an_unusable_new_certificate_keeps_the_old_one(
    authority: Authority, tmp_path: Path
) -> None:
    data, manager = node_dir(authority, tmp_path / "n1")
    before = manager.certificate
    (data / "node.cert").write_bytes(b"garbage")
    os.utime(data / "node.cert", (time.time() + 5, time.time() + 5))
    assert not manager.reload_if_changed()
    assert manager.certificate == before
    assert manager.stats["security.reload_failed"] == 1


# --- the request guard -------------------------------------------------------------------


async def test_the_guard_authorises_audits_and_answers_security_messages(
    authority: Authority,
) -> None:
    manager = SecurityManager.issued_by(authority, generate())
    seen: list[object] = []

    async def dispatch(message: object) -> OkReply:
        seen.append(message)
        return OkReply()

    reader_key = generate()
    capability = authority.capability(bytes(reader_key.verify_key), Role.READ)
    reader = Peer(PeerKind.CLIENT, verify_capability(capability, authority.trust, time.time()))
    guard = manager.guard(session_with(manager, reader), dispatch)
    assert isinstance(await guard(StatusRequest()), OkReply)
    with pytest.raises(PermissionDenied, match="write role"):
        await guard(PutRequest(b"k", b"v", None, "one", 100))
    with pytest.raises(PermissionDenied, match="node-to-node"):
        await guard(CertificateRequest([]))
    assert seen == [StatusRequest()]
    assert manager.stats["security.denied.role"] == 1
    assert manager.stats["security.denied.node_only"] == 1
    events = [line["event"] for line in manager.audit.lines]
    assert events == ["denied", "denied"]

    node = Peer(PeerKind.NODE, SecurityManager.issued_by(authority, generate()).certificate)
    node_guard = manager.guard(session_with(manager, node), dispatch)
    reply = await node_guard(CertificateRequest([manager.node_id]))
    assert isinstance(reply, CertificateReply) and len(reply.certificates) == 1
    await node_guard(RemoveRequest("ab" * 8, relayed=True))
    assert manager.audit.lines[-1]["event"] == "admin"
    assert manager.audit.lines[-1]["node_id"] == "ab" * 8


# --- client credentials ------------------------------------------------------------------


def test_client_credentials_round_trip_and_refuse_a_node_certificate(
    authority: Authority, tmp_path: Path
) -> None:
    credentials = authority.credentials(Role.WRITE, b"p/")
    path = tmp_path / "c.cred"
    credentials.save(path)
    assert ClientCredentials.load(path) == credentials
    key = generate()
    wrong = ClientCredentials(key, authority.certify(bytes(key.verify_key)), authority.trust)
    with pytest.raises(ConfigError, match="node certificate where a client capability"):
        wrong.check(time.time())
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        ClientCredentials.load(path)
    write_private_key(tmp_path / "not-json", key)
    with pytest.raises(ConfigError, match=r"not a p2pindex credentials file \(it is not JSON\)"):
        ClientCredentials.load(tmp_path / "not-json")


# --- background upkeep -------------------------------------------------------------------


def test_unknown_ids_are_fetched_a_few_times_then_dropped(authority: Authority) -> None:
    manager = SecurityManager.issued_by(authority, generate())
    manager.directory.want("ab" * 8)
    rounds = [manager._due_for_fetch(now) for now in (0.0, 0.5, 2.0, 4.0, 6.0, 8.0, 10.0)]
    assert rounds == [["ab" * 8], [], ["ab" * 8], ["ab" * 8], ["ab" * 8], ["ab" * 8], []]
    assert "ab" * 8 not in manager.directory.wanted
    manager.note_member("ab" * 8, Address("127.0.0.1", 9))
    assert manager._due_for_fetch(12.0) == ["ab" * 8]


def test_sessions_end_when_their_credentials_expire(authority: Authority) -> None:
    now = [time.time()]
    manager = SecurityManager.issued_by(authority, generate(), wall_clock=lambda: now[0])
    short_key, long_key = generate(), generate()
    short = verify_capability(
        authority.capability(bytes(short_key.verify_key), Role.READ, lifetime=60),
        authority.trust,
        now[0],
    )
    expiring = session_with(manager, Peer(PeerKind.CLIENT, short))
    lasting = session_with(
        manager, Peer(PeerKind.NODE, SecurityManager.issued_by(authority, long_key).certificate)
    )
    manager._cut_expired()
    assert expiring.closed_reason is None
    now[0] += 120
    manager._cut_expired()
    assert expiring.closed_reason is not None and "expired" in expiring.closed_reason
    assert lasting.closed_reason is None


def test_retiring_an_authority_cuts_clients_it_vouched_for(
    authority: Authority, tmp_path: Path
) -> None:
    data, manager = node_dir(authority, tmp_path / "n1")
    client_key = generate()
    old = authority.capability(bytes(client_key.verify_key), Role.READ)
    old_client = session_with(
        manager, Peer(PeerKind.CLIENT, verify_capability(old, authority.trust, time.time()))
    )
    rotated = authority.rotate()
    rotated.provision(data)
    retired = rotated.retire(authority.trust.cluster)
    retired.trust.save(data / "cluster.trust")
    os.utime(data / "cluster.trust", (time.time() + 5, time.time() + 5))
    assert manager.reload_if_changed()
    assert old_client.closed_reason is not None and "trust changed" in old_client.closed_reason

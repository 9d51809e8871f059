"""Real `p2pindex serve` processes with security on: admission, refusals with their reasons,
injected datagrams and connections (counted, never accepted), revocation and rotation."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from p2pindex.cli.local_cluster import LocalCluster, wait_converged
from p2pindex.client import connect
from p2pindex.core.swim.codec import assemble, datagram_prefix, encode_control
from p2pindex.core.swim.messages import Ping
from p2pindex.errors import ConfigError, P2PIndexError, PermissionDenied
from p2pindex.net.secure.connector import SecureConnector
from p2pindex.net.secure.handshake import LocalParty, secure_client
from p2pindex.net.secure.manager import SecurityManager
from p2pindex.security.access import PeerKind
from p2pindex.security.authority import Authority
from p2pindex.security.certs import Role
from p2pindex.security.counting import Tally
from p2pindex.security.credentials import CREDENTIALS_ENV, ClientCredentials
from p2pindex.security.datagrams import DatagramSealer
from p2pindex.security.directory import CertificateDirectory
from p2pindex.security.keys import generate, read_private_key
from p2pindex.security.trust import TrustState
from p2pindex.types import Address
from p2pindex.wire.messages import RevocationPush

pytestmark = pytest.mark.e2e

Secure = tuple[Authority, LocalCluster]


@pytest.fixture
def secure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Secure]:
    authority = Authority.init(tmp_path / "authority")
    cluster = LocalCluster(3, tmp_path / "nodes", authority=authority.directory)
    with cluster:
        cluster.start()
        assert cluster.credentials is not None
        monkeypatch.setenv(CREDENTIALS_ENV, str(cluster.credentials))
        wait_converged(cluster)
        yield authority, cluster


async def status(address: Address, credentials: ClientCredentials | None = None) -> dict:
    async with connect([str(address)], credentials=credentials) as db:
        return dict((await db.status(address)).document)


def counters(document: dict) -> dict[str, float]:
    return {k: v for k, v in document["statistics"].items() if k.startswith("security.")}


async def test_secure_processes_refuse_bad_clients_and_bad_datagrams(
    secure: Secure, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    authority, cluster = secure
    target = cluster.nodes[0].address
    writer = authority.credentials(Role.WRITE)
    async with connect([str(target)], credentials=writer) as db:
        await db.put("k", b"v")
        assert (await db.get("k")).values == [b"v"]

    # Refused connections, each with its reason on the client side.
    expired = authority.credentials(Role.WRITE, lifetime=1)
    await trio.sleep(1.1)
    with pytest.raises(ConfigError, match="expired"):
        async with connect([str(target)], credentials=expired):
            pass
    behind = SecureConnector(expired, wall_clock=lambda: time.time() - 60)  # a slow clock
    with pytest.raises(PermissionDenied, match="expired"):
        await behind.connect(target)
    node_key = read_private_key(cluster.nodes[1].data_dir / "node.key")
    node_cert = (cluster.nodes[1].data_dir / "node.cert").read_bytes()
    stream = await trio.open_tcp_stream(target.host, target.port)
    party = LocalParty(node_key, node_cert, PeerKind.CLIENT)
    with pytest.raises(PermissionDenied, match="node certificate where a client capability"):
        await secure_client(stream, party, TrustState(authority.trust), time.time)
    foreign = Authority.init(tmp_path / "foreign").credentials(Role.ADMIN)
    with pytest.raises(PermissionDenied, match="cluster"):
        await SecureConnector(foreign).connect(target)
    for _ in range(5):
        truncated = await trio.open_tcp_stream(target.host, target.port)
        await truncated.send_all(b"P2PS\x00\x00\x01\x00" + bytes(20))
        await truncated.aclose()
    admin = os.environ[CREDENTIALS_ENV]
    monkeypatch.delenv(CREDENTIALS_ENV)
    with pytest.raises(PermissionDenied, match="requires authenticated connections"):
        async with connect([str(target)]):
            pass
    monkeypatch.setenv(CREDENTIALS_ENV, admin)

    # Injected datagrams: forged, altered, replayed, revoked and uncertified.
    per_kind = 50
    members = {node.node_id: node for node in cluster.nodes}
    honest = cluster.nodes[1]
    honest_key = read_private_key(honest.data_dir / "node.key")
    revoked_key = generate()
    revoked = SecurityManager.issued_by(authority, revoked_key)
    outsider = SecurityManager.issued_by(Authority.init(tmp_path / "outsider"), generate())

    def sealer(key: object) -> DatagramSealer:
        directory = CertificateDirectory(TrustState(authority.trust), time.time)
        return DatagramSealer(key, authority.trust.cluster_id, directory, time.time, Tally())

    def ping(sender: str, seq: int) -> bytes:
        message = encode_control(Ping(seq, cluster.nodes[0].node_id))
        return assemble(datagram_prefix(sender, 2**40), 3, [message])

    # The revoked node was a member first: the target learnt its certificate in a handshake.
    stream = await trio.open_tcp_stream(target.host, target.port)
    await secure_client(stream, revoked.local, TrustState(authority.trust), time.time)
    await stream.aclose()
    async with connect([str(target)]) as db:
        await db._request_to(target, RevocationPush(authority.revoke((revoked.node_id,))), 10)
    captured = [sealer(honest_key).seal(ping(honest.node_id, i)) for i in range(per_kind)]
    attacks = [
        *[sealer(revoked_key).seal(ping(honest.node_id, i)) for i in range(per_kind)],
        *[c[:-1] + bytes([c[-1] ^ 1]) for c in captured],
        *[sealer(revoked_key).seal(ping(revoked.node_id, i)) for i in range(per_kind)],
        *[sealer(outsider.local.signing_key).seal(ping(outsider.node_id, i)) for i in range(50)],
        *captured,
        *captured,
    ]
    before = counters(await status(target))
    udp = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await udp.bind(("127.0.0.1", 0))
    for index, data in enumerate(attacks):
        await udp.sendto(data, (target.host, target.port))
        if index % 10 == 9:
            await trio.sleep(0.01)  # stay within the receiver's socket buffer
    udp.close()
    await trio.sleep(1.0)
    after_doc = await status(target)
    after = counters(after_doc)

    def delta(name: str) -> int:
        return int(after.get(f"security.{name}", 0) - before.get(f"security.{name}", 0))

    assert delta("swim.bad_signature") == 2 * per_kind
    assert delta("swim.revoked_sender") == per_kind
    assert delta("swim.uncertified_sender") == per_kind
    assert delta("swim.replayed") == per_kind
    assert after["security.handshake.refused.expired"] >= 1
    assert after["security.handshake.refused.wrong_document"] >= 1
    assert after["security.handshake.refused.wrong_cluster"] >= 1
    assert after["security.handshake.failed.truncated"] >= 5
    assert after["security.handshake.failed.not_secure"] >= 1
    alive = {m["node_id"] for m in after_doc["members"] if m["liveness"] == "alive"}
    assert alive == set(members)
    audit = (cluster.nodes[0].data_dir / "audit.log").read_text().splitlines()
    events = {json.loads(line)["event"] for line in audit}
    assert {"handshake_refused", "handshake_failed", "admin", "revocations_adopted"} <= events
    async with connect([str(target)], credentials=writer) as db:
        assert (await db.get("k")).values == [b"v"]


async def test_a_revoked_process_is_cut_off_everywhere(secure: Secure) -> None:
    authority, cluster = secure
    victim = cluster.nodes[2]
    first = cluster.nodes[0].address
    async with connect([str(first)]) as db:
        reply = await db._request_to(first, RevocationPush(authority.revoke((victim.node_id,))), 10)
    assert "passed on to 1 of 1" in reply.detail
    with trio.fail_after(20):
        while True:
            views = [await status(node.address) for node in cluster.nodes[:2]]
            alive = [
                {m["node_id"] for m in view["members"] if m["liveness"] == "alive"}
                for view in views
            ]
            if all(victim.node_id not in ids for ids in alive):
                break
            await trio.sleep(0.2)
    for view in views:
        stats = counters(view)
        assert stats.get("security.revocations.adopted", 0) == 1


async def test_rotating_the_authority_needs_no_restart(secure: Secure) -> None:
    authority, cluster = secure
    addresses = [str(node.address) for node in cluster.nodes]
    rotated = authority.rotate()
    for node in cluster.nodes:
        rotated.provision(node.data_dir)
    new_writer = rotated.credentials(Role.WRITE)
    failures: list[BaseException] = []
    done = trio.Event()

    async def keep_writing() -> None:
        async with connect(addresses, credentials=new_writer) as db:
            index = 0
            while not done.is_set():
                try:
                    await db.put(f"rot:{index}", b"x")
                except P2PIndexError as exc:
                    failures.append(exc)
                index += 1
                await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        await trio.sleep(3)  # nodes reload their files within RELOAD_INTERVAL
        nursery.start_soon(keep_writing)
        retired = rotated.retire(authority.trust.cluster)
        for node in cluster.nodes:
            retired.trust.save(node.data_dir / "cluster.trust")
        await trio.sleep(3)
        done.set()
    assert failures == []
    old = authority.credentials(Role.WRITE)
    with pytest.raises(PermissionDenied, match="does not list"):
        async with connect(addresses[:1], credentials=old):
            pass
    admin = rotated.credentials(Role.ADMIN)
    for node in cluster.nodes:
        doc = await status(node.address, admin)
        assert counters(doc).get("security.reloads", 0) >= 2

"""Secure in-process clusters on the simulated network (under trio's autojump clock):
admission, roles, revocation spreading, and attacks injected against running nodes (all
counted, none accepted, service continues)."""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from p2pindex.client import AsyncClient, connect
from p2pindex.config import NodeConfig
from p2pindex.core.swim import SwimConfig
from p2pindex.core.swim.codec import assemble, datagram_prefix, encode_control
from p2pindex.core.swim.messages import Ping
from p2pindex.errors import PermissionDenied
from p2pindex.net.secure.manager import SecurityManager
from p2pindex.node.identity import NodeIdentity
from p2pindex.node.node import Node
from p2pindex.security.authority import Authority
from p2pindex.security.certs import Role
from p2pindex.security.counting import Tally
from p2pindex.security.credentials import ClientCredentials
from p2pindex.security.datagrams import DatagramSealer
from p2pindex.security.directory import CertificateDirectory
from p2pindex.security.trust import TrustState
from p2pindex.sim.determinism import Trace
from p2pindex.sim.network import SimNetwork, SimTransport
from p2pindex.storage.memory import MemoryStorage
from p2pindex.types import Address, Liveness, NodeState
from p2pindex.wire.messages import RevocationPush

FAST = SwimConfig(
    probe_interval=0.2, probe_timeout=0.1, indirect_timeout=0.08, gossip_interval=0.05
)


@dataclass
class Member:
    node: Node
    address: Address
    scope: trio.CancelScope
    storage: MemoryStorage

    def count(self, name: str) -> int:
        return self.node.stats.get(f"security.{name}")


@dataclass
class SecureCluster:
    """Secure nodes on the simulated network (hosts n1, n2, ...; clients c1, c2, ...)."""

    nursery: trio.Nursery
    authority: Authority
    network: SimNetwork
    members: list[Member] = field(default_factory=list)
    hosts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    clients: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def listen(self) -> tuple[Address, SimTransport]:
        address = Address(f"n{next(self.hosts)}", 7000)
        return address, self.network.transport_for(address)

    def client(self, credentials: ClientCredentials, address: Address) -> AsyncClient:
        transport = self.network.transport_for(Address(f"c{next(self.clients)}", 9000))
        return connect([address], credentials=credentials, transport=transport)

    async def start(
        self, manager: SecurityManager | None = None, *, wait: bool = True, seed: int = 0
    ) -> Member:
        identity = NodeIdentity.generate(random.Random(seed or len(self.members) + 500))
        if manager is None:
            manager = SecurityManager.issued_by(self.authority, identity.signing_key)
        else:
            identity = NodeIdentity(manager.local.signing_key)
        seeds = tuple(m.address for m in self.members if not m.scope.cancel_called)[:2]
        listen, transport = self.listen()
        config = NodeConfig(
            data_dir=None,
            listen=listen,
            seeds=seeds,
            n_replicas=3,
            replica_timeout=1.0,
        )
        storage = MemoryStorage()
        node = Node(
            config,
            transport=transport,
            storage=storage,
            identity=identity,
            rng=random.Random(len(self.members)),
            wall_clock=time.time,
            swim_config=FAST,
            security=manager,
        )
        scope = trio.CancelScope()

        async def run(task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await node.run(task_status=task_status)

        if wait:
            address = await self.nursery.start(run)
        else:
            self.nursery.start_soon(run)
            address = listen
        member = Member(node, address, scope, storage)
        self.members.append(member)
        return member

    async def converged(self, members: list[Member], timeout: float = 20.0) -> None:
        ids = {m.node.node_id for m in members}
        with trio.fail_after(timeout):
            while not all(
                {
                    x.node_id
                    for x in m.node.members()
                    if x.liveness is Liveness.ALIVE and x.state is NodeState.ACTIVE
                }
                >= ids
                for m in members
            ):
                await trio.sleep(0.05)


@asynccontextmanager
async def secure_cluster(tmp_path: Path, size: int = 3) -> AsyncIterator[SecureCluster]:
    async with trio.open_nursery() as nursery:
        network = SimNetwork(random.Random(size), Trace())
        await nursery.start(network.run)
        cluster = SecureCluster(nursery, Authority.init(tmp_path / "authority"), network)
        for _ in range(size):
            await cluster.start()
        await cluster.converged(cluster.members)
        yield cluster
        nursery.cancel_scope.cancel()


async def test_a_secure_cluster_serves_clients_by_role(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with secure_cluster(tmp_path) as cluster:
        address = cluster.members[0].address
        writer = cluster.authority.credentials(Role.WRITE, b"user:")
        async with cluster.client(writer, address) as db:
            await db.put("user:1", b"alice")
            assert (await db.get("user:1")).values == [b"alice"]
            with pytest.raises(PermissionDenied, match="prefix"):
                await db.put("admin:1", b"mallory")
            with pytest.raises(PermissionDenied, match="admin role"):
                await db.leave(address)
        reader = cluster.authority.credentials(Role.READ)
        async with cluster.client(reader, address) as db:
            with pytest.raises(PermissionDenied, match="write role"):
                await db.delete("user:1")
            assert (await db.get("user:1")).values == [b"alice"]
        assert all(m.storage.get(b"admin:1") is None for m in cluster.members)
        denied = sum(m.count("denied.prefix") + m.count("denied.role") for m in cluster.members)
        assert denied == 3
        for member in cluster.members:
            assert member.count("swim.accepted") > 0
            assert member.count("swim.bad_signature") == 0


async def test_a_node_of_another_cluster_cannot_join(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with secure_cluster(tmp_path) as cluster:
        foreign = Authority.init(tmp_path / "foreign")
        intruder = await cluster.start(
            SecurityManager.issued_by(foreign, NodeIdentity.generate().signing_key), wait=False
        )
        await trio.sleep(2.0)
        insiders = cluster.members[:3]
        await cluster.converged(insiders)
        for member in insiders:
            ids = {x.node_id for x in member.node.members()}
            assert intruder.node.node_id not in ids
        refused = sum(m.count("handshake.refused.wrong_cluster") for m in insiders)
        assert refused >= 1
        assert intruder.count("handshake.outbound.refused_by_peer") >= 1
        assert len(intruder.node.members()) == 1


async def test_an_uncertified_insecure_node_gets_a_clear_refusal(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with secure_cluster(tmp_path, size=1) as cluster:
        identity = NodeIdentity.generate()
        listen, transport = cluster.listen()
        config = NodeConfig(
            data_dir=None,
            listen=listen,
            seeds=(cluster.members[0].address,),
            n_replicas=1,
        )
        node = Node(
            config,
            transport=transport,
            storage=MemoryStorage(),
            identity=identity,
            rng=random.Random(3),
            wall_clock=time.time,
        )
        cluster.nursery.start_soon(node.run)
        await trio.sleep(1.0)
        assert cluster.members[0].count("handshake.failed.not_secure") >= 1
        assert identity.node_id not in {m.node_id for m in cluster.members[0].node.members()}


async def test_a_revocation_spreads_and_cuts_the_node_off(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with secure_cluster(tmp_path, size=3) as cluster:
        victim = cluster.members[2]
        document = cluster.authority.revoke((victim.node.node_id,))
        admin = cluster.authority.credentials(Role.ADMIN)
        first = cluster.members[0]
        async with cluster.client(admin, first.address) as db:
            reply = await db._request_to(first.address, RevocationPush(document), 10.0)
        assert "passed on to 1 of 1" in reply.detail
        others = cluster.members[:2]
        with trio.fail_after(20):
            while not all(m.node.security.state.revocation_version > 0 for m in others):
                await trio.sleep(0.05)
            while any(
                x.node_id == victim.node.node_id and x.liveness is Liveness.ALIVE
                for m in others
                for x in m.node.members()
            ):
                await trio.sleep(0.1)
        assert sum(m.count("sessions_cut") for m in others) >= 1
        assert sum(m.count("swim.revoked_sender") for m in others) >= 1
        async with cluster.client(admin, first.address) as db:
            await db.put("after", b"revocation")
        assert victim.node.node_id not in {
            x.node_id for x in first.node.members() if x.liveness is Liveness.ALIVE
        }


async def test_injected_datagrams_against_a_running_node_are_all_dropped(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with secure_cluster(tmp_path, size=2) as cluster:
        target = cluster.members[0]
        honest = cluster.members[1]
        authority = cluster.authority
        revoked_key = NodeIdentity.generate().signing_key
        revoked = SecurityManager.issued_by(authority, revoked_key)
        target.node.security.directory.add(revoked.certificate)
        target.node.security.adopt(authority.revoke((revoked.node_id,)), "test")
        outsider = SecurityManager.issued_by(
            Authority.init(tmp_path / "x"), NodeIdentity.generate().signing_key
        )

        def sealer(key: object) -> DatagramSealer:
            directory = CertificateDirectory(TrustState(authority.trust), time.time)
            return DatagramSealer(key, authority.trust.cluster_id, directory, time.time, Tally())

        honest_id = honest.node.node_id
        honest_sealer = sealer(honest.node.identity.signing_key)

        def ping(sender: str, seq: int) -> bytes:
            return assemble(
                datagram_prefix(sender, 10**12), 3, [encode_control(Ping(seq, target.node.node_id))]
            )

        per_kind = 100
        captured = [honest_sealer.seal(ping(honest_id, i)) for i in range(per_kind)]
        attacks = {
            "forged": [sealer(revoked_key).seal(ping(honest_id, i)) for i in range(per_kind)],
            "altered": [c[:-1] + bytes([c[-1] ^ 1]) for c in captured],
            "revoked": [
                sealer(revoked_key).seal(ping(revoked.node_id, i)) for i in range(per_kind)
            ],
            "uncertified": [
                sealer(outsider.local.signing_key).seal(ping(outsider.node_id, i))
                for i in range(per_kind)
            ],
        }
        attacker = cluster.network.transport_for(Address("attacker", 7000))
        before = dict(target.node.stats.snapshot())
        for data in captured:  # first delivery from a wrong address: dropped by the core
            await attacker.send_datagram(target.address, data)
        for data in captured:
            await attacker.send_datagram(target.address, data)
        for datagrams in attacks.values():
            for data in datagrams:
                await attacker.send_datagram(target.address, data)
        await trio.sleep(1.0)
        after = target.node.stats.snapshot()

        def delta(name: str) -> int:
            return int(
                after.get(f"security.swim.{name}", 0) - before.get(f"security.swim.{name}", 0)
            )

        assert delta("bad_signature") == 2 * per_kind  # forged + altered
        assert delta("revoked_sender") == per_kind
        assert delta("uncertified_sender") == per_kind
        assert delta("replayed") == per_kind
        ids = {x.node_id for x in target.node.members()}
        assert revoked.node_id not in ids and outsider.node_id not in ids
        await cluster.converged(cluster.members)

"""Signed membership claims in a secure in-process cluster on the simulated network (under
trio's autojump clock): members learn a
newcomer whose certificate they had to fetch first, and forged claims injected into a running
node are refused, counted in its status and change nobody's view."""

from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path

import trio

from p2pindex.config import NodeConfig
from p2pindex.core.swim import SwimConfig
from p2pindex.core.swim.codec import assemble, datagram_prefix, encode_record
from p2pindex.core.swim.messages import Alive, Dead, Record, Suspect
from p2pindex.net.secure.manager import SecurityManager
from p2pindex.node.identity import NodeIdentity
from p2pindex.node.node import Node
from p2pindex.security.authority import Authority
from p2pindex.security.claims import claim_bytes
from p2pindex.sim.determinism import Trace
from p2pindex.sim.network import SimNetwork
from p2pindex.storage.memory import MemoryStorage
from p2pindex.types import Address, Liveness, NodeState

FAST = SwimConfig(
    probe_interval=0.2, probe_timeout=0.1, indirect_timeout=0.08, gossip_interval=0.05
)


async def start(
    nursery: trio.Nursery,
    network: SimNetwork,
    authority: Authority,
    index: int,
    seeds: tuple[Address, ...],
) -> Node:
    identity = NodeIdentity.generate(random.Random(index + 900))
    listen = Address(f"n{index}", 7000)
    node = Node(
        NodeConfig(data_dir=None, listen=listen, seeds=seeds, n_replicas=3),
        transport=network.transport_for(listen),
        storage=MemoryStorage(),
        identity=identity,
        rng=random.Random(index),
        wall_clock=time.time,
        swim_config=FAST,
        security=SecurityManager.issued_by(authority, identity.signing_key),
    )
    await nursery.start(node.run)
    return node


def sees_alive(node: Node, others: list[Node]) -> bool:
    alive = {
        m.node_id
        for m in node.members()
        if m.liveness is Liveness.ALIVE and m.state is NodeState.ACTIVE
    }
    return {o.node_id for o in others} <= alive


async def test_claims_are_signed_relayed_and_forgeries_are_refused(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    authority = Authority.init(tmp_path / "authority")
    async with trio.open_nursery() as nursery:
        network = SimNetwork(random.Random(4), Trace())
        await nursery.start(network.run)
        first = await start(nursery, network, authority, 1, ())
        second = await start(nursery, network, authority, 2, (first.address,))
        third = await start(nursery, network, authority, 3, (first.address,))
        nodes = [first, second, third]
        with trio.fail_after(20):
            while not all(sees_alive(n, nodes) for n in nodes):
                await trio.sleep(0.05)
        assert all(n._swim.own_record().signature is not None for n in nodes)

        mallory = SecurityManager.issued_by(authority, NodeIdentity.generate().signing_key)
        first.security.directory.add(mallory.certificate)
        cluster = authority.trust.cluster_id
        victim = second.node_id
        incarnation = second._swim.incarnation

        def forged(record: Record) -> bytes:
            signature = mallory.local.signing_key.sign(claim_bytes(cluster, record)).signature
            return encode_record(dataclasses.replace(record, signature=signature))

        where = Address("elsewhere", 9)
        claims = [
            forged(Alive(victim, incarnation + 5, where, NodeState.ACTIVE)),
            forged(Suspect(victim, incarnation, third.node_id)),
            forged(Dead(victim, incarnation, third.node_id)),
            forged(Dead(victim, incarnation, victim)),
        ]
        attacker = network.transport_for(Address("mallory", 7000))
        for claim in claims:
            payload = assemble(datagram_prefix(mallory.node_id, 1), 3, [claim])
            await attacker.send_datagram(first.address, mallory.sealer.seal(payload))
        statistics = first.monitor.status()["statistics"]
        with trio.fail_after(10):
            while statistics.get("membership.bad_claim", 0) < len(claims):
                await trio.sleep(0.05)
                statistics = first.monitor.status()["statistics"]
        assert statistics["membership.bad_claim"] == len(claims)
        assert statistics["security.claims.bad_signature"] == len(claims)
        member = next(m for m in first.members() if m.node_id == victim)
        assert member.liveness is Liveness.ALIVE
        assert member.incarnation == second._swim.incarnation < incarnation + 5
        assert member.address == second.address

        fourth = await start(nursery, network, authority, 4, (first.address,))
        nodes.append(fourth)
        with trio.fail_after(20):
            while not all(sees_alive(n, nodes) for n in nodes):
                await trio.sleep(0.05)
        for node in nodes:
            statistics = node.monitor.status()["statistics"]
            assert statistics.get("security.claims.bad_signature", 0) == (
                len(claims) if node is first else 0
            )
        nursery.cancel_scope.cancel()

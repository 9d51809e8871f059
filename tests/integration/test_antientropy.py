"""Anti-entropy between real nodes on the simulated network (virtual time, so it is fast).

A three-node cluster with N=3 is partitioned so that one replica misses writes that the
other two acknowledge (there is no fallback to hold a hint). After the heal nobody reads:
only anti-entropy can bring the isolated replica up to date.

Anti-entropy only compares the keys both sides replicate, so a write a fallback holds must
reach its owner through a hint; the last test pins that for a fallback that coordinates.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio
import trio.testing

from p2pindex.client.async_client import AsyncClient
from p2pindex.config import Limits, NodeConfig
from p2pindex.core import versions
from p2pindex.net.channel import open_channel
from p2pindex.node.handoff import SYNCED_META
from p2pindex.node.identity import NodeIdentity
from p2pindex.node.node import Node
from p2pindex.sim.determinism import SimWallClock, Trace
from p2pindex.sim.network import SimNetwork
from p2pindex.storage.memory import MemoryStorage
from p2pindex.types import Address, Liveness
from p2pindex.wire.messages import (
    DigestReply,
    DigestRequest,
    ErrorReply,
    KeyDigestRequest,
    PutReply,
    PutRequest,
    RecordsRequest,
)

NAMES = ("n1", "n2", "n3")
KEYS = [f"key-{i}".encode() for i in range(40)]
STREAM_BREAK = 15.0
"""A partition longer than this breaks the streams (the writes queued for n3 are lost)."""


@dataclass
class SimCluster:
    network: SimNetwork
    nodes: dict[str, Node]
    storages: dict[str, MemoryStorage]
    client: AsyncClient
    nursery: trio.Nursery

    def cut_off(self, name: str) -> None:
        links = [(a, b) for a in (*self.nodes, "c1") for b in (name,) if a != b]
        self.network.block("cut", links + [(b, a) for a, b in links])

    def heal(self) -> None:
        self.network.clear("cut")

    def records(self, key: bytes) -> dict[str, bytes | None]:
        return {name: storage.get(key) for name, storage in self.storages.items()}


@asynccontextmanager
async def sim_cluster(
    interval: float | None, names: tuple[str, ...] = NAMES
) -> AsyncIterator[SimCluster]:
    network = SimNetwork(random.Random(7), Trace(), tick=0.001, stream_break_after=STREAM_BREAK)
    async with trio.open_nursery() as nursery:
        await nursery.start(network.run)
        nodes: dict[str, Node] = {}
        storages: dict[str, MemoryStorage] = {}
        for index, name in enumerate(names):
            address = Address(name, 7000)
            config = NodeConfig(
                data_dir=None,
                listen=address,
                seeds=(Address("n1", 7000),) if index else (),
                anti_entropy_interval=interval,
            )
            storages[name] = MemoryStorage()
            # Founding members of an empty cluster: nothing to pull, so not SYNCING.
            await storages[name].set_meta(SYNCED_META, b"1")
            nodes[name] = Node(
                config,
                transport=network.transport_for(address),
                storage=storages[name],
                identity=NodeIdentity.generate(random.Random(index)),
                rng=random.Random(100 + index),
                wall_clock=SimWallClock(),
            )
            await nursery.start(nodes[name].run)
        with trio.fail_after(60):
            while not all(
                sum(m.liveness is Liveness.ALIVE for m in node.members()) == len(names)
                for node in nodes.values()
            ):
                await trio.sleep(0.1)
        transport = network.transport_for(Address("c1", 9000))
        async with AsyncClient([Address("n1", 7000)], timeout=2.0, transport=transport) as client:
            yield SimCluster(network, nodes, storages, client, nursery)
        nursery.cancel_scope.cancel()


async def diverge(cluster: SimCluster) -> None:
    """n3 misses every write of KEYS: it is cut off from the other nodes and the client."""
    cluster.cut_off("n3")
    for key in KEYS:
        await cluster.client.put(key, b"v", consistency="quorum")
    await trio.sleep(STREAM_BREAK + 5)
    cluster.heal()
    assert all(values_on(cluster, "n3", key) == [] for key in KEYS)


def values_on(cluster: SimCluster, name: str, key: bytes) -> list[bytes]:
    record = cluster.storages[name].get(key)
    return [] if record is None else versions.decode_object(record).values


async def test_replicas_diverged_by_a_partition_converge_without_any_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with sim_cluster(interval=1.0) as cluster:
        await diverge(cluster)
        stale = [key for key in KEYS if len(set(cluster.records(key).values())) > 1]
        assert stale == KEYS
        with trio.fail_after(60):
            while any(len(set(cluster.records(key).values())) > 1 for key in KEYS):
                await trio.sleep(1.0)
        assert all(values_on(cluster, "n3", key) == [b"v"] for key in KEYS)
        stats = cluster.nodes["n3"].stats.snapshot()
        pulled = sum(node.stats.get("antientropy.keys_pulled") for node in cluster.nodes.values())
        pushed = sum(node.stats.get("antientropy.keys_pushed") for node in cluster.nodes.values())
        print(
            {
                n: {
                    k: v
                    for k, v in node.stats.snapshot().items()
                    if "hint" in k or "anti" in k or "repair" in k
                }
                for n, node in cluster.nodes.items()
            }
        )
        assert pulled + pushed >= len(KEYS)
        assert stats["antientropy.rounds"] >= 1


async def test_without_anti_entropy_the_missed_writes_stay_missing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with sim_cluster(interval=None) as cluster:
        await diverge(cluster)
        await trio.sleep(60)
        assert all(values_on(cluster, "n3", key) == [] for key in KEYS)


async def test_a_fallback_that_coordinates_a_write_keeps_a_hint_for_the_owner(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with sim_cluster(interval=None, names=("n1", "n2", "n3", "n4")) as cluster:
        fallback = cluster.nodes["n4"]
        names = {node.node_id: name for name, node in cluster.nodes.items()}
        key = next(k for k in KEYS if fallback.node_id not in fallback.ring.preference_list(k, 3))
        owner = names[fallback.ring.preference_list(key, 3)[0]]
        cluster.cut_off(owner)
        with trio.fail_after(60):
            while fallback.usable(cluster.nodes[owner].node_id):
                await trio.sleep(0.5)
        transport = cluster.network.transport_for(Address("c2", 9000))
        channel = await open_channel(cluster.nursery, transport, Address("n4", 7000), Limits())
        reply = await channel.request(PutRequest(key, b"v", None, "one", 2000))
        assert isinstance(reply, PutReply)
        assert values_on(cluster, "n4", key) == [b"v"]
        backlog = cluster.storages["n4"].hint_backlog()
        assert [(b.target, b.count) for b in backlog] == [(cluster.nodes[owner].node_id, 1)]
        cluster.heal()
        with trio.fail_after(60):
            while values_on(cluster, owner, key) != [b"v"]:
                await trio.sleep(0.5)


async def test_malformed_digest_requests_get_a_clear_error_and_change_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with sim_cluster(interval=None) as cluster:
        transport = cluster.network.transport_for(Address("c2", 9000))
        channel = await open_channel(cluster.nursery, transport, Address("n1", 7000), Limits())
        sender = cluster.nodes["n2"].node_id
        bad = [
            (DigestRequest(sender, [1, 2], [3]), "2 arc starts but 1 ends"),
            (DigestRequest(sender, [0] * 300, [0] * 300), "at most 256"),
            (KeyDigestRequest(sender, [5], [-1], 10), "outside 0..18446744073709551615"),
            (RecordsRequest([b"k"] * 2000), "at most 1024"),
        ]
        for message, reason in bad:
            reply = await channel.request(message)
            assert isinstance(reply, ErrorReply) and reason in reply.message, reply
        reply = await channel.request(DigestRequest(sender, [7], [7]))
        assert isinstance(reply, DigestReply) and reply.counts == [0]

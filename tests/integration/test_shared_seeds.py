"""Every node takes the same seed list, its own address included: no node is special."""

from __future__ import annotations

import functools
import random

import trio

from p2pindex.node.identity import NodeIdentity
from p2pindex.storage.memory import MemoryStorage
from p2pindex.types import Address, Liveness, NodeState
from p2pindex.wire.messages import GetReply, GetRequest, PutReply, PutRequest
from tests.support.cluster import NODE_PORT, running_cluster


async def test_a_node_whose_only_seed_is_itself_starts_a_cluster_at_once(autojump_clock):
    own = Address("solo", NODE_PORT)
    async with running_cluster(0, n_replicas=1) as cluster:
        with trio.fail_after(5):  # not JOIN_WAIT: it does not wait for itself
            node = await cluster.start_node(seeds=(own,), listen=own)
        assert node.node.state is NodeState.ACTIVE
        reply = await cluster.request(node, PutRequest(b"k", b"v", None, "all", 2000))
        assert isinstance(reply, PutReply), reply


async def test_a_seed_that_lost_its_disk_rejoins_the_cluster_instead_of_forming_its_own(
    autojump_clock,
):
    addresses = tuple(Address(f"seed{i}", NODE_PORT) for i in range(3))
    async with running_cluster(0) as cluster:
        async with trio.open_nursery() as starting:  # together: no one waits for the others
            for index, address in enumerate(addresses):
                identity = NodeIdentity.generate(random.Random(index))
                start = functools.partial(
                    cluster.start_node, identity=identity, seeds=addresses, listen=address
                )
                starting.start_soon(start)
        await cluster.wait_converged()
        first = next(n for n in cluster.nodes if n.address == addresses[0])
        for i in range(30):
            reply = await cluster.request(first, PutRequest(b"k%d" % i, b"v", None, "all", 5000))
            assert isinstance(reply, PutReply), reply
        cluster.crash(first)
        cluster.nodes.remove(first)
        await trio.sleep(0.2)  # the socket closes
        # Same command line (same seeds, same address), empty disk, so a new identity.
        reborn = await cluster.start_node(
            storage=MemoryStorage(),
            identity=NodeIdentity.generate(random.Random(99)),
            seeds=addresses,
            listen=addresses[0],
        )
        others = {n.node.node_id for n in cluster.nodes if n is not reborn}
        with trio.fail_after(30):
            while reborn.node.state is not NodeState.ACTIVE:
                await trio.sleep(0.05)
        alive = {m.node_id for m in reborn.node.members() if m.liveness is Liveness.ALIVE}
        assert others <= alive
        assert reborn.node.node_id in cluster.nodes[1].node.ring.nodes
        # The old identity stays in the ring until removed, but nothing is asked of it at
        # an address that now answers as someone else.
        assert not cluster.nodes[0].node.usable(first.node.node_id)
        for i in range(30):
            got = await cluster.request(reborn, GetRequest(b"k%d" % i, "quorum", 5000))
            assert isinstance(got, GetReply) and got.values == [b"v"], (i, got)

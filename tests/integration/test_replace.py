"""`serve --replace NODE_ID`: a new node stands in for a dead member in one step, and every
bad replacement is refused with the reason before anything changes."""

from __future__ import annotations

import json
import random

import pytest
import trio

from p2pindex.node.identity import NodeIdentity
from p2pindex.node.restart_meta import REMOVED_META
from p2pindex.storage.memory import MemoryStorage
from p2pindex.types import NodeState
from p2pindex.wire.messages import (
    GetReply,
    GetRequest,
    OkReply,
    PutReply,
    PutRequest,
    RemoveRequest,
)
from tests.support.cluster import Cluster, running_cluster


async def refused(cluster: Cluster, replace: str, seed: int) -> str:
    """Start a new node replacing ``replace``; return the refusal it stopped with."""
    with pytest.raises(BaseException) as info:
        await cluster.start_node(
            identity=NodeIdentity.generate(random.Random(seed)),
            seeds=(cluster.nodes[0].address,),
            options={"replace": replace},
        )
    error = info.value
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return str(error)


async def test_a_new_node_replaces_a_dead_one_and_bad_replacements_are_refused():
    async with running_cluster(4) as cluster:
        keys = [b"rep-%d" % i for i in range(60)]
        for key in keys:
            reply = await cluster.request(
                cluster.nodes[0], PutRequest(key, b"v", None, "all", 5000)
            )
            assert isinstance(reply, PutReply)
        dead = cluster.nodes[3]
        dead_id = dead.node.node_id
        live_id = cluster.nodes[1].node.node_id
        old_ring = cluster.nodes[0].node.ring
        old_ranges = {n: old_ring.ranges_for(n, 3) for n in old_ring.nodes}
        assert "is alive" in await refused(cluster, live_id, 50)
        assert "no member has the id" in await refused(cluster, "0123456789abcdef", 51)
        cluster.crash(dead)
        cluster.nodes.remove(dead)
        await cluster.wait_dead(dead_id)
        storage = MemoryStorage()
        identity = NodeIdentity.generate(random.Random(52))
        new = await cluster.start_node(
            storage=storage,
            identity=identity,
            seeds=(cluster.nodes[0].address,),
            options={"replace": dead_id},
        )
        with trio.fail_after(30):
            while new.node.state is not NodeState.ACTIVE or any(
                dead_id in n.node.ring.nodes for n in cluster.nodes
            ):
                await trio.sleep(0.1)
        assert all(new.node.node_id in n.node.ring.nodes for n in cluster.nodes)
        # It took the dead member's tokens: its ranges are the dead member's, and no other
        # node's ranges changed, so nothing but the dead member's share moved.
        new_id = new.node.node_id
        for n in cluster.nodes:
            ring = n.node.ring
            assert ring.token_source(new_id) == dead_id
            assert ring.ranges_for(new_id, 3) == old_ranges[dead_id]
            for other in old_ring.nodes - {dead_id}:
                assert ring.ranges_for(other, 3) == old_ranges[other]
            if n is not new:
                assert n.node.handoff.progress.direction != "gained", "nothing was gained"
        assert new.node.handoff.progress.direction == "in"
        assert new.node.handoff.progress.finished is not None
        for key in keys:
            got = await cluster.request(new, GetRequest(key, "quorum", 5000))
            assert isinstance(got, GetReply) and got.values == [b"v"], key
        # A second replacement of the same member: refused, nothing changed.
        # (Removed members are no longer listed, so it reads as unknown or already replaced.)
        assert "removed or replaced already" in await refused(cluster, dead_id, 53)
        # The replacement crashes halfway and restarts with the same command line.
        cluster.crash(new)
        cluster.nodes.remove(new)
        await trio.sleep(0.2)
        again = await cluster.start_node(
            storage=storage,
            identity=identity,
            seeds=(cluster.nodes[0].address,),
            options={"replace": dead_id},
        )
        assert again.node.node_id == identity.node_id
        assert again.node.ring.token_source(again.node.node_id) == dead_id
        assert again.node.ring.ranges_for(again.node.node_id, 3) == old_ranges[dead_id]


async def test_members_that_missed_a_replacement_place_the_replacement_alike():
    """A member down while the dead one was replaced, and a node that joins afterwards,
    missed the relayed removal: they hear of the replacement from its own claim (signed,
    in its membership record) and from the others' removal notices when they come alive,
    and their rings place it at the dead member's tokens as everyone else's do."""
    async with running_cluster(4) as cluster:
        away, dead = cluster.nodes[2], cluster.nodes[3]
        dead_id = dead.node.node_id
        cluster.crash_out(away, dead)
        await cluster.wait_dead(dead_id)
        new = await cluster.start_node(
            identity=NodeIdentity.generate(random.Random(60)),
            seeds=(cluster.nodes[0].address,),
            options={"replace": dead_id},
        )
        await cluster.start_node(storage=away.storage, identity=away.identity)
        later = await cluster.start_node(identity=NodeIdentity.generate(random.Random(61)))
        expected = {new.node.node_id: dead_id}
        with trio.fail_after(60):
            while not all(
                n.node.ring.sources == expected
                and n.node.ring.nodes == cluster.nodes[0].node.ring.nodes
                and dead_id not in n.node.ring.nodes
                for n in cluster.nodes
            ):
                await trio.sleep(0.1)
        assert later.node.node_id in cluster.nodes[0].node.ring.nodes


async def test_a_replacement_that_never_comes_can_be_removed_in_turn():
    """The removal naming a replacement reserves the dead member's place for it in every
    ring at once; if it never comes, removing its id frees the place for the others."""
    async with running_cluster(4) as cluster:
        dead = cluster.nodes[3]
        dead_id = dead.node.node_id
        cluster.crash(dead)
        cluster.nodes.remove(dead)
        await cluster.wait_dead(dead_id)
        ghost = "feedface" * 2
        removal = RemoveRequest(dead_id, replaced_by=ghost)
        assert isinstance(await cluster.request(cluster.nodes[0], removal), OkReply)
        for n in cluster.nodes:
            assert n.node.ring.sources == {ghost: dead_id}, "the relay named the replacement"
        reply = await cluster.request(cluster.nodes[1], RemoveRequest(ghost))
        assert isinstance(reply, OkReply), reply
        for n in cluster.nodes:
            assert ghost not in n.node.ring.nodes and dead_id not in n.node.ring.nodes


async def test_a_relayed_removal_of_a_member_never_seen_here_keeps_the_senders_incarnation():
    """A node that never saw the removed member records it at the incarnation the relay
    names, so that member coming back at that incarnation stays removed here, and only a
    restart at a higher one counts as coming back."""
    async with running_cluster(3) as cluster:
        stranger = "0badc0de" * 2
        removal = RemoveRequest(stranger, relayed=True, incarnation=7)
        assert isinstance(await cluster.request(cluster.nodes[1], removal), OkReply)
        node = cluster.nodes[1].node
        assert node.view.removed[stranger] == 7
        with trio.fail_after(5):  # and remembers it across a restart
            while json.loads(node.storage.get_meta(REMOVED_META) or b"{}").get(stranger) != 7:
                await trio.sleep(0.05)

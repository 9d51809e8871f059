"""After `remove`, the nodes that take the removed member's place pull its arcs from every
remaining old replica before they serve reads of them.

Index seed 2: a write acknowledged at QUORUM by the member later removed and one other
replica; the node that took the removed member's place started with nothing, and a quorum
of it and the replica that had missed the write answered as if the write never happened.
"""

from __future__ import annotations

import random

import trio

from p2pindex.core import versions
from p2pindex.core.versions import VersionVector
from p2pindex.node.identity import NodeIdentity
from p2pindex.wire.messages import (
    GetReply,
    GetRequest,
    OkReply,
    RemoveRequest,
    ReplicaAck,
    ReplicaWrite,
)
from tests.support.cluster import Cluster, RunningNode, running_cluster

QUIET = {"anti_entropy_interval": None}  # only the removal's pull may bring the copies


def by_id(cluster: Cluster) -> dict[str, RunningNode]:
    return {n.node.node_id: n for n in cluster.nodes}


async def test_a_quorum_write_held_by_a_removed_member_is_read_everywhere_after(autojump_clock):
    async with running_cluster(5, node_options=QUIET) as cluster:
        nodes = by_id(cluster)
        ring = cluster.nodes[0].node.ring
        keys = [b"gain-%d" % i for i in range(40)]
        placed = {key: ring.preference_list(key, 3) for key in keys}
        removed_id = placed[keys[0]][0]
        mine = [key for key in keys if placed[key][0] == removed_id]
        # Each write reached the member to be removed and the last replica, not the middle
        # one: a QUORUM write whose third copy was lost with a crash.
        for key in mine:
            obj = versions.update(None, VersionVector(), "writer.e1", b"v-" + key)
            record = versions.encode_object(obj)
            for holder in (placed[key][0], placed[key][2]):
                reply = await cluster.request(nodes[holder], ReplicaWrite(key, record, None))
                assert isinstance(reply, ReplicaAck)
        victim = nodes[removed_id]
        live = [n for n in cluster.nodes if n is not victim]
        cluster.crash(victim)
        await cluster.wait_dead(removed_id)
        reply = await cluster.request(live[0], RemoveRequest(removed_id))
        assert isinstance(reply, OkReply), reply
        after = live[0].node.ring
        gainers = {after.preference_list(key, 3)[2] for key in mine}
        for coordinator in live:
            for key in mine:
                got = await cluster.request(coordinator, GetRequest(key, "quorum", 5000))
                assert isinstance(got, GetReply), got
                assert got.values == [b"v-" + key], (coordinator.node.node_id, key)
        with trio.fail_after(30):
            while any(nodes[g].node.view.gaining for g in gainers):
                await trio.sleep(0.1)
        for key in mine:
            gainer = nodes[after.preference_list(key, 3)[2]]
            assert gainer.storage.get(key) is not None, "the gained arc was not pulled"
        assert sum(nodes[g].node.stats.get("handoff.gained_syncs") for g in gainers) >= 1


async def test_a_member_away_during_a_removal_learns_it_when_it_comes_back(autojump_clock):
    """The relay of a removal reaches only the members alive at the time. One that was
    down kept the removed member in its ring for good (join-under-load seed 22): it placed
    keys on a node nobody else did. Now the others tell it their removals when it comes
    back, and a node that joins later hears them too."""
    async with running_cluster(5) as cluster:
        away, gone = cluster.nodes[3], cluster.nodes[4]
        gone_id = gone.node.node_id
        cluster.crash_out(away, gone)
        await cluster.wait_dead(gone_id)
        reply = await cluster.request(cluster.nodes[0], RemoveRequest(gone_id))
        assert isinstance(reply, OkReply), reply
        back = await cluster.start_node(storage=away.storage, identity=away.identity)
        later = await cluster.start_node(identity=NodeIdentity.generate(random.Random(77)))
        with trio.fail_after(30):  # and then every member places keys alike
            while (
                not all(
                    gone_id in n.node.view.removed and gone_id not in n.node.ring.nodes
                    for n in (back, later)
                )
                or len({n.node.ring for n in cluster.nodes}) != 1
            ):
                await trio.sleep(0.1)
        assert later.node.node_id in cluster.nodes[0].node.ring.nodes

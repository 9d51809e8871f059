"""Tombstone reaping: removed only once every replica holds the tombstone and the grace
period passed; a stale copy that shows up later is recognised and dropped."""

from __future__ import annotations

import trio

from p2pindex.core import versions
from p2pindex.wire.messages import (
    DeleteRequest,
    GetReply,
    GetRequest,
    PutReply,
    PutRequest,
    ReplicaAck,
    ReplicaWrite,
    StatusReply,
    StatusRequest,
)
from tests.support.cluster import Cluster, running_cluster

GRACE = {"tombstone_grace": 0.4, "anti_entropy_interval": 0.5}
KEYS = [b"reap-%d" % i for i in range(20)]


async def write_then_delete(cluster: Cluster, consistency: str = "all") -> dict[bytes, bytes]:
    """Write every key, delete it; return each key's record as it was before the delete."""
    node = cluster.nodes[0]
    old: dict[bytes, bytes] = {}
    for key in KEYS:
        reply = await cluster.request(node, PutRequest(key, b"v", None, consistency, 5000))
        assert isinstance(reply, PutReply), reply
        old[key] = node.storage.get(key)
        gone = await cluster.request(node, DeleteRequest(key, reply.context, consistency, 5000))
        assert not hasattr(gone, "code"), gone
    return old


async def wait_reaped(cluster: Cluster, nodes: list, timeout: float = 20) -> None:
    with trio.fail_after(timeout):
        while any(n.storage.get(key) is not None for n in nodes for key in KEYS):
            await trio.sleep(0.1)


async def test_tombstones_every_replica_holds_are_reaped_and_the_delete_stands():
    async with running_cluster(3, node_options=GRACE) as cluster:
        old = await write_then_delete(cluster)
        await wait_reaped(cluster, cluster.nodes)
        for node in cluster.nodes:
            got = await cluster.request(node, GetRequest(KEYS[0], "all", 5000))
            assert isinstance(got, GetReply) and got.values == []
        status = await cluster.request(cluster.nodes[1], StatusRequest())
        assert isinstance(status, StatusReply)
        tombstones = status.status["tombstones"]
        assert tombstones["reaped"] == len(KEYS) and tombstones["markers"] == len(KEYS)
        # A stale copy (a hint, a replica back from a long outage, a fallback's copy)
        # arrives after the reap: it is recognised as older than the delete and dropped.
        target = cluster.nodes[2]
        dropped = target.node.stats.get("tombstones.stale_dropped")
        for key, record in old.items():
            reply = await cluster.request(target, ReplicaWrite(key, record, None))
            assert isinstance(reply, ReplicaAck)
        assert all(target.storage.get(key) is None for key in KEYS)
        assert target.node.stats.get("tombstones.stale_dropped") - dropped == len(KEYS)
        got = await cluster.request(target, GetRequest(KEYS[0], "all", 5000))
        assert isinstance(got, GetReply) and got.values == []
        # A new write of a reaped key gets a clock above the deleted one, so it beats
        # every stale copy, and the key's marker goes.
        reply = await cluster.request(target, PutRequest(KEYS[0], b"again", None, "all", 5000))
        assert isinstance(reply, PutReply)
        stored = versions.decode_object(target.storage.get(KEYS[0]))
        assert versions.descends(stored.clock, versions.decode_object(old[KEYS[0]]).clock)
        got = await cluster.request(cluster.nodes[0], GetRequest(KEYS[0], "all", 5000))
        assert got.values == [b"again"]


async def test_a_tombstone_is_kept_while_a_replica_of_its_key_is_down():
    async with running_cluster(3, node_options=GRACE) as cluster:
        victim = cluster.nodes[2]
        cluster.crash(victim)
        await write_then_delete(cluster, consistency="quorum")  # the victim missed both
        await trio.sleep(3.0)  # many grace periods and reaper rounds
        for node in cluster.nodes[:2]:
            assert all(node.storage.get(key) is not None for key in KEYS)
            assert node.node.stats.get("tombstones.reaped") == 0


async def test_markers_survive_a_restart():
    async with running_cluster(3, node_options=GRACE) as cluster:
        old = await write_then_delete(cluster)
        await wait_reaped(cluster, cluster.nodes)
        target = cluster.nodes[2]
        cluster.crash(target)
        cluster.nodes.remove(target)
        await trio.sleep(0.1)
        back = await cluster.start_node(
            storage=target.storage,
            identity=target.identity,
            seeds=(cluster.nodes[0].address,),
        )
        for key, record in old.items():
            assert isinstance(
                await cluster.request(back, ReplicaWrite(key, record, None)), ReplicaAck
            )
        assert all(back.storage.get(key) is None for key in KEYS)
        assert back.node.stats.get("tombstones.stale_dropped") >= len(KEYS)


async def test_markers_expire_once_no_replica_stores_the_tombstone_any_more():
    async with running_cluster(3, node_options=GRACE) as cluster:
        await write_then_delete(cluster)
        await wait_reaped(cluster, cluster.nodes)
        with trio.fail_after(30):  # ten grace periods (4 s), then every replica checked
            while any(n.node.reaper.markers for n in cluster.nodes):
                await trio.sleep(0.2)
        assert all(
            n.node.stats.get("tombstones.markers_expired") == len(KEYS) for n in cluster.nodes
        )


async def test_markers_outlive_their_time_until_every_replica_has_reaped():
    async with running_cluster(3, node_options=GRACE) as cluster:
        await write_then_delete(cluster)
        await wait_reaped(cluster, cluster.nodes)
        straggler = cluster.nodes[2]
        index = straggler.node.reaper._index
        record = index.shadow.pop(KEYS[0])[0]
        straggler.node.reaper._reaped_at.pop(KEYS[0])
        await straggler.storage.put(KEYS[0], record)  # as if it had not reaped this one yet
        # The others' markers are past their time, but the straggler still stores the
        # tombstone: they keep them, it confirms against them and reaps, then all expire.
        with trio.fail_after(30):
            while any(n.node.reaper.markers for n in cluster.nodes):
                await trio.sleep(0.2)
        assert straggler.storage.get(KEYS[0]) is None
        assert straggler.node.stats.get("tombstones.reaped") >= len(KEYS) + 1


async def test_a_replica_that_cannot_be_asked_keeps_the_markers():
    async with running_cluster(3, node_options=GRACE) as cluster:
        await write_then_delete(cluster)
        await wait_reaped(cluster, cluster.nodes)
        cluster.crash(cluster.nodes[2])
        await trio.sleep(6.0)  # past ten grace periods
        assert all(n.node.reaper.markers == len(KEYS) for n in cluster.nodes[:2])


async def test_a_write_from_a_node_whose_marker_expired_first_is_kept_everywhere():
    """Seed 3896: one replica's marker went early (its clock jumped ahead) while the others
    kept theirs; its next write of the key must not be taken for one the delete covers."""
    async with running_cluster(3, node_options=GRACE) as cluster:
        await write_then_delete(cluster)
        await wait_reaped(cluster, cluster.nodes)
        first = cluster.nodes[0]
        first.node.reaper._index.shadow.clear()
        first.node.reaper._reaped_at.clear()
        reply = await cluster.request(first, PutRequest(KEYS[0], b"again", None, "all", 5000))
        assert isinstance(reply, PutReply), reply
        for node in cluster.nodes:
            got = await cluster.request(node, GetRequest(KEYS[0], "all", 5000))
            assert isinstance(got, GetReply) and got.values == [b"again"], got


async def test_a_replica_that_lost_its_markers_gets_the_delete_back_from_the_others():
    """Seed 47987: a replica came back with a wiped disk (its markers gone) and pulled a
    fallback's old copy of a deleted key. Its anti-entropy pushes were dropped against the
    others' markers, and theirs never sent the markers, so it kept the deleted value until
    a read came. Anti-entropy now carries markers both ways: no read is made here."""
    async with running_cluster(3, node_options=GRACE) as cluster:
        old = await write_then_delete(cluster)
        await wait_reaped(cluster, cluster.nodes)
        wiped = cluster.nodes[2]
        for key, record in old.items():  # as a wiped disk that pulled a stale copy holds
            wiped.node.reaper._index.shadow.pop(key)
            wiped.node.reaper._reaped_at.pop(key)
            await wiped.storage.put(key, record)

        def carried() -> int:
            """Keys anti-entropy moved to or from the wiped replica. A pusher counts its
            batch once the reply is back, which can be after the wiped store has it."""
            pulled = wiped.node.stats.get("antientropy.keys_pulled")
            return pulled + sum(
                n.node.stats.get("antientropy.keys_pushed") for n in cluster.nodes[:2]
            )

        with trio.fail_after(15):
            while True:
                stored = [wiped.storage.get(key) for key in KEYS]
                deleted = all(s is None or versions.decode_object(s).is_deleted for s in stored)
                if deleted and carried() >= len(KEYS):
                    break
                await trio.sleep(0.1)
        await wait_reaped(cluster, cluster.nodes)  # and the tombstones it got go again

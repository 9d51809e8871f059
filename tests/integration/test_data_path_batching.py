"""Writes that reach a node together are coordinated and replicated together: every one is
answered, stored on every replica, and a key written twice in one burst keeps both writes."""

from __future__ import annotations

import outcome
import trio

from p2pindex.core import versions
from p2pindex.errors import InvalidRequest, StorageFailure
from p2pindex.types import NodeState
from p2pindex.wire.messages import (
    ErrorReply,
    GetReply,
    GetRequest,
    Message,
    PutReply,
    PutRequest,
    ReplicaAck,
    ReplicaWriteMany,
)
from tests.support.cluster import running_cluster


async def burst(cluster, running, requests: list[Message]) -> list[Message]:
    """Send every request on one connection without waiting, so they arrive together."""
    channel = await cluster.channel(running)
    replies: dict[int, Message] = {}
    for position, request in enumerate(requests):

        def deliver(result: outcome.Outcome, position: int = position) -> None:
            replies[position] = result.unwrap()

        channel.request_nowait(request, deliver, 10.0)
    with trio.fail_after(10):
        while len(replies) < len(requests):
            await trio.sleep(0.01)
    await channel.aclose()
    return [replies[position] for position in range(len(requests))]


async def test_a_burst_of_writes_is_acknowledged_and_stored_on_every_replica(autojump_clock):
    async with running_cluster(3) as cluster:
        keys = [f"key{i}".encode() for i in range(40)]
        requests: list[Message] = [PutRequest(k, b"v-" + k, None, "quorum", 5000) for k in keys]
        requests.append(PutRequest(keys[0], b"second", None, "all", 5000))
        replies = await burst(cluster, cluster.nodes[0], requests)
        assert all(isinstance(reply, PutReply) for reply in replies), replies
        for running in cluster.nodes:
            for key in keys[1:]:
                record = running.storage.get(key)
                assert record is not None
                assert versions.decode_object(record).values == [b"v-" + key]
        # Both blind writes of keys[0] in one burst survive, as siblings.
        got = await cluster.request(cluster.nodes[2], GetRequest(keys[0], "all", 5000))
        assert isinstance(got, GetReply)
        assert sorted(got.values) == [b"second", b"v-" + keys[0]]
        # A burst of reads (the replicas are asked in one message each) sees every write.
        reads: list[Message] = [GetRequest(k, "all", 5000) for k in [*keys[1:], b"missing"]]
        answers = await burst(cluster, cluster.nodes[1], reads)
        assert [a.values for a in answers if isinstance(a, GetReply)] == [
            *([b"v-" + k] for k in keys[1:]),
            [],
        ]


async def test_a_replica_refuses_a_write_batch_whole_when_it_takes_no_writes_or_one_is_bad(
    autojump_clock,
):
    async with running_cluster(3) as cluster:
        target = cluster.nodes[1]
        good = [
            (
                f"k{i}".encode(),
                versions.encode_object(
                    versions.update(None, versions.VersionVector(), "a.1", b"v")
                ),
            )
            for i in range(3)
        ]
        bad = ReplicaWriteMany([*good, (b"broken", b"not a record")])
        reply = await cluster.request(target, bad)
        assert isinstance(reply, ErrorReply) and reply.code == InvalidRequest.code
        assert all(target.storage.get(key) is None for key, _record in good)

        target.node.set_state(NodeState.DEGRADED, "test")
        reply = await cluster.request(target, ReplicaWriteMany(good))
        assert isinstance(reply, ErrorReply) and reply.code == StorageFailure.code
        assert all(target.storage.get(key) is None for key, _record in good)

        target.node.set_state(NodeState.ACTIVE)
        assert await cluster.request(target, ReplicaWriteMany(good)) == ReplicaAck()
        assert all(target.storage.get(key) == record for key, record in good)


async def test_a_burst_mixing_held_and_foreign_keys_relays_only_the_foreign_ones(autojump_clock):
    async with running_cluster(5) as cluster:
        entry = cluster.nodes[0]
        ring = entry.node.ring
        keys = [f"mixed{i}".encode() for i in range(40)]
        foreign = [k for k in keys if entry.node.node_id not in ring.preference_list(k, 3)]
        assert 0 < len(foreign) < len(keys)
        writes: list[Message] = [PutRequest(k, b"v-" + k, None, "quorum", 5000) for k in keys]
        replies = await burst(cluster, entry, writes)
        assert all(isinstance(reply, PutReply) for reply in replies), replies
        assert entry.node.stats.get("requests.forwarded") == len(foreign)
        for key in foreign:
            assert entry.storage.get(key) is None
        reads: list[Message] = [GetRequest(k, "quorum", 5000) for k in keys]
        answers = await burst(cluster, entry, reads)
        assert [a.values for a in answers if isinstance(a, GetReply)] == [[b"v-" + k] for k in keys]
        assert entry.node.stats.get("requests.forwarded") == 2 * len(foreign)

"""Digest reads against a running cluster: the value comes from the coordinator's copy, the
other replicas send digests, and a replica whose digest differs (another version, or
garbage) has its record fetched, so a read returns exactly what a read of every record
would, repairs what it would, writes nothing wrong, and the node keeps serving."""

from __future__ import annotations

import pytest
import trio

from p2pindex.core import versions
from p2pindex.core.versions import VersionVector, update
from p2pindex.errors import StorageFailure
from p2pindex.node import replica as replica_module
from p2pindex.wire.messages import (
    ErrorReply,
    GetReply,
    GetRequest,
    Message,
    PutReply,
    PutRequest,
    ReplicaDigestManyReply,
    ReplicaReadManyReply,
)
from tests.integration.test_data_path_batching import burst
from tests.support.cluster import running_cluster

KEYS = [f"key{i}".encode() for i in range(12)]


def total(cluster, counter: str) -> int:
    return sum(running.node.stats.get(counter) for running in cluster.nodes)


async def write_all(cluster) -> None:
    writes: list[Message] = [PutRequest(k, b"v-" + k, None, "all", 5000) for k in KEYS]
    assert all(isinstance(r, PutReply) for r in await burst(cluster, cluster.nodes[0], writes))


def stored(cluster) -> list[list[bytes | None]]:
    return [[running.storage.get(k) for k in KEYS] for running in cluster.nodes]


async def test_replicas_in_sync_answer_with_digests_and_no_record_is_fetched(autojump_clock):
    async with running_cluster(3) as cluster:
        await write_all(cluster)
        for running in cluster.nodes:
            for level in ("one", "quorum", "all"):
                reads: list[Message] = [GetRequest(k, level, 5000) for k in KEYS]
                answers = await burst(cluster, running, reads)
                assert [a.values for a in answers if isinstance(a, GetReply)] == [
                    [b"v-" + k] for k in KEYS
                ]
        assert total(cluster, "reads.digest_fetches") == 0
        assert total(cluster, "repairs.read") == 0


async def test_a_replica_holding_another_version_is_fetched_and_repaired(autojump_clock):
    async with running_cluster(3) as cluster:
        await write_all(cluster)
        key = KEYS[0]
        coordinator, other = cluster.nodes[0], cluster.nodes[1]
        # A concurrent write that only ``other`` holds: its digest matches no version the
        # coordinator has, so the read must fetch it and return both siblings.
        lone = update(None, VersionVector(), "lone-writer", b"concurrent")
        merged = versions.merge(versions.decode_object(other.storage.get(key)), lone)
        await other.node._index.apply(key, merged)
        got = await cluster.request(coordinator, GetRequest(key, "all", 5000))
        assert isinstance(got, GetReply)
        assert sorted(got.values) == [b"concurrent", b"v-" + key]
        assert total(cluster, "reads.digest_fetches") >= 1
        # Read repair gave the coordinator and the third replica the merged version.
        for running in cluster.nodes:
            for _ in range(50):
                record = running.storage.get(key)
                if record is not None and sorted(versions.decode_object(record).values) == [
                    b"concurrent",
                    b"v-" + key,
                ]:
                    break
                await trio.sleep(0.1)
            else:
                pytest.fail(f"{running.node.node_id} was not repaired")


GARBAGE = {
    "a digest of no version": lambda digests: ReplicaDigestManyReply(
        [b"\x00" * 16 for _ in digests]
    ),
    "digests of the wrong size": lambda digests: ReplicaDigestManyReply([b"xy" for _ in digests]),
    "too few digests": lambda digests: ReplicaDigestManyReply(digests[:-1]),
    "another message": lambda digests: ReplicaReadManyReply([None for _ in digests]),
    "no copy claimed": lambda digests: ReplicaDigestManyReply([None for _ in digests]),
}


@pytest.mark.parametrize("garbage", sorted(GARBAGE))
async def test_a_replica_answering_garbage_digests_has_its_record_fetched(
    autojump_clock, monkeypatch, garbage
):
    async with running_cluster(3) as cluster:
        await write_all(cluster)
        before = stored(cluster)
        # Every replica now answers a digest request with garbage (the value is still
        # read from the coordinator's own copy, and the fetch is an ordinary read).
        monkeypatch.setattr(replica_module, "ReplicaDigestManyReply", GARBAGE[garbage])
        for running in cluster.nodes:
            reads: list[Message] = [GetRequest(k, "all", 5000) for k in KEYS]
            answers = await burst(cluster, running, reads)
            assert [a.values if isinstance(a, GetReply) else a for a in answers] == [
                [b"v-" + k] for k in KEYS
            ]
            single = await cluster.request(running, GetRequest(KEYS[0], "quorum", 5000))
            assert isinstance(single, GetReply) and single.values == [b"v-" + KEYS[0]]
        assert total(cluster, "reads.digest_fetches") > 0
        assert stored(cluster) == before  # nothing written, nothing repaired needlessly
        assert total(cluster, "repairs.read") == 0
        # The nodes keep serving writes and reads.
        put = await cluster.request(
            cluster.nodes[1], PutRequest(b"after", b"ok", None, "all", 5000)
        )
        assert isinstance(put, PutReply)
        got = await cluster.request(cluster.nodes[2], GetRequest(b"after", "all", 5000))
        assert isinstance(got, GetReply) and got.values == [b"ok"]


async def test_a_read_at_one_falls_back_to_another_replica_when_this_node_fails(
    autojump_clock, monkeypatch
):
    async with running_cluster(3) as cluster:
        await write_all(cluster)
        coordinator = cluster.nodes[0]

        def broken(keys: list[bytes]) -> list:
            raise StorageFailure("the disk is unreadable")

        monkeypatch.setattr(coordinator.node._index, "read_records", broken)
        answers = await burst(cluster, coordinator, [GetRequest(k, "one", 5000) for k in KEYS])
        assert [a.values if isinstance(a, GetReply) else a for a in answers] == [
            [b"v-" + k] for k in KEYS
        ]
        assert coordinator.node.stats.get("reads.fallbacks") == len(KEYS)
        # Above ONE the read still fails with the error, as before: it is definite.
        failed = await cluster.request(coordinator, GetRequest(KEYS[0], "quorum", 5000))
        assert isinstance(failed, ErrorReply) and failed.code == StorageFailure.code


async def test_a_read_at_one_tries_every_spare_before_it_fails(autojump_clock, monkeypatch):
    async with running_cluster(3) as cluster:
        await write_all(cluster)
        coordinator, first, second = cluster.nodes

        def broken(keys: list[bytes]) -> list:
            raise StorageFailure("the disk is unreadable")

        monkeypatch.setattr(coordinator.node._index, "read_records", broken)
        cluster.crash(first)  # a spare that does not answer
        got = await cluster.request(coordinator, GetRequest(KEYS[1], "one", 5000))
        assert isinstance(got, GetReply) and got.values == [b"v-" + KEYS[1]]
        cluster.crash(second)
        failed = await cluster.request(coordinator, GetRequest(KEYS[1], "one", 5000))
        assert isinstance(failed, ErrorReply)
        assert "1 replicas required but only 0" in failed.message, failed.message

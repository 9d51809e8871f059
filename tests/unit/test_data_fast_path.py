"""The node's data fast path: which requests skip the task-per-request path, and for whom."""

from __future__ import annotations

from p2pindex.config import Limits
from p2pindex.core import versions
from p2pindex.core.versions import VersionVector
from p2pindex.net.channel import Respond
from p2pindex.node.fast_path import data_fast_path
from p2pindex.node.replica import IndexManager, ReplicaService
from p2pindex.node.stats import StatisticsStore
from p2pindex.storage.memory import MemoryStorage
from p2pindex.wire.messages import (
    ErrorReply,
    Message,
    OkReply,
    ReplicaAck,
    ReplicaRead,
    ReplicaReadMany,
    ReplicaReadManyReply,
    ReplicaReadReply,
    ReplicaWrite,
    ReplicaWriteMany,
)
from tests.unit.test_channel_fast_path import serve_and_call


class CountingStorage(MemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self.commits = 0

    async def put_many(self, items: list[tuple[bytes, bytes]]) -> None:
        self.commits += 1
        await super().put_many(items)


class NoCoordinator:
    """Stands in for the coordinator: these tests send no client requests."""

    async def get_batch(self, messages: list[Message], respond: Respond) -> None:
        raise AssertionError("no client request was sent")

    async def put_batch(self, messages: list[Message], respond: Respond) -> None:
        raise AssertionError("no client request was sent")


async def no_hints(target: str, key: bytes, record: bytes) -> None:
    raise AssertionError("no hinted write was sent")


def replica_service(storage: MemoryStorage) -> ReplicaService:
    stats = StatisticsStore()
    index = IndexManager(storage, "n1-1", Limits(), stats)
    hints = type("Hints", (), {"keep": staticmethod(no_hints)})()
    return ReplicaService(
        index, hints, stats, degraded=lambda: None, storage_failed=lambda _exc: None
    )


def record(value: bytes) -> bytes:
    return versions.encode_object(versions.update(None, VersionVector(), "n2-1", value))


async def test_node_peers_send_every_replica_message_kind_down_the_fast_path() -> None:
    storage = CountingStorage()
    fast = data_fast_path(NoCoordinator(), replica_service(storage), node_peer=True)  # type: ignore[arg-type]
    replies = await serve_and_call(
        fast,
        [
            ReplicaWriteMany([(b"a", record(b"1")), (b"b", record(b"2"))]),
            ReplicaWrite(b"c", record(b"3")),
            ReplicaWriteMany([(b"d", record(b"4"))]),
        ],
    )
    assert replies == [ReplicaAck(), ReplicaAck(), ReplicaAck()]
    # Writes that arrived in one read share one commit, whatever message carried them.
    assert storage.commits == 1
    replies = await serve_and_call(fast, [ReplicaReadMany([b"a", b"zz"]), ReplicaRead(b"c")])
    assert replies == [
        ReplicaReadManyReply([storage.get(b"a"), None]),
        ReplicaReadReply(storage.get(b"c")),
    ]


async def test_clients_get_no_replica_fast_path() -> None:
    storage = CountingStorage()
    fast = data_fast_path(NoCoordinator(), replica_service(storage), node_peer=False)  # type: ignore[arg-type]
    replies = await serve_and_call(
        fast, [ReplicaWriteMany([(b"a", record(b"1"))]), ReplicaReadMany([b"a"])]
    )
    assert replies == [
        OkReply("slow path: ReplicaWriteMany"),
        OkReply("slow path: ReplicaReadMany"),
    ]
    assert storage.commits == 0


async def test_a_replica_still_receiving_ranges_refuses_reads_and_takes_writes() -> None:
    """Its copy may lack writes a quorum acknowledged: the coordinator must count others."""
    storage = MemoryStorage()
    stats = StatisticsStore()
    index = IndexManager(storage, "n1-1", Limits(), stats)
    hints = type("Hints", (), {"keep": staticmethod(no_hints)})()
    receiving: list[str] = []
    replica = ReplicaService(
        index,
        hints,
        stats,
        degraded=lambda: None,
        storage_failed=lambda _exc: None,
        unreadable=lambda: receiving[0] if receiving else None,
    )
    assert await replica.write(ReplicaWrite(b"k", record(b"v"))) == ReplicaAck()
    assert replica.read(ReplicaRead(b"k")) == ReplicaReadReply(record(b"v"))
    receiving.append("still receiving the ranges of a removed node")
    refused = replica.read(ReplicaReadMany([b"k"]))
    assert isinstance(refused, ErrorReply) and refused.code == "not_ready"
    assert "still receiving" in refused.message
    assert await replica.write(ReplicaWrite(b"j", record(b"w"))) == ReplicaAck()
    assert stats.get("replica.reads_refused") == 1

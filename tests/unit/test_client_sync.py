"""The blocking client: same behaviour as the async one, from plain threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from test_client_fakes import FakeCluster, FakeNode, closed_port, serve_in_thread

import p2pindex
from p2pindex.errors import NoNodeReachable, Unavailable
from p2pindex.wire.messages import ErrorReply, Message, PutRequest


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with serve_in_thread(FakeCluster(3)) as fake:
        yield fake


def test_put_get_delete_round_trip(cluster: FakeCluster) -> None:
    with p2pindex.Client(cluster.addresses) as db:
        put = db.put("k", "stored", consistency="all")
        got = db.get("k")
        deleted = db.delete("k", context=got.context)
    assert put.context.data.startswith(b"ctx-")
    assert got.value == b"stored"
    assert deleted.context.data.startswith(b"tomb-")
    puts = [m for node in cluster.nodes for m in node.requests(PutRequest)]
    assert [(m.key, m.value, m.consistency) for m in puts] == [(b"k", b"stored", "all")]


def test_errors_cross_the_thread_unchanged(cluster: FakeCluster) -> None:
    async def unavailable(node: FakeNode, message: Message) -> Message:
        return ErrorReply("unavailable", "3 replicas required but only 1 reachable", 3, 1)

    for node in cluster.nodes:
        node.behaviour = unavailable
    with p2pindex.Client(cluster.addresses) as db:
        with pytest.raises(Unavailable) as info:
            db.put("k", "v")
        with pytest.raises(ValueError, match="empty"):
            db.get("")
    assert (info.value.required, info.value.alive) == (3, 1)


def test_calls_from_many_threads_share_one_client(cluster: FakeCluster) -> None:
    with p2pindex.Client(cluster.addresses) as db:
        threads = [threading.Thread(target=lambda i=i: db.put(f"k{i}", b"v")) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sum(len(node.requests(PutRequest)) for node in cluster.nodes) == 8
    assert all(node.connections <= 1 for node in cluster.nodes)


def test_closed_client_refuses_calls_and_closes_twice(cluster: FakeCluster) -> None:
    db = p2pindex.Client(cluster.addresses)
    db.status()
    db.close()
    db.close()
    with pytest.raises(RuntimeError, match="closed"):
        db.get("k")


def test_constructor_raises_when_no_node_answers() -> None:
    threads_before = threading.active_count()
    with pytest.raises(NoNodeReachable):
        p2pindex.Client([f"127.0.0.1:{closed_port()}"])
    assert threading.active_count() == threads_before


def test_bad_arguments_fail_in_the_callers_thread() -> None:
    with pytest.raises(ValueError, match="address"):
        p2pindex.Client(["not an address"])
    with pytest.raises(ValueError, match="timeout"):
        p2pindex.Client(["127.0.0.1:7000"], timeout=-1)

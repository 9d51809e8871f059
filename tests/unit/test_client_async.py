"""The async client against in-process fake nodes: routing, failover, errors, timeouts."""

from __future__ import annotations

import pytest
import trio
from test_client_fakes import VNODES, FakeCluster, FakeNode, closed_port

import p2pindex
from p2pindex.client import Context, SiblingConflict
from p2pindex.core.ring import Ring
from p2pindex.errors import (
    ConnectionLost,
    InvalidRequest,
    NoNodeReachable,
    ProtocolError,
    QuorumFailed,
    Timeout,
    Unavailable,
)
from p2pindex.wire.messages import (
    DeleteRequest,
    ErrorReply,
    GetReply,
    GetRequest,
    LeaveRequest,
    Message,
    PutRequest,
    RemoveRequest,
    StatusRequest,
)


def primary_of(cluster: FakeCluster, key: bytes) -> FakeNode:
    ring = Ring(sorted(node.node_id for node in cluster.nodes), VNODES)
    return cluster.by_id(ring.preference_list(key, cluster.n_replicas)[0])


def replicas_of(cluster: FakeCluster, key: bytes) -> list[FakeNode]:
    ring = Ring(sorted(node.node_id for node in cluster.nodes), VNODES)
    return [cluster.by_id(n) for n in ring.preference_list(key, cluster.n_replicas)]


def key_outside_first(cluster: FakeCluster, first: FakeNode) -> bytes:
    """A key whose replicas do not include ``first`` (so routing is visible)."""
    for i in range(1000):
        key = f"key-{i}".encode()
        if first not in replicas_of(cluster, key):
            return key
    raise AssertionError("no such key")


async def test_requests_go_to_the_keys_primary(nursery: trio.Nursery) -> None:
    cluster = await FakeCluster(5).start(nursery)
    first = cluster.nodes[0]
    key = key_outside_first(cluster, first)
    async with p2pindex.connect([str(first.address)]) as db:
        result = await db.put(key, b"value")
    primary = primary_of(cluster, key)
    assert result.context == Context(b"ctx-" + primary.node_id.encode())
    assert len(primary.requests(PutRequest)) == 1
    assert sum(len(node.requests(PutRequest)) for node in cluster.nodes) == 1


async def test_put_sends_what_the_caller_asked_for(nursery: trio.Nursery) -> None:
    cluster = await FakeCluster(3).start(nursery)
    async with p2pindex.connect(cluster.addresses, consistency="one", timeout=2.5) as db:
        await db.put("clé", "välue", context=Context(b"\x01\x02"), strict=True)
        await db.put(b"k2", b"v", consistency=p2pindex.ConsistencyLevel.ALL, timeout=0.5)
        await db.put(b"k3", b"v", consistency=2)
    puts = [m for node in cluster.nodes for m in node.requests(PutRequest)]
    by_key = {m.key: m for m in puts}
    first = by_key["clé".encode()]
    assert first.value == "välue".encode()
    assert first.context == b"\x01\x02"
    assert (first.consistency, first.timeout_ms, first.strict) == ("one", 2500, True)
    assert (by_key[b"k2"].consistency, by_key[b"k2"].timeout_ms) == ("all", 500)
    assert by_key[b"k3"].consistency == 2


async def test_get_and_delete_results(nursery: trio.Nursery) -> None:
    cluster = await FakeCluster(3).start(nursery)
    for node in cluster.nodes:
        node.store[b"present"] = b"hello"
    async with p2pindex.connect(cluster.addresses) as db:
        found = await db.get("present")
        missing = await db.get("absent")
        deleted = await db.delete("present", context=found.context)
    assert found.found and found.value == b"hello" and found.values == [b"hello"]
    assert not missing.found and missing.value is None and missing.values == []
    assert deleted.context.data.startswith(b"tomb-")
    deletes = [m for node in cluster.nodes for m in node.requests(DeleteRequest)]
    assert deletes[0].context == found.context.data


async def test_siblings_are_all_returned_and_value_refuses_to_pick(nursery: trio.Nursery) -> None:
    cluster = await FakeCluster(3).start(nursery)

    async def siblings(node: FakeNode, message: Message) -> Message:
        return GetReply([b"a", b"b"], b"both")

    for node in cluster.nodes:
        node.behaviour = siblings
    async with p2pindex.connect(cluster.addresses) as db:
        result = await db.get("k")
    assert result.values == [b"a", b"b"] and result.found
    with pytest.raises(SiblingConflict, match="2 concurrent values"):
        _ = result.value


async def test_failover_when_the_primary_is_down(nursery: trio.Nursery) -> None:
    cluster = await FakeCluster(3).start(nursery)
    key = b"some-key"
    primary = primary_of(cluster, key)
    async with p2pindex.connect(cluster.addresses) as db:
        primary.crash()
        await trio.sleep(0.05)
        result = await db.put(key, b"v")
        await db.get(key)
    second = replicas_of(cluster, key)[1]
    assert result.context == Context(b"ctx-" + second.node_id.encode())
    assert primary.requests(GetRequest) == []


async def test_given_addresses_are_tried_when_members_are_gone(nursery: trio.Nursery) -> None:
    cluster = await FakeCluster(1).start(nursery)
    unreachable = f"127.0.0.1:{closed_port()}"
    async with p2pindex.connect([unreachable, str(cluster.nodes[0].address)]) as db:
        await db.put("k", "v")
    assert len(cluster.nodes[0].requests(PutRequest)) == 1


async def test_no_node_reachable_is_definite() -> None:
    addresses = [f"127.0.0.1:{closed_port()}", f"127.0.0.1:{closed_port()}"]
    with pytest.raises(NoNodeReachable, match="could not reach any node") as info:
        async with p2pindex.connect(addresses):
            pass
    assert isinstance(info.value, p2pindex.DefiniteError)
    assert addresses[0] in str(info.value) and addresses[1] in str(info.value)


async def test_every_node_down_after_connect_raises_no_node_reachable(
    nursery: trio.Nursery,
) -> None:
    cluster = await FakeCluster(3).start(nursery)
    async with p2pindex.connect(cluster.addresses) as db:
        for node in cluster.nodes:
            node.crash()
        await trio.sleep(0.05)
        with pytest.raises(NoNodeReachable):
            await db.put("k", "v")


async def _crash_on_request(node: FakeNode, message: Message) -> Message:
    node.crash()
    await trio.sleep_forever()
    raise AssertionError("unreachable")


async def test_write_is_not_retried_after_the_connection_broke(nursery: trio.Nursery) -> None:
    cluster = await FakeCluster(3).start(nursery)
    key = b"write-key"
    primary, second, third = replicas_of(cluster, key)
    primary.behaviour = _crash_on_request
    second.behaviour = _crash_on_request
    async with p2pindex.connect(cluster.addresses) as db:
        with pytest.raises(ConnectionLost, match="may or may not") as info:
            await db.put(key, b"v")
        assert isinstance(info.value, p2pindex.IndeterminateError)
        with pytest.raises(ConnectionLost):
            await db.delete(key)
    assert primary.requests(PutRequest) == [PutRequest(key, b"v", None, "quorum", 5000)]
    assert len(second.requests(DeleteRequest)) == 1
    assert second.requests(PutRequest) == []
    assert third.received == [] or all(
        not isinstance(m, PutRequest | DeleteRequest) for m in third.received
    )


async def test_read_is_retried_on_the_next_node(nursery: trio.Nursery) -> None:
    cluster = await FakeCluster(3).start(nursery)
    key = b"read-key"
    primary, second = replicas_of(cluster, key)[:2]
    primary.behaviour = _crash_on_request
    second.store[key] = b"from-second"
    async with p2pindex.connect(cluster.addresses) as db:
        result = await db.get(key)
    assert result.value == b"from-second"
    assert len(primary.requests(GetRequest)) == 1


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (ErrorReply("unavailable", "3 replicas required but only 2 reachable", 3, 2), Unavailable),
        (ErrorReply("timeout", "timed out", 2, 1), Timeout),
        (ErrorReply("quorum_failed", "1 of 2 replicas acknowledged"), QuorumFailed),
        (ErrorReply("invalid_request", "key too long"), InvalidRequest),
        (ErrorReply("no_such_code", "what"), ProtocolError),
    ],
)
async def test_error_replies_become_the_matching_exception(
    nursery: trio.Nursery, reply: ErrorReply, expected: type[Exception]
) -> None:
    cluster = await FakeCluster(3).start(nursery)

    async def fail(node: FakeNode, message: Message) -> Message:
        return reply

    for node in cluster.nodes:
        node.behaviour = fail
    async with p2pindex.connect(cluster.addresses) as db:
        with pytest.raises(expected) as info:
            await db.put("k", "v")
    if expected is Unavailable:
        assert (info.value.required, info.value.alive) == (3, 2)
    # The node answered, so nobody else was asked; except after `unavailable` (one
    # coordinator's view, nothing written), which is asked of exactly one more node.
    asked = 2 if expected is Unavailable else 1
    assert sum(len(node.requests(PutRequest)) for node in cluster.nodes) == asked


async def test_client_deadline_raises_timeout_when_no_reply_comes(nursery: trio.Nursery) -> None:
    cluster = await FakeCluster(1, n_replicas=1).start(nursery)

    async def silent(node: FakeNode, message: Message) -> Message:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    cluster.nodes[0].behaviour = silent
    async with p2pindex.connect(cluster.addresses) as db:
        started = trio.current_time()
        with pytest.raises(Timeout, match="no reply"):
            await db.get("k", timeout=0.1)
        waited = trio.current_time() - started
    assert waited >= 0.1


async def test_one_connection_per_node_carries_concurrent_requests(nursery: trio.Nursery) -> None:
    cluster = await FakeCluster(3).start(nursery)
    async with p2pindex.connect(cluster.addresses) as db, trio.open_nursery() as requests:
        for i in range(60):
            requests.start_soon(db.put, f"k{i}", b"v")
    assert sum(len(node.requests(PutRequest)) for node in cluster.nodes) == 60
    assert all(node.connections <= 1 for node in cluster.nodes)


async def test_admin_requests_go_to_the_named_node(nursery: trio.Nursery) -> None:
    cluster = await FakeCluster(3).start(nursery)
    target = cluster.nodes[2]
    async with p2pindex.connect([str(cluster.nodes[0].address)]) as db:
        status = await db.status(str(target.address))
        await db.leave(str(target.address))
        await db.remove(" NODE1 ", str(target.address))
        explained = await db.explain("k")
    assert (status.node_id, status.address) == (target.node_id, str(target.address))
    assert status.keys == 0 and status.statistics == {"requests.get": 1.0}
    assert len(target.requests(StatusRequest)) == 1
    assert len(target.requests(LeaveRequest)) == 1
    assert target.requests(RemoveRequest) == [RemoveRequest("node1")]
    assert explained.key == b"k" and explained.nodes == ()


async def test_bad_arguments_are_refused_before_sending(nursery: trio.Nursery) -> None:
    cluster = await FakeCluster(3).start(nursery)
    async with p2pindex.connect(cluster.addresses) as db:
        with pytest.raises(ValueError, match="key must not be empty"):
            await db.put("", "v")
        with pytest.raises(TypeError, match="key must be bytes or str"):
            await db.get(42)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="consistency"):
            await db.get("k", consistency="most")
        with pytest.raises(ValueError, match=r"outside 1\.\.3"):
            await db.put("k", "v", consistency=4)
        with pytest.raises(ValueError, match="timeout"):
            await db.put("k", "v", timeout=0)
        with pytest.raises(ValueError, match="limit"):
            await db.put("k" * 2000, "v")
        with pytest.raises(ValueError, match="context"):
            await db.put("k", "v", context="not base64!")
    assert all(node.requests(PutRequest) == [] for node in cluster.nodes)
    assert all(node.requests(GetRequest) == [] for node in cluster.nodes)


@pytest.mark.parametrize(
    "address", ["nonsense", "host:", ":7000", "127.0.0.1:99999", "127.0.0.1:0"]
)
def test_bad_addresses_are_refused(address: str) -> None:
    with pytest.raises(ValueError, match="address"):
        p2pindex.connect([address])


def test_bad_default_consistency_is_refused() -> None:
    with pytest.raises(ValueError, match="consistency"):
        p2pindex.connect(["127.0.0.1:7000"], consistency="sometimes")
    with pytest.raises(ValueError, match="no node addresses"):
        p2pindex.connect([])


async def test_a_default_consistency_above_n_fails_on_connect(nursery: trio.Nursery) -> None:
    cluster = await FakeCluster(3).start(nursery)
    with pytest.raises(ValueError, match=r"outside 1\.\.3"):
        async with p2pindex.connect(cluster.addresses, consistency=5):
            pass


async def test_caller_exceptions_leave_the_client_unwrapped(nursery: trio.Nursery) -> None:
    cluster = await FakeCluster(1, n_replicas=1).start(nursery)
    with pytest.raises(KeyError):
        async with p2pindex.connect(cluster.addresses):
            raise KeyError("mine")


async def test_routing_follows_member_refresh(nursery: trio.Nursery) -> None:
    cluster = await FakeCluster(3).start(nursery)
    async with p2pindex.connect([str(cluster.nodes[0].address)]) as db:
        assert set(db.preference_list("k")) == {"node0", "node1", "node2"}
        cluster.liveness["node1"] = "left"
        await db.members()
        assert "node1" not in db.preference_list("k")

"""Failing over without losing the meaning of a failure, and limits learned from the cluster.

A request may move to the next address only while nothing was sent (connection refused,
handshake failed or timed out) or when the node answered that it did nothing ("not ready");
once a write was sent, a broken connection stays indeterminate.
"""

from __future__ import annotations

import pytest
import trio
from test_client_fakes import FakeCluster, FakeNode

import p2pindex
from p2pindex.config import MIB, Limits
from p2pindex.errors import ConnectionLost, InvalidRequest, NoNodeReachable, ProtocolError
from p2pindex.net.tcp_stream import connect_tcp
from p2pindex.security.errors import ConnectionRefused, HandshakeFailed
from p2pindex.types import Address
from p2pindex.wire.messages import (
    LIMITS_VERSION,
    ErrorReply,
    GetReply,
    LimitsReply,
    Message,
    PutReply,
    PutRequest,
)


class FailingHandshakes:
    """A connector like the secure one, whose handshake with ``bad`` addresses fails the way
    a silent seed's does (the node accepted TCP but never completed the handshake)."""

    def __init__(self, bad: set[Address]) -> None:
        self.bad = bad
        self.attempts: list[Address] = []

    async def connect(self, address: Address) -> trio.abc.Stream:
        self.attempts.append(address)
        stream = await connect_tcp(address, 1.0)
        if address in self.bad:
            await stream.aclose()
            raise HandshakeFailed("timeout", "the handshake did not complete within 2s")
        return stream


class RefusingNode(FailingHandshakes):
    """A node that refuses the client at its handshake for a limit of its own."""

    async def connect(self, address: Address) -> trio.abc.Stream:
        self.attempts.append(address)
        if address in self.bad:
            raise ConnectionRefused(
                "client_connections",
                f"the node at {address} refused the connection: this client key has 256 "
                f"connections open, its limit (admission.max_client_connections)",
            )
        return await connect_tcp(address, 1.0)


@pytest.mark.parametrize("connector_class", [FailingHandshakes, RefusingNode])
async def test_a_node_whose_handshake_fails_or_refuses_sends_the_client_to_the_next(
    nursery: trio.Nursery, connector_class: type[FailingHandshakes]
) -> None:
    cluster = await FakeCluster(3).start(nursery)
    silent = cluster.nodes[0]
    connector = connector_class({silent.address})
    async with p2pindex.connect(cluster.addresses, transport=connector) as db:  # type: ignore[arg-type]
        for i in range(20):
            await db.put(f"k{i}", "v")
    assert silent.address in connector.attempts
    assert silent.requests(PutRequest) == []
    assert sum(len(node.requests(PutRequest)) for node in cluster.nodes) == 20


async def test_every_node_refusing_the_client_names_each_reason(nursery: trio.Nursery) -> None:
    cluster = await FakeCluster(3).start(nursery)
    everywhere = RefusingNode({node.address for node in cluster.nodes})
    with pytest.raises(NoNodeReachable) as refused:
        async with p2pindex.connect(cluster.addresses, transport=everywhere):  # type: ignore[arg-type]
            pass
    assert str(refused.value).count("256 connections open, its limit") == 3


async def test_a_silent_seed_is_skipped_within_the_handshake_timeout(
    nursery: trio.Nursery,
) -> None:
    """A real listener that accepts and never answers, in front of a working node."""
    cluster = await FakeCluster(1, n_replicas=1).start(nursery)
    accepted: list[trio.SocketStream] = []

    async def hold(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        await trio.sleep_forever()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    silent = Address("127.0.0.1", listeners[0].socket.getsockname()[1])
    await nursery.start(trio.serve_listeners, hold, listeners)

    class SlowHandshake(FailingHandshakes):
        async def connect(self, address: Address) -> trio.abc.Stream:
            stream = await connect_tcp(address, 1.0)
            if address == silent:
                with trio.move_on_after(0.3):
                    await stream.receive_some(1)  # the handshake's answer never comes
                await stream.aclose()
                raise HandshakeFailed("timeout", "the handshake did not complete within 0.3s")
            return stream

    started = trio.current_time()
    async with p2pindex.connect(
        [str(silent), *cluster.addresses], transport=SlowHandshake(set()), timeout=2.0
    ) as db:  # type: ignore[arg-type]
        await db.put("k", "v")
    assert trio.current_time() - started < 2.0
    assert accepted


async def test_not_ready_moves_a_write_to_the_next_node(nursery: trio.Nursery) -> None:
    cluster = await FakeCluster(3).start(nursery)

    async def not_ready(node: FakeNode, message: Message) -> Message:
        return ErrorReply("not_ready", "the node is still starting")

    for node in cluster.nodes[:2]:
        node.behaviour = not_ready
    async with p2pindex.connect(cluster.addresses) as db:
        result = await db.put("k", "v")
    assert result.context
    assert len(cluster.nodes[2].requests(PutRequest)) == 1


async def test_not_ready_everywhere_is_definite_and_names_each_node(
    nursery: trio.Nursery,
) -> None:
    cluster = await FakeCluster(2).start(nursery)

    async def not_ready(node: FakeNode, message: Message) -> Message:
        return ErrorReply("not_ready", "the node is still starting")

    async with p2pindex.connect(cluster.addresses) as db:
        for node in cluster.nodes:
            node.behaviour = not_ready
        with pytest.raises(NoNodeReachable) as info:
            await db.put("k", "v")
    text = str(info.value)
    assert all(str(node.address) in text for node in cluster.nodes)
    assert "not ready: the node is still starting" in text
    # Every node answered: it is not that none could be reached.
    assert text.startswith("no node is ready to serve the request (nothing done): "), text


async def test_a_write_sent_before_the_connection_reset_stays_indeterminate(
    nursery: trio.Nursery,
) -> None:
    """Failover never turns 'may have been written' into a definite error or a retry."""
    cluster = await FakeCluster(3, n_replicas=3).start(nursery)

    async def reset(node: FakeNode, message: Message) -> Message:
        if isinstance(message, PutRequest):
            node.crash()
            await trio.sleep_forever()
        return PutReply(b"x")

    async with p2pindex.connect(cluster.addresses) as db:
        for node in cluster.nodes:
            node.behaviour = reset
        with pytest.raises(ConnectionLost, match="may or may not have been applied"):
            await db.put("k", "v")
    assert sum(len(node.requests(PutRequest)) for node in cluster.nodes) == 1


def learned(max_value: int, *, version: int = LIMITS_VERSION) -> LimitsReply:
    return LimitsReply(version, 1024, max_value, max_value + 64 * 1024 + 16 * MIB, 100)


async def test_the_client_learns_a_larger_value_limit(nursery: trio.Nursery) -> None:
    cluster = FakeCluster(1, n_replicas=1)
    cluster.node_limits = Limits(max_value=4 * MIB, max_frame=4 * MIB + 16 * MIB)
    cluster.limits_reply = learned(4 * MIB)
    await cluster.start(nursery)

    async def echo(node: FakeNode, message: Message) -> Message:
        if isinstance(message, PutRequest):
            node.store[message.key] = message.value
            return PutReply(b"ctx")
        return GetReply([node.store[b"big"]], b"ctx")

    cluster.nodes[0].behaviour = echo
    big = b"x" * (2 * MIB)
    async with p2pindex.connect(cluster.addresses) as db:
        assert db.limits.max_value == 4 * MIB
        await db.put("big", big)
        assert (await db.get("big")).values == [big]
        with pytest.raises(InvalidRequest, match="the cluster's limit is 4194304"):
            await db.put("big", b"x" * (4 * MIB + 1))


async def test_a_node_that_does_not_say_its_limits_leaves_the_defaults(
    nursery: trio.Nursery,
) -> None:
    cluster = await FakeCluster(1, n_replicas=1).start(nursery)
    async with p2pindex.connect(cluster.addresses) as db:
        assert db.limits == Limits()
    cluster.limits_reply = learned(4 * MIB, version=LIMITS_VERSION + 1)
    async with p2pindex.connect(cluster.addresses) as db:
        assert db.limits == Limits()


async def test_limits_given_by_the_caller_win(nursery: trio.Nursery) -> None:
    cluster = FakeCluster(1, n_replicas=1)
    cluster.limits_reply = learned(4 * MIB)
    await cluster.start(nursery)
    mine = Limits(max_key=10)
    async with p2pindex.connect(cluster.addresses, limits=mine) as db:
        assert db.limits is mine


@pytest.mark.parametrize(
    "reply",
    [
        LimitsReply(LIMITS_VERSION, 0, MIB, 16 * MIB, 100),
        LimitsReply(LIMITS_VERSION, 1024, 8 * MIB, 1 * MIB, 100),
        LimitsReply(LIMITS_VERSION, 1024, MIB, 2**40, 100),
    ],
)
async def test_limits_that_do_not_fit_are_a_protocol_error(
    nursery: trio.Nursery, reply: LimitsReply
) -> None:
    cluster = FakeCluster(1, n_replicas=1)
    cluster.limits_reply = reply
    await cluster.start(nursery)
    with pytest.raises(ProtocolError, match="the node announced"):
        async with p2pindex.connect(cluster.addresses):
            pass


def test_timeouts_are_checked_up_front() -> None:
    with pytest.raises(InvalidRequest, match="timeout must be a positive"):
        p2pindex.connect(["127.0.0.1:7400"], connect_timeout=0)
    with pytest.raises(InvalidRequest, match="timeout must be a positive"):
        p2pindex.connect(["127.0.0.1:7400"], handshake_timeout=-1.0)

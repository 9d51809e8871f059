"""An ``overloaded`` refusal is definite: the client asks the next node, and raises
Overloaded only when every node refused."""

from __future__ import annotations

import pytest
import trio
from test_client_fakes import FakeCluster, FakeNode

import p2pindex
from p2pindex.errors import DefiniteError, Overloaded
from p2pindex.wire.messages import ErrorReply, Message, PutRequest


async def overloaded(node: FakeNode, message: Message) -> Message:
    return ErrorReply("overloaded", "the node is holding as much data as it may")


async def test_a_write_refused_as_overloaded_goes_to_the_next_node(nursery: trio.Nursery) -> None:
    cluster = await FakeCluster(3).start(nursery)
    cluster.nodes[0].behaviour = overloaded
    cluster.nodes[1].behaviour = overloaded
    async with p2pindex.connect(cluster.addresses) as db:
        await db.put(b"k", b"v")
    assert cluster.nodes[2].store == {b"k": b"v"}
    assert all(len(node.requests(PutRequest)) == 1 for node in cluster.nodes)


async def test_when_every_node_is_overloaded_the_caller_gets_a_definite_overloaded(
    nursery: trio.Nursery,
) -> None:
    cluster = await FakeCluster(3).start(nursery)
    for node in cluster.nodes:
        node.behaviour = overloaded
    async with p2pindex.connect(cluster.addresses) as db:
        with pytest.raises(Overloaded, match="as much data") as info:
            await db.put(b"k", b"v")
    assert isinstance(info.value, DefiniteError)

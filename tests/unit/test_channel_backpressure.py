"""A serving channel stops reading a peer that does not read its replies, and a node-wide
budget answers ``overloaded`` instead of holding more."""

from __future__ import annotations

import trio
import trio.testing

from p2pindex.config import MIB, Limits
from p2pindex.net.channel import NodeLoad, RpcChannel
from p2pindex.wire.codec import FrameDecoder, encode_frame
from p2pindex.wire.messages import ErrorReply, GetReply, GetRequest, Message

REPLY = 100_000
LIMITS = Limits(reply_budget=1 * MIB)


class Served:
    def __init__(self) -> None:
        self.count = 0

    async def __call__(self, message: Message) -> Message:
        self.count += 1
        return GetReply([b"v" * REPLY], b"")


def requests(count: int) -> bytes:
    return b"".join(encode_frame(GetRequest(b"k", "one", 0), i + 1) for i in range(count))


async def test_a_client_that_never_reads_stops_being_served_after_the_reply_budget() -> None:
    server_stream, client_stream = trio.testing.lockstep_stream_pair()
    served = Served()
    events: list[str] = []
    server = RpcChannel(server_stream, LIMITS, handler=served, on_event=events.append)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.run)
        # 1,000 requests (100 MB of replies) in one write; the replies are never read.
        nursery.start_soon(client_stream.send_all, requests(1000))
        await trio.sleep(0.5)
        bound = LIMITS.reply_budget // REPLY + 2
        assert 1 <= served.count <= bound
        assert "channel.paused" in events
        # Reading the replies lets it go on: the slow reader slowed only itself.
        decoder = FrameDecoder(LIMITS)
        answered = 0
        with trio.fail_after(10):
            while answered < 1000:
                answered += len(decoder.feed(await client_stream.receive_some(1 << 20)))
        assert served.count == 1000
        nursery.cancel_scope.cancel()


async def test_over_the_node_budget_a_client_request_is_refused_as_overloaded() -> None:
    server_stream, client_stream = trio.testing.memory_stream_pair()
    served = Served()
    load = NodeLoad(limit=10 * MIB)
    load.held = 50 * MIB  # other connections hold more than the node may
    server = RpcChannel(
        server_stream, LIMITS, handler=served, node_load=load, refuse_when_overloaded=True
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.run)
        await client_stream.send_all(requests(3))
        decoder = FrameDecoder(LIMITS)
        frames = []
        with trio.fail_after(5):
            while len(frames) < 3:
                frames += decoder.feed(await client_stream.receive_some())
        assert served.count == 0
        assert all(isinstance(f.message, ErrorReply) for f in frames)
        assert {f.message.code for f in frames} == {"overloaded"}  # type: ignore[union-attr]
        assert load.refused == 3
        # Once the load is gone, requests are served again and the load drains to zero.
        load.held = 0
        await client_stream.send_all(requests(2))
        with trio.fail_after(5):
            while len(frames) < 5:
                frames += decoder.feed(await client_stream.receive_some())
        assert served.count == 2
        await trio.testing.wait_all_tasks_blocked()
        assert load.held == 0
        nursery.cancel_scope.cancel()


async def test_past_the_budget_only_connections_holding_data_are_refused_until_the_ceiling() -> (
    None
):
    server_stream, client_stream = trio.testing.memory_stream_pair()
    served = Served()
    load = NodeLoad(limit=10 * MIB)
    load.held = load.limit + 1  # over the budget, under its ceiling
    server = RpcChannel(
        server_stream, LIMITS, handler=served, node_load=load, refuse_when_overloaded=True
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.run)
        decoder = FrameDecoder(LIMITS)
        # Three pipelined: the first comes from a connection holding nothing and is served,
        # the other two from one that holds the first and its expected reply.
        await client_stream.send_all(requests(3))
        frames = []
        with trio.fail_after(5):
            while len(frames) < 3:
                frames += decoder.feed(await client_stream.receive_some())
        codes = {f.request_id: getattr(f.message, "code", "served") for f in frames}
        assert codes == {1: "served", 2: "overloaded", 3: "overloaded"}
        assert served.count == 1 and load.refused == 2
        # A client that waited for its answers holds nothing and is served again.
        await trio.testing.wait_all_tasks_blocked()
        await client_stream.send_all(requests(1))
        with trio.fail_after(5):
            while len(frames) < 4:
                frames += decoder.feed(await client_stream.receive_some())
        assert isinstance(frames[3].message, GetReply) and served.count == 2
        # Past the ceiling even it is refused.
        load.held = load.ceiling + 1
        await client_stream.send_all(requests(1))
        with trio.fail_after(5):
            while len(frames) < 5:
                frames += decoder.feed(await client_stream.receive_some())
        assert getattr(frames[4].message, "code", None) == "overloaded" and served.count == 2
        nursery.cancel_scope.cancel()

"""The channel's fast path: synchronous answers and batches, each request answered once."""

from __future__ import annotations

import outcome
import trio
import trio.testing

from p2pindex.config import Limits
from p2pindex.errors import InvalidRequest
from p2pindex.net.channel import FastPath, Respond, RpcChannel
from p2pindex.wire.messages import (
    ErrorReply,
    Message,
    OkReply,
    ReplicaAck,
    ReplicaRead,
    ReplicaReadReply,
    ReplicaWrite,
    StatusRequest,
)


async def serve_and_call(fast_path: FastPath, requests: list[Message]) -> list[Message]:
    """Send every request in one burst (so they arrive in one read) and collect the replies."""
    server_stream, client_stream = trio.testing.memory_stream_pair()

    async def slow_handler(message: Message) -> Message:
        return OkReply(f"slow path: {type(message).__name__}")

    server = RpcChannel(server_stream, Limits(), handler=slow_handler, fast_path=fast_path)
    client = RpcChannel(client_stream, Limits())
    replies: dict[int, Message] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.run)
        await nursery.start(client.run)
        for position, request in enumerate(requests):

            def deliver(result: outcome.Outcome, position: int = position) -> None:
                replies[position] = result.unwrap()

            client.request_nowait(request, deliver, 5.0)
        with trio.fail_after(5):
            while len(replies) < len(requests):
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    return [replies[position] for position in range(len(requests))]


def read(message: Message) -> Message:
    assert isinstance(message, ReplicaRead)
    if message.key == b"bad":
        raise InvalidRequest("bad key")
    return ReplicaReadReply(message.key)


async def test_answers_batches_and_the_slow_path_each_reply_to_their_request() -> None:
    batches: list[list[bytes]] = []

    async def write_many(messages: list[Message], respond: Respond) -> None:
        batches.append([m.key for m in messages if isinstance(m, ReplicaWrite)])
        for position in reversed(range(len(messages))):  # any order is fine
            await trio.lowlevel.checkpoint()
            respond(position, ReplicaAck())

    fast = FastPath({ReplicaRead: read}, {ReplicaWrite: write_many})
    requests: list[Message] = [
        ReplicaWrite(b"a", b"r"),
        ReplicaRead(b"x"),
        ReplicaWrite(b"b", b"r"),
        StatusRequest(),
        ReplicaRead(b"bad"),
        ReplicaWrite(b"c", b"r"),
    ]
    replies = await serve_and_call(fast, requests)
    assert replies[0] == replies[2] == replies[5] == ReplicaAck()
    assert replies[1] == ReplicaReadReply(b"x")
    assert replies[3] == OkReply("slow path: StatusRequest")
    assert isinstance(replies[4], ErrorReply) and replies[4].code == InvalidRequest.code
    assert batches == [[b"a", b"b", b"c"]]


async def test_a_failing_or_forgetful_batch_handler_still_answers_every_request() -> None:
    async def forgetful(messages: list[Message], respond: Respond) -> None:
        respond(0, ReplicaAck())

    replies = await serve_and_call(
        FastPath({}, {ReplicaWrite: forgetful}),
        [ReplicaWrite(b"a", b"r"), ReplicaWrite(b"b", b"r")],
    )
    assert replies[0] == ReplicaAck()
    assert isinstance(replies[1], ErrorReply) and replies[1].code == "internal_error"

    async def failing(messages: list[Message], respond: Respond) -> None:
        respond(1, ReplicaAck())
        raise InvalidRequest("refused")

    replies = await serve_and_call(
        FastPath({}, {ReplicaWrite: failing}), [ReplicaWrite(b"a", b"r"), ReplicaWrite(b"b", b"r")]
    )
    assert isinstance(replies[0], ErrorReply) and replies[0].code == InvalidRequest.code
    assert replies[1] == ReplicaAck()

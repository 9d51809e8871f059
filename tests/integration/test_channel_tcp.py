"""The RPC channel on real loopback TCP: a frame on a quiet connection goes out at once,
busy connections still share sends, and bytes the kernel has not taken stay counted."""

from __future__ import annotations

import select
import socket
from collections.abc import AsyncIterator

import outcome
import pytest
import trio
import trio.testing

from p2pindex.config import Limits
from p2pindex.net.channel import NodeLoad, RpcChannel
from p2pindex.net.tcp_stream import TcpStream
from p2pindex.wire.codec import encode_frame
from p2pindex.wire.messages import Message, OkReply, StatusRequest
from tests.support.tcp import tcp_pair

GUARD = 10.0
"""Seconds after which a test is considered hung (a safety net, not a speed assertion)."""
BIG = "x" * 60_000
"""A reply under the lone-send limit but larger than the small buffers set below."""


@pytest.fixture
async def pair() -> AsyncIterator[tuple[TcpStream, TcpStream]]:
    """(client, server) TcpStreams over loopback TCP."""
    async with tcp_pair() as streams:
        yield streams


async def ok(message: Message) -> Message:
    return OkReply("ok")


async def big(message: Message) -> Message:
    return OkReply(BIG)


def readable(sock: trio.socket.SocketType) -> bool:
    poll = select.poll()
    poll.register(sock.fileno(), select.POLLIN)
    return bool(poll.poll(0))


async def small_buffered_pair() -> tuple[TcpStream, TcpStream]:
    """(client, server) with 4 KiB socket buffers set before connecting, so the window the
    client advertises stays small and a 60 KB reply cannot leave at once."""
    listener = trio.socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    await listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client_socket = trio.socket.socket()
    client_socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await client_socket.connect(listener.getsockname())
    server_socket, _ = await listener.accept()
    listener.close()
    return TcpStream(trio.SocketStream(client_socket)), TcpStream(trio.SocketStream(server_socket))


async def test_a_request_on_a_quiet_connection_is_written_before_the_requester_yields(
    pair: tuple[TcpStream, TcpStream],
) -> None:
    client_stream, server_stream = pair
    client = RpcChannel(client_stream, Limits())
    server = RpcChannel(server_stream, Limits(), handler=ok)
    replies: list[outcome.Outcome] = []
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.run)
            await nursery.start(client.run)
            await trio.testing.wait_all_tasks_blocked()
            client.request_nowait(StatusRequest(), replies.append, GUARD)
            # No scheduler pass yet: the writer task has not run, the bytes are out anyway.
            assert readable(server_stream.socket)
            while not replies:
                await trio.sleep(0.001)
            assert replies[0].unwrap() == OkReply("ok")
            nursery.cancel_scope.cancel()


async def test_requests_made_together_still_share_sends(
    pair: tuple[TcpStream, TcpStream],
) -> None:
    client_stream, server_stream = pair
    lone_sends = 0
    send_lone = client_stream.send_lone

    def counting(data: bytes) -> int:
        nonlocal lone_sends
        lone_sends += 1
        return send_lone(data)

    client_stream.send_lone = counting  # type: ignore[method-assign]
    client = RpcChannel(client_stream, Limits())
    server = RpcChannel(server_stream, Limits(), handler=ok)
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.run)
            await nursery.start(client.run)
            await trio.testing.wait_all_tasks_blocked()
            async with trio.open_nursery() as burst:
                for _ in range(50):
                    burst.start_soon(client.request, StatusRequest())
            nursery.cancel_scope.cancel()
    assert lone_sends <= 1  # the others had company: the writer sent them together


@pytest.mark.parametrize("read", [True, False], ids=["read", "closed unread"])
async def test_reply_bytes_the_kernel_has_not_taken_stay_counted_until_sent_or_dropped(
    read: bool,
) -> None:
    """Small socket buffers and a client that does not read: the 60 KB reply cannot leave
    at once, and the node-wide budget counts what is still here until it is sent, or
    until the connection closes with it unsent."""
    client_stream, server_stream = await small_buffered_pair()
    load = NodeLoad(64 * 1024 * 1024)
    server = RpcChannel(server_stream, Limits(), handler=big, node_load=load)
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.run)
            await client_stream.send_all(encode_frame(StatusRequest(), 1))
            await trio.testing.wait_all_tasks_blocked()
            assert load.held > 0
            if read:
                received = b""
                while BIG.encode() not in received:
                    received += await client_stream.receive_some()
                await trio.testing.wait_all_tasks_blocked()
                assert load.held == 0
            await client_stream.aclose()
            while not server.closed:
                await trio.sleep(0.001)
            nursery.cancel_scope.cancel()
    assert load.held == 0

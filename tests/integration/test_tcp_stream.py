"""TcpStream on real loopback sockets: what trio's SocketStream guarantees must still hold
(order, end of stream, closing, cancellation, broken peers) without its extra passes."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator

import pytest
import trio

from p2pindex.net.tcp_stream import MAX_READ, TcpStream, connect_tcp
from p2pindex.types import Address

GUARD = 10.0
"""Seconds after which a test is considered hung (a safety net, not a speed assertion)."""


@pytest.fixture
async def pair() -> AsyncIterator[tuple[TcpStream, TcpStream]]:
    """Two connected TcpStreams over loopback TCP."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        accepted: list[trio.SocketStream] = []

        async def accept_one() -> None:
            accepted.append(await listeners[0].accept())

        nursery.start_soon(accept_one)
        client = await connect_tcp(Address("127.0.0.1", port), GUARD)
    await listeners[0].aclose()
    server = TcpStream(accepted[0])
    try:
        yield client, server
    finally:
        await trio.aclose_forcefully(client)
        await trio.aclose_forcefully(server)


async def receive_exactly(stream: TcpStream, size: int, max_bytes: int = 65_536) -> bytes:
    received = bytearray()
    while len(received) < size:
        chunk = await stream.receive_some(max_bytes)
        assert chunk, f"stream ended after {len(received)} of {size} bytes"
        received += chunk
    return bytes(received)


async def test_a_payload_larger_than_the_socket_buffers_arrives_whole_and_in_order(
    pair: tuple[TcpStream, TcpStream],
) -> None:
    client, server = pair
    payload = bytes(range(256)) * (32 * 1024)  # 8 MiB: the sender must wait for room
    received = b""
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, payload)
            received = await receive_exactly(server, len(payload), 4096)
    assert received == payload


async def test_small_reads_return_the_rest_of_what_arrived(
    pair: tuple[TcpStream, TcpStream],
) -> None:
    client, server = pair
    await client.send_all(b"0123456789" * 10)
    with trio.fail_after(GUARD):
        chunks = [await server.receive_some(10) for _ in range(10)]
    assert b"".join(chunks) == b"0123456789" * 10
    assert all(len(chunk) <= 10 for chunk in chunks)


async def test_both_directions_carry_data_at_once(pair: tuple[TcpStream, TcpStream]) -> None:
    client, server = pair
    up, down = b"u" * 300_000, b"d" * 300_000
    results: dict[str, bytes] = {}

    async def receive(name: str, stream: TcpStream, size: int) -> None:
        results[name] = await receive_exactly(stream, size)

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, up)
            nursery.start_soon(server.send_all, down)
            nursery.start_soon(receive, "server", server, len(up))
            nursery.start_soon(receive, "client", client, len(down))
    assert results == {"server": up, "client": down}


async def test_the_peer_closing_ends_the_stream(pair: tuple[TcpStream, TcpStream]) -> None:
    client, server = pair
    await client.send_all(b"last words")
    await client.aclose()
    with trio.fail_after(GUARD):
        assert await receive_exactly(server, 10) == b"last words"
        assert await server.receive_some() == b""


async def test_closing_wakes_a_waiting_receiver(pair: tuple[TcpStream, TcpStream]) -> None:
    _client, server = pair
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:

            async def close_soon() -> None:
                await trio.sleep(0.05)
                await server.aclose()

            nursery.start_soon(close_soon)
            with pytest.raises(trio.ClosedResourceError):
                await server.receive_some()


async def test_a_closed_stream_refuses_everything(pair: tuple[TcpStream, TcpStream]) -> None:
    client, _server = pair
    await client.aclose()
    for call in (client.send_all(b"x"), client.send_all(b""), client.receive_some()):
        with pytest.raises(trio.ClosedResourceError):
            await call


async def test_a_reset_peer_breaks_sending(pair: tuple[TcpStream, TcpStream]) -> None:
    client, server = pair
    # SO_LINGER with a zero timeout makes close() send a reset instead of a FIN.
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await server.aclose()
    with trio.fail_after(GUARD), pytest.raises(trio.BrokenResourceError):
        for _ in range(1000):  # the first send may still be taken before the reset lands
            await client.send_all(b"x" * 1000)
            await trio.sleep(0.001)


async def test_a_waiting_receive_can_be_cancelled_and_the_stream_still_works(
    pair: tuple[TcpStream, TcpStream],
) -> None:
    client, server = pair
    with trio.move_on_after(0.05) as scope:
        await server.receive_some()
    assert scope.cancelled_caught
    await client.send_all(b"after")
    with trio.fail_after(GUARD):
        assert await receive_exactly(server, 5) == b"after"


async def test_a_receive_checkpoints_even_when_data_is_waiting(
    pair: tuple[TcpStream, TcpStream],
) -> None:
    client, server = pair
    await client.send_all(b"x" * 100)
    with trio.fail_after(GUARD):
        await server.receive_some(10)  # leaves data behind, so the next read does not wait
    with trio.CancelScope() as scope:
        scope.cancel()
        await server.receive_some(10)
    assert scope.cancelled_caught


async def test_two_receivers_at_once_are_refused(pair: tuple[TcpStream, TcpStream]) -> None:
    _client, server = pair
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.receive_some)
            await trio.sleep(0.01)
            with pytest.raises(trio.BusyResourceError):
                await server.receive_some()
            nursery.cancel_scope.cancel()


async def test_receive_size_must_be_positive(pair: tuple[TcpStream, TcpStream]) -> None:
    _client, server = pair
    with pytest.raises(ValueError, match="at least 1"):
        await server.receive_some(0)


async def test_a_large_receive_reads_at_most_max_read_at_a_time(
    pair: tuple[TcpStream, TcpStream],
) -> None:
    """Callers may allow far more than MAX_READ; each read still asks for at most that much
    (a larger request made every read map and unmap its buffer), and nothing is lost."""
    client, server = pair
    payload = bytes(range(256)) * 1024  # 256 KiB
    received = bytearray()
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, payload)
            while len(received) < len(payload):
                chunk = await server.receive_some(16 * MAX_READ)
                assert 0 < len(chunk) <= MAX_READ
                received += chunk
    assert received == payload

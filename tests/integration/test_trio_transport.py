"""The production transport on real loopback sockets: TCP and UDP sharing one port."""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import AsyncIterator

import pytest
import trio

from p2pindex.net.base import StreamHandler
from p2pindex.net.tcp_stream import TcpStream
from p2pindex.net.trio_transport import MAX_DATAGRAM, TrioTransport
from p2pindex.types import Address

LOOPBACK = Address("127.0.0.1", 0)
GUARD = 10.0
"""Seconds after which a test is considered hung (a safety net, not a speed assertion)."""


async def echo(stream: trio.abc.Stream, peer: Address) -> None:
    async for chunk in stream:
        await stream.send_all(chunk)


async def start(
    nursery: trio.Nursery, transport: TrioTransport, handler: StreamHandler = echo
) -> Address:
    address: Address = await nursery.start(transport.serve, handler)
    return address


async def round_trip(address: Address, data: bytes) -> bytes:
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with stream:
        await stream.send_all(data)
        received = b""
        while len(received) < len(data):
            chunk = await stream.receive_some()
            assert chunk, "server closed the connection"
            received += chunk
        return received


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_serve_connect_and_echo(nursery: trio.Nursery) -> None:
    seen: list[Address] = []

    async def recording_echo(stream: trio.abc.Stream, peer: Address) -> None:
        seen.append(peer)
        await echo(stream, peer)

    server = TrioTransport(LOOPBACK)
    address = await start(nursery, server, recording_echo)
    client = TrioTransport(LOOPBACK)
    with trio.fail_after(GUARD):
        stream = await client.connect(address)
        async with stream:
            assert isinstance(stream, TcpStream)
            assert stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            await stream.send_all(b"hello")
            assert await stream.receive_some() == b"hello"
            local_port = stream.socket.getsockname()[1]
    assert seen == [Address("127.0.0.1", local_port)]


async def test_port_zero_learns_a_port_and_udp_uses_the_same_number(
    nursery: trio.Nursery,
) -> None:
    transport = TrioTransport(LOOPBACK)
    assert transport.local_address == LOOPBACK
    bound = await start(nursery, transport)
    assert bound.host == "127.0.0.1"
    assert bound.port != 0
    assert transport.local_address == bound
    with trio.fail_after(GUARD):
        assert await round_trip(bound, b"tcp") == b"tcp"
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            await udp.bind(("127.0.0.1", 0))
            await udp.sendto(b"udp", ("127.0.0.1", bound.port))
            data, source = await transport.receive_datagram()
            assert data == b"udp"
            assert source == Address("127.0.0.1", udp.getsockname()[1])


async def test_a_fixed_port_serves_tcp_and_udp(nursery: trio.Nursery) -> None:
    port = free_port()
    transport = TrioTransport(Address("127.0.0.1", port))
    assert await start(nursery, transport) == Address("127.0.0.1", port)
    with trio.fail_after(GUARD):
        assert await round_trip(Address("127.0.0.1", port), b"x") == b"x"


async def test_datagram_round_trip_comes_from_the_senders_port(nursery: trio.Nursery) -> None:
    a, b = TrioTransport(LOOPBACK), TrioTransport(LOOPBACK)
    address_a = await start(nursery, a)
    address_b = await start(nursery, b)
    with trio.fail_after(GUARD):
        await a.send_datagram(address_b, b"ping")
        assert await b.receive_datagram() == (b"ping", address_a)
        await b.send_datagram(address_a, b"ack")
        assert await a.receive_datagram() == (b"ack", address_b)


async def test_largest_datagram_arrives_whole(nursery: trio.Nursery) -> None:
    a, b = TrioTransport(LOOPBACK), TrioTransport(LOOPBACK)
    await start(nursery, a)
    address_b = await start(nursery, b)
    payload = bytes(range(256)) * (MAX_DATAGRAM // 256) + b"x" * (MAX_DATAGRAM % 256)
    with trio.fail_after(GUARD):
        await a.send_datagram(address_b, payload)
        data, _ = await b.receive_datagram()
    assert data == payload


async def test_oversized_datagram_is_a_caller_error(nursery: trio.Nursery) -> None:
    a = TrioTransport(LOOPBACK)
    address = await start(nursery, a)
    with pytest.raises(OSError, match="too large") as info:
        await a.send_datagram(address, b"x" * (MAX_DATAGRAM + 1))
    assert info.value.errno == errno.EMSGSIZE


async def test_unsendable_datagrams_are_counted_not_raised(nursery: trio.Nursery) -> None:
    a, b = TrioTransport(LOOPBACK), TrioTransport(LOOPBACK)
    address_a = await start(nursery, a)
    address_b = await start(nursery, b)
    with trio.fail_after(GUARD):
        await a.send_datagram(Address("127.0.0.1", free_port()), b"nobody home")
        await a.send_datagram(Address("::1", address_b.port), b"wrong family")
        assert a.datagram_send_errors >= 1
        await b.send_datagram(address_a, b"still working")
        assert await a.receive_datagram() == (b"still working", address_b)


async def test_connect_to_a_closed_port_raises_oserror() -> None:
    client = TrioTransport(LOOPBACK, connect_timeout=GUARD)
    with trio.fail_after(GUARD), pytest.raises(OSError):
        await client.connect(Address("127.0.0.1", free_port()))


async def test_connect_timeout_becomes_oserror() -> None:
    # A listener whose accept queue is full drops further SYNs, so connect hangs.
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):
                filler = socket.socket()
                filler.setblocking(False)
                fillers.append(filler)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
            await trio.sleep(0.05)
            client = TrioTransport(LOOPBACK, connect_timeout=0.3)
            with trio.fail_after(GUARD), pytest.raises(OSError, match="timed out") as info:
                await client.connect(Address("127.0.0.1", port))
            assert info.value.errno == errno.ETIMEDOUT
        finally:
            for filler in fillers:
                filler.close()


async def test_a_failing_handler_does_not_take_the_server_down(nursery: trio.Nursery) -> None:
    calls = 0

    async def flaky(stream: trio.abc.Stream, peer: Address) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("handler bug")
        if calls == 2:
            raise OSError(errno.ECONNRESET, "reset by peer")
        if calls == 3:
            raise trio.BrokenResourceError("peer vanished")
        await echo(stream, peer)

    address = await start(nursery, TrioTransport(LOOPBACK), flaky)
    with trio.fail_after(GUARD):
        for _ in range(3):
            stream = await trio.open_tcp_stream(address.host, address.port)
            async with stream:
                assert await stream.receive_some() == b""  # the server closed it
        assert await round_trip(address, b"alive") == b"alive"
    assert calls == 4


async def test_a_peer_resetting_mid_connection_does_not_take_the_server_down(
    nursery: trio.Nursery,
) -> None:
    async def chatty(stream: trio.abc.Stream, peer: Address) -> None:
        first = await stream.receive_some()
        if first == b"quit":
            while True:
                await stream.send_all(b"x" * 65536)
        await stream.send_all(first)
        await echo(stream, peer)

    address = await start(nursery, TrioTransport(LOOPBACK), chatty)
    with trio.fail_after(GUARD):
        rude = socket.create_connection((address.host, address.port))
        rude.sendall(b"quit")
        await trio.sleep(0.05)
        rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        rude.close()  # RST: the handler's sends now fail
        await trio.sleep(0.05)
        assert await round_trip(address, b"fine") == b"fine"


async def test_datagrams_need_a_served_transport_and_stop_with_it() -> None:
    transport = TrioTransport(LOOPBACK)
    with pytest.raises(RuntimeError, match="before serve"):
        await transport.receive_datagram()
    with pytest.raises(RuntimeError, match="before serve"):
        await transport.send_datagram(Address("127.0.0.1", 9), b"x")
    async with trio.open_nursery() as nursery:
        await start(nursery, transport)
        nursery.cancel_scope.cancel()
    with pytest.raises(trio.ClosedResourceError):
        await transport.receive_datagram()
    await transport.send_datagram(Address("127.0.0.1", 9), b"late")
    assert transport.datagram_send_errors == 1


async def test_a_waiting_receiver_is_released_when_serving_stops() -> None:
    transport = TrioTransport(LOOPBACK)
    outcome: list[str] = []

    async def receive() -> None:
        try:
            await transport.receive_datagram()
        except trio.ClosedResourceError:
            outcome.append("closed")

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as outer:
            serving = trio.CancelScope()

            async def serve() -> None:
                with serving:
                    await transport.serve(echo)

            outer.start_soon(serve)
            while transport.local_address.port == 0:
                await trio.sleep(0.01)
            outer.start_soon(receive)
            await trio.sleep(0.05)
            serving.cancel()
    assert outcome == ["closed"]


async def test_serving_twice_at_once_is_refused(nursery: trio.Nursery) -> None:
    transport = TrioTransport(LOOPBACK)
    await start(nursery, transport)
    with pytest.raises(RuntimeError, match="already serving"):
        await transport.serve(echo)


async def test_a_port_taken_for_udp_is_refused() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        port = squatter.getsockname()[1]
        transport = TrioTransport(Address("127.0.0.1", port))
        with pytest.raises(OSError, match="already in use for UDP"):
            await transport.serve(echo)


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback")
async def test_ipv6_loopback(nursery: trio.Nursery) -> None:
    a, b = TrioTransport(Address("::1", 0)), TrioTransport(Address("::1", 0))
    address_a = await start(nursery, a)
    address_b = await start(nursery, b)
    assert address_a.host == "::1"
    with trio.fail_after(GUARD):
        stream = await a.connect(address_b)
        async with stream:
            await stream.send_all(b"v6")
            assert await stream.receive_some() == b"v6"
        await a.send_datagram(address_b, b"dgram")
        assert await b.receive_datagram() == (b"dgram", address_a)

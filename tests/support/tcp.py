"""Connected TcpStreams over loopback TCP, for tests of what only real sockets show."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from p2pindex.net.tcp_stream import TcpStream, connect_tcp
from p2pindex.types import Address

CONNECT_TIMEOUT = 10.0


@asynccontextmanager
async def tcp_pair() -> AsyncIterator[tuple[TcpStream, TcpStream]]:
    """(client, server), both closed on exit."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    accepted: list[trio.SocketStream] = []
    async with trio.open_nursery() as nursery:

        async def accept_one() -> None:
            accepted.append(await listeners[0].accept())

        nursery.start_soon(accept_one)
        client = await connect_tcp(Address("127.0.0.1", port), CONNECT_TIMEOUT)
    await listeners[0].aclose()
    server = TcpStream(accepted[0])
    try:
        yield client, server
    finally:
        await trio.aclose_forcefully(client)
        await trio.aclose_forcefully(server)

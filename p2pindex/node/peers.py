"""Outgoing connections from this node to its peers: one multiplexed channel per address.

Connections are opened lazily, introduced with a Hello (so the peer knows who calls and
refuses other clusters), kept open, and reopened after they break. Concurrent requests to a
peer that is still connecting wait for the same connection attempt instead of racing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import trio

from p2pindex.config import Limits
from p2pindex.errors import ConnectionLost, P2PIndexError, Timeout
from p2pindex.net.base import Transport
from p2pindex.net.channel import ReplyCallback, RpcChannel, Traffic
from p2pindex.net.pool import ChannelPool
from p2pindex.net.secure.session import SecureStream
from p2pindex.node.stats import StatisticsStore
from p2pindex.types import Address
from p2pindex.wire.errors import error_from_reply
from p2pindex.wire.messages import ErrorReply, Hello, Message

_R = TypeVar("_R", bound=Message)


class PeerPool:
    def __init__(
        self,
        nursery: trio.Nursery,
        transport: Transport,
        limits: Limits,
        hello: Hello,
        stats: StatisticsStore,
        traffic: Traffic | None = None,
    ) -> None:
        self._nursery = nursery
        self._traffic = traffic
        self._transport = transport
        self._limits = limits
        self._hello = hello
        self._stats = stats
        self._pool = ChannelPool(self._connect, waiters_retry=True)

    async def request(self, address: Address, message: Message, timeout: float) -> Message:
        """Send ``message`` to ``address`` and return its reply.

        Raises OSError when the peer cannot be reached (nothing was sent), ConnectionLost
        when the link broke after sending, Timeout when no reply came in time, and the
        mapped P2PIndexError when the peer answered with an error.
        """
        with trio.move_on_after(timeout) as scope:
            channel = await self._pool.channel(address)
            reply = await channel.request(message)
        if scope.cancelled_caught:
            self._stats.incr("peer.timeouts")
            raise Timeout(f"{address} did not answer within {timeout:g}s")
        if isinstance(reply, ErrorReply):
            raise error_from_reply(reply)
        return reply

    async def first_reply(
        self,
        addresses: Sequence[Address],
        message: Message,
        expected: type[_R],
        timeout: float,
    ) -> _R | None:
        """Ask every address at once and return the first reply of type ``expected`` (None
        when none came within ``timeout``): peers that are down or stalled cost one timeout
        together rather than one each."""
        answers: list[_R] = []

        async def ask(address: Address, scope: trio.CancelScope) -> None:
            try:
                reply = await self.request(address, message, timeout)
            except (OSError, P2PIndexError):
                return
            if isinstance(reply, expected):
                answers.append(reply)
                scope.cancel()

        async with trio.open_nursery() as nursery:
            for address in addresses:
                nursery.start_soon(ask, address, nursery.cancel_scope)
        return answers[0] if answers else None

    def node_of(self, address: Address) -> str | None:
        """The node id the open session to ``address`` authenticated (None without one,
        or without security): who really answered, whatever the address was thought to be."""
        channel = self._pool.open_channel(address)
        stream = None if channel is None else channel.stream
        return stream.peer.node_id if isinstance(stream, SecureStream) else None

    def send_nowait(
        self, address: Address, message: Message, callback: ReplyCallback, timeout: float
    ) -> bool:
        """Send over an open connection without a task; False when there is none yet."""
        channel = self._pool.open_channel(address)
        if channel is None:
            return False
        channel.request_nowait(message, callback, timeout)
        return True

    async def _connect(self, address: Address) -> RpcChannel:
        self._stats.incr("peer.connects")
        stream = await self._transport.connect(address)
        channel = RpcChannel(stream, self._limits, name=f"peer {address}", traffic=self._traffic)
        await self._nursery.start(channel.run)
        try:
            reply = await channel.request(self._hello)
        except ConnectionLost:
            await channel.aclose()
            raise
        if isinstance(reply, ErrorReply):
            await channel.aclose()
            error: P2PIndexError = error_from_reply(reply)
            raise OSError(f"{address} refused the connection: {error}") from error
        return channel

    async def aclose(self) -> None:
        await self._pool.aclose()

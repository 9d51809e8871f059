"""One open RPC channel per address, connected once however many tasks ask at once.

Clients and nodes both keep their connections here. A task that finds a connection
attempt under way waits for it instead of racing it. What a waiter does when that attempt
fails is the caller's choice: a client fails over to another node at once
(``waiters_retry=False``: OSError), a node's peer pool tries again itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from p2pindex.net.channel import RpcChannel
from p2pindex.types import Address

Connect = Callable[[Address], Awaitable[RpcChannel]]


class ChannelPool:
    def __init__(self, connect: Connect, *, waiters_retry: bool) -> None:
        self._connect = connect
        self._waiters_retry = waiters_retry
        self._channels: dict[Address, RpcChannel] = {}
        self._connecting: dict[Address, trio.Event] = {}

    def open_channel(self, address: Address) -> RpcChannel | None:
        """The channel to ``address`` if one is open now (no waiting, no connecting)."""
        channel = self._channels.get(address)
        if channel is None or channel.closed:
            return None
        return channel

    async def channel(self, address: Address) -> RpcChannel:
        """The open channel to ``address``, connecting once; OSError when it cannot."""
        while True:
            channel = self.open_channel(address)
            if channel is not None:
                return channel
            pending = self._connecting.get(address)
            if pending is None:
                break
            await pending.wait()
            if not self._waiters_retry and address not in self._channels:
                raise OSError(f"connecting to {address} failed")
        done = self._connecting[address] = trio.Event()
        try:
            channel = await self._connect(address)
        except OSError:
            self._channels.pop(address, None)
            raise
        finally:
            del self._connecting[address]
            done.set()
        self._channels[address] = channel
        return channel

    async def aclose(self) -> None:
        """Close every channel (shielded: closing must finish even while cancelled)."""
        channels, self._channels = list(self._channels.values()), {}
        with trio.CancelScope(shield=True):
            for channel in channels:
                await channel.aclose()

"""A Transport whose streams run the handshake first: what a secure node plugs in.

Datagrams pass through unchanged; the SWIM core signs them itself with the manager's
``sealer`` (it needs the exact overhead to keep every datagram under its size limit).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from p2pindex.net.waiting_room import WaitingRoom
from p2pindex.types import Address

if TYPE_CHECKING:
    from p2pindex.net.base import Transport
    from p2pindex.net.secure.manager import SecurityManager


class SecureTransport:
    """Streams authenticated and encrypted by ``manager``; refused peers never reach the
    handler (the manager counts, audits and logs them). At most ``max_handshakes``
    connections are in their handshake at once: one more closes the one waiting longest
    (``WaitingRoom``), so sockets opened and left silent cannot crowd out real peers."""

    def __init__(self, inner: Transport, manager: SecurityManager, max_handshakes: int) -> None:
        self._inner = inner
        self._manager = manager
        self._handshakes = WaitingRoom(max_handshakes)

    @property
    def local_address(self) -> Address:
        return self._inner.local_address

    async def connect(self, address: Address) -> trio.abc.Stream:
        stream = await self._inner.connect(address)
        return await self._manager.connect(stream, address)

    async def serve(
        self,
        handler: Callable[[trio.abc.Stream, Address], Awaitable[None]],
        *,
        task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        manager = self._manager
        handshakes = self._handshakes

        async def secured(stream: trio.abc.Stream, address: Address) -> None:
            with handshakes.wait() as waiting:
                session = await manager.accept(stream, address)
            if waiting.cancelled_caught:
                manager.handshake_evicted(address, handshakes.limit)
            elif session is not None:
                await handler(session, address)

        await self._inner.serve(secured, task_status=task_status)

    async def send_datagram(self, address: Address, data: bytes) -> None:
        await self._inner.send_datagram(address, data)

    async def receive_datagram(self) -> tuple[bytes, Address]:
        return await self._inner.receive_datagram()

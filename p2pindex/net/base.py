"""The Transport seam: how a node reaches others.

Production plugs in TCP and UDP sockets on trio (``p2pindex.net.trio_transport``); the
simulation plugs in an in-memory network with faults (``p2pindex.sim.network``). The node
never touches sockets itself, so the same node code runs in both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

import trio

from p2pindex.types import Address

StreamHandler = Callable[[trio.abc.Stream, Address], Awaitable[None]]


@runtime_checkable
class ImmediateSend(Protocol):
    """A stream that can sometimes take bytes without waiting (the simulated network's).

    ``send_nowait`` sends ``data`` and returns True, or returns False without sending when
    the caller has to use ``send_all`` (which also reports a closed or broken stream).
    """

    def send_nowait(self, data: bytes) -> bool: ...


def immediate_send(stream: object) -> Callable[[bytes], bool] | None:
    """``stream.send_nowait`` when ``stream`` is an ``ImmediateSend``, else None.

    Every accepted or opened connection asks this twice (the session, then the channel),
    and the answer is usually no: ``isinstance`` against a runtime-checkable protocol walks
    the protocol's attributes on every miss (about 10 us), an attribute lookup does not."""
    send_nowait = getattr(stream, "send_nowait", None)
    return send_nowait if callable(send_nowait) else None


class Transport(Protocol):
    """Reliable ordered streams (TCP-like) plus unreliable datagrams (UDP-like).

    Failures to connect raise ``OSError`` (as sockets do), so callers handle one type.
    """

    @property
    def local_address(self) -> Address:
        """The bound address (known after ``serve`` has started)."""
        ...

    async def connect(self, address: Address) -> trio.abc.Stream:
        """Open a stream to ``address``; raises OSError when it cannot."""
        ...

    async def serve(
        self,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept streams forever, running ``handler(stream, peer_address)`` for each.

        Reports the bound address through ``task_status`` once it listens.
        """
        ...

    async def send_datagram(self, address: Address, data: bytes) -> None:
        """Send one datagram; best effort, never raises for an unreachable peer."""
        ...

    async def receive_datagram(self) -> tuple[bytes, Address]:
        """Wait for the next datagram addressed to this node."""
        ...

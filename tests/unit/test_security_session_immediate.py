"""A session over a stream that can send at once (the simulated network's) can too.

The RPC channel sends a frame straight out when its stream offers ``send_nowait``; a secure
session over such a stream must keep that path (else secure simulations pay a scheduler pass
per frame) without ever desynchronising its record counter when the inner stream declines.
"""

from __future__ import annotations

import trio
import trio.testing

from p2pindex.net.base import ImmediateSend
from p2pindex.net.secure.session import ImmediateSecureStream, SecureStream, session_class
from p2pindex.security.access import Peer, PeerKind

KEY_AB = bytes(range(32))
KEY_BA = bytes(range(1, 33))


class Immediate(trio.abc.Stream):
    """The sending end of an in-memory stream that takes bytes at once unless declining."""

    def __init__(self, to: trio.testing.MemoryReceiveStream) -> None:
        self._to = to
        self.declining = False

    def send_nowait(self, data: bytes) -> bool:
        if self.declining:
            return False
        self._to.put_data(data)
        return True

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._to.put_data(bytes(data))
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        raise AssertionError("this end only sends")

    async def aclose(self) -> None:
        self._to.put_eof()


def peer() -> Peer:
    return Peer(PeerKind.NODE, None)  # type: ignore[arg-type]


def test_the_session_kind_follows_the_inner_stream() -> None:
    left, _ = trio.testing.memory_stream_pair()
    assert session_class(left) is SecureStream
    assert not isinstance(SecureStream(left, KEY_AB, KEY_BA, peer()), ImmediateSend)
    assert session_class(Immediate(trio.testing.MemoryReceiveStream())) is ImmediateSecureStream


async def test_send_nowait_records_open_in_order_and_a_declined_one_costs_nothing() -> None:
    wire = trio.testing.MemoryReceiveStream()
    inner = Immediate(wire)
    sender = ImmediateSecureStream(inner, KEY_AB, KEY_BA, peer())
    receiver = SecureStream(wire, KEY_BA, KEY_AB, peer())  # type: ignore[arg-type]
    assert isinstance(sender, ImmediateSend)
    assert sender.send_nowait(b"first")
    inner.declining = True
    assert not sender.send_nowait(b"declined")
    inner.declining = False
    await sender.send_all(b"second")
    assert sender.send_nowait(b"third")
    received = b""
    while len(received) < len(b"firstsecondthird"):
        received += await receiver.receive_some()
    assert received == b"firstsecondthird"  # the declined record never took a nonce

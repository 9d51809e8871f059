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


class Sending(trio.abc.Stream):
    """The sending end of an in-memory stream."""

    def __init__(self, to: trio.testing.MemoryReceiveStream) -> None:
        self._to = to
        self.declining = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._to.put_data(bytes(data))
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        raise AssertionError("this end only sends")

    async def aclose(self) -> None:
        self._to.put_eof()


class Immediate(Sending):
    """Takes bytes at once unless declining (the simulated network's streams)."""

    def send_nowait(self, data: bytes) -> bool:
        if self.declining:
            return False
        self._to.put_data(data)
        return True


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


class Lone(Sending):
    """Like TCP's: sends one frame at once when asked (``send_lone``) unless declining."""

    def send_lone(self, data: bytes) -> int:
        if self.declining:
            return -1
        self._to.put_data(data)
        return 0


async def test_send_lone_records_open_in_order_and_a_declined_one_costs_nothing() -> None:
    wire = trio.testing.MemoryReceiveStream()
    inner = Lone(wire)
    assert session_class(inner) is SecureStream  # TCP keeps its writer for busy connections
    sender = SecureStream(inner, KEY_AB, KEY_BA, peer())
    receiver = SecureStream(wire, KEY_BA, KEY_AB, peer())  # type: ignore[arg-type]
    assert sender.send_lone(b"first") == 0
    inner.declining = True
    assert sender.send_lone(b"declined") == -1
    inner.declining = False
    await sender.send_all(b"second")
    assert sender.send_lone(b"third") == 0
    received = b""
    while len(received) < len(b"firstsecondthird"):
        received += await receiver.receive_some()
    assert received == b"firstsecondthird"


async def test_a_session_without_a_lone_inner_declines_lone_sends() -> None:
    left, _ = trio.testing.memory_stream_pair()
    assert SecureStream(left, KEY_AB, KEY_BA, peer()).send_lone(b"x") == -1

"""The channel's writer: bursts share one send, a lone request is not held back for company."""

from __future__ import annotations

import trio
import trio.testing

from p2pindex.config import Limits
from p2pindex.net.channel import RpcChannel
from p2pindex.wire.messages import Message, OkReply, StatusRequest


class PassCounter(trio.abc.Instrument):
    """Counts scheduler passes (one I/O wait each)."""

    def __init__(self) -> None:
        self.passes = 0

    def before_io_wait(self, timeout: float) -> None:
        self.passes += 1


class RecordingStream(trio.abc.Stream):
    """Passes everything through and records each send_all: its size and the pass it ran in."""

    def __init__(self, inner: trio.abc.Stream, counter: PassCounter) -> None:
        self._inner = inner
        self._counter = counter
        self.sends: list[tuple[int, int]] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sends.append((len(data), self._counter.passes))
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def echo(message: Message) -> Message:
    return OkReply("ok")


async def test_requests_made_together_share_a_send_and_a_lone_one_goes_out_at_once() -> None:
    server_stream, client_stream = trio.testing.memory_stream_pair()
    counter = PassCounter()
    recording = RecordingStream(client_stream, counter)
    server = RpcChannel(server_stream, Limits(), handler=echo)
    client = RpcChannel(recording, Limits())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.run)
        await nursery.start(client.run)

        # A burst from many tasks at once: far fewer sends than requests.
        async with trio.open_nursery() as burst:
            for _ in range(50):
                burst.start_soon(client.request, StatusRequest())
        assert len(recording.sends) < 10

        # One request at a time: the requester queues its frame in the first pass, and the
        # writer it wakes sends it in the next one, without waiting another pass for frames
        # that are not coming.
        trio.lowlevel.add_instrument(counter)
        try:
            for _ in range(5):
                await client.request(StatusRequest())
            sends_before = len(recording.sends)
            counter.passes = 0
            nursery.start_soon(client.request, StatusRequest())
            for _ in range(10):
                await trio.lowlevel.checkpoint()
            _size, sent_in_pass = recording.sends[sends_before]
        finally:
            trio.lowlevel.remove_instrument(counter)
        assert sent_in_pass == 2
        nursery.cancel_scope.cancel()

"""A TCP stream that spends one scheduler pass per receive and none on a send the kernel
takes at once.

trio's SocketStream makes every call a full checkpoint: a send the kernel accepts whole
still yields to the scheduler afterwards, and a receive first tries a read that fails with
EAGAIN whenever it arrives before the data, then waits and reads again. On a connection
carrying one request at a time every hop paid those passes and system calls: sequential
QUORUM writes took 3.0-3.9 ms at p50 with it and 2.6 ms with this stream (three local
nodes, ``p2pindex bench --write-only --sequential``). Throughput with many requests in
flight did not change, since there one send or receive carries many frames anyway.

So this stream writes straight to the socket and waits only while the kernel's buffer is
full; a receive waits for readability first when the previous read drained the socket,
and otherwise yields once and reads.

Cancellation and closing behave as trio's: a receive always passes through the scheduler,
a send that must wait does so in ``wait_writable``, and closing the stream wakes a task
waiting in either with ClosedResourceError. A send the kernel takes whole does not
checkpoint; the channel's writer parks between sends anyway.
"""

from __future__ import annotations

import errno
import os

import trio

from p2pindex.types import Address

MAX_READ = 65_536
"""The most one read asks the kernel for, whatever the caller allows (and what it asks for
when the caller names no size); channels and secure sessions ask for it too.
``os.read(fd, n)`` allocates n bytes before it reads: above glibc's 128 KiB mmap threshold
every read cost an mmap, an mremap and an munmap (the channels asked for 256 KiB, and reads
on the data path bring a few KiB), three system calls and a page fault more per read."""


async def connect_tcp(address: Address, timeout: float) -> TcpStream:
    """Open a TCP connection (TCP_NODELAY set by trio) or raise OSError within ``timeout``."""
    with trio.move_on_after(timeout):
        return TcpStream(await trio.open_tcp_stream(address.host, address.port))
    raise OSError(errno.ETIMEDOUT, f"connecting to {address} timed out after {timeout:g}s")


class TcpStream(trio.abc.Stream):
    """Wraps a connected ``trio.SocketStream``; closing this closes it."""

    def __init__(self, inner: trio.SocketStream) -> None:
        self._inner = inner
        self.socket = inner.socket
        self._drained = True
        """The last read returned less than it asked for: the socket is probably empty."""
        self._sending = False
        self._receiving = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            view = memoryview(data)
            if not view:
                self._descriptor()  # closed streams refuse even empty sends
                await trio.lowlevel.checkpoint()
                return
            while True:
                try:
                    sent = os.write(self._descriptor(), view)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    raise trio.BrokenResourceError(str(exc)) from exc
                view = view[sent:]
                if not view:
                    return
                await trio.lowlevel.wait_writable(self.socket)
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is None:
            max_bytes = MAX_READ
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, not {max_bytes}")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            self._descriptor()  # a closed socket cannot be waited for
            if self._drained:
                await trio.lowlevel.wait_readable(self.socket)
            else:
                await trio.lowlevel.checkpoint()
            while True:
                asked = min(max_bytes, MAX_READ)
                try:
                    data = os.read(self._descriptor(), asked)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(self.socket)
                    continue
                except OSError as exc:
                    raise trio.BrokenResourceError(str(exc)) from exc
                self._drained = len(data) < asked
                return data
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        await self._inner.aclose()

    def _descriptor(self) -> int:
        """The socket's descriptor, checked on every use: once the stream is closed its
        number may already belong to another file, which must never be written."""
        fd = self.socket.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the stream is closed")
        return fd

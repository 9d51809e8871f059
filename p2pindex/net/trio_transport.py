"""The production Transport: TCP streams and UDP datagrams on one port number, on trio.

TCP carries requests and replies; UDP carries SWIM probes. Both share the port number so a
member is named by one ``host:port``. With port 0 the TCP listener is bound first to learn
a free port, then UDP binds the same number (retrying with a fresh port in the rare case
that number is taken for UDP).

A server must outlive its connections: whatever one connection does (a reset, a broken
pipe, a handler bug), the accept loop keeps running and the failure is logged.
"""

from __future__ import annotations

import errno
import logging

import trio

from p2pindex.net.base import StreamHandler
from p2pindex.net.tcp_stream import TcpStream, connect_tcp
from p2pindex.types import Address

log = logging.getLogger(__name__)

MAX_DATAGRAM = 65_507
"""The largest UDP payload over IPv4; larger sends are a caller bug, not a network event."""

_RECEIVE_BUFFER = 65_535
_BIND_ATTEMPTS = 8
_BACKLOG = 512
_ACCEPT_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_ACCEPT_BACKOFF = 0.1
"""Seconds to wait when the process is out of file descriptors or memory, as trio does."""

_Sockets = tuple[trio.SocketListener, trio.socket.SocketType, Address]


class TrioTransport:
    """Real sockets behind the ``p2pindex.net.base.Transport`` seam."""

    def __init__(self, listen: Address, *, connect_timeout: float = 2.0) -> None:
        if connect_timeout <= 0:
            raise ValueError(f"connect_timeout must be positive, not {connect_timeout}")
        self._listen = listen
        self._connect_timeout = connect_timeout
        self._bound: Address | None = None
        self._udp: trio.socket.SocketType | None = None
        self._closed = False
        self.datagram_send_errors = 0
        """Datagrams the OS refused to send (unreachable peer, no route, ...)."""

    @property
    def local_address(self) -> Address:
        """The bound address while serving; the configured one (maybe port 0) before that."""
        return self._bound or self._listen

    async def connect(self, address: Address) -> trio.abc.Stream:
        """Open a TCP stream or raise OSError within the timeout."""
        return await connect_tcp(address, self._connect_timeout)

    async def serve(
        self,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on TCP and UDP, report the bound address, and run ``handler`` per stream."""
        if self._udp is not None:
            raise RuntimeError(f"already serving on {self._bound}")
        listener, udp, bound = await _bind_pair(self._listen)
        self._udp, self._bound, self._closed = udp, bound, False
        try:
            async with listener, trio.open_nursery() as nursery:
                task_status.started(bound)
                while True:
                    stream = await _accept(listener)
                    nursery.start_soon(_serve_one, handler, stream)
        finally:
            self._closed = True
            self._udp = None
            udp.close()

    async def send_datagram(self, address: Address, data: bytes) -> None:
        """Send one datagram; an unreachable peer is counted, never raised."""
        if len(data) > MAX_DATAGRAM:
            raise OSError(errno.EMSGSIZE, f"datagram of {len(data)} bytes is too large")
        udp = self._udp
        if udp is None:
            if not self._closed:
                raise RuntimeError("send_datagram before serve() bound the UDP socket")
            self.datagram_send_errors += 1
            await trio.lowlevel.checkpoint()
            return
        try:
            await udp.sendto(data, (address.host, address.port))
        except OSError as exc:
            self.datagram_send_errors += 1
            log.debug("datagram to %s not sent: %s", address, exc)

    async def receive_datagram(self) -> tuple[bytes, Address]:
        """Wait for the next datagram; raises trio.ClosedResourceError once serving stops."""
        while True:
            udp = self._udp
            if udp is None:
                if self._closed:
                    raise trio.ClosedResourceError("the transport stopped serving")
                raise RuntimeError("receive_datagram before serve() bound the UDP socket")
            try:
                data, source = await udp.recvfrom(_RECEIVE_BUFFER)
            except (ConnectionRefusedError, ConnectionResetError) as exc:
                # Some stacks report an earlier send's ICMP error on the next receive.
                log.debug("ignored ICMP error on the UDP socket: %s", exc)
                continue
            return data, Address(source[0], source[1])


async def _bind_pair(listen: Address) -> _Sockets:
    """A listening TCP socket and a UDP socket bound to the same host and port number."""
    infos = await trio.socket.getaddrinfo(
        listen.host, listen.port, type=trio.socket.SOCK_STREAM, flags=trio.socket.AI_PASSIVE
    )
    if not infos:
        raise OSError(errno.EADDRNOTAVAIL, f"cannot resolve {listen.host!r}")
    family, _, _, _, sockaddr = infos[0]
    if listen.port != 0:
        pair = await _try_bind(family, sockaddr)
        if pair is None:
            raise OSError(errno.EADDRINUSE, f"{listen} is already in use for UDP")
        return pair
    for _ in range(_BIND_ATTEMPTS):
        pair = await _try_bind(family, sockaddr)
        if pair is not None:
            return pair
    raise OSError(
        errno.EADDRINUSE,
        f"no port on {listen.host} was free for both TCP and UDP in {_BIND_ATTEMPTS} attempts",
    )


async def _try_bind(family: int, sockaddr: tuple[object, ...]) -> _Sockets | None:
    """Bind TCP, then UDP on the port TCP got; None if that UDP port is taken."""
    tcp = trio.socket.socket(family, trio.socket.SOCK_STREAM)
    try:
        tcp.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
        await tcp.bind(sockaddr)
        tcp.listen(_BACKLOG)
        host, port = tcp.getsockname()[:2]
    except OSError:
        tcp.close()
        raise
    udp = trio.socket.socket(family, trio.socket.SOCK_DGRAM)
    try:
        await udp.bind((host, port, *sockaddr[2:]))
    except OSError as exc:
        udp.close()
        tcp.close()
        if exc.errno == errno.EADDRINUSE:
            return None
        raise
    return trio.SocketListener(tcp), udp, Address(host, port)


async def _accept(listener: trio.SocketListener) -> trio.SocketStream:
    """The next connection; waits out descriptor or memory exhaustion instead of dying.

    One line when accepting starts failing and one when it works again (with how many
    retries it took): a line per retry would fill the log ten times a second."""
    failures = 0
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            if exc.errno not in _ACCEPT_RESOURCE_ERRORS:
                raise
            if not failures:
                log.error(
                    "accept failed (%s); new connections wait, retrying every %gs",
                    exc,
                    _ACCEPT_BACKOFF,
                )
            failures += 1
            await trio.sleep(_ACCEPT_BACKOFF)
        else:
            if failures:
                log.warning("accepting connections again after %d failed attempts", failures)
            return stream


async def _serve_one(handler: StreamHandler, stream: trio.SocketStream) -> None:
    """Run one connection's handler; nothing it does may reach the accept loop."""
    try:
        host, port = stream.socket.getpeername()[:2]
        peer = Address(host, port)
    except OSError as exc:
        log.debug("connection closed before it was served: %s", exc)
        await trio.aclose_forcefully(stream)
        return
    try:
        await handler(TcpStream(stream), peer)
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        log.info("connection from %s failed: %s", peer, exc)
    except Exception:  # a handler bug ends its own connection, not the server (not Cancelled)
        log.exception("handler for the connection from %s raised", peer)
    finally:
        await trio.aclose_forcefully(stream)

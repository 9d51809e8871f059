"""A small HTTP/1.1 server on trio with h11: keep-alive, bounded everything, no pipelining.

h11 parses and frames; this module owns the sockets and the limits an untrusted client
must not get past: header size (h11's incomplete-event bound: a client that never ends its
headers gets 431), body size (checked against Content-Length before a byte of body is read,
and again while reading a chunked body), a deadline for a whole request once its first
byte arrives (a client sending one byte a second is cut off and the connection closed), an
idle limit between keep-alive requests, and a connection cap. A request carrying both
Content-Length and Transfer-Encoding is refused (the classic smuggling set-up) rather than
resolved either way. Every refusal is counted in the node's StatisticsStore as
``http.refused.<reason>``.

Requests on one connection are served one at a time, in order; a client wanting more in
flight opens more connections, as every HTTP/1.1 load balancer does.

h11 parses every request (the part where HTTP's ambiguities live); responses are written
here, from a fixed shape (status line, content type and length, our own headers, with any
CR or LF in a value replaced), because building them through h11's validating event objects
cost more than parsing and more than half of a whole replicated write. A fresh h11
connection takes over each keep-alive request with the bytes already received.

A client that stops reading its answers would otherwise hold its connection (and a place
under the cap) forever, its answer stuck in the send: each answer must be taken within
``send_timeout`` or the connection is closed. A refusal made before the request's body was
read (a body over the limit, an early answer to ``Expect: 100-continue``) drains what the
client is still sending for a moment before closing, so the client reads the answer instead
of a connection reset. Refusals made here are problem documents (``problem``) like the API's.
"""

from __future__ import annotations

import http
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import h11
import trio

from p2pindex.net.channel import NodeLoad
from p2pindex.net.waiting_room import WaitingRoom
from p2pindex.node.stats import StatisticsStore

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
_REASONS = {status.value: status.phrase for status in http.HTTPStatus}
PROBLEM_TYPE = "application/problem+json"
LINGER_SECONDS = 2.0
"""How long a connection refused mid-request drains the rest of the request before closing."""
LINGER_BYTES = 64 * 1024 * 1024
_NO_BODY_STATUS = frozenset({204, 304})
_WRITES = frozenset({"PUT", "DELETE", "POST", "PATCH"})


@dataclass(frozen=True, slots=True)
class BodyLimit:
    """A path whose requests may carry more than ``HttpLimits.max_body`` (a batch carries
    many values), and what to tell a client whose body is over even this limit."""

    path: str
    max_body: int
    advice: str


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_header_bytes: int = 16 * 1024
    max_body: int = 1024 * 1024
    larger_bodies: tuple[BodyLimit, ...] = ()
    """Paths (exact, without the query) allowed another body limit than ``max_body``."""
    request_deadline: float = 10.0
    """Seconds from a request's first byte to its last (slow clients are cut off)."""
    idle_timeout: float = 60.0
    """Seconds a keep-alive connection may wait for its next request."""
    send_timeout: float = 30.0
    """Seconds a client has to take an answer (one that stops reading is cut off)."""
    max_connections: int = 1024

    def body_limit(self, target: bytes) -> tuple[int, str]:
        """The body limit of a request to ``target`` and the advice its 413 carries."""
        if self.larger_bodies:
            path = target.partition(b"?")[0].decode("latin-1")
            if path.lower().startswith(("http://", "https://")):
                path = _origin_form(path)
            for larger in self.larger_bodies:
                if larger.path == path:
                    return larger.max_body, larger.advice
        return self.max_body, ""


@dataclass(slots=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]
    """Lower-case names; a repeated header keeps its last value."""
    body: bytes = b""
    peer: str = ""
    keep_alive: bool = True
    """HTTP/1.1 without ``Connection: close``: the connection serves the next request."""


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Awaitable[Response]]
Screen = Callable[[Request], Response | None]
"""Judges a request from its head alone (its body not yet sent): the final answer that
makes the body pointless (a refusal), or None to let the client send it."""


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    outcome: str = "definite",
    headers: list[tuple[str, str]] | None = None,
    **extra: object,
) -> Response:
    """An ``application/problem+json`` answer (RFC 9457). ``outcome`` says whether anything
    was written: ``definite`` nothing, ``indeterminate`` it may have been."""
    doc: dict[str, object] = {
        "type": f"urn:p2pindex:error:{code}",
        "title": code.replace("_", " "),
        "status": status,
        "detail": detail,
        "outcome": outcome,
        **extra,
    }
    return Response(status, json.dumps(doc).encode(), PROBLEM_TYPE, headers or [])


class _Refused(Exception):
    """The request cannot be served; answer ``status`` (0: just close) and close."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason


class _BodyCharge:
    """The body bytes of the request one connection is reading or serving, and then of its
    answer, counted in the node's in-flight budget (``NodeLoad``, shared with the binary
    protocol's requests and replies) from their arrival until the answer is sent. Without
    it every HTTP connection could hold a body or an answer at the limit at once (a 16 MiB
    batch on each of a thousand connections), whatever the budget said; past the budget's
    ceiling a body is refused as it arrives."""

    __slots__ = ("_load", "held")

    def __init__(self, load: NodeLoad | None) -> None:
        self._load = load
        self.held = 0

    def add(self, size: int) -> None:
        load = self._load
        if load is None:
            return
        load.held += size
        self.held += size
        if load.full:
            load.refused += 1
            raise _Refused(
                503,
                "overloaded",
                "the node holds too many requests' bytes to take this body now; try again "
                "shortly or on another node",
            )

    def hold(self, size: int) -> None:
        """Count an answer's bytes until it is sent, refusing nothing: it is made already,
        and a client slow to take it holds them (up to ``send_timeout``), so the bodies of
        the next requests see the budget that is left."""
        if self._load is not None:
            self._load.held += size
            self.held += size

    def release(self) -> None:
        if self._load is not None:
            self._load.held -= self.held
        self.held = 0


class _AnsweredEarly(Exception):
    """The screen answered a request whose body the client waits to send; close after."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class HttpServer:
    def __init__(
        self,
        handler: Handler,
        stats: StatisticsStore,
        limits: HttpLimits | None = None,
        ssl_context: ssl.SSLContext | None = None,
        screen: Screen | None = None,
        body_budget: NodeLoad | None = None,
    ) -> None:
        self._handler = handler
        self._screen = screen
        self._body_budget = body_budget
        self._stats = stats
        self.limits = limits or HttpLimits()
        self._ssl = ssl_context
        self._open = 0
        self._waiting = WaitingRoom()
        """Connections between requests (or before their first), oldest first."""

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()[1]
        task_status.started(bound)
        await self.serve_listeners(listeners)

    async def serve_listeners(self, listeners: list[trio.SocketListener]) -> None:
        """Serve on listeners bound beforehand (`serve` binds the HTTP port before the node
        starts, so a port in use fails the start at once, named as the HTTP one)."""
        await trio.serve_listeners(self._connection, listeners)

    def _refuse(self, reason: str) -> None:
        self._stats.incr(f"http.refused.{reason}")

    async def _connection(self, stream: trio.SocketStream) -> None:
        peer = _peer_of(stream)
        if self._open >= self.limits.max_connections:
            # Connections still waiting for a request give way first (``WaitingRoom``):
            # idle sockets must not keep out a client that has a request to make.
            if self._waiting.evict_oldest():
                self._stats.incr("http.evicted")
            else:  # every connection is being served
                self._refuse("too_many_connections")
                await trio.aclose_forcefully(stream)
                return
        self._open += 1
        self._stats.incr("http.connections")
        wrapped: trio.abc.Stream = stream
        if self._ssl is not None:
            wrapped = trio.SSLStream(stream, self._ssl, server_side=True)
        try:
            await self._serve(wrapped, peer)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("HTTP connection from %s broke: %s", peer, exc)
        except ssl.SSLError as exc:
            self._refuse("tls")
            log.debug("TLS with %s failed: %s", peer, exc)
        finally:
            self._open -= 1
            await trio.aclose_forcefully(wrapped)

    def _parser(self, leftover: tuple[bytes, bool] = (b"", False)) -> h11.Connection:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes)
        data, closed = leftover
        if data:
            conn.receive_data(data)
        if closed:
            conn.receive_data(b"")
        return conn

    async def _serve(self, stream: trio.abc.Stream, peer: str) -> None:
        charge = _BodyCharge(self._body_budget)
        try:
            await self._serve_requests(stream, peer, charge)
        finally:
            charge.release()

    async def _serve_requests(
        self, stream: trio.abc.Stream, peer: str, charge: _BodyCharge
    ) -> None:
        conn = self._parser()
        while True:
            request = None
            try:
                with self._waiting.wait():
                    request = await self._read_request(conn, stream, peer, charge)
            except _Refused as refused:
                charge.release()  # what arrived of the body is dropped
                self._refuse(refused.reason)
                log.debug("refused HTTP request from %s: %s", peer, refused)
                if refused.status and conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    code = _CODES.get(refused.reason, refused.reason)
                    answer = problem(refused.status, code, str(refused))
                    if refused.status == 503:
                        answer.headers.append(("retry-after", "1"))
                    await self._send_last(stream, answer, peer)
                return
            except _AnsweredEarly as early:
                self._stats.incr(f"http.responses.{early.response.status // 100}xx")
                await self._send_last(stream, early.response, peer)
                return
            if request is None:  # closed, idle too long, or evicted for a newcomer
                return
            try:
                response = await self._handler(request)
            except Exception:  # a bug in one handler must not take the listener down
                log.exception("HTTP %s %s failed", request.method, request.target[:200])
                self._stats.incr("http.internal_errors")
                response = problem(
                    500,
                    "internal_error",
                    "the node failed to answer this request; see the node's log",
                    outcome="indeterminate" if request.method in _WRITES else "definite",
                )
            self._stats.incr(f"http.responses.{response.status // 100}xx")
            head = request.method == "HEAD"
            encoded = encode_response(response, request.keep_alive, head=head)
            charge.hold(len(encoded))
            sent = await self._send(stream, encoded, peer)
            charge.release()
            if not sent:
                return
            if not request.keep_alive:
                return
            conn = self._parser(conn.trailing_data)

    async def _send(self, stream: trio.abc.Stream, data: bytes, peer: str) -> bool:
        """Send ``data`` unless the client stops taking it for ``send_timeout``: then False
        (the caller closes the connection, the only way to free what it holds)."""
        with trio.move_on_after(self.limits.send_timeout):
            await stream.send_all(data)
            return True
        self._refuse("slow_reader")
        log.debug("HTTP client %s took no answer for %gs; closed", peer, self.limits.send_timeout)
        return False

    async def _send_last(self, stream: trio.abc.Stream, response: Response, peer: str) -> None:
        """Answer, then drain what the client may still be sending of its request (briefly,
        boundedly) before the connection closes: closing with unread bytes resets it, and a
        reset can destroy the answer before the client reads it."""
        if not await self._send(stream, encode_response(response, False), peer):
            return
        with trio.move_on_after(LINGER_SECONDS):
            if isinstance(stream, trio.SocketStream):
                await stream.send_eof()
            drained = 0
            while drained < LINGER_BYTES:
                data = await stream.receive_some(READ_SIZE)
                if not data:
                    break
                drained += len(data)

    async def _go_ahead(self, event: h11.Request, stream: trio.abc.Stream, peer: str) -> bool:
        """Answer ``Expect: 100-continue``: the screen's refusal (raised as the request's
        answer, so the client never sends the body), or "100 Continue"; False when the
        client did not take even that."""
        early = self._screen(_request_of(event, [], peer)) if self._screen else None
        if early is not None:
            raise _AnsweredEarly(early)
        return await self._send(stream, b"HTTP/1.1 100 Continue\r\n\r\n", peer)

    async def _read_request(
        self, conn: h11.Connection, stream: trio.abc.Stream, peer: str, charge: _BodyCharge
    ) -> Request | None:
        """The next complete request; None when the client closed or went idle."""
        limits = self.limits
        request: h11.Request | None = None
        body: list[bytes] = []
        size = 0
        max_body, advice = limits.max_body, ""
        deadline = trio.current_time() + limits.idle_timeout
        started = False
        fed = len(conn.trailing_data[0])
        """Bytes given to h11 for this request so far (the head's size is read from it)."""
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                reason = "headers_too_large" if status == 431 else "malformed"
                raise _Refused(
                    status, reason, f"malformed HTTP request: {_describe(exc)}"
                ) from None
            if event is h11.NEED_DATA:
                with trio.move_on_at(deadline):
                    data = await stream.receive_some(READ_SIZE)
                    if not started and data:
                        started = True
                        deadline = trio.current_time() + limits.request_deadline
                    fed += len(data)
                    # h11 takes any bytes-like (its docstring), but annotates bytes only.
                    conn.receive_data(data)  # type: ignore[arg-type]
                    continue
                if not started:
                    return None  # idle keep-alive connection: close quietly
                raise _Refused(408, "slow_client", "the request took too long to arrive")
            if isinstance(event, h11.Request):
                request = event
                max_body, advice = limits.body_limit(event.target)
                _check_head(event, fed - len(conn.trailing_data[0]), limits, max_body, advice)
                if conn.they_are_waiting_for_100_continue and not await self._go_ahead(
                    event, stream, peer
                ):
                    return None
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > max_body:
                    raise _Refused(413, "body_too_large", _too_large(max_body, advice))
                charge.add(len(event.data))
                body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return _request_of(request, body, peer)
            elif isinstance(event, h11.ConnectionClosed):
                if started:
                    raise _Refused(0, "truncated", "the client closed mid-request")
                return None


_CODES = {"body_too_large": "too_large", "malformed": "bad_request"}
"""The problem type of a refusal whose counter reason says it differently."""


def _request_of(event: h11.Request, body: list[bytes], peer: str) -> Request:
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers}
    connection = headers.get("connection", "").lower()
    keep_alive = event.http_version == b"1.1" and "close" not in connection
    return Request(
        event.method.decode("ascii", "replace"),
        _origin_form(event.target.decode("latin-1")),
        headers,
        b"".join(body),
        peer,
        keep_alive,
    )


def _origin_form(target: str) -> str:
    """The path and query of a target; a proxy-style absolute URL is served as its path
    (RFC 9112 3.2.2: servers must accept it). A fragment never belongs in a request."""
    if "#" in target:
        raise _Refused(400, "malformed", "a request target must not carry a #fragment")
    lowered = target[:8].lower()
    if lowered.startswith(("http://", "https://")):
        slash = target.find("/", target.index("//") + 2)
        return "/" if slash < 0 else target[slash:]
    return target


def _describe(exc: h11.RemoteProtocolError) -> str:
    """h11's reason without the raw bytes it sometimes appends (a Python repr)."""
    text = str(exc)
    cut = text.find(": bytearray(")
    return text if cut < 0 else text[:cut]


def _check_head(
    event: h11.Request, head_bytes: int, limits: HttpLimits, max_body: int, advice: str
) -> None:
    # h11 bounds only a head still arriving; one that came whole is held to the same limit.
    if head_bytes > limits.max_header_bytes:
        raise _Refused(
            431,
            "headers_too_large",
            f"the request line and headers are over the {limits.max_header_bytes}-byte limit",
        )
    if event.http_version not in (b"1.0", b"1.1"):
        raise _Refused(505, "http_version", "this server speaks HTTP/1.1 (and 1.0) only")
    _check_framing(event, max_body, advice)


def _check_framing(request: h11.Request, max_body: int, advice: str = "") -> None:
    lengths = [value for name, value in request.headers if name == b"content-length"]
    chunked = any(name == b"transfer-encoding" for name, _ in request.headers)
    if lengths and chunked:
        raise _Refused(
            400,
            "ambiguous_length",
            "a request may carry Content-Length or Transfer-Encoding, not both",
        )
    if lengths and int(lengths[0]) > max_body:
        raise _Refused(413, "body_too_large", _too_large(max_body, advice))


def _too_large(max_body: int, advice: str = "") -> str:
    text = f"the request body is over the {max_body}-byte limit of a request; nothing was written"
    return f"{text}; {advice}" if advice else text


def encode_response(response: Response, keep_alive: bool, *, head: bool = False) -> bytes:
    status = response.status
    reason = _REASONS.get(status, "")
    if status in _NO_BODY_STATUS:  # RFC 9110: these carry no content and no length
        parts = [f"HTTP/1.1 {status} {reason}\r\n"]
    else:
        parts = [
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: {response.content_type}\r\n"
            f"content-length: {len(response.body)}\r\n"
        ]
    for name, value in response.headers:
        if "\r" in value or "\n" in value:
            value = value.replace("\r", " ").replace("\n", " ")
        parts.append(f"{name}: {value}\r\n")
    if not keep_alive:
        parts.append("connection: close\r\n")
    parts.append("\r\n")
    head_bytes = "".join(parts).encode("latin-1", "replace")
    return head_bytes if head else head_bytes + response.body


def _peer_of(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port}"

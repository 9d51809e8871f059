"""Multiplexed request/response over one stream, with coalesced writes.

Why this shape: a trio node pays far more per individually awaited message than per frame
when many frames share one ``send_all``/``receive_some`` (figures: README, Measuring). So
every connection has exactly one writer task that drains everything queued into a
single ``send_all``, one reader task that parses every complete frame in its buffer, and a
table of waiting requesters keyed by request id that the reader wakes directly (no task or
Event per request).

A channel is one-directional in its requests: the side that opened it sends requests and
reads replies (``handler=None``); the accepting side runs ``handler`` for every request and
sends back its reply with the same request id. Nodes that call each other open one
connection per direction.

Memory is bounded on the serving side by not reading: while a connection's unsent replies
(queued, being sent, or expected from requests still being served, guessed from the sizes
of its recent replies) exceed ``Limits.reply_budget`` or ``Limits.max_unanswered``
requests are unanswered, its reader stops taking frames, so TCP pushes back on a peer that
sends requests faster than it reads replies and that peer slows only itself. A ``NodeLoad``
shared by a node's channels bounds the bytes held for all of them together; past it a
request of a client connection that already holds something is answered ``overloaded``
before anything is done.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import outcome
import trio

from p2pindex.config import Limits
from p2pindex.errors import (
    ConnectionLost,
    InvalidRequest,
    Overloaded,
    P2PIndexError,
    ProtocolError,
    Timeout,
)
from p2pindex.net.base import immediate_send
from p2pindex.net.tcp_stream import MAX_READ, connect_tcp
from p2pindex.types import Address
from p2pindex.wire.codec import Decoded, FrameDecoder, encode_frame
from p2pindex.wire.errors import reply_for_error
from p2pindex.wire.messages import ErrorReply, Message

if TYPE_CHECKING:
    from p2pindex.net.secure.connector import Connector

log = logging.getLogger(__name__)

RequestHandler = Callable[[Message], Awaitable[Message]]
Respond = Callable[[int, Message], None]
"""``respond(position, reply)``: the reply to the request at ``position`` of a batch."""
BatchHandler = Callable[[list[Message], Respond], Awaitable[None]]
BadInputCounter = Callable[[str], None]
EventCounter = Callable[[str], None]
"""Counts a named event (``channel.paused``, ``overloaded.node``) in the node's statistics."""
ReplyCallback = Callable[[outcome.Outcome], None]
"""Receives ``outcome.Value(reply)`` or ``outcome.Error(P2PIndexError)`` exactly once."""

_WRITE_HIGH_WATER = 8 * 1024 * 1024
"""Requesters wait while this many bytes are queued, so a slow peer cannot grow memory."""
_SWEEP_INTERVAL = 0.1
"""How late a request whose deadline passed may be failed with Timeout: expiries this close
together are handled in one pass."""


_GUESS_DECAY = 64
"""Each reply moves a connection's reply-size guess 1/64 of the way down to its size: a few
hundred small replies lift the pessimistic first guess, one large reply restores it."""


class NodeLoad:
    """Request and reply bytes a node holds for all its connections together.

    Every serving channel adds the bytes of the requests it is serving with the replies it
    expects them to produce, and of the replies it has not sent yet, and takes them off when
    done. Past ``limit``, channels that refuse when overloaded (those of clients) answer
    ``overloaded`` at once to the requests of connections that already hold something: the
    clients that pipeline without reading are the ones that filled the budget, so they are
    the ones refused, while a client that waits for each answer (holding nothing when its
    next request arrives) is still served. Past ``ceiling`` (a quarter above ``limit``)
    every client request is refused, which bounds what the well-behaved ones may add. Peer
    channels are always served, so replication between nodes is never what gives way.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.ceiling = limit + limit // 4
        self.held = 0
        self.refused = 0

    @property
    def over(self) -> bool:
        return self.held > self.limit

    @property
    def full(self) -> bool:
        return self.held > self.ceiling


class Traffic:
    """Connections, frames and bytes of every channel a node runs, added up.

    Plain integers that a channel bumps where it already touches the data (one read, one
    ``send_all``), so counting costs the hot path a few additions per read or write, not a
    statistics lookup per frame. ``in`` is a connection this node accepted (it serves the
    requests), ``out`` one it opened (it sends requests); frames and bytes are counted by
    the direction they travel, received or sent, whichever side opened the connection.
    """

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "closed_in",
        "closed_out",
        "frames_received",
        "frames_sent",
        "opened_in",
        "opened_out",
    )

    def __init__(self) -> None:
        self.opened_in = self.opened_out = 0
        self.closed_in = self.closed_out = 0
        self.frames_received = self.frames_sent = 0
        self.bytes_received = self.bytes_sent = 0

    @property
    def open_in(self) -> int:
        return self.opened_in - self.closed_in

    @property
    def open_out(self) -> int:
        return self.opened_out - self.closed_out


@dataclass(frozen=True, slots=True)
class FastPath:
    """Requests a serving channel handles without a task each (the data path).

    A task per request costs about as much as the work of a replica read or write, so: a
    type in ``answer`` is answered synchronously by the reader as soon as it is decoded;
    requests whose type maps to a handler in ``batch`` and that arrived in one read go to
    that handler together, in one task (so a frame's writes share one commit). The handler
    answers each request through ``respond`` as soon as its reply is known, and returns
    once all are answered. Every other request still gets its own task and ``handler``.
    """

    answer: Mapping[type[Message], Callable[[Message], Message]]
    batch: Mapping[type[Message], BatchHandler]


class RpcChannel:
    def __init__(
        self,
        stream: trio.abc.Stream,
        limits: Limits,
        *,
        handler: RequestHandler | None = None,
        name: str = "",
        max_in_flight: int = 4096,
        on_bad_input: BadInputCounter | None = None,
        fast_path: FastPath | None = None,
        node_load: NodeLoad | None = None,
        refuse_when_overloaded: bool = False,
        on_event: EventCounter | None = None,
        throttle: Callable[[], str | None] | None = None,
        traffic: Traffic | None = None,
    ) -> None:
        self._stream = stream
        self._traffic = traffic
        self._send_now = immediate_send(stream)
        """Frames go straight out when the stream can take them (the simulated network's):
        no writer wake-up, and no scheduler pass spent collecting frames for one send."""
        self._limits = limits
        self._handler = handler
        self._fast = fast_path
        self.name = name
        self._decoder = FrameDecoder(limits)
        self._ids = itertools.count(1)
        self._waiting: dict[int, trio.lowlevel.Task | ReplyCallback] = {}
        self._deadlines: dict[int, float] = {}
        self._sweep_wakeup = trio.Event()
        self._sweep_at = math.inf
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._writer_lot = trio.lowlevel.ParkingLot()
        self._space_lot = trio.lowlevel.ParkingLot()
        self._in_flight = trio.Semaphore(max_in_flight)
        self._on_bad_input = on_bad_input
        self._on_event = on_event
        self._node_load = node_load
        self._refuse_when_overloaded = refuse_when_overloaded
        self._throttle = throttle
        """Called for every request: a reason to answer ``overloaded`` (a client over its
        rate), or None."""
        self._sending = 0
        """Bytes handed to the stream's ``send_all`` that has not returned yet."""
        self._unanswered = 0
        """Requests being served whose reply is not queued yet."""
        self._request_bytes = 0
        """Bytes of the requests being served and of their expected replies, as counted
        into ``node_load``."""
        self._reply_guess = limits.max_value
        """Expected size of a reply not produced yet: pessimistic on a new connection."""
        self._room_lot = trio.lowlevel.ParkingLot()
        self._closed = False
        self._close_reason = "connection closed"
        self.broke_protocol = False
        """Closed because the peer sent a frame that cannot be read (``node.admission``)."""
        self._nursery: trio.Nursery | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the connection until the peer closes it, it breaks, or we are cancelled."""
        traffic = self._traffic
        if traffic is not None:
            if self._handler is None:
                traffic.opened_out += 1
            else:
                traffic.opened_in += 1
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._write_loop)
                nursery.start_soon(self._sweep_loop)
                task_status.started()
                await self._read_loop()
                nursery.cancel_scope.cancel()
        finally:
            if traffic is not None:
                if self._handler is None:
                    traffic.closed_out += 1
                else:
                    traffic.closed_in += 1
            self._shut("connection closed")
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self._stream)

    async def request(self, message: Message, *, deadline: float | None = None) -> Message:
        """Send ``message`` and wait for its reply.

        Raises ConnectionLost if the connection is or becomes closed before the reply; the
        caller cannot know whether the peer acted on the request. With ``deadline`` (trio
        time) it raises Timeout once that passes (within ``_SWEEP_INTERVAL``): cheaper than
        a cancel scope per request, which is what the client's hot path needs.
        """
        if self._closed:
            raise ConnectionLost(f"{self._describe()}: {self._close_reason}")
        while self._out_bytes > _WRITE_HIGH_WATER and not self._closed:
            await self._space_lot.park()
        if self._closed:
            raise ConnectionLost(f"{self._describe()}: {self._close_reason}")
        request_id = next(self._ids)
        self._enqueue(encode_frame(message, request_id))
        self._waiting[request_id] = trio.lowlevel.current_task()
        if deadline is not None:
            self._add_deadline(request_id, deadline)

        def abort(_: object) -> trio.lowlevel.Abort:
            self._waiting.pop(request_id, None)
            self._deadlines.pop(request_id, None)
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)

    def request_nowait(self, message: Message, callback: ReplyCallback, timeout: float) -> None:
        """Send ``message``; ``callback`` gets the reply, a Timeout after ``timeout`` seconds,
        or ConnectionLost. No task per request: the coordinator's fan-out path uses this.
        """
        if self._closed:
            raise ConnectionLost(f"{self._describe()}: {self._close_reason}")
        request_id = next(self._ids)
        self._enqueue(encode_frame(message, request_id))
        self._waiting[request_id] = callback
        self._add_deadline(request_id, trio.current_time() + timeout)

    def _add_deadline(self, request_id: int, deadline: float) -> None:
        if deadline < self._sweep_at:
            self._sweep_wakeup.set()
        self._deadlines[request_id] = deadline

    async def aclose(self) -> None:
        self._shut("closed locally")
        await trio.aclose_forcefully(self._stream)

    # --- internals -------------------------------------------------------------------------

    def _describe(self) -> str:
        return self.name or "connection"

    def _enqueue(self, frame: bytes) -> None:
        if self._closed:
            return
        if not self._out and self._send_now is not None and self._send_now(frame):
            traffic = self._traffic
            if traffic is not None:
                traffic.frames_sent += 1
                traffic.bytes_sent += len(frame)
            return
        self._out.append(frame)
        self._out_bytes += len(frame)
        if self._node_load is not None:
            self._node_load.held += len(frame)
        self._writer_lot.unpark()

    def _sent(self, size: int) -> None:
        """``size`` queued bytes left this process (or were dropped with the connection)."""
        if self._node_load is not None:
            self._node_load.held -= size
        self._room_lot.unpark_all()

    def _admit(self, size: int) -> None:
        """A request of about ``size`` bytes is now being served.

        Its expected reply is counted with it, so the node-wide budget sees a burst of
        requests for large values when they are admitted, not only once their replies exist
        (by then every connection of the burst would have been let in).
        """
        size += self._reply_guess
        self._unanswered += 1
        self._request_bytes += size
        if self._node_load is not None:
            self._node_load.held += size

    def _reply(self, frame: bytes) -> None:
        """Queue the reply of a request that ``_admit`` counted."""
        if self._unanswered:
            share = self._request_bytes // self._unanswered
            self._unanswered -= 1
            self._request_bytes -= share
            if self._node_load is not None:
                self._node_load.held -= share
        size = len(frame)
        guess = self._reply_guess
        self._reply_guess = size if size >= guess else guess - (guess - size) // _GUESS_DECAY
        if not self._closed:
            self._enqueue(frame)
        self._room_lot.unpark_all()

    def _over_budget(self) -> bool:
        """Whether this connection holds as many replies as it may (then it is not read)."""
        limits = self._limits
        unsent = self._out_bytes + self._sending
        unanswered = self._unanswered
        if unsent >= limits.reply_budget or unanswered >= limits.max_unanswered:
            return True
        return unanswered > 0 and unsent + unanswered * self._reply_guess > limits.reply_budget

    async def _wait_for_room(self) -> None:
        self._count_event("channel.paused")
        while self._over_budget() and not self._closed:
            await self._room_lot.park()

    def _overloaded(self) -> Overloaded | None:
        """Why this request is refused before anything is done, or None to serve it."""
        if self._throttle is not None:
            reason = self._throttle()
            if reason is not None:
                return Overloaded(f"{reason}; nothing was done, try again shortly")
        load = self._node_load
        if load is None or not self._refuse_when_overloaded or not load.over:
            return None
        if not load.full and self._out_bytes + self._sending + self._request_bytes == 0:
            return None  # a client waiting for each answer: it did not fill the budget
        load.refused += 1
        self._count_event("overloaded.node")
        return Overloaded(
            "the node is holding as much request and reply data as it may; "
            "nothing was done, try again shortly"
        )

    def _count_event(self, name: str) -> None:
        if self._on_event is not None:
            self._on_event(name)

    @property
    def stream(self) -> trio.abc.Stream:
        """The stream this channel runs on (a secure session knows its peer)."""
        return self._stream

    def _shut(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_reason = reason
        waiting, self._waiting = self._waiting, {}
        self._deadlines.clear()
        for waiter in waiting.values():
            error = ConnectionLost(f"{self._describe()}: {reason}")
            self._resolve(waiter, outcome.Error(error))
        self._space_lot.unpark_all()
        self._writer_lot.unpark_all()
        self._room_lot.unpark_all()
        if self._node_load is not None:
            self._node_load.held -= self._out_bytes + self._request_bytes
        self._out_bytes = 0
        self._out.clear()
        self._request_bytes = 0

    @staticmethod
    def _resolve(waiter: trio.lowlevel.Task | ReplyCallback, result: outcome.Outcome) -> None:
        if isinstance(waiter, trio.lowlevel.Task):
            trio.lowlevel.reschedule(waiter, result)
        else:
            waiter(result)

    async def _sweep_loop(self) -> None:
        """Fail requests whose deadline passed.

        It sleeps until the earliest deadline rather than polling: most requests are answered
        long before theirs, and a poll per channel was a good part of a simulation's CPU. A
        request with an earlier deadline than the one slept for wakes it.
        """
        while True:
            self._sweep_wakeup = trio.Event()
            if self._deadlines:
                earliest = min(self._deadlines.values())
                self._sweep_at = max(earliest, trio.current_time() + _SWEEP_INTERVAL)
            else:
                self._sweep_at = math.inf
            with trio.move_on_at(self._sweep_at):
                await self._sweep_wakeup.wait()
            now = trio.current_time()
            expired = [rid for rid, deadline in self._deadlines.items() if deadline <= now]
            for request_id in expired:
                del self._deadlines[request_id]
                waiter = self._waiting.pop(request_id, None)
                if waiter is not None:
                    failure = Timeout(f"{self._describe()} did not answer in time")
                    self._resolve(waiter, outcome.Error(failure))

    async def _write_loop(self) -> None:
        coalesce = False
        while not self._closed:
            if not self._out:
                await self._writer_lot.park()
                if coalesce:
                    # One scheduler tick more lets the other tasks woken with us queue their
                    # frames too, so they share this send_all (one syscall for many frames).
                    await trio.lowlevel.checkpoint()
                continue
            # Wait that tick only while sends carry several frames: a connection carrying
            # one request at a time would pay it on every hop for nothing to share.
            coalesce = self._send_now is None and len(self._out) > 1
            frames = len(self._out)
            data = b"".join(self._out)
            self._out.clear()
            self._out_bytes = 0
            self._sending = len(data)
            self._space_lot.unpark_all()
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self._shut(f"send failed: {exc}")
                return
            else:
                traffic = self._traffic
                if traffic is not None:
                    traffic.frames_sent += frames
                    traffic.bytes_sent += len(data)
            finally:
                self._sent(self._sending)
                self._sending = 0

    async def _read_loop(self) -> None:
        while not self._closed:
            try:
                data = await self._stream.receive_some(MAX_READ)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self._shut(f"receive failed: {exc}")
                return
            if not data:
                try:
                    self._decoder.eof()
                except ProtocolError as exc:
                    self._count_bad(str(exc))
                self._shut("closed by peer")
                return
            traffic = self._traffic
            if traffic is not None:
                traffic.bytes_received += len(data)
            try:
                frames = self._decoder.feed(data)
            except ProtocolError as exc:
                self._count_bad(str(exc))
                self.broke_protocol = True
                self._enqueue(encode_frame(reply_for_error(exc), 0))
                await self._flush_before_close()
                self._shut(f"protocol error: {exc}")
                return
            if traffic is not None:
                traffic.frames_received += len(frames)
            if self._handler is None:
                for decoded in frames:
                    self._deliver_reply(decoded.request_id, decoded.message, decoded.error)
                continue
            await self._serve_frames(frames, len(data) // max(1, len(frames)))

    async def _serve_frames(self, frames: list[Decoded], size: int) -> None:
        """Serve the requests of one read, each of about ``size`` bytes."""
        batches: dict[BatchHandler, list[tuple[int, Message]]] = {}
        fast = self._fast
        for decoded in frames:
            if self._over_budget():
                # Start what is gathered, then stop reading until replies drain.
                for serve, batch in batches.items():
                    await self._start(self._serve_batch, serve, batch)
                batches = {}
                await self._wait_for_room()
                if self._closed:
                    return
            message = decoded.message
            if message is None:
                self._count_bad(decoded.error or "invalid message")
                reply = reply_for_error(InvalidRequest(decoded.error or "invalid message"))
                self._enqueue(encode_frame(reply, decoded.request_id))
                continue
            refusal = self._overloaded()
            if refusal is not None:
                self._enqueue(encode_frame(reply_for_error(refusal), decoded.request_id))
                continue
            if fast is not None:
                answer = fast.answer.get(type(message))
                if answer is not None:
                    self._enqueue(encode_frame(_answer(answer, message), decoded.request_id))
                    continue
                handler = fast.batch.get(type(message))
                # A request asking for a trace (``trace`` set) takes the handler: a batch
                # serves many requests at once and has no steps of one request to show.
                if handler is not None and not getattr(message, "trace", False):
                    self._admit(size)
                    batches.setdefault(handler, []).append((decoded.request_id, message))
                    continue
            self._admit(size)
            await self._start(self._serve_one, decoded.request_id, message)
        for serve, batch in batches.items():
            await self._start(self._serve_batch, serve, batch)

    async def _start(self, serve: Callable[..., Awaitable[None]], *args: object) -> None:
        try:
            self._in_flight.acquire_nowait()
        except trio.WouldBlock:  # back-pressure: stop reading until one finishes
            await self._in_flight.acquire()
        assert self._nursery is not None
        self._nursery.start_soon(serve, *args)

    async def _flush_before_close(self) -> None:
        """Give the writer a moment to send the final error before the connection drops."""
        with trio.move_on_after(1.0):
            data = b"".join(self._out)
            self._out.clear()
            self._out_bytes = 0
            self._sent(len(data))
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await self._stream.send_all(data)

    def _deliver_reply(self, request_id: int, message: Message | None, error: str | None) -> None:
        waiter = self._waiting.pop(request_id, None)
        if waiter is None:
            return
        self._deadlines.pop(request_id, None)
        if message is None:
            self._count_bad(error or "invalid reply")
            failure = ProtocolError(f"{self._describe()} sent an invalid reply: {error}")
            self._resolve(waiter, outcome.Error(failure))
        else:
            self._resolve(waiter, outcome.Value(message))

    async def _serve_one(self, request_id: int, message: Message) -> None:
        assert self._handler is not None
        try:
            reply = await self._handler(message)
        except P2PIndexError as exc:
            reply = reply_for_error(exc)
        except Exception as exc:  # a handler bug must answer this request, not kill the link
            log.exception("handler failed on %s", type(message).__name__)
            reply = ErrorReply("internal_error", f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self._in_flight.release()
        self._reply(encode_frame(reply, request_id))

    async def _serve_batch(self, serve: BatchHandler, batch: list[tuple[int, Message]]) -> None:
        unanswered = dict(enumerate(request_id for request_id, _message in batch))

        def respond(position: int, reply: Message) -> None:
            request_id = unanswered.pop(position)
            self._reply(encode_frame(reply, request_id))

        failure: Message | None = None
        try:
            await serve([message for _request_id, message in batch], respond)
        except P2PIndexError as exc:
            failure = reply_for_error(exc)
        except Exception as exc:  # a handler bug must answer these requests, not kill the link
            log.exception("batch handler failed on %d requests", len(batch))
            failure = ErrorReply("internal_error", f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self._in_flight.release()
        if unanswered:
            if failure is None:
                log.error(
                    "batch handler left %d of %d requests unanswered", len(unanswered), len(batch)
                )
                failure = ErrorReply("internal_error", "internal error: request left unanswered")
            for position in list(unanswered):
                respond(position, failure)

    def _count_bad(self, reason: str) -> None:
        if self._on_bad_input is not None:
            self._on_bad_input(reason)


def _answer(answer: Callable[[Message], Message], message: Message) -> Message:
    try:
        return answer(message)
    except P2PIndexError as exc:
        return reply_for_error(exc)
    except Exception as exc:  # a handler bug must answer this request, not kill the link
        log.exception("handler failed on %s", type(message).__name__)
        return ErrorReply("internal_error", f"internal error: {type(exc).__name__}: {exc}")


async def open_channel(
    nursery: trio.Nursery,
    transport: Connector | None,
    address: Address,
    limits: Limits,
    *,
    name: str = "",
    connect_timeout: float = 2.0,
) -> RpcChannel:
    """Connect to ``address`` and run a requesting channel in ``nursery``.

    With ``transport=None`` plain TCP is used (clients outside a node); a node or the
    simulation passes its own Transport, a client with credentials its SecureConnector (only
    ``connect`` is used). Raises OSError when the peer cannot be reached.
    """
    if transport is not None:
        stream: trio.abc.Stream = await transport.connect(address)
    else:
        stream = await connect_tcp(address, connect_timeout)
    channel = RpcChannel(stream, limits, name=name or str(address))
    await nursery.start(channel.run)
    return channel

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
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import outcome
import trio

from p2pindex.config import Limits
from p2pindex.errors import (
    ConnectionLost,
    InvalidRequest,
    P2PIndexError,
    ProtocolError,
    Timeout,
)
from p2pindex.net.base import ImmediateSend, Transport
from p2pindex.net.tcp_stream import MAX_READ, connect_tcp
from p2pindex.types import Address
from p2pindex.wire.codec import FrameDecoder, encode_frame
from p2pindex.wire.errors import reply_for_error
from p2pindex.wire.messages import ErrorReply, Message

log = logging.getLogger(__name__)

RequestHandler = Callable[[Message], Awaitable[Message]]
Respond = Callable[[int, Message], None]
"""``respond(position, reply)``: the reply to the request at ``position`` of a batch."""
BatchHandler = Callable[[list[Message], Respond], Awaitable[None]]
BadInputCounter = Callable[[str], None]
ReplyCallback = Callable[[outcome.Outcome], None]
"""Receives ``outcome.Value(reply)`` or ``outcome.Error(P2PIndexError)`` exactly once."""

_WRITE_HIGH_WATER = 8 * 1024 * 1024
"""Requesters wait while this many bytes are queued, so a slow peer cannot grow memory."""
_SWEEP_INTERVAL = 0.1
"""How late a request whose deadline passed may be failed with Timeout: expiries this close
together are handled in one pass."""


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
    ) -> None:
        self._stream = stream
        self._send_now = stream.send_nowait if isinstance(stream, ImmediateSend) else None
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
        self._closed = False
        self._close_reason = "connection closed"
        self._nursery: trio.Nursery | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the connection until the peer closes it, it breaks, or we are cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._write_loop)
                nursery.start_soon(self._sweep_loop)
                task_status.started()
                await self._read_loop()
                nursery.cancel_scope.cancel()
        finally:
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
        if not self._out and self._send_now is not None and self._send_now(frame):
            return
        self._out.append(frame)
        self._out_bytes += len(frame)
        self._writer_lot.unpark()

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
            data = b"".join(self._out)
            self._out.clear()
            self._out_bytes = 0
            self._space_lot.unpark_all()
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self._shut(f"send failed: {exc}")
                return

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
            try:
                frames = self._decoder.feed(data)
            except ProtocolError as exc:
                self._count_bad(str(exc))
                self._enqueue(encode_frame(reply_for_error(exc), 0))
                await self._flush_before_close()
                self._shut(f"protocol error: {exc}")
                return
            if self._handler is None:
                for decoded in frames:
                    self._deliver_reply(decoded.request_id, decoded.message, decoded.error)
                continue
            batches: dict[BatchHandler, list[tuple[int, Message]]] = {}
            fast = self._fast
            for decoded in frames:
                message = decoded.message
                if message is None:
                    self._count_bad(decoded.error or "invalid message")
                    reply = reply_for_error(InvalidRequest(decoded.error or "invalid message"))
                    self._enqueue(encode_frame(reply, decoded.request_id))
                    continue
                if fast is not None:
                    answer = fast.answer.get(type(message))
                    if answer is not None:
                        self._enqueue(encode_frame(_answer(answer, message), decoded.request_id))
                        continue
                    serve = fast.batch.get(type(message))
                    if serve is not None:
                        batches.setdefault(serve, []).append((decoded.request_id, message))
                        continue
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
        if not self._closed:
            self._enqueue(encode_frame(reply, request_id))

    async def _serve_batch(self, serve: BatchHandler, batch: list[tuple[int, Message]]) -> None:
        unanswered = dict(enumerate(request_id for request_id, _message in batch))

        def respond(position: int, reply: Message) -> None:
            request_id = unanswered.pop(position)
            if not self._closed:
                self._enqueue(encode_frame(reply, request_id))

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
    transport: Transport | None,
    address: Address,
    limits: Limits,
    *,
    name: str = "",
    connect_timeout: float = 2.0,
) -> RpcChannel:
    """Connect to ``address`` and run a requesting channel in ``nursery``.

    With ``transport=None`` plain TCP is used (clients outside a node); a node or the
    simulation passes its own Transport. Raises OSError when the peer cannot be reached.
    """
    if transport is not None:
        stream: trio.abc.Stream = await transport.connect(address)
    else:
        stream = await connect_tcp(address, connect_timeout)
    channel = RpcChannel(stream, limits, name=name or str(address))
    await nursery.start(channel.run)
    return channel

"""Key requests from many HTTP connections, handed to the node together.

A binary-protocol client sends many requests on one connection and the node serves those
that arrive in one read together (one replica round and one commit per batch; see
``net.channel.FastPath``). An HTTP/1.1 client has one request in flight per connection, so
without this every PUT would pay for its own replica messages and its own commit. The
batcher collects the requests that reach the node in one scheduler pass and gives them to
the very batch handlers the binary protocol's client connections use; it adds no waiting
(a lone request is handed over on the next pass) and holds at most one request per open
connection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import trio

from p2pindex.errors import P2PIndexError
from p2pindex.net.channel import BatchHandler
from p2pindex.wire.errors import reply_for_error
from p2pindex.wire.messages import ErrorReply, Message

log = logging.getLogger(__name__)


class _Slot:
    __slots__ = ("done", "reply")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.reply: Message | None = None


class RequestBatcher:
    def __init__(
        self, handlers: Mapping[type[Message], BatchHandler], spawn: Callable[..., None]
    ) -> None:
        self._handlers = handlers
        self._spawn = spawn
        self._pending: dict[int, tuple[BatchHandler, list[tuple[Message, _Slot]]]] = {}

    def serves(self, message: Message) -> bool:
        return type(message) in self._handlers

    async def submit(self, message: Message) -> Message:
        handler = self._handlers[type(message)]
        slot = _Slot()
        group = self._pending.get(id(handler))
        if group is None:
            group = self._pending[id(handler)] = (handler, [])
            self._spawn(self._flush, id(handler))
        group[1].append((message, slot))
        await slot.done.wait()
        assert slot.reply is not None
        return slot.reply

    async def _flush(self, key: int) -> None:
        handler, items = self._pending.pop(key)

        def respond(position: int, reply: Message) -> None:
            slot = items[position][1]
            slot.reply = reply
            slot.done.set()

        try:
            await handler([message for message, _slot in items], respond)
        except P2PIndexError as exc:
            self._answer_rest(items, reply_for_error(exc))
        except Exception:  # a bug must not leave HTTP clients waiting forever
            log.exception("a batch of %d HTTP requests failed", len(items))
            self._answer_rest(items, ErrorReply("error", "internal error; see the node's log"))
        else:
            self._answer_rest(items, ErrorReply("error", "the request was not answered"))

    @staticmethod
    def _answer_rest(items: list[tuple[Message, _Slot]], reply: Message) -> None:
        for _message, slot in items:
            if not slot.done.is_set():
                slot.reply = reply
                slot.done.set()

"""Serving a client's BatchRequest: many puts, gets and deletes in one frame.

Why a batch message at all: the coordinator already serves every request that arrived in
one read as one batch (one local commit, one ReplicaWriteMany per replica), but a request
per frame still costs a frame to encode, decode, admit and answer on both sides. A batch
carries its requests as separately encoded items, so each is validated on its own: a bad
item gets its own clear error while the others are served, and only an envelope that is
wrong as a whole (unknown version, too many items) is refused outright, before anything is
done.

The items of every BatchRequest that arrived in one read go to the coordinator together,
writes in one call and reads in another, through the same (authorised) batch handlers a
connection uses for single requests, so a batch is served exactly as the same requests
sent one by one would be.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from p2pindex.config import Limits
from p2pindex.errors import InvalidRequest, P2PIndexError
from p2pindex.net.channel import BatchHandler, Respond
from p2pindex.types import key_text
from p2pindex.wire.codec import decode_item, encode_item
from p2pindex.wire.errors import reply_for_error
from p2pindex.wire.messages import (
    BATCH_VERSION,
    MAX_BATCH_ITEMS,
    BatchReply,
    BatchRequest,
    DeleteRequest,
    ErrorReply,
    GetReply,
    GetRequest,
    Message,
    PutRequest,
)

if TYPE_CHECKING:
    from p2pindex.node.coordinator import Coordinator

REPLY_SLACK = 4096
"""Room kept in a batch reply's frame for its envelope and per-item headers."""


def open_batch(batch: BatchRequest, limits: Limits) -> list[Message | P2PIndexError]:
    """The requests of ``batch``, each decoded, or the error that refuses it alone.

    Raises InvalidRequest for a batch refused as a whole (nothing is done for any item).
    """
    if batch.version != BATCH_VERSION:
        raise InvalidRequest(
            f"batch version {batch.version} is not supported (this node speaks {BATCH_VERSION})"
        )
    if len(batch.requests) > MAX_BATCH_ITEMS:
        raise InvalidRequest(
            f"a batch of {len(batch.requests)} requests is over the limit of "
            f"{MAX_BATCH_ITEMS}; split it into smaller batches"
        )
    items: list[Message | P2PIndexError] = []
    seen: dict[bytes, list[int]] = {}
    for position, data in enumerate(batch.requests):
        try:
            message = decode_item(data, limits)
        except ValueError as exc:
            items.append(InvalidRequest(f"request {position + 1} of the batch is invalid: {exc}"))
            continue
        if not isinstance(message, PutRequest | GetRequest | DeleteRequest):
            items.append(
                InvalidRequest(
                    f"request {position + 1} of the batch is a {type(message).__name__}; "
                    "a batch carries only puts, gets and deletes"
                )
            )
            continue
        if message.trace or message.forwarded:
            items.append(
                InvalidRequest(
                    f"request {position + 1} of the batch (key {key_text(message.key)}) "
                    "asks for a trace or is marked relayed; send it alone"
                )
            )
            continue
        seen.setdefault(message.key, []).append(position)
        items.append(message)
    for key, positions in seen.items():
        if len(positions) > 1:
            refusal = duplicate_key(key, len(positions))
            for position in positions:
                items[position] = refusal
    return items


def duplicate_key(key: bytes, count: int) -> InvalidRequest:
    return InvalidRequest(
        f"key {key_text(key)} appears {count} times in one batch; a key may appear once "
        "(nothing was done for it): send its requests in separate calls"
    )


@dataclass(slots=True, eq=False)
class _Open:
    """One BatchRequest being answered: its replies so far and how many are missing."""

    position: int
    replies: list[Message | None]
    missing: int


async def serve_batches(
    messages: list[Message],
    respond: Respond,
    *,
    writes: BatchHandler,
    reads: BatchHandler,
    limits: Limits,
    refused: Callable[[str], None] = lambda _reason: None,
) -> None:
    """Serve BatchRequests that arrived together; each is answered with one BatchReply
    once every one of its items is answered (``writes`` and ``reads`` are the handlers a
    connection uses for single requests, authorisation included). ``refused`` counts each
    batch refused whole and each item refused alone, as bad input."""
    write_items: list[tuple[_Open, int, Message]] = []
    read_items: list[tuple[_Open, int, Message]] = []
    for position, batch in enumerate(messages):
        assert isinstance(batch, BatchRequest)
        try:
            items = open_batch(batch, limits)
        except InvalidRequest as exc:
            refused(str(exc))
            respond(position, reply_for_error(exc))
            continue
        state = _Open(position, [None] * len(items), len(items))
        for index, item in enumerate(items):
            if isinstance(item, P2PIndexError):
                refused(str(item))
                state.replies[index] = reply_for_error(item)
                state.missing -= 1
            elif isinstance(item, GetRequest):
                read_items.append((state, index, item))
            else:
                write_items.append((state, index, item))
        if state.missing == 0:
            respond(position, _reply(state, limits))

    def answering(group: list[tuple[_Open, int, Message]]) -> Respond:
        def answer(position: int, reply: Message) -> None:
            state, index, _message = group[position]
            state.replies[index] = reply
            state.missing -= 1
            if state.missing == 0:
                respond(state.position, _reply(state, limits))

        return answer

    jobs: list[tuple[BatchHandler, list[Message], Respond]] = [
        (serve, [message for _s, _i, message in group], answering(group))
        for serve, group in ((writes, write_items), (reads, read_items))
        if group
    ]
    if len(jobs) == 1:
        serve, requests, answer = jobs[0]
        await serve(requests, answer)
    elif jobs:
        async with trio.open_nursery() as nursery:
            for serve, requests, answer in jobs:
                nursery.start_soon(serve, requests, answer)


def _reply(state: _Open, limits: Limits) -> BatchReply:
    """The BatchReply of one batch, within the frame limit: values that do not fit beside
    the others are refused per key (a read is safe to repeat alone); write replies are
    small and always kept, since their writes happened."""
    encoded = [encode_item(_as_message(reply)) for reply in state.replies]
    budget = limits.max_frame - REPLY_SLACK
    total = sum(len(item) + 9 for item in encoded)
    if total > budget:
        largest_first = sorted(
            (i for i, reply in enumerate(state.replies) if isinstance(reply, GetReply)),
            key=lambda i: -len(encoded[i]),
        )
        for index in largest_first:
            if total <= budget:
                break
            refusal = InvalidRequest(
                f"the values of key number {index + 1} of the batch ({len(encoded[index])} "
                "bytes) do not fit in one batch reply with the others; get that key alone"
            )
            smaller = encode_item(reply_for_error(refusal))
            total -= len(encoded[index]) - len(smaller)
            encoded[index] = smaller
    return BatchReply(encoded)


def _as_message(reply: Message | None) -> Message:
    if reply is None:  # cannot happen: a batch is answered once every item is
        return ErrorReply("internal_error", "internal error: request left unanswered")
    return reply


async def serve_one_batch(
    message: BatchRequest,
    coordinator: Coordinator,
    limits: Limits,
    refused: Callable[[str], None],
) -> Message:
    """A batch that came outside a connection's data path (which serves clients' batches
    without a task, authorising each item, as ``fast_path`` says): served the same way.
    Its items are not authorised one by one here, so a secure node's guard must keep
    refusing BatchRequest to clients on this path (it has no client role in
    ``security.access``); insecure nodes and node peers authorise nothing anyway."""
    replies: list[Message] = []
    await serve_batches(
        [message],
        lambda _position, reply: replies.append(reply),
        writes=coordinator.put_batch,
        reads=coordinator.get_batch,
        limits=limits,
        refused=refused,
    )
    (reply,) = replies
    return reply

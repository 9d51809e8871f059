"""The client's sans-IO core: turn call arguments into request messages and replies into results.

Everything here is plain functions without I/O, shared by the async and sync clients, so
argument checking happens once, up front, before anything is sent: a bad argument raises
``InvalidRequest`` (a ``ValueError``; ``InvalidArgumentType``, also a ``TypeError``, for a
wrong type) and nothing reaches the cluster.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from p2pindex.client.results import Context, DeleteResult, GetResult, PutResult, Trace
from p2pindex.config import Limits
from p2pindex.core.terms import check_utf8
from p2pindex.errors import InvalidArgumentType, InvalidRequest, P2PIndexError, ProtocolError
from p2pindex.security.errors import ConnectionRefused, HandshakeFailed
from p2pindex.types import (
    Address,
    Consistency,
    ConsistencyLevel,
    consistency_to_wire,
    key_text,
    parse_consistency,
    required_replies,
)
from p2pindex.wire.errors import error_from_reply
from p2pindex.wire.messages import DeleteReply, ErrorReply, GetReply, Message, PutReply

Data = bytes | bytearray | memoryview | str
ConsistencyArg = ConsistencyLevel | int | str
M = TypeVar("M", bound=Message)
NOTHING_SENT = (OSError, HandshakeFailed, ConnectionRefused)
"""What opening a session to a node raises when nothing was sent (unreachable, a failed
handshake, a refusal at a connection limit): the next node may be tried, for writes too."""


def as_bytes(what: str, data: Data) -> bytes:
    """Accept bytes-like data or text (encoded UTF-8), nothing else."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        try:
            return check_utf8(data, what)
        except ValueError as exc:
            raise InvalidRequest(f"{exc}; pass bytes for a {what} that is not text") from None
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise InvalidArgumentType(f"{what} must be bytes or str, not {type(data).__name__}")


def check_key(key: Data, limits: Limits) -> bytes:
    raw = as_bytes("key", key)
    if not raw:
        raise InvalidRequest("key must not be empty")
    if len(raw) > limits.max_key:
        raise InvalidRequest(
            f"key {key_text(raw)} is {len(raw)} bytes; the cluster's limit is {limits.max_key}"
        )
    return raw


def check_value(value: Data, limits: Limits) -> bytes:
    raw = as_bytes("value", value)
    if len(raw) > limits.max_value:
        raise InvalidRequest(
            f"value is {len(raw)} bytes; the cluster's limit is {limits.max_value}"
        )
    return raw


def check_context(context: Context | bytes | str | None) -> bytes | None:
    """Contexts come from results; text (the CLI form) and raw bytes are accepted too.
    Their content is opaque here: the coordinator checks it (and says so in plain words)."""
    if context is None:
        return None
    if isinstance(context, Context):
        raw = context.data
    elif isinstance(context, bytes):
        raw = context
    elif isinstance(context, str):
        raw = Context.from_str(context).data
    else:
        raise InvalidArgumentType(
            f"context must be a Context from a previous result, not {type(context).__name__}"
        )
    return raw or None


def check_consistency(consistency: ConsistencyArg, n_replicas: int | None) -> Consistency:
    """Normalize a level, a level name or an explicit count; check a count against N if known."""
    if isinstance(consistency, str):
        try:
            level: Consistency = parse_consistency(consistency)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
    elif isinstance(consistency, ConsistencyLevel):
        level = consistency
    elif isinstance(consistency, int) and not isinstance(consistency, bool):
        if consistency < 1:
            raise InvalidRequest(f"consistency {consistency} must be at least 1")
        level = consistency
    else:
        raise InvalidArgumentType(
            f"consistency must be one, quorum, all or a positive integer, not {consistency!r}"
        )
    if n_replicas is not None and isinstance(level, int):
        try:
            required_replies(level, n_replicas)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
    return level


def check_timeout(timeout: float) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise InvalidArgumentType(
            f"timeout must be a number of seconds, not {type(timeout).__name__}"
        )
    if not math.isfinite(timeout) or timeout <= 0:
        raise InvalidRequest(f"timeout must be a positive number of seconds, not {timeout!r}")
    return float(timeout)


_BATCH_SHAPES = {
    "put_many": ("(key, value) items", "put"),
    "get_many": ("keys", "get"),
    "delete_many": ("keys", "delete"),
}
"""What each batch call takes, and the single-key call to use instead of it."""


def check_batch(method: str, items: object) -> None:
    """Refuse what a batch call would iterate into the wrong keys, before anything is sent.

    Text and bytes are iterable, so ``delete_many("ab")`` would delete the keys "a" and "b"
    (and bytes iterate as integers); a mapping iterates its keys and drops its values, so
    ``put_many({"k": b"v"})`` or ``delete_many({"k": context})`` would not do what it says.
    """
    what, single = _BATCH_SHAPES[method]
    if isinstance(items, str | bytes | bytearray | memoryview):
        raise InvalidArgumentType(
            f"{method} takes a list of {what}, not one {type(items).__name__} key; "
            f"use {single}() for one key"
        )
    if isinstance(items, Mapping) and method != "get_many":
        pairs = "(key, value)" if method == "put_many" else "(key, context)"
        raise InvalidArgumentType(
            f"{method} takes a list of {what}, not a {type(items).__name__}; "
            f"pass list(items.items()) to send each entry as a {pairs} pair"
        )
    if not isinstance(items, Iterable):
        raise InvalidArgumentType(
            f"{method} takes a list of {what}, not one {type(items).__name__}; "
            f"use {single}() for one key"
        )


Addresses = str | Address | Sequence[str | Address]
"""One node address (``"host:port"`` or an ``Address``) or several, tried in order."""


def parse_addresses(addresses: Addresses) -> list[Address]:
    """Parse the addresses a client is given, dropping duplicates but keeping their order."""
    items: Sequence[str | Address] = (
        [addresses] if isinstance(addresses, str | Address) else addresses
    )
    parsed: list[Address] = []
    for item in items:
        if isinstance(item, Address):
            address = item
        elif isinstance(item, str):
            try:
                address = Address.parse(item)
            except ValueError as exc:
                raise InvalidRequest(str(exc)) from None
        else:
            raise InvalidArgumentType(
                f"a node address must be 'HOST:PORT' text, not {type(item).__name__}"
            )
        if address.port == 0:
            raise InvalidRequest(f"bad address {str(item)!r}: port 0 cannot be connected to")
        if address not in parsed:
            parsed.append(address)
    if not parsed:
        raise InvalidRequest("no node addresses given: pass at least one HOST:PORT")
    return parsed


def timeout_to_ms(timeout: float) -> int:
    return max(1, round(timeout * 1000))


@dataclass(frozen=True, slots=True)
class CallOptions:
    """Consistency and deadline of one call, already in wire form (computed once per client
    for the defaults, so the common call pays nothing for them)."""

    consistency: str | int
    timeout: float
    timeout_ms: int


def call_options(consistency: Consistency, timeout: float) -> CallOptions:
    return CallOptions(consistency_to_wire(consistency), timeout, timeout_to_ms(timeout))


def expect(reply: Message, kind: type[M]) -> M:
    """Return ``reply`` if it is a ``kind``; raise the mapped error for an ErrorReply (with
    the coordinator's steps as its ``trace`` when the request asked for them)."""
    if isinstance(reply, kind):
        return reply
    if isinstance(reply, ErrorReply):
        error = error_from_reply(reply)
        if reply.trace is not None:
            error.trace = Trace.from_document(reply.trace)
        raise error
    raise ProtocolError(
        f"the node answered with the wrong kind of message (type {reply.TYPE}, "
        f"expected type {kind.TYPE})"
    )


def trace_of(reply: PutReply | GetReply | DeleteReply, asked: bool) -> Trace | None:
    """The reply's trace, which must be there exactly when the request asked for one."""
    if reply.trace is None:
        if asked:
            raise ProtocolError("the node sent no trace although the request asked for one")
        return None
    if not asked:
        raise ProtocolError("the node sent a trace nobody asked for")
    return Trace.from_document(reply.trace)


def put_result(reply: Message, *, traced: bool = False) -> PutResult:
    put = expect(reply, PutReply)
    return PutResult(
        Context(put.context),
        put.warning,
        put.siblings,
        put.read_first,
        put.unseen_may_remain,
        trace_of(put, traced),
    )


def get_result(reply: Message, *, traced: bool = False) -> GetResult:
    got = expect(reply, GetReply)
    return GetResult(list(got.values), Context(got.context), trace_of(got, traced))


def delete_result(reply: Message, *, traced: bool = False) -> DeleteResult:
    deleted = expect(reply, DeleteReply)
    return DeleteResult(
        Context(deleted.context),
        deleted.read_first,
        deleted.unseen_may_remain,
        trace_of(deleted, traced),
    )


def describe_error(error: P2PIndexError | OSError) -> str:
    """One short phrase for an error, used when listing why each node failed.

    trio reports a failed connect as a generic OSError caused by a group of the real
    socket errors; the first real reason ("connection refused") says more.
    """
    if isinstance(error, OSError):
        cause: BaseException | None = error
        if not error.errno:
            cause = error.__cause__
            while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
                cause = cause.exceptions[0]
        if isinstance(cause, OSError) and cause.errno:
            reason = os.strerror(cause.errno) if cause.errno > 0 else cause.strerror
            return str(reason).lower()
    return str(error) or type(error).__name__


def client_deadline_margin(timeout: float) -> float:
    """Extra time the client waits beyond the server-side timeout.

    The node answers ``timeout`` on its own at ``timeout_ms``; the margin lets that answer
    (which says how many replicas replied) arrive before the client gives up by itself. It
    is at most half the timeout, so a short call stays short: a flat quarter second made a
    0.1 s call wait up to 0.36 s for a node that never answered.
    """
    return min(0.25, timeout / 2) + 0.05 * timeout

"""Each failed key of a batch call gets an error of its own that names it.

A frame refused or lost as a whole used to hand one exception object to all of its keys,
with a message that named none of them: a caller could not tell which key failed, and
raising one key's error wrote its traceback onto every other key's. Against fake nodes on
loopback: the copies keep the class, the definiteness and every attribute of the shared
error; errors the node or the client already wrote for one key are named once, not twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
import trio
from test_client_fakes import Behaviour, FakeCluster, FakeNode, default_behaviour

import p2pindex
from p2pindex.client import BatchResult, KeyOutcome
from p2pindex.client.batch_send import error_for_key
from p2pindex.config import Limits
from p2pindex.errors import (
    DefiniteError,
    InvalidRequest,
    Overloaded,
    P2PIndexError,
    RecordLimitExceeded,
    SiblingLimitExceeded,
    Timeout,
    Unavailable,
)
from p2pindex.types import key_text
from p2pindex.wire.codec import decode_item, encode_item
from p2pindex.wire.messages import BatchReply, BatchRequest, ErrorReply, Message, PutReply

KEYS = [f"key-{i}" for i in range(12)]


def refusing_frames(reply: ErrorReply) -> Behaviour:
    """Every node answers a whole batch frame with ``reply``."""

    async def behaviour(node: FakeNode, message: Message) -> Message:
        if isinstance(message, BatchRequest):
            return reply
        return await default_behaviour(node, message)

    return behaviour


def answering_items(replies: dict[bytes, Message]) -> Behaviour:
    """Every node answers each item of a batch frame with the reply given for its key."""

    async def behaviour(node: FakeNode, message: Message) -> Message:
        if not isinstance(message, BatchRequest):
            return await default_behaviour(node, message)
        keys = [getattr(decode_item(item, Limits()), "key", b"") for item in message.requests]
        return BatchReply([encode_item(replies[key]) for key in keys])

    return behaviour


async def put_many_through(
    nursery: trio.Nursery, behaviour: Behaviour, items: Sequence[tuple[Any, ...]]
) -> BatchResult[Any]:
    cluster = await FakeCluster(3).start(nursery)
    for node in cluster.nodes:
        node.behaviour = behaviour
    async with p2pindex.connect(cluster.addresses, timeout=2.0) as db:
        return await db.put_many(items)


def assert_own(outcome: KeyOutcome[Any], kind: type[P2PIndexError]) -> P2PIndexError:
    """``outcome`` failed with a ``kind`` naming its key exactly once; ``unwrap`` raises it."""
    error = outcome.error
    assert type(error) is kind, repr(error)
    assert str(error).count(key_text(outcome.key)) == 1, str(error)
    with pytest.raises(kind) as raised:
        outcome.unwrap()
    assert raised.value is error
    return error


WHOLE_FRAME_REFUSALS: list[
    tuple[ErrorReply, type[P2PIndexError], Callable[[Exception], object]]
] = [
    (
        ErrorReply("unavailable", "3 replicas required but only 1 reachable: cut off", 3, 1),
        Unavailable,
        lambda e: (e.required, e.alive),  # type: ignore[attr-defined]
    ),
    (
        ErrorReply("timeout", "timed out with 1 of 2 required replies", 2, 1),
        Timeout,
        lambda e: (e.required, e.acknowledged),  # type: ignore[attr-defined]
    ),
    (ErrorReply("overloaded", "too many requests in flight"), Overloaded, lambda e: None),
    (
        ErrorReply("invalid_request", "batch version 9 is not supported"),
        InvalidRequest,
        lambda e: isinstance(e, ValueError),
    ),
]


@pytest.mark.parametrize(
    ("reply", "kind", "fields"),
    WHOLE_FRAME_REFUSALS,
    ids=[reply.code for reply, _kind, _fields in WHOLE_FRAME_REFUSALS],
)
async def test_a_frame_refused_whole_gives_each_key_its_own_error_naming_it(
    nursery: trio.Nursery,
    reply: ErrorReply,
    kind: type[P2PIndexError],
    fields: Callable[[Exception], object],
) -> None:
    written = await put_many_through(nursery, refusing_frames(reply), [(key, "v") for key in KEYS])
    assert len(written.failed) == len(KEYS)
    assert len({id(outcome.error) for outcome in written}) == len(KEYS)
    causes = set()
    for outcome in written:
        error = assert_own(outcome, kind)
        assert str(error) == f"key {key_text(outcome.key)}: {reply.message}"
        assert outcome.definite == issubclass(kind, DefiniteError)
        cause = error.__cause__
        assert type(cause) is kind and str(cause) == reply.message
        assert fields(error) == fields(cause)
        causes.add(id(cause))
    assert len(causes) < len(KEYS), "no two keys shared an error: the test proves nothing"


async def test_errors_the_node_wrote_for_one_key_name_it_once(nursery: trio.Nursery) -> None:
    """A node's refusal of one item that already names its key is kept as it came; one
    that does not is named; the others' outcomes are untouched."""
    named = "put of key 'a': index 'tag': a term must be text, bytes or an integer"
    replies: dict[bytes, Message] = {
        b"a": ErrorReply("invalid_request", named),
        b"b": ErrorReply("too_many_siblings", "key would have 9 siblings (limit 8)"),
        b"c": ErrorReply("record_too_large", "the key's record would grow to 9000 bytes"),
        b"d": PutReply(b"ctx"),
    }
    written = await put_many_through(
        nursery, answering_items(replies), [(key, "v") for key in "abcd"]
    )
    a, b, c, d = written.outcomes
    assert str(assert_own(a, InvalidRequest)) == named
    assert a.error is not None and a.error.__cause__ is None
    assert str(assert_own(b, SiblingLimitExceeded)) == (
        "key 'b': key would have 9 siblings (limit 8)"
    )
    assert str(assert_own(c, RecordLimitExceeded)) == (
        "key 'c': the key's record would grow to 9000 bytes"
    )
    assert all(o.definite for o in written)
    assert d.ok and d.unwrap() is not None


async def test_refusals_before_sending_name_their_key(nursery: trio.Nursery) -> None:
    """A value over the limit and an unreadable context, refused by the client itself."""
    big = b"x" * (Limits().max_value + 1)
    behaviour = answering_items({b"ok": PutReply(b"ctx")})
    items = [("big", big), ("ctx", "v", "not base64!"), ("ok", "v")]
    written = await put_many_through(nursery, behaviour, items)
    big_error = assert_own(written[0], InvalidRequest)
    assert str(big_error).startswith("key 'big': value is ")
    assert str(assert_own(written[1], InvalidRequest)).startswith("key 'ctx': bad context")
    assert written[2].ok


def test_a_copy_keeps_the_class_every_attribute_and_its_notes_apart() -> None:
    shared = Unavailable(3, 1, "cut off")
    shared.trace = "the coordinator's steps"
    shared.add_note("seen by node a")
    first, second = (error_for_key(key, shared) for key in (b"k1", b"k2"))
    assert first is not second and shared not in (first, second)
    for key, own in ((b"k1", first), (b"k2", second)):
        assert type(own) is Unavailable and isinstance(own, DefiniteError)
        assert (own.required, own.alive, own.trace) == (3, 1, "the coordinator's steps")
        assert str(own) == f"key {key_text(key)}: 3 replicas required but only 1 reachable: cut off"
        assert own.__cause__ is shared and own.__traceback__ is None
    first.add_note("only about k1")
    assert second.__notes__ == shared.__notes__ == ["seen by node a"]


def test_an_error_naming_its_key_is_copied_only_when_shared() -> None:
    mine = Timeout("no reply for key 'k' within 1s", required=2, acknowledged=1)
    assert error_for_key(b"k", mine) is mine
    again = error_for_key(b"k", mine, shared=True)
    assert again is not mine and str(again) == str(mine)
    assert (again.required, again.acknowledged) == (2, 1)  # type: ignore[attr-defined]
    binary = InvalidRequest("put of key ff00: bad term")
    assert error_for_key(b"\xff\x00", binary) is binary
    assert str(error_for_key(b"\xff\x00", InvalidRequest("bad"))) == "key 0xff00: bad"
    long_key = b"k" * 200
    shortened = str(error_for_key(long_key, InvalidRequest("bad")))
    assert shortened == f"key '{'k' * 64}...': bad"

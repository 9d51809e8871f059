"""Writes that supersede what the cluster holds now: a delete without a context, and a put
asked to ``overwrite``.

A write without a context is concurrent with every version of the key, so it becomes a
sibling of them: a delete then hides nothing (``get`` still returns the old value) and a put
quietly adds a second value. What people mean by "delete k" or "replace k" is to supersede
what is there, so the coordinator first reads the key at the request's own consistency and
writes with the context of what it read (Riak does the same for a delete without a vclock).

Whatever the read could not see can survive: a replica that did not answer the read may hold
a version this write is concurrent with. The answer says so (``unseen_may_remain``) whenever
fewer replicas answered than hold the key, and for a sloppy read through a fallback, which
stands in for a primary whose copy it never had. A write racing the read can survive too,
as with any read-modify-write; that is what contexts and siblings are for.

Kept apart from the coordinator so its one rule is read in one place: the coordinator only
asks ``needs_read_first`` and hands such requests here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import TypeVar

from p2pindex.core.placement import Target
from p2pindex.errors import IndeterminateError, P2PIndexError, Unavailable
from p2pindex.wire.errors import error_from_reply, reply_for_error
from p2pindex.wire.messages import (
    DeleteReply,
    DeleteRequest,
    ErrorReply,
    GetReply,
    GetRequest,
    Message,
    PutReply,
    PutRequest,
)

_Request = TypeVar("_Request", bound=Message)
Serve = Callable[[_Request], Awaitable[Message]]
"""The coordinator's entry point for one kind of request (``Serve[GetRequest]``)."""


def _nothing_written(error: P2PIndexError) -> Unavailable:
    """A read that failed as a read fails (a timeout, too few answers) said nothing about
    a write, and this one was never sent: the failure is definite."""
    required = getattr(error, "required", 0)
    answered = getattr(error, "acknowledged", 0)
    return Unavailable(
        required, answered, f"the read this write begins with failed ({error}); nothing was written"
    )


def needs_read_first(request: PutRequest | DeleteRequest) -> bool:
    """A delete without a context, or a put asked to overwrite what the cluster holds."""
    if isinstance(request, DeleteRequest):
        return request.context is None
    return request.overwrite


def may_leave_unseen(required: int, targets: list[Target], holders: int) -> bool:
    """Whether a read answered after ``required`` replies of ``targets`` may have missed a
    version: fewer answers than the ``holders`` of the key (min(N, members)), or a fallback
    answering for a primary."""
    return required < holders or len(targets) < holders or any(t.hint_for for t in targets)


async def read_then_write(
    request: PutRequest | DeleteRequest,
    get: Serve[GetRequest],
    write: Serve[PutRequest | DeleteRequest],
    unseen: bool,
) -> Message:
    """Read ``request.key`` at the request's consistency, then write with the context read.

    A failed read raises before anything is written (the error is definite). ``unseen`` is
    what ``may_leave_unseen`` said for this key and level.
    """
    # Not marked forwarded even when the write was: a coordinator that is no read target
    # (a SYNCING node) relays the read once, and the node it reaches serves it.
    try:
        read = await get(
            GetRequest(request.key, request.consistency, request.timeout_ms, request.strict)
        )
    except IndeterminateError as exc:
        raise _nothing_written(exc) from None
    if isinstance(read, ErrorReply):  # from a relayed read: nothing was written
        error = error_from_reply(read)
        indeterminate = isinstance(error, IndeterminateError)
        return reply_for_error(_nothing_written(error)) if indeterminate else read
    if not isinstance(read, GetReply):
        return read
    if isinstance(request, DeleteRequest):
        reply = await write(dataclasses.replace(request, context=read.context))
        if isinstance(reply, DeleteReply):
            return dataclasses.replace(reply, read_first=True, unseen_may_remain=unseen)
        return reply
    reply = await write(dataclasses.replace(request, context=read.context, overwrite=False))
    if isinstance(reply, PutReply):
        return dataclasses.replace(reply, read_first=True, unseen_may_remain=unseen)
    return reply

"""What the coordinator keeps for a request while it is in flight: the request's round, the
bytes it moves, its trace, and how its batch is answered.

Kept apart from the coordinator's pipeline (``coordinator.py``) so the per-request record
reads in one place and the pipeline file holds only what moves bytes and time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from p2pindex.core.digest_read import ReadPlan
from p2pindex.core.placement import Target
from p2pindex.core.quorum import Round
from p2pindex.core.terms import IndexTerms
from p2pindex.core.versions import VersionedObject, VersionVector
from p2pindex.errors import P2PIndexError
from p2pindex.net.channel import Respond
from p2pindex.node.trace import RequestTrace
from p2pindex.wire.errors import reply_for_error
from p2pindex.wire.messages import DeleteRequest, GetRequest, Message, PutRequest

NO_CONTEXT = VersionVector()
"""The context of a write that named none."""

Answer = Callable[[int, "Message | P2PIndexError"], None]
"""Answers the request at a position of its batch: its reply, or the error it failed with."""
ClientRequest = PutRequest | DeleteRequest | GetRequest


class Answers:
    """The answers of one batch: passes each on, and wakes the batch's task at the last."""

    __slots__ = ("_answer", "_done", "_open")

    def __init__(self, size: int, answer: Answer) -> None:
        self._open = size
        self._answer = answer
        self._done = trio.Event()

    def give(self, position: int, reply: Message | P2PIndexError) -> None:
        self._answer(position, reply)
        self._open -= 1
        if self._open == 0:
            self._done.set()

    async def wait(self) -> None:
        await self._done.wait()


@dataclass(slots=True, eq=False)
class InFlight:
    """One coordinated request of a batch: what moves it (targets, bytes, its trace); when
    to answer it is its ``round``."""

    position: int
    request: ClientRequest
    targets: list[Target]
    round: Round[Any]  # a WriteQuorum's for a write, a ReadQuorum's for a read
    timeout: float
    trace: RequestTrace | None
    context: VersionVector = NO_CONTEXT
    terms: IndexTerms = ()
    obj: VersionedObject | None = None
    record: bytes = b""
    answers: Answers | None = None
    plan: ReadPlan | None = None
    """A read's: who is asked for the value, who for a digest, who is a spare."""
    value: tuple[bytes, VersionedObject] | None = None
    """A read's value as this node holds it (record bytes, decoded), None for no copy."""
    digest: bytes | None = None
    """The digest of ``value``'s record, which the other replicas' digests are checked against."""
    spares: tuple[str, ...] = ()
    """A read's replicas not asked yet, to fall back to in this order."""


def replying(respond: Respond) -> Answer:
    """An ``Answer`` that sends failures as the error replies the protocol carries."""

    def answer(position: int, reply: Message | P2PIndexError) -> None:
        respond(position, reply_for_error(reply) if isinstance(reply, P2PIndexError) else reply)

    return answer


def value_of(request: ClientRequest) -> bytes | None:
    return request.value if isinstance(request, PutRequest) else None


def record_size(write: InFlight) -> int:
    return len(write.record) + len(write.request.key)

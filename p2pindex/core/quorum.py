"""Quorum bookkeeping for one coordinated request, as plain records (like riak_kv's
get_core/put_core): the coordinator feeds in answers as they arrive and reads the outcome.

Keeping the counting out of the I/O code makes the rules testable on their own: an answer
counts once, only from a node that was asked, and the outcome is decided the moment success
is reached or becomes impossible, never changing afterwards.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from p2pindex.core.versions import VersionedObject, merge


class Outcome(enum.Enum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class _Quorum:
    __slots__ = ("_answered", "_failed", "_outcome", "_required", "_successes", "_targets")

    def __init__(self, targets: Sequence[str], required: int) -> None:
        ordered = tuple(targets)
        for target in ordered:
            if not isinstance(target, str) or not target:
                raise ValueError(f"target {target!r} is not a node id")
        if len(set(ordered)) != len(ordered):
            raise ValueError(f"targets {list(ordered)} name a node twice")
        if isinstance(required, bool) or not isinstance(required, int):
            raise TypeError(f"required must be an int, not {type(required).__name__}")
        if not 1 <= required <= len(ordered):
            raise ValueError(f"required {required} is outside 1..{len(ordered)} (the targets)")
        self._targets = ordered
        self._required = required
        self._answered: set[str] = set()
        self._successes = 0
        self._failed = 0
        self._outcome = Outcome.PENDING

    @property
    def targets(self) -> tuple[str, ...]:
        return self._targets

    @property
    def required(self) -> int:
        return self._required

    @property
    def outcome(self) -> Outcome:
        return self._outcome

    @property
    def pending(self) -> tuple[str, ...]:
        """Targets that have not answered yet, in target order."""
        return tuple(target for target in self._targets if target not in self._answered)

    def _accept(self, node: str) -> bool:
        """Whether this is the first answer from a target; records it if so."""
        if node in self._answered or node not in self._targets:
            return False
        self._answered.add(node)
        return True

    def _succeeded(self) -> None:
        self._successes += 1
        if self._outcome is Outcome.PENDING and self._successes >= self._required:
            self._outcome = Outcome.SUCCEEDED

    def record_failure(self, node: str) -> None:
        """``node`` refused, errored or timed out; ignored if it already answered."""
        if not self._accept(node):
            return
        self._failed += 1
        if self._outcome is Outcome.PENDING and len(self._targets) - self._failed < self._required:
            self._outcome = Outcome.FAILED


class WriteQuorum(_Quorum):
    """Counts write acknowledgements until ``required`` distinct targets have stored it."""

    __slots__ = ()

    @property
    def acks(self) -> int:
        return self._successes

    def record_ack(self, node: str) -> None:
        """``node`` committed the write; ignored if it already answered or was not asked."""
        if self._accept(node):
            self._succeeded()


class ReadQuorum(_Quorum):
    """Collects replica copies, merging them as they arrive, until ``required`` replied.

    Replies that arrive after the outcome is decided are still merged, so the coordinator can
    wait a little longer and repair every stale replica.
    """

    __slots__ = ("_merged", "_replies")

    def __init__(self, targets: Sequence[str], required: int) -> None:
        super().__init__(targets, required)
        self._replies: dict[str, VersionedObject | None] = {}
        self._merged: VersionedObject | None = None

    @property
    def replies(self) -> int:
        return self._successes

    @property
    def merged(self) -> VersionedObject | None:
        """The merge of every copy received so far; None if no replica had one."""
        return self._merged

    def record_reply(self, node: str, obj: VersionedObject | None) -> None:
        """``node``'s copy of the key, or None if it has none."""
        if obj is not None and not isinstance(obj, VersionedObject):
            raise TypeError(f"reply must be a VersionedObject or None, not {type(obj).__name__}")
        if not self._accept(node):
            return
        self._replies[node] = obj
        if obj is not None:
            self._merged = obj if self._merged is None else merge(self._merged, obj)
        self._succeeded()

    def stale_replicas(self) -> list[str]:
        """Repliers whose copy differs from the merged one (read-repair targets), in target
        order; a replica with no copy is stale once any replica had one."""
        merged = self._merged
        replies = self._replies
        return [
            target for target in self._targets if target in replies and replies[target] != merged
        ]


Q = TypeVar("Q", WriteQuorum, ReadQuorum)


class Round(Generic[Q]):
    """One coordinated request from its replica messages to its caller's answer, as a plain
    record (riak_kv's put_core state): the quorum, how many replicas asked are still to
    answer, the deadline, and whether the caller has been answered.

    The coordinator moves the bytes and reads the clock; this record only says when to
    answer: once the quorum is decided or every replica asked has answered (``ready``), or
    once the deadline passed (``expired``, with ``now`` passed in), and only once.
    """

    __slots__ = ("answered", "deadline", "quorum", "remaining")

    def __init__(self, quorum: Q, asked: int, deadline: float) -> None:
        if not 0 <= asked < len(quorum.targets):
            raise ValueError(f"asked {asked} is outside 0..{len(quorum.targets) - 1}")
        self.quorum: Q = quorum
        self.remaining = asked
        """Replicas asked that have not answered (an answer or a failure) yet."""
        self.deadline = deadline
        self.answered = False

    def heard(self) -> bool:
        """One replica asked has answered (recorded in ``quorum`` by the caller); whether
        the caller is to be answered now (``ready``)."""
        if self.remaining <= 0:
            raise ValueError("more answers than replicas asked")
        self.remaining -= 1
        return not self.answered and (
            self.quorum.outcome is not Outcome.PENDING or self.remaining == 0
        )

    def ask(self) -> None:
        """One more replica is asked (a read's spare, after the replica asked failed)."""
        if self.remaining + 1 >= len(self.quorum.targets):
            raise ValueError("more replicas asked than the targets besides the coordinator")
        self.remaining += 1

    @property
    def all_heard(self) -> bool:
        """Every replica asked has answered: a read may repair the stale ones now."""
        return self.remaining == 0

    def ready(self) -> bool:
        """Whether the caller is to be answered now, before the deadline."""
        return not self.answered and (
            self.quorum.outcome is not Outcome.PENDING or self.remaining == 0
        )

    def expired(self, now: float) -> bool:
        """Whether the caller, not answered yet, is to be answered because time ran out."""
        return not self.answered and now >= self.deadline

    def answer(self) -> bool:
        """Mark the caller answered; True only the first time (a caller is answered once)."""
        if self.answered:
            return False
        self.answered = True
        return True


def next_deadline(rounds: Sequence[Round[Any]]) -> float | None:
    """The earliest deadline of the rounds not answered yet; None once all are answered."""
    return min((r.deadline for r in rounds if not r.answered), default=None)

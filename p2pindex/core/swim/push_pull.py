"""The push-pull half of the SWIM engine: full-state exchanges over a stream, as memberlist
does on join and periodically, so a node that missed gossip converges in one round trip.

A mixin of ``Swim`` (it shares the engine's table, statistics and rng): kept apart because
it is a job of its own (digest, differing buckets, a second push phase, join retries) and
the engine's file stays readable.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

from p2pindex.types import Address, Liveness

from .codec import DecodeError, decode_push_pull, encode_push_pull, encode_record
from .config import SwimConfig
from .messages import PushPullDone, PushPullPush, PushPullReply, PushPullRequest, Record
from .state import MemberTable

if TYPE_CHECKING:
    from collections import Counter


class Exchange:
    """A push-pull this node started as the client."""

    __slots__ = ("join", "phase")

    def __init__(self, join: bool) -> None:
        self.join = join
        self.phase = 1


class PushPullSide:
    """The engine's state this half reads and writes; ``_verified`` and ``_merge`` (the
    membership rules) come from ``Swim``."""

    node_id: str
    _cfg: SwimConfig
    _table: MemberTable
    _rng: random.Random
    _stats: Counter[str]
    _exchanges: dict[Address, Exchange]
    _pp_out: list[tuple[Address, bool]]
    _seeds: tuple[Address, ...]
    _joined: bool
    _join_backoff: float
    _join_retry_at: float | None
    _next_push_pull: float | None

    if TYPE_CHECKING:  # Swim's membership rules; declared only for the type checker

        def _verified(self, record: Record) -> bool: ...

        def _merge(self, record: Record, now: float, stream: bool = False) -> None: ...

    def _start_exchange(self, address: Address, join: bool) -> bool:
        if address in self._exchanges or len(self._exchanges) >= self._cfg.max_push_pulls:
            return False
        self._exchanges[address] = Exchange(join)
        self._pp_out.append((address, join))
        self._stats["push_pulls_started"] += 1
        return True

    def _periodic_push_pull(self, now: float) -> None:
        period = self._cfg.push_pull_period(self._table.estimate())
        self._next_push_pull = now + period
        peers = self._table.sample_live(self._rng, 1, set())
        if peers:
            self._start_exchange(self._table.entries[peers[0]].member.address, False)

    def _join_attempt(self, now: float) -> None:
        self._stats["join_attempts"] += 1
        started = [self._start_exchange(seed, True) for seed in self._seeds]
        if not any(started) and not any(e.join for e in self._exchanges.values()):
            self._schedule_join_retry(now)

    def _schedule_join_retry(self, now: float) -> None:
        delay = self._join_backoff * self._rng.uniform(0.8, 1.2)
        self._join_retry_at = now + delay
        self._join_backoff = min(self._join_backoff * 2, self._cfg.join_retry_max)

    def push_pull_request(self, join: bool) -> bytes:
        """The first payload of an exchange: our digest (or full table) and our own record."""
        table = self._table
        if self._cfg.push_pull_digest:
            request = PushPullRequest(self.node_id, join, table.digest_bytes(), ())
            return encode_push_pull(request, table.entries[self.node_id].encoded)
        request = PushPullRequest(self.node_id, join, None, ())
        return encode_push_pull(request, table.encoded_in(None))

    def push_pull_respond(self, payload: bytes, source: Address, now: float) -> bytes:
        """Serve one step of a peer's exchange; raises DecodeError (a ProtocolError) for bad
        input, having changed nothing."""
        try:
            message = decode_push_pull(
                payload, self._cfg.max_push_pull_bytes, 2 * self._cfg.max_members + 2
            )
            if isinstance(message, PushPullRequest | PushPullPush):
                if message.sender == self.node_id:
                    raise DecodeError("self_sender", "push-pull from our own id")
            else:
                raise DecodeError("malformed", "not a push-pull request")
        except DecodeError as exc:
            self._stats["bad_push_pull_" + exc.reason] += 1
            raise
        self._stats["push_pulls_served"] += 1
        self._stats["push_pull_bytes_in"] += len(payload)
        self._merge_stream(message.records, now)
        if isinstance(message, PushPullPush):
            reply = encode_push_pull(PushPullDone())
        elif message.buckets is None:
            reply = encode_push_pull(PushPullReply(None, ()), self._table.encoded_in(None))
        else:
            differing = self._table.differing(message.buckets)
            parts = self._table.encoded_in(differing)
            reply = encode_push_pull(PushPullReply(tuple(differing), ()), parts)
        self._stats["push_pull_bytes_out"] += len(reply)
        return reply

    def push_pull_complete(self, address: Address, reply: bytes | None, now: float) -> bytes | None:
        """Client side: merge the peer's reply; a follow-up payload when the peer needs
        records from us (send it with the same exchange and complete again with its reply)."""
        exchange = self._exchanges.get(address)
        if exchange is None:
            self._stats["bad_push_pull_unexpected"] += 1
            return None
        message = None
        if reply is not None:
            self._stats["push_pull_bytes_in"] += len(reply)
            try:
                message = decode_push_pull(
                    reply, self._cfg.max_push_pull_bytes, 2 * self._cfg.max_members + 2
                )
            except DecodeError as exc:
                self._stats["bad_push_pull_" + exc.reason] += 1
        if exchange.phase == 1 and isinstance(message, PushPullReply):
            self._merge_stream(message.records, now)
            self._exchange_succeeded(exchange)
            if message.differing:
                theirs = {encode_record(r) for r in message.records}
                mine = self._table.encoded_in(list(message.differing))
                push = [part for part in mine if part not in theirs]
                if push:
                    exchange.phase = 2
                    payload = encode_push_pull(PushPullPush(self.node_id, ()), push)
                    self._stats["push_pull_bytes_out"] += len(payload)
                    return payload
            del self._exchanges[address]
            return None
        del self._exchanges[address]
        if exchange.phase == 2 and isinstance(message, PushPullDone):
            return None
        self._stats["push_pulls_failed"] += 1
        pending_join = any(e.join for e in self._exchanges.values())
        if exchange.join and not self._joined and not pending_join:
            self._schedule_join_retry(now)
        return None

    def _exchange_succeeded(self, exchange: Exchange) -> None:
        self._stats["push_pulls_completed"] += 1
        if exchange.join and not self._joined:
            self._joined = True
            self._join_retry_at = None

    def _merge_stream(self, records: Sequence[Record], now: float) -> None:
        """Merge a peer's table: per member its alive record, then any suspect/dead record.
        Tombstones of members we never knew are not imported (memberlist): importing them
        would let expired tombstones bounce between tables forever."""
        grouped: dict[str, list[Record]] = {}
        for record in records:
            if self._verified(record):
                grouped.setdefault(record.node_id, []).append(record)
        for node_id, group in grouped.items():
            unknown = node_id != self.node_id and node_id not in self._table.entries
            if unknown and any(r.liveness in (Liveness.DEAD, Liveness.LEFT) for r in group):
                self._stats["ignored_tombstones"] += 1
                continue
            for record in group:
                self._merge(record, now, stream=True)

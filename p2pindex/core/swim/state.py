"""The member table: records, the indices the protocol samples from, and bucket digests.

Digests are kept incrementally (XOR of 64-bit record hashes per bucket), so push-pull can
compare two tables by exchanging a few hundred bytes instead of the whole table. Only live
members (alive, suspect) enter the digests: tombstones travel by gossip and are sent in
push-pull only alongside a bucket that differs anyway.
"""

from __future__ import annotations

import functools
import hashlib
import random
from dataclasses import dataclass

from p2pindex.types import Address, Liveness, NodeState

from .codec import encode_record
from .messages import RANK, STATE_CODES, Alive, Dead, Suspect

ALIVE = Liveness.ALIVE
DEAD = Liveness.DEAD
LIVE = (Liveness.ALIVE, Liveness.SUSPECT)


@dataclass(frozen=True, slots=True)
class Member:
    node_id: str
    address: Address
    incarnation: int
    liveness: Liveness
    state: NodeState
    tokens_of: str | None = None
    """The id the member's ring tokens come from, when not its own (``Alive.tokens_of``)."""

    @property
    def running(self) -> bool:
        """Alive or suspected: as far as anyone knows, the process is up."""
        return self.liveness in LIVE


@dataclass(frozen=True, slots=True)
class MemberChanged:
    member: Member
    previous: Member | None
    accuser: str | None = None
    """Who suspected or declared the member dead (the member itself when it left, None
    while it is alive). It travels with the change, so whoever applies the change knows
    who made the claim it applied, not whoever the table names by the time it asks."""


class Entry:
    """Everything known about one member; ``status`` is None while it is alive."""

    __slots__ = ("alive", "bucket", "changed_at", "encoded", "hash", "member", "status")

    def __init__(self, bucket: int) -> None:
        self.bucket = bucket
        self.hash = 0
        self.changed_at = 0.0
        self.encoded: tuple[bytes, ...] = ()
        self.member: Member
        self.alive: Alive
        self.status: Suspect | Dead | None = None


def _record_hash(member: Member) -> int:
    address = member.address
    return _hash_fields(
        member.node_id,
        member.incarnation,
        RANK[member.liveness],
        address.host,
        address.port,
        STATE_CODES[member.state],
        member.tokens_of,
    )


@functools.lru_cache(maxsize=1 << 15)
def _hash_fields(
    node_id: str,
    incarnation: int,
    rank: int,
    host: str,
    port: int,
    state: int,
    tokens_of: str | None,
) -> int:
    """Cached: every table in a simulated cluster hashes the same records."""
    text = f"{node_id}|{incarnation}|{rank}|{host}|{port}|{state}"
    if tokens_of is not None:
        text += f"|{tokens_of}"
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


@functools.lru_cache(maxsize=1 << 16)
def bucket_of(node_id: str, buckets: int) -> int:
    digest = hashlib.blake2b(node_id.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") % buckets


class _IndexedList:
    """A list with O(1) add, remove and uniform random choice."""

    __slots__ = ("items", "pos")

    def __init__(self) -> None:
        self.items: list[str] = []
        self.pos: dict[str, int] = {}

    def add(self, key: str) -> None:
        if key not in self.pos:
            self.pos[key] = len(self.items)
            self.items.append(key)

    def remove(self, key: str) -> None:
        index = self.pos.pop(key, None)
        if index is None:
            return
        last = self.items.pop()
        if index < len(self.items):
            self.items[index] = last
            self.pos[last] = index

    def __len__(self) -> int:
        return len(self.items)


class MemberTable:
    def __init__(self, self_id: str, buckets: int) -> None:
        self.self_id = self_id
        self.buckets = buckets
        self.digests = [0] * buckets
        self.entries: dict[str, Entry] = {}
        self.live = _IndexedList()
        """Alive and suspect members other than self: probe, gossip and relay candidates."""
        self.dead = _IndexedList()
        """Dead (not left) members other than self: re-probed so partitions heal."""
        self._by_bucket: list[dict[str, None]] = [{} for _ in range(buckets)]
        """Dicts, not sets: their order is the same in every run (sets follow hash seeds)."""

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, node_id: str) -> Entry | None:
        return self.entries.get(node_id)

    def estimate(self) -> int:
        """Members believed to be running, self included (N in the scaling formulas)."""
        return len(self.live) + 1

    def put(
        self,
        node_id: str,
        alive: Alive,
        status: Suspect | Dead | None,
        now: float,
    ) -> MemberChanged | None:
        """Store the new records of ``node_id``; the change, or None when nothing changed."""
        entry = self.entries.get(node_id)
        previous = None
        if entry is None:
            entry = Entry(bucket_of(node_id, self.buckets))
            self.entries[node_id] = entry
            self._by_bucket[entry.bucket][node_id] = None
        else:
            previous = entry.member
        liveness = ALIVE if status is None else status.liveness
        incarnation = alive.incarnation if status is None else status.incarnation
        member = Member(node_id, alive.address, incarnation, liveness, alive.state, alive.tokens_of)
        if member == previous:
            entry.alive, entry.status = alive, status
            return None
        if previous is None or previous.liveness != liveness:
            entry.changed_at = now
        if entry.hash:
            self.digests[entry.bucket] ^= entry.hash
        entry.hash = _record_hash(member) if liveness in LIVE else 0
        self.digests[entry.bucket] ^= entry.hash
        entry.member, entry.alive, entry.status = member, alive, status
        parts = [encode_record(alive)]
        if status is not None:
            parts.append(encode_record(status))
        entry.encoded = tuple(parts)
        if node_id != self.self_id:
            if liveness in LIVE:
                self.live.add(node_id)
                self.dead.remove(node_id)
            else:
                self.live.remove(node_id)
                if liveness is DEAD:
                    self.dead.add(node_id)
                else:
                    self.dead.remove(node_id)
        return MemberChanged(member, previous, None if status is None else status.accuser)

    def remove(self, node_id: str) -> None:
        entry = self.entries.pop(node_id, None)
        if entry is None:
            return
        self.digests[entry.bucket] ^= entry.hash
        self._by_bucket[entry.bucket].pop(node_id, None)
        self.live.remove(node_id)
        self.dead.remove(node_id)

    def digest_bytes(self) -> bytes:
        return b"".join(d.to_bytes(8, "big") for d in self.digests)

    def differing(self, remote: bytes) -> list[int]:
        if len(remote) != 8 * self.buckets:
            return list(range(self.buckets))
        return [
            i
            for i, local in enumerate(self.digests)
            if local != int.from_bytes(remote[8 * i : 8 * i + 8], "big")
        ]

    def encoded_in(self, buckets: list[int] | None) -> list[bytes]:
        """Encoded records of every member in ``buckets`` (None: all members)."""
        if buckets is None:
            ids: list[str] = list(self.entries)
        else:
            ids = [i for b in buckets if 0 <= b < self.buckets for i in self._by_bucket[b]]
        return [part for node_id in ids for part in self.entries[node_id].encoded]

    def sample_live(self, rng: random.Random, k: int, exclude: set[str]) -> list[str]:
        """Up to ``k`` distinct random live members not in ``exclude``."""
        items = self.live.items
        if len(items) <= k + len(exclude):
            pool = [i for i in items if i not in exclude]
            rng.shuffle(pool)
            return pool[:k]
        chosen: list[str] = []
        while len(chosen) < k:
            candidate = items[rng.randrange(len(items))]
            if candidate not in exclude and candidate not in chosen:
                chosen.append(candidate)
        return chosen

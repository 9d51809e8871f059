"""In-memory Storage for tests and the simulation, plus the ring-arc arithmetic both backends share.

``MemoryStorage`` keeps the same promises as the durable backend: a write is visible to ``get``
before ``put`` returns, and ``put`` is a real suspension point (it awaits a trio checkpoint, the
stand-in for a commit), so code that works here meets the same interleavings against SQLite.
Committing is instantaneous, so everything visible is also "durable" for as long as the object
lives: a simulated crash keeps the object and hands it to the restarted node. Setting
``fail_writes`` models a failing disk: every later write raises ``StorageFailure`` with that
reason and changes nothing, until it is set back to None.

Scans walk a list of ``(token, key)`` pairs kept sorted with ``bisect`` on every insert and
removal. That costs O(n) memmove per new key, which is cheap at the key counts a test or a
simulated node holds, and makes a paged ``scan_range`` O(log n + page) instead of a sort per page
(anti-entropy and handoff page through whole arcs).

Index rows (``p2pindex.storage.index_rows``) live the same way: a sorted list of
``(index, kind, term, key)`` and a sorted list of live keys, changed in the same step as the
record they come from.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import trio

from p2pindex.core.digest import key_digest
from p2pindex.core.ring import arc_pieces, key_token
from p2pindex.core.terms import Term, term_order
from p2pindex.errors import StorageFailure
from p2pindex.storage import base
from p2pindex.storage.index_rows import (
    NO_FACTS,
    Facts,
    IndexScanPage,
    KeyFilter,
    facts_of,
    prefix_end,
    require_cursor,
)
from p2pindex.types import NodeId


def backlog_of(hints: list[base.Hint]) -> list[base.HintBacklog]:
    """Fold hints into one backlog line per target, sorted by target."""
    totals: dict[NodeId, tuple[int, int, float]] = {}
    for hint in hints:
        count, size, oldest = totals.get(hint.target, (0, 0, math.inf))
        totals[hint.target] = (
            count + 1,
            size + len(hint.key) + len(hint.record),
            min(oldest, hint.created),
        )
    return [
        base.HintBacklog(target, count, size, oldest)
        for target, (count, size, oldest) in sorted(totals.items())
    ]


class MemoryStorage:
    """The Storage protocol over dicts; one trio thread, no locks needed."""

    def __init__(self, *, fail_writes: str | None = None) -> None:
        self.fail_writes = fail_writes
        """When set, every write raises StorageFailure with this reason and changes nothing."""
        self._records: dict[bytes, bytes] = {}
        self._order: list[tuple[int, bytes]] = []
        self._hints: dict[NodeId, dict[int, base.Hint]] = {}
        self._hint_targets: dict[int, NodeId] = {}
        self._next_hint_id = 1
        self._meta: dict[str, bytes] = {}
        self._closed = False
        self._facts: dict[bytes, Facts] = {}
        self._index: list[tuple[str, int, Term, bytes]] = []
        self._live: list[bytes] = []

    def get(self, key: bytes) -> bytes | None:
        self._check_open()
        base.require_bytes("key", key)
        return self._records.get(key)

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        self._check_open()
        found: dict[bytes, bytes] = {}
        for key in keys:
            base.require_bytes("key", key)
            record = self._records.get(key)
            if record is not None:
                found[key] = record
        return found

    async def put(self, key: bytes, record: bytes) -> None:
        await self.put_many([(key, record)])

    async def put_many(self, items: list[tuple[bytes, bytes]]) -> None:
        """Later items win over earlier ones with the same key."""
        self.put_many_now(items)
        await trio.lowlevel.checkpoint()

    # The ``*_now`` methods are the writes without their suspension point, for a caller that
    # provides its own (the simulated disk waits out a commit latency after each write).

    def put_many_now(self, items: list[tuple[bytes, bytes]]) -> None:
        self._check_writable()
        for key, record in items:
            base.require_bytes("key", key)
            base.require_bytes("record", record)
        for key, record in items:
            if key not in self._records:
                bisect.insort(self._order, (key_token(key), key))
            self._records[key] = record
            self._reindex(key, facts_of(record))

    def _reindex(self, key: bytes, new: Facts) -> None:
        """Move ``key``'s index rows from what its old record said to what ``new`` says."""
        old = self._facts.pop(key, NO_FACTS)
        if new != NO_FACTS:
            self._facts[key] = new
        if old[0] != new[0]:
            if new[0]:
                bisect.insort(self._live, key)
            else:
                del self._live[bisect.bisect_left(self._live, key)]
        for name, term in old[1] - new[1]:
            row = (name, *term_order(term), key)
            del self._index[bisect.bisect_left(self._index, row)]
        for name, term in new[1] - old[1]:
            bisect.insort(self._index, (name, *term_order(term), key))

    async def remove(self, key: bytes) -> None:
        self.remove_now(key)
        await trio.lowlevel.checkpoint()

    def remove_now(self, key: bytes) -> None:
        self._check_writable()
        base.require_bytes("key", key)
        if self._records.pop(key, None) is not None:
            del self._order[bisect.bisect_left(self._order, (key_token(key), key))]
            self._reindex(key, NO_FACTS)

    def index_scan(self, page: IndexScanPage) -> list[tuple[Term, bytes]]:
        """Up to ``page.limit`` (term, key) rows of ``page.terms``, in (term, key) order,
        strictly after ``page.after``, only of keys ``page.keep`` accepts."""
        terms, after, limit, keep = page.terms, page.after, page.limit, page.keep
        self._check_open()
        require_cursor(after)
        base.require_limit(limit)
        if after is None or term_order(after[0]) < term_order(terms.lo):
            first = bisect.bisect_left(self._index, (terms.index, *term_order(terms.lo), b""))
        else:
            first = bisect.bisect_right(self._index, (terms.index, *term_order(after[0]), after[1]))
        top = (terms.index, *term_order(terms.hi))
        found: list[tuple[Term, bytes]] = []
        for name, kind, term, key in self._index[first:]:
            if len(found) >= limit or (name, kind, term) > top:
                break
            if keep is None or keep(key):
                found.append((term, key))
        return found

    def key_scan(
        self, prefix: bytes, after: bytes | None, limit: int, keep: KeyFilter = None
    ) -> list[bytes]:
        """Up to ``limit`` live keys starting with ``prefix``, in key order, after ``after``."""
        self._check_open()
        base.require_bytes("prefix", prefix)
        base.require_limit(limit)
        start = prefix if after is None or after < prefix else after
        first = (
            bisect.bisect_right(self._live, start)
            if start == after
            else bisect.bisect_left(self._live, start)
        )
        end = prefix_end(prefix)
        found: list[bytes] = []
        for key in self._live[first:]:
            if len(found) >= limit or (end is not None and key >= end):
                break
            if keep is None or keep(key):
                found.append(key)
        return found

    def scan_range(
        self, start: int, end: int, after: bytes | None, limit: int
    ) -> list[tuple[bytes, bytes]]:
        self._check_open()
        pieces = arc_pieces(start, end, after)
        base.require_limit(limit)
        found: list[tuple[bytes, bytes]] = []
        for piece in pieces:
            if piece.after is None:
                first = bisect.bisect_left(self._order, (piece.lo, b""))
            else:
                first = bisect.bisect_right(self._order, piece.after)
            stop = bisect.bisect_left(self._order, (piece.hi + 1, b""))
            for _token, key in self._order[first : min(stop, first + limit - len(found))]:
                found.append((key, self._records[key]))
            if len(found) >= limit:
                break
        return found

    def scan_digests(
        self, start: int, end: int, after: bytes | None, limit: int
    ) -> list[tuple[bytes, bytes]]:
        return [
            (key, key_digest(key, record))
            for key, record in self.scan_range(start, end, after, limit)
        ]

    def count(self) -> int:
        self._check_open()
        return len(self._records)

    def disk_usage(self) -> dict[str, int]:
        return {}

    async def add_hint(self, target: NodeId, key: bytes, record: bytes, created: float) -> None:
        self.add_hint_now(target, key, record, created)
        await trio.lowlevel.checkpoint()

    def add_hint_now(self, target: NodeId, key: bytes, record: bytes, created: float) -> None:
        self._check_writable()
        base.require_hint(target, key, record, created)
        hint = base.Hint(self._next_hint_id, target, key, record, float(created))
        self._next_hint_id += 1
        self._hints.setdefault(target, {})[hint.hint_id] = hint
        self._hint_targets[hint.hint_id] = target

    def hints_for(self, target: NodeId, limit: int) -> list[base.Hint]:
        """Oldest first, meaning first stored (hint ids only grow)."""
        self._check_open()
        base.require_limit(limit)
        held = self._hints.get(target, {})
        return [held[hint_id] for hint_id in sorted(held)[:limit]]

    async def delete_hints(self, hint_ids: list[int]) -> None:
        """Ids that are not held (already delivered) are ignored."""
        self.delete_hints_now(hint_ids)
        await trio.lowlevel.checkpoint()

    def delete_hints_now(self, hint_ids: list[int]) -> None:
        self._check_writable()
        ids = base.require_hint_ids(hint_ids)
        for hint_id in ids:
            target = self._hint_targets.pop(hint_id, None)
            if target is not None:
                held = self._hints[target]
                del held[hint_id]
                if not held:
                    del self._hints[target]

    def hint_backlog(self) -> list[base.HintBacklog]:
        self._check_open()
        return backlog_of([hint for held in self._hints.values() for hint in held.values()])

    def get_meta(self, name: str) -> bytes | None:
        self._check_open()
        base.require_meta_name(name)
        return self._meta.get(name)

    async def set_meta(self, name: str, value: bytes) -> None:
        self.set_meta_now(name, value)
        await trio.lowlevel.checkpoint()

    def set_meta_now(self, name: str, value: bytes) -> None:
        self._check_writable()
        base.require_meta_name(name)
        base.require_bytes("meta value", value)
        self._meta[name] = value

    async def aclose(self) -> None:
        """Afterwards every call raises StorageFailure; closing twice is harmless."""
        self._closed = True
        await trio.lowlevel.checkpoint()

    def _check_open(self) -> None:
        base.require_open(self._closed)

    def _check_writable(self) -> None:
        self._check_open()
        if self.fail_writes is not None:
            raise StorageFailure(f"simulated disk failure: {self.fail_writes}")

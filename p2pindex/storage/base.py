"""The Storage seam: a node's durable key -> record map, hints and metadata.

Records are opaque bytes (an encoded ``p2pindex.core.versions.VersionedObject``); the node
merges versions, storage only keeps them. Two promises make the node correct:

* ``put``/``put_many`` make the new record visible to ``get`` immediately (before they
  return), so the node can read-merge-write in its single-threaded event loop without
  losing concurrent updates; and they return only once the record is committed (survives
  kill -9; with ``fsync=True`` also power loss). If the commit fails they raise
  ``StorageFailure`` and the record is no longer visible, so nothing unacknowledged leaks.
* ``get`` and ``scan_range`` are quick synchronous reads that never block the event loop
  for long (a point lookup is a few microseconds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from p2pindex.core.terms import Term
from p2pindex.errors import StorageFailure
from p2pindex.types import NodeId

if TYPE_CHECKING:
    from p2pindex.storage.index_rows import IndexScanPage, KeyFilter


@dataclass(frozen=True, slots=True)
class Hint:
    """A write held for an unreachable replica until it comes back (hinted handoff)."""

    hint_id: int
    target: NodeId
    key: bytes
    record: bytes
    created: float
    """Wall-clock seconds when the hint was stored (for the age bound)."""


@dataclass(frozen=True, slots=True)
class HintBacklog:
    target: NodeId
    count: int
    bytes: int
    oldest: float


class Storage(Protocol):
    def get(self, key: bytes) -> bytes | None:
        """The record of ``key`` (pending or committed), or None."""
        ...

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        """The records of those ``keys`` that exist (pending or committed): ``get`` for a
        batch of keys, in one lookup where the backend can."""
        ...

    async def put(self, key: bytes, record: bytes) -> None:
        """Store ``record`` for ``key``; returns once committed (see module docstring)."""
        ...

    async def put_many(self, items: list[tuple[bytes, bytes]]) -> None:
        """Store several records in one commit; all or nothing."""
        ...

    async def remove(self, key: bytes) -> None:
        """Physically drop a key (used only to reap tombstones every replica holds)."""
        ...

    def scan_range(
        self, start: int, end: int, after: bytes | None, limit: int
    ) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` (key, record) pairs whose ring token t is in the half-open
        ring arc (start, end], ordered by (token, key) and resuming after key ``after``.

        When start >= end the arc wraps around zero. Tokens are
        ``p2pindex.core.ring.key_token(key)`` (unsigned 64-bit).
        """
        ...

    def scan_digests(
        self, start: int, end: int, after: bytes | None, limit: int
    ) -> list[tuple[bytes, bytes]]:
        """``scan_range`` with ``core.digest.key_digest(key, record)`` in place of each
        record: what anti-entropy compares. A backend that stores the digests answers
        without reading the records."""
        ...

    def index_scan(self, page: IndexScanPage) -> list[tuple[Term, bytes]]:
        """Up to ``page.limit`` (term, key) rows of ``page.terms`` (one index's term range),
        in (term, key) order, strictly after ``page.after``, of keys ``page.keep`` accepts
        (``storage.index_rows``)."""
        ...

    def key_scan(
        self, prefix: bytes, after: bytes | None, limit: int, keep: KeyFilter = None
    ) -> list[bytes]:
        """Up to ``limit`` live keys (some sibling is not a tombstone) starting with
        ``prefix``, in key order, strictly after ``after``, that ``keep`` accepts."""
        ...

    def count(self) -> int:
        """Number of keys stored (tombstones included)."""
        ...

    def disk_usage(self) -> dict[str, int]:
        """Bytes on disk by file kind (``database``, ``wal``); empty when nothing is on
        disk. Status shows it so an operator sees a growing WAL before the disk fills."""
        ...

    async def add_hint(self, target: NodeId, key: bytes, record: bytes, created: float) -> None:
        """Durably keep a write for ``target``; returns once committed."""
        ...

    def hints_for(self, target: NodeId, limit: int) -> list[Hint]:
        """The oldest ``limit`` hints held for ``target``."""
        ...

    async def delete_hints(self, hint_ids: list[int]) -> None:
        """Drop delivered or expired hints."""
        ...

    def hint_backlog(self) -> list[HintBacklog]:
        """Per-target hint counts, sizes and ages (for status and bounds)."""
        ...

    def get_meta(self, name: str) -> bytes | None: ...

    async def set_meta(self, name: str, value: bytes) -> None: ...

    async def aclose(self) -> None:
        """Flush pending commits and release the files."""
        ...


# --- argument checks every backend makes (bad input: a clear error, nothing changed) ---


def require_bytes(name: str, value: object) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")


def require_limit(limit: object) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be a non-negative integer, not {limit!r}")


def require_hint(target: object, key: object, record: object, created: object) -> None:
    if not isinstance(target, str) or not target:
        raise ValueError(f"hint target must be a non-empty node id, not {target!r}")
    require_bytes("key", key)
    require_bytes("record", record)
    if (
        isinstance(created, bool)
        or not isinstance(created, int | float)
        or not math.isfinite(created)
    ):
        raise ValueError(f"hint created time must be a finite number, not {created!r}")


def require_hint_ids(hint_ids: object) -> list[int]:
    if not isinstance(hint_ids, list | tuple | set | frozenset):
        raise TypeError(f"hint ids must be a list of integers, not {type(hint_ids).__name__}")
    ids = list(hint_ids)
    for hint_id in ids:
        if isinstance(hint_id, bool) or not isinstance(hint_id, int):
            raise TypeError(f"hint ids must be integers, not {hint_id!r}")
    return ids


def require_meta_name(name: object) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"meta name must be a non-empty string, not {name!r}")


def require_open(closed: bool) -> None:
    """Every call on a closed store fails the same way, whichever backend it is."""
    if closed:
        raise StorageFailure("storage is closed")

"""Index rows derived from records: what both backends keep beside each object.

A backend stores, in the same transaction as a key's record, one row ``(index, term, key)``
per index term of the record's live siblings (``VersionedObject.index_terms``) and one row of
the built-in key index when some sibling is live (not a tombstone). Rows come only from the
record being stored, so they follow the object whichever way it arrived (client write,
replica write, read repair, hints, handoff, anti-entropy) and a replica's index can never
disagree with its own objects: there is nothing to repair separately.

Scans answer in ``(term, key)`` order (within one index integers sort before byte strings,
as SQLite orders INTEGER before BLOB), starting strictly after a ``(term, key)`` cursor, and
may be narrowed by ``keep``: a predicate on the key (the ring arcs a coverage plan gave this
replica, a token's prefix). ``keep`` is applied before ``limit``, so a page is full whenever
enough matching rows exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from p2pindex.core.terms import Term, term_order
from p2pindex.core.versions import index_facts
from p2pindex.types import key_text

Facts = tuple[bool, frozenset[tuple[str, Term]]]
NO_FACTS: Facts = (False, frozenset())
KeyFilter = Callable[[bytes], bool] | None


def facts_of(record: bytes | None) -> Facts:
    """(live, terms) of a record; nothing for a missing or removed one."""
    return NO_FACTS if record is None else index_facts(record)


@dataclass(frozen=True, slots=True)
class TermRange:
    """Terms ``lo..hi`` (inclusive) of one index, both of one kind (see ``check_range``)."""

    index: str
    lo: Term
    hi: Term

    def contains(self, term: Term) -> bool:
        if type(term) is not type(self.lo):
            return False
        return self.lo <= term <= self.hi  # type: ignore[operator]


@dataclass(frozen=True, slots=True)
class IndexScanPage:
    """What one page of an index scan asks a backend for: the rows of ``terms`` strictly
    after the ``(term, key)`` cursor ``after`` (None: from the start), at most ``limit`` of
    them, only of keys ``keep`` accepts (None: every key). The four always travel together,
    from the node's query down to each backend."""

    terms: TermRange
    after: tuple[Term, bytes] | None
    limit: int
    keep: KeyFilter = None


def check_range(index: str, lo: Term, hi: Term) -> TermRange:
    """ValueError in the user's words when the bounds cannot make a range."""
    if type(lo) is not type(hi):
        raise ValueError(
            f"index {index!r}: a range needs two integers or two texts/byte strings,"
            " not one of each"
        )
    if lo > hi:  # type: ignore[operator]
        raise ValueError(
            f"index {index!r}: the range's low end {_term_text(lo)} is above its high end "
            f"{_term_text(hi)}"
        )
    return TermRange(index, lo, hi)


def _term_text(term: Term) -> str:
    """A term as a person gave it: the number, or the text (hex for bytes that are not)."""
    return str(term) if type(term) is int else key_text(term)  # type: ignore[arg-type]


def row_order(term: Term, key: bytes) -> tuple[tuple[int, Term], bytes]:
    return term_order(term), key


def prefix_end(prefix: bytes) -> bytes | None:
    """The least key above every key starting with ``prefix`` (None: no such bound)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def require_cursor(after: object) -> None:
    if after is None:
        return
    if (
        not isinstance(after, tuple)
        or len(after) != 2
        or type(after[0]) not in (int, bytes)
        or type(after[1]) is not bytes
    ):
        raise TypeError(f"after must be a (term, key) pair, not {after!r}")

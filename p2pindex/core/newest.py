"""The newest N entries of an insertion-ordered dict: the bounded memory of caches and
waiting lists that must not grow with what strangers send.

Why a dict and not ``functools.lru_cache`` or a deque: the callers look entries up by key,
drop them by key, and some must keep ``None`` values; a plain dict keeps insertion order,
so its first key is always the oldest, and one helper keeps the eviction rule in one place.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def put_newest(entries: dict[K, V], key: K, value: V, limit: int) -> None:
    """Store ``key -> value`` as the newest of at most ``limit`` entries: a key already there
    moves to the end (it is recent again); else the oldest entry makes room."""
    if key in entries:
        del entries[key]
    elif len(entries) >= limit:
        del entries[next(iter(entries))]
    entries[key] = value

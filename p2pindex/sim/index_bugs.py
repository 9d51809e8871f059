"""Planted index bugs, injected through the simulated disk (a seam the simulator owns).

``LingeringIndexStorage`` keeps a key's index rows when a tombstone replaces its record:
Riak's "deleted keys stay in the index" (basho/riak_kv#330). The index checker must catch
it: a ``one`` query after the delete was acknowledged by every replica still finds the key.
``planted(bug)`` swaps the storage class of every simulated disk created inside it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from p2pindex.sim import disk
from p2pindex.storage.index_rows import NO_FACTS, Facts
from p2pindex.storage.memory import MemoryStorage


class LingeringIndexStorage(MemoryStorage):
    def _reindex(self, key: bytes, new: Facts) -> None:
        old = self._facts.get(key, NO_FACTS)
        if old[1] and not new[0]:
            return  # the bug: a tombstone leaves the old rows (and the live flag) behind
        super()._reindex(key, new)


INDEX_BUGS = {"index-lingering-tombstone": LingeringIndexStorage}


@contextlib.contextmanager
def planted(bug: str) -> Iterator[None]:
    storage = INDEX_BUGS[bug]
    original = disk.MemoryStorage
    disk.MemoryStorage = storage  # type: ignore[misc]
    try:
        yield
    finally:
        disk.MemoryStorage = original  # type: ignore[misc]

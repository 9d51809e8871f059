"""Deliberate defects for proving the simulation harness (``NodeConfig.planted_bugs``).

Each piece here is the *wrong* version of one rule the real code keeps; the node and the
replica use them only when the matching bug is planted, so production paths never see them.
simulations/planted_bugs.py and tests/integration/test_planted_bugs.py plant one at a time
and require the checker that guards the broken rule to catch it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import trio

from p2pindex.core import versions
from p2pindex.core.versions import VersionedObject, VersionVector
from p2pindex.errors import IndeterminateError, StorageFailure, Unavailable
from p2pindex.storage.base import Storage


def last_write_wins(obj: VersionedObject) -> VersionedObject:
    """Keep only the sibling with the highest dot: concurrent writes are silently dropped."""
    winner = max(obj.siblings, key=lambda s: (s.dot.counter, s.dot.actor))
    return VersionedObject(obj.clock, (winner,))


def update(
    current: VersionedObject | None,
    context: VersionVector,
    actor: str,
    value: bytes | None,
    bugs: frozenset[str],
) -> VersionedObject:
    if "no-dots" in bugs and current is not None and not versions.descends(context, current.clock):
        # Without dots a server cannot tell which siblings a partial context saw, so it
        # keeps them all: siblings pile up beyond the concurrent writers.
        context = VersionVector()
    updated = versions.update(current, context, actor, value)
    return last_write_wins(updated) if "lww" in bugs else updated


def merge(a: VersionedObject, b: VersionedObject, bugs: frozenset[str]) -> VersionedObject:
    merged = versions.merge(a, b)
    return last_write_wins(merged) if "lww" in bugs else merged


class AckBeforeCommit:
    """A write-back cache in front of the node's Storage (planted ``ack-before-commit``).

    ``put`` and ``put_many`` return at once, leaving the record in memory, and commit it in
    a background task: everything above (the coordinator's own commit, a replica's ack)
    then acknowledges a write that a crash in the next milliseconds loses. Reads see the
    buffered records, so the node's read-merge-write stays atomic and nothing but a crash
    (or a failed commit) tells this apart from the real storage.
    """

    def __init__(self, storage: Storage, spawn: Callable[..., None]) -> None:
        self._storage = storage
        self._spawn = spawn
        self._buffered: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        buffered = self._buffered.get(key)
        return buffered if buffered is not None else self._storage.get(key)

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        found = self._storage.get_many([key for key in keys if key not in self._buffered])
        found.update((key, self._buffered[key]) for key in keys if key in self._buffered)
        return found

    async def put(self, key: bytes, record: bytes) -> None:
        await self.put_many([(key, record)])

    async def put_many(self, items: list[tuple[bytes, bytes]]) -> None:
        for key, record in items:
            self._buffered[key] = record
        self._spawn(self._commit_later, [key for key, _ in items])
        await trio.lowlevel.checkpoint()

    async def remove(self, key: bytes) -> None:
        self._buffered.pop(key, None)
        await self._storage.remove(key)

    async def _commit_later(self, keys: list[bytes]) -> None:
        """Commit the newest buffered record of each key; a failure loses them silently."""
        records = [
            (key, self._buffered[key]) for key in dict.fromkeys(keys) if key in self._buffered
        ]
        if not records:
            return
        with contextlib.suppress(StorageFailure):
            await self._storage.put_many(records)
        for key, record in records:
            if self._buffered.get(key) is record:
                del self._buffered[key]

    def __getattr__(self, name: str) -> Any:
        """Scans, hints and metadata go straight to the real storage."""
        return getattr(self._storage, name)


def definite_write_failure(failure: IndeterminateError) -> Unavailable:
    """Planted ``definite-after-send``: a write whose replicas may hold it (a timeout, a
    lost quorum) is reported as ``Unavailable``, as if nothing had been written."""
    return Unavailable(1, 0, f"the write failed: {failure}")


class AckFailedCommit:
    """Storage that hides a failed commit (planted ``ack-failed-commit``).

    ``put`` and ``put_many`` return normally when the commit failed (a full disk, an fsync
    error): the coordinator and replicas then acknowledge a write that is not stored, and
    the node never learns its storage is failing.
    """

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    async def put(self, key: bytes, record: bytes) -> None:
        await self.put_many([(key, record)])

    async def put_many(self, items: list[tuple[bytes, bytes]]) -> None:
        with contextlib.suppress(StorageFailure):
            await self._storage.put_many(items)

    def __getattr__(self, name: str) -> Any:
        """Everything else goes straight to the real storage."""
        return getattr(self._storage, name)

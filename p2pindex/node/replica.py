"""IndexManager: this node's replica operations on its own storage.

All read-merge-write sequences run on the trio thread without an await between the read and
the storage call that makes the new record visible, so concurrent writes to one key are
serialised without locks (Storage makes a put visible before it awaits the commit).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from p2pindex.config import Limits
from p2pindex.core import versions
from p2pindex.core.versions import VersionedObject, VersionVector
from p2pindex.errors import SiblingLimitExceeded, StorageFailure
from p2pindex.node import planted
from p2pindex.node.stats import StatisticsStore
from p2pindex.storage.base import Storage


class IndexManager:
    def __init__(
        self,
        storage: Storage,
        actor: str,
        limits: Limits,
        stats: StatisticsStore,
        *,
        planted_bugs: frozenset[str] = frozenset(),
        spawn: Callable[..., None] | None = None,
    ):
        self.storage = storage
        self.actor = actor
        """Version-vector actor: the node id plus a storage epoch, so a node whose disk was
        wiped never reissues a dot it already used."""
        self._limits = limits
        self._stats = stats
        self._bugs = planted_bugs
        self._spawn = spawn

    def read(self, key: bytes) -> VersionedObject | None:
        record = self.storage.get(key)
        return None if record is None else versions.decode_object(record)

    def new_version(
        self, key: bytes, context: VersionVector, value: bytes | None
    ) -> tuple[VersionedObject, bytes]:
        """The new version of ``key`` with this node as its actor, and its encoding.

        The caller must ``commit`` it before its next await, so no other write to the key
        can interleave. Refuses (definitely, before anything is stored or sent) a write that
        would exceed the sibling limit.
        """
        current = self.read(key)
        if self._bugs:
            updated = planted.update(current, context, self.actor, value, self._bugs)
        else:
            updated = versions.update(current, context, self.actor, value)
        if updated.sibling_count > self._limits.sibling_max:
            self._stats.incr("writes.refused_siblings")
            raise SiblingLimitExceeded(
                f"key would have {updated.sibling_count} siblings (limit "
                f"{self._limits.sibling_max}); read it and write with its context to resolve them"
            )
        return updated, versions.encode_object(updated)

    async def commit(self, key: bytes, record: bytes) -> None:
        await self._store(key, record)

    async def _store(self, key: bytes, record: bytes) -> None:
        if "early-tombstone-reap" in self._bugs and versions.decode_object(record).is_deleted:
            await self.storage.remove(key)
        elif "ack-before-commit" in self._bugs and self._spawn is not None:
            self._spawn(self._commit_later, key, record)
        else:
            await self.storage.put(key, record)

    async def _commit_later(self, key: bytes, record: bytes) -> None:
        """Planted bug's background commit; its failure is the bug's to show, not a crash."""
        with contextlib.suppress(StorageFailure):
            await self.storage.put(key, record)

    async def apply(self, key: bytes, incoming: VersionedObject) -> VersionedObject:
        """Merge a version sent by a coordinator, a repair or a handoff; never overwrite."""
        current = self.read(key)
        merged = incoming if current is None else self._merge(current, incoming)
        if merged != current:
            await self._store(key, versions.encode_object(merged))
        return merged

    def _merge(self, a: VersionedObject, b: VersionedObject) -> VersionedObject:
        return planted.merge(a, b, self._bugs) if self._bugs else versions.merge(a, b)

    async def apply_many(self, items: list[tuple[bytes, VersionedObject]]) -> None:
        """Merge a batch in one commit (hint delivery and ownership handoff)."""
        changed: dict[bytes, bytes] = {}
        for key, incoming in items:
            current = self.read(key)
            if key in changed:
                current = versions.decode_object(changed[key])
            merged = incoming if current is None else self._merge(current, incoming)
            if merged != current:
                changed[key] = versions.encode_object(merged)
        if changed:
            await self.storage.put_many(list(changed.items()))

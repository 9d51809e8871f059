"""Hinted handoff: writes kept for unreachable replicas, delivered when they come back.

A fallback that stands in for a down primary stores the record in its own key space (so
reads through the same fallback see it) and a durable hint naming the primary. A loop
delivers each target's hints in batches once the target is usable again, then deletes them.
Hints are bounded per target by bytes (a fallback refuses to take more, so the write fails
over elsewhere instead of silently dropping data) and by age (expired hints are dropped and
counted; read repair still heals those keys).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import trio

from p2pindex.config import Limits
from p2pindex.core.batching import fitting_prefix
from p2pindex.errors import P2PIndexError, StorageFailure
from p2pindex.node.peers import PeerPool
from p2pindex.node.stats import StatisticsStore
from p2pindex.storage.base import Storage
from p2pindex.types import Address
from p2pindex.wire.messages import ReplicaWriteBatch

DELIVERY_INTERVAL = 1.0
BATCH_ITEMS = 256
BATCH_BYTES = Limits().max_frame // 2
"""Most key and record bytes one delivery carries; a single hint always fits."""
MAX_HINT_BYTES_PER_TARGET = 256 * 1024 * 1024
MAX_HINT_AGE = 3 * 24 * 3600.0


class HintView(Protocol):
    def usable(self, node_id: str) -> bool: ...

    def address_of(self, node_id: str) -> Address: ...


class HintedHandoff:
    def __init__(
        self,
        view: HintView,
        storage: Storage,
        peers: PeerPool,
        stats: StatisticsStore,
        wall_clock: Callable[[], float],
        *,
        max_bytes: int = MAX_HINT_BYTES_PER_TARGET,
        max_age: float = MAX_HINT_AGE,
    ) -> None:
        self._view = view
        self._storage = storage
        self._peers = peers
        self._stats = stats
        self._wall_clock = wall_clock
        self._max_bytes = max_bytes
        self._max_age = max_age
        self._held: dict[str, int] | None = None
        """Bytes of hints held per target: storage's count when last read (at the first hint
        and after every delivery round) plus what was kept since. Reading it from storage on
        every hinted write summed the whole backlog each time, quadratic in a long outage."""

    async def keep(self, target: str, key: bytes, record: bytes) -> None:
        """Durably keep ``record`` for ``target``; refuse when its backlog is full."""
        held = self._held if self._held is not None else self._count_held()
        size = len(key) + len(record)
        backlog = held.get(target, 0)
        if backlog + size > self._max_bytes:
            self._stats.incr("hints.refused_full")
            raise StorageFailure(
                f"hint store for {target} is full ({backlog} bytes); not taking more"
            )
        await self._storage.add_hint(target, key, record, self._wall_clock())
        held[target] = held.get(target, 0) + size
        self._stats.incr("hints.stored")

    async def run(self) -> None:
        while True:
            await trio.sleep(DELIVERY_INTERVAL)
            backlogs = self._storage.hint_backlog()
            for backlog in backlogs:
                if self._view.usable(backlog.target):
                    await self.deliver(backlog.target)
            if backlogs or self._held:
                self._count_held()

    def _count_held(self) -> dict[str, int]:
        self._held = {backlog.target: backlog.bytes for backlog in self._storage.hint_backlog()}
        return self._held

    async def deliver(self, target: str) -> int:
        """Deliver every hint held for ``target``; returns how many were delivered."""
        delivered = 0
        while True:
            hints = self._storage.hints_for(target, BATCH_ITEMS)
            if not hints:
                return delivered
            cutoff = self._wall_clock() - self._max_age
            expired = [h.hint_id for h in hints if h.created < cutoff]
            live = [h for h in hints if h.created >= cutoff]
            if expired:
                self._stats.incr("hints.expired", len(expired))
                await self._storage.delete_hints(expired)
            if not live:
                continue
            # As many as fit in a frame (the rest go next round): a batch the target refuses
            # as too large would be retried for ever.
            live = live[: len(fitting_prefix([(h.key, h.record) for h in live], BATCH_BYTES))]
            batch = ReplicaWriteBatch([(h.key, h.record) for h in live])
            try:
                await self._peers.request(self._view.address_of(target), batch, timeout=10.0)
            except (OSError, P2PIndexError):
                self._stats.incr("hints.delivery_failures")
                return delivered
            await self._storage.delete_hints([h.hint_id for h in live])
            delivered += len(live)
            self._stats.incr("hints.delivered", len(live))

"""Hinted handoff: writes kept for unreachable replicas, delivered when they come back.

A fallback that stands in for a down primary stores the record in its own key space (so
reads through the same fallback see it) and a durable hint naming the primary. A loop
delivers each target's hints in batches once the target is usable again, then deletes them.
Hints are bounded per target by bytes (a fallback refuses to take more, so the write fails
over elsewhere instead of silently dropping data) and by age (expired hints are dropped and
counted; read repair still heals those keys).

A fallback may hold the only copy of a hinted write (one acknowledged at ONE while the key's
replicas were down), and it holds it outside its own ranges, where neither anti-entropy nor
a leave's range push looks. So when nobody will come for the hints (their member left,
or was removed with nobody in its place), and when this node leaves, the writes go to their
keys' current replicas instead: once one of them holds a write, anti-entropy carries it to
the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from p2pindex.config import Limits
from p2pindex.core.batching import fitting_prefix, sized_groups
from p2pindex.core.ring import Ring, key_token
from p2pindex.errors import LeaveAbandoned, Overloaded, P2PIndexError, StorageFailure
from p2pindex.node.eventlog import EventLog
from p2pindex.node.peers import PeerPool
from p2pindex.node.stats import StatisticsStore
from p2pindex.storage.base import Hint, Storage
from p2pindex.types import Address, NodeId
from p2pindex.wire.messages import ReplicaWriteBatch

log = logging.getLogger(__name__)
events = EventLog(log, trio.current_time)

DELIVERY_INTERVAL = 1.0
SUMMARY_INTERVAL = 30.0
"""Seconds between the log lines summing up the hints kept for one down member."""
BATCH_ITEMS = 256
BATCH_BYTES = Limits().max_frame // 2
"""Most key and record bytes one delivery carries; a single hint always fits."""
MAX_HINT_BYTES_PER_TARGET = 256 * 1024 * 1024
MAX_HINT_AGE = 3 * 24 * 3600.0


@dataclass(slots=True)
class _Kept:
    """Hints kept for one target since its last log line."""

    count: int = 0
    bytes: int = 0
    logged_at: float = float("-inf")


class HintView(Protocol):
    node_id: str

    @property
    def ring(self) -> Ring: ...

    def usable(self, node_id: str) -> bool: ...

    def address_of(self, node_id: str) -> Address: ...


class Departures(Protocol):
    """Members that left or were replaced (``ClusterView``)."""

    def stand_in(self, node_id: str) -> str:
        """Who takes ``node_id``'s hints: itself, or the node that took its place in the ring
        when it was replaced. A hint holds a write that may be on this fallback alone; the
        replaced member will never come for it."""
        ...

    def orphaned(self, node_id: str) -> bool:
        """Is nobody to come for ``node_id``'s hints (it left, or was removed with nobody
        in its place)?"""
        ...


class _NoDepartures:
    def stand_in(self, node_id: str) -> str:
        return node_id

    def orphaned(self, node_id: str) -> bool:
        return False


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
        departures: Departures | None = None,
        n_replicas: int = 3,
    ) -> None:
        self._view = view
        self._n = n_replicas
        self._departures = departures or _NoDepartures()
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
        self._kept: dict[str, _Kept] = {}
        self._last_error = ""
        """Why the last placement of hinted writes on their keys' replicas failed."""

    async def keep(self, target: str, key: bytes, record: bytes) -> None:
        """Durably keep ``record`` for ``target``; refuse when its backlog is full."""
        held = self._held if self._held is not None else self._count_held()
        size = len(key) + len(record)
        backlog = held.get(target, 0)
        if backlog + size > self._max_bytes:
            self._stats.incr("hints.refused_full")
            # Overloaded, not StorageFailure: the disk is fine, this member's budget is
            # spent; a storage failure would take the whole node out of service (DEGRADED).
            raise Overloaded(
                f"hint store for {target} is full ({backlog} bytes, hint_max_bytes_per_target); "
                "not taking more hinted writes for it"
            )
        await self._storage.add_hint(NodeId(target), key, record, self._wall_clock())
        held[target] = held.get(target, 0) + size
        self._stats.incr("hints.stored")
        kept = self._kept.setdefault(target, _Kept())
        kept.count += 1
        kept.bytes += size
        if backlog == 0:  # the first hint of an outage is news; the rest are summed up
            self._log_kept(target, kept)

    def _log_kept(self, target: str, kept: _Kept) -> None:
        held = (self._held or {}).get(target, 0)
        events.info(
            "hints",
            "kept %d hint(s) (%d bytes) for member %s, which is down; %d bytes held for it",
            kept.count,
            kept.bytes,
            target,
            held,
        )
        kept.count = kept.bytes = 0
        kept.logged_at = trio.current_time()

    def _summarise_kept(self) -> None:
        now = trio.current_time()
        for target, kept in list(self._kept.items()):
            if kept.count and now - kept.logged_at >= SUMMARY_INTERVAL:
                self._log_kept(target, kept)
            elif not kept.count and now - kept.logged_at >= SUMMARY_INTERVAL:
                del self._kept[target]

    async def run(self) -> None:
        while True:
            await trio.sleep(DELIVERY_INTERVAL)
            self._summarise_kept()
            backlogs = self._storage.hint_backlog()
            for backlog in backlogs:
                if self._departures.orphaned(backlog.target):
                    await self._give_orphans_to_replicas(backlog.target)
                elif self._view.usable(self._departures.stand_in(backlog.target)):
                    delivered = await self.deliver(backlog.target)
                    if delivered:
                        # What was kept for it since the last summary went out with these:
                        # summed up later, it would be logged as kept for a member "down".
                        self._kept.pop(backlog.target, None)
                        events.info(
                            "hints-delivered",
                            "delivered %d hint(s) to member %s; %d left for it",
                            delivered,
                            backlog.target,
                            max(backlog.count - delivered, 0),
                        )
            if backlogs or self._held:
                self._count_held()

    def _count_held(self) -> dict[str, int]:
        self._held = {backlog.target: backlog.bytes for backlog in self._storage.hint_backlog()}
        return self._held

    async def deliver(self, target: str) -> int:
        """Deliver every hint held for ``target`` (to its stand-in); returns how many were
        delivered."""
        receiver = self._departures.stand_in(target)
        delivered = 0
        while True:
            hints = self._storage.hints_for(NodeId(target), BATCH_ITEMS)
            if not hints:
                return delivered
            cutoff = self._wall_clock() - self._max_age
            expired = [h.hint_id for h in hints if h.created < cutoff]
            live = [h for h in hints if h.created >= cutoff]
            if expired:
                self._stats.incr("hints.expired", len(expired))
                events.warning(
                    "hints-expired",
                    "dropped %d hint(s) for member %s older than %gs (read repair and "
                    "anti-entropy heal those keys)",
                    len(expired),
                    target,
                    self._max_age,
                )
                await self._storage.delete_hints(expired)
            if not live:
                continue
            # As many as fit in a frame (the rest go next round): a batch the target refuses
            # as too large would be retried for ever.
            live = live[: len(fitting_prefix([(h.key, h.record) for h in live], BATCH_BYTES))]
            batch = ReplicaWriteBatch([(h.key, h.record) for h in live])
            try:
                await self._peers.request(self._view.address_of(receiver), batch, timeout=10.0)
            except (OSError, P2PIndexError):
                self._stats.incr("hints.delivery_failures")
                return delivered
            await self._storage.delete_hints([h.hint_id for h in live])
            delivered += len(live)
            self._stats.incr("hints.delivered", len(live))

    async def _give_orphans_to_replicas(self, target: str) -> None:
        """The hints of a member removed with nobody in its place: nobody will come for
        them, so their writes go to their keys' current replicas."""
        placed = 0
        while hints := self._storage.hints_for(NodeId(target), BATCH_ITEMS):
            done = await self._place_on_replicas(hints, self._view.ring)
            await self._storage.delete_hints(done)
            placed += len(done)
            if len(done) < len(hints):
                break  # the rest wait for a replica to be usable, next round
        if placed:
            events.info(
                "hints-delivered",
                "gave %d write(s) kept for removed member %s to their keys' replicas",
                placed,
                target,
            )

    async def hand_over(self, ring_after: Ring, patience: float) -> int:
        """A leaving node's last step: give every hinted write to its key's replicas in
        ``ring_after`` (the ring without this node), since leaving would take it along.
        Returns how many; raises ``LeaveAbandoned`` when some reached no replica for
        ``patience`` seconds (the node stays, and delivers them as usual)."""
        placed = 0
        stuck_since: float | None = None
        last_error = "none of them was usable"
        while backlogs := self._storage.hint_backlog():
            progress = 0
            for backlog in backlogs:
                hints = self._storage.hints_for(backlog.target, BATCH_ITEMS)
                done = await self._place_on_replicas(hints, ring_after)
                try:
                    await self._storage.delete_hints(done)
                except StorageFailure as exc:
                    raise LeaveAbandoned(
                        f"this node could not drop the hints it handed over ({exc})"
                    ) from None
                progress += len(done)
                if len(done) < len(hints):
                    last_error = self._last_error or last_error
            placed += progress
            if progress:
                stuck_since = None
                continue
            now = trio.current_time()
            if stuck_since is None:
                stuck_since = now
            elif now - stuck_since >= patience:
                held = sum(backlog.count for backlog in backlogs)
                raise LeaveAbandoned(
                    f"{held} write(s) this node keeps hints for reached none of their keys' "
                    f"replicas for {patience:g}s ({last_error}); {placed} were handed over"
                )
            await trio.sleep(DELIVERY_INTERVAL)
        if placed:
            self._stats.incr("hints.handed_over", placed)
            events.info(
                "hints-delivered",
                "handed %d write(s) kept as hints to their keys' replicas before leaving",
                placed,
            )
        return placed

    async def _place_on_replicas(self, hints: list[Hint], ring: Ring) -> list[int]:
        """Send each hinted write to every usable replica of its key in ``ring``; the ids
        of the hints whose write one of them took (or this node holds as a replica)."""
        me = self._view.node_id
        placed: set[int] = set()
        by_replica: dict[str, list[Hint]] = {}
        for hint in hints:
            for node in ring.preference_list_for_token(key_token(hint.key), self._n):
                if node == me:
                    placed.add(hint.hint_id)  # it holds the record in its own ranges now
                elif self._view.usable(node):
                    by_replica.setdefault(node, []).append(hint)
        self._last_error = ""
        for node, held in by_replica.items():
            for group in sized_groups(held, _hint_size, BATCH_BYTES):
                batch = ReplicaWriteBatch([(hint.key, hint.record) for hint in group])
                try:
                    await self._peers.request(self._view.address_of(node), batch, timeout=10.0)
                except (OSError, P2PIndexError) as exc:
                    self._stats.incr("hints.delivery_failures")
                    self._last_error = f"{node}: {exc}"
                    break
                placed.update(hint.hint_id for hint in group)
        return sorted(placed)


def _hint_size(hint: Hint) -> int:
    return len(hint.key) + len(hint.record)

"""Tombstone reaping and stray copies: a delete's tombstone, or a copy held outside this
node's ranges, is removed only when every replica of the key holds it.

A tombstone protects a delete against older copies of the key (a replica that missed the
delete, a pending hint, a fallback's or a former owner's extra copy): merged with it, they
lose. Removing it early lets such a copy bring the value back (Cassandra's resurrections
when repair did not run within gc_grace_seconds). So a node removes a tombstone only when

1. it has held it for the grace period (``NodeConfig.tombstone_grace``), which lets writes
   and hints in flight at the time of the delete arrive, and
2. every replica of the key's preference list, asked through the replication protocol
   itself (a replica read, as a coordinator makes), answers with that tombstone or a
   version that descends from it. A replica that is down, SYNCING or unreachable blocks
   the reap; it does not get skipped after a timeout.

Each replica decides for itself, so nothing has to reach every replica at once.

A reaped key leaves a *marker*: the tombstone itself, kept off the key-value store in the
IndexManager's ``shadow`` and saved in the node's metadata. While the marker lives the node
answers replica reads of the key with the tombstone and merges every incoming version
against it, so a stale copy that shows up later (from a replica that was down for longer
than the grace period and lost the tombstone to a power cut, a hint, a handoff, a fallback's
copy) is recognised as older and dropped, and a new write of the key gets a clock above the
deleted one. Markers expire after ``MARKER_TTL_GRACES`` grace periods, once no replica
of the key still stores the tombstone (a straggler that has not reaped needs the others'
markers to confirm its own reap); the tombstones
themselves are gone from storage, so storage no longer grows with the number of deletes.
Markers are few (deletes of the last few grace periods) and saved as one metadata
document, rewritten once per round that changes them.

The same scan finds copies of keys this node is no replica of: a fallback's copy of a
write it stood in for, or what a former owner kept after handing a range over. Once every
preference-list replica answers with that version or a newer one (so its hints were
delivered, or the new owners confirmed the handoff), the copy is dropped, and the number
of copies of every key comes back to N. Riak deletes after a confirmed handoff likewise.
A copy no replica holds is written to them first; one a delete superseded is dropped as
soon as every replica answered (``stray_fate``).
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable, Iterable
from typing import Protocol

import cbor2
import trio

from p2pindex.config import Limits
from p2pindex.core import versions
from p2pindex.core.batching import batches
from p2pindex.core.ring import Ring
from p2pindex.errors import P2PIndexError, StorageFailure
from p2pindex.node.peers import PeerPool
from p2pindex.node.replica import IndexManager
from p2pindex.node.stats import StatisticsStore
from p2pindex.storage.base import Storage
from p2pindex.types import Address
from p2pindex.wire.messages import (
    Message,
    RecordsReply,
    RecordsRequest,
    ReplicaReadManyReply,
    ReplicaReadSettled,
    ReplicaWriteBatch,
)

log = logging.getLogger(__name__)

MARKERS_META = "reaper.markers"
MARKER_TTL_GRACES = 10
"""A marker outlives its tombstone by this many grace periods."""
SCAN_CHUNK = 4096
"""Records looked at per round at most while looking for tombstones."""
MIN_SCAN_CHUNK = 64
"""Records looked at per round at least (a store that takes fewer rounds to scan whole)."""
CONFIRM_BATCH = 512
"""Tombstones confirmed (and reaped) per round at most."""
MAX_CANDIDATES = 100_000
"""Tombstones tracked at once; more wait for a later scan (the bound on this node's memory)."""
CONFIRM_TIMEOUT = 5.0
HANDOVER_BYTES = Limits().max_frame // 2
"""Most key and record bytes of stray copies one request hands to a replica."""
STRAY_WAIT = 10.0
"""Seconds a copy held outside this node's ranges waits before it is confirmed and dropped
(at most the grace): lets a handoff or hint delivery that is under way finish first."""


class ReapView(Protocol):
    node_id: str

    @property
    def ring(self) -> Ring: ...

    def readable(self, node_id: str) -> bool: ...

    def address_of(self, node_id: str) -> Address: ...


def load_markers(storage: Storage, index: IndexManager) -> dict[bytes, float]:
    """Restore the markers saved before a restart into ``index.shadow`` (before the node
    serves anything); returns when each was made, for the reaper."""
    raw = storage.get_meta(MARKERS_META)
    reaped_at: dict[bytes, float] = {}
    if not raw:
        return reaped_at
    try:
        for key, record, made in cbor2.loads(raw):
            index.shadow[key] = (record, versions.decode_object(record))
            reaped_at[key] = float(made)
    except (ValueError, TypeError, cbor2.CBORDecodeError) as exc:
        # The node still starts: the markers only matter if a stale copy is left somewhere.
        log.warning("could not read the saved reap markers (%s)", exc)
    return reaped_at


def saved_markers(storage: Storage) -> dict[bytes, bytes]:
    """The reaped tombstones ``storage`` keeps as markers (key -> tombstone record): what
    the node answers for those keys, for observers such as the simulator's checkers."""
    raw = storage.get_meta(MARKERS_META)
    if not raw:
        return {}
    try:
        return {bytes(key): bytes(record) for key, record, _made in cbor2.loads(raw)}
    except (ValueError, TypeError, cbor2.CBORDecodeError):
        return {}


def reap_interval(grace: float) -> float:
    """How often a round runs: often enough that a tombstone goes soon after its grace."""
    return max(0.5, min(grace / 4, 2.0))


def scan_chunk(stored: int, grace: float) -> int:
    """Records a round looks at: enough to scan the whole store once in a quarter of the
    grace (a tombstone goes at most that long after its grace, a stray copy as long after
    STRAY_WAIT), and no more: a node that scanned SCAN_CHUNK records every round would read
    its whole store over and over, a large share of a busy node's time, to find tombstones
    that wait an hour anyway. A store that a quarter grace scans in one round is scanned
    whole every round."""
    wanted = math.ceil(stored * reap_interval(grace) / (grace / 4))
    if wanted >= stored:
        return SCAN_CHUNK
    return max(MIN_SCAN_CHUNK, min(wanted, SCAN_CHUNK))


class StrayFate(enum.Enum):
    KEEP = "keep"
    DROP = "drop"
    HAND_OVER = "hand over"


def stray_fate(replicas: int, holding: int, lacking: int, deleted_above: bool) -> StrayFate:
    """What to do with a stray copy once ``holding`` of the key's ``replicas`` answered with
    it or a version descending from it, and ``lacking`` answered without it (the rest did
    not answer).

    Every replica holding it: it is where it belongs, drop it. A delete above it on some
    replica, every replica answering: it was deleted, so it is dropped and never handed
    over. Handing it to a replica whose tombstone was reaped and whose marker expired would
    bring the deleted value back (the copy outlives the markers when its holder could not
    confirm it for that long, DEGRADED or cut off). No replica holding it, every replica
    answering: it may be the last copy of a write (its hint went to a replica lost before
    passing it on), so it goes to them. Anything else waits: the replicas that hold a newer
    version pass it to the others by anti-entropy, and a later round drops the copy."""
    if holding == replicas:
        return StrayFate.DROP
    if holding + lacking < replicas:
        return StrayFate.KEEP
    if deleted_above:
        return StrayFate.DROP
    if lacking == replicas:
        return StrayFate.HAND_OVER
    return StrayFate.KEEP


def _decoded(record: bytes | None) -> versions.VersionedObject | None:
    if record is None:
        return None
    try:
        return versions.decode_object(record)
    except ValueError:
        return None


class TombstoneReaper:
    def __init__(
        self,
        view: ReapView,
        index: IndexManager,
        storage: Storage,
        peers: PeerPool,
        stats: StatisticsStore,
        wall_clock: Callable[[], float],
        *,
        n_replicas: int,
        grace: float,
        reaped_at: dict[bytes, float] | None = None,
    ) -> None:
        self._view = view
        self._index = index
        self._storage = storage
        self._peers = peers
        self._stats = stats
        self._wall_clock = wall_clock
        self._n = n_replicas
        self.grace = grace
        self._candidates: dict[bytes, float] = {}
        """Tombstones seen by the scan, with when they were first seen (trio time)."""
        self._strays: dict[bytes, float] = {}
        """Copies of keys this node is no replica of (a fallback's, or a former owner's),
        with when they were first seen (trio time)."""
        self.strays_found = 0
        """Keys held outside this node's ranges, as of the last full scan."""
        self._lacking: dict[str, list[tuple[bytes, bytes]]] = {}
        """Stray copies the last confirmation found missing on a replica, by replica."""
        self._seen_this_cycle: set[bytes] = set()
        self._cursor: bytes | None = None
        self._reaped_at: dict[bytes, float] = reaped_at or {}
        """Wall time each marker was made (markers themselves live in ``index.shadow``)."""
        self._saved = storage.get_meta(MARKERS_META) or b""

    @property
    def held(self) -> int:
        """Tombstones this node holds, as of its latest scan."""
        return len(self._candidates)

    @property
    def markers(self) -> int:
        return len(self._index.shadow)

    async def run(self) -> None:
        interval = reap_interval(self.grace)
        while True:
            await trio.sleep(interval)
            try:
                await self.round()
            except StorageFailure as exc:
                self._stats.incr("tombstones.round_failures")
                log.debug("reaping round failed: %s", exc)

    async def round(self) -> int:
        """Scan a chunk; confirm the tombstones past their grace and the copies held outside
        this node's ranges; reap and drop what every replica holds. Returns how many
        tombstones were reaped."""
        self._scan_chunk()
        now = trio.current_time()
        due = [key for key, since in self._candidates.items() if now - since >= self.grace]
        reaped = 0
        if due:
            confirmed = await self._confirm(due[:CONFIRM_BATCH], tombstones=True)
            reaped = await self._reap(confirmed)
        wait = min(self.grace, STRAY_WAIT)
        strays = [key for key, since in self._strays.items() if now - since >= wait]
        if strays:
            confirmed = await self._confirm(strays[:CONFIRM_BATCH], tombstones=False)
            await self._drop_strays(confirmed)
            await self._hand_strays_over()
        await self._expire_markers()
        return reaped

    def _scan_chunk(self) -> None:
        """Look at the next ``scan_chunk`` records, noting tombstones and copies of keys
        this node is no replica of; a full cycle forgets what it no longer found
        (overwritten, reaped, dropped, or back in this node's ranges)."""
        chunk = scan_chunk(self._storage.count(), self.grace)
        items = self._storage.scan_range(0, 0, self._cursor, chunk)
        now = trio.current_time()
        ring = self._view.ring
        me = self._view.node_id
        placed = len(ring.nodes) >= self._n
        for key, record in items:
            if placed and me not in ring.preference_list(key, self._n):
                self._seen_this_cycle.add(key)
                if key not in self._strays and len(self._strays) < MAX_CANDIDATES:
                    self._strays[key] = now
                continue
            live, _terms = versions.index_facts(record)  # no object built: most are live
            if not live:
                self._seen_this_cycle.add(key)
                if key not in self._candidates and len(self._candidates) < MAX_CANDIDATES:
                    self._candidates[key] = now
        if len(items) < chunk:
            for tracked in (self._candidates, self._strays):
                for key in [key for key in tracked if key not in self._seen_this_cycle]:
                    del tracked[key]
            self.strays_found = len(self._strays)
            self._seen_this_cycle = set()
            self._cursor = None
        else:
            self._cursor = items[-1][0]

    def _held(
        self,
        keys: list[bytes],
        tracked: dict[bytes, float],
        *,
        tombstones: bool,
    ) -> dict[bytes, tuple[bytes, versions.VersionedObject]]:
        """The candidates this node still holds as they were (forgetting the others)."""
        mine = dict(zip(keys, self._index.records(keys), strict=True))
        held: dict[bytes, tuple[bytes, versions.VersionedObject]] = {}
        for key, record in mine.items():
            obj = None if record is None else self._index.decode(key, record)
            if record is None or obj is None or key in self._index.shadow:
                tracked.pop(key, None)
                continue
            if tombstones and not obj.is_deleted:
                tracked.pop(key, None)
                continue
            held[key] = (record, obj)
        return held

    def _asks(
        self,
        held: dict[bytes, tuple[bytes, versions.VersionedObject]],
        tracked: dict[bytes, float],
        *,
        tombstones: bool,
    ) -> tuple[dict[str, list[bytes]], dict[bytes, int]]:
        """Which replica to ask about which key, and how many answers each key waits for."""
        ring = self._view.ring
        me = self._view.node_id
        keys = []
        for key in held:
            if not tombstones and me in ring.preference_list(key, self._n):
                tracked.pop(key, None)  # the ring changed: this node is a replica again
            else:
                keys.append(key)
        return self._replicas_to_ask(keys)

    def _replicas_to_ask(
        self, keys: Iterable[bytes]
    ) -> tuple[dict[str, list[bytes]], dict[bytes, int]]:
        """For the keys whose replicas are all readable: which other replica to ask about
        which key, and how many answers each key waits for."""
        ring = self._view.ring
        me = self._view.node_id
        asks: dict[str, list[bytes]] = {}
        waiting: dict[bytes, int] = {}
        for key in keys:
            replicas = ring.preference_list(key, self._n)
            if not all(self._view.readable(node) for node in replicas):
                continue
            others = [node for node in replicas if node != me]
            waiting[key] = len(others)
            for node in others:
                asks.setdefault(node, []).append(key)
        return asks, waiting

    async def _ask_all(
        self,
        asks: dict[str, list[bytes]],
        request: Callable[[list[bytes]], Message],
        answered: Callable[[str, list[bytes], Message], None],
    ) -> None:
        """Send each replica its request about its keys at once; ``answered`` gets each
        reply. A replica that cannot be reached answers nothing: its keys stay unconfirmed."""

        async def ask(node: str, wanted: list[bytes]) -> None:
            try:
                reply = await self._peers.request(
                    self._view.address_of(node), request(wanted), CONFIRM_TIMEOUT
                )
            except (OSError, P2PIndexError):
                self._stats.incr("tombstones.confirm_failures")
                return
            answered(node, wanted, reply)

        async with trio.open_nursery() as nursery:
            for node, wanted in asks.items():
                nursery.start_soon(ask, node, wanted)

    async def _confirm(self, keys: list[bytes], *, tombstones: bool) -> dict[bytes, bytes]:
        """The keys whose record here every preference-list replica holds (or has a
        version descending from), with that record. ``tombstones``: only tombstones are
        wanted (the rest are forgotten as candidates); otherwise copies this node is no
        replica of, and then also those a delete superseded (see ``stray_fate``)."""
        ring = self._view.ring
        me = self._view.node_id
        if len(ring.nodes) < self._n or not self._view.readable(me):
            return {}  # a node still syncing (or degraded) trusts its view of the ring less
        tracked = self._candidates if tombstones else self._strays
        held = self._held(keys, tracked, tombstones=tombstones)
        asks, waiting = self._asks(held, tracked, tombstones=tombstones)
        asked = dict(waiting)
        lacking: dict[bytes, list[str]] = {}
        deleted_above: set[bytes] = set()

        def answered(node: str, wanted: list[bytes], reply: Message) -> None:
            if not isinstance(reply, ReplicaReadManyReply) or len(reply.records) != len(wanted):
                return
            for key, record in zip(wanted, reply.records, strict=True):
                theirs = _decoded(record)
                if theirs is not None and versions.descends(theirs.clock, held[key][1].clock):
                    waiting[key] -= 1
                    if theirs.is_deleted:
                        deleted_above.add(key)
                else:
                    lacking.setdefault(key, []).append(node)

        await self._ask_all(asks, ReplicaReadSettled, answered)
        confirmed = {key: held[key][0] for key, left in waiting.items() if left == 0}
        if not tombstones:
            for key, nodes in lacking.items():
                holding = asked[key] - waiting[key]
                fate = stray_fate(asked[key], holding, len(nodes), key in deleted_above)
                if fate is StrayFate.DROP:
                    confirmed[key] = held[key][0]
                elif fate is StrayFate.HAND_OVER:
                    for node in nodes:
                        self._lacking.setdefault(node, []).append((key, held[key][0]))
        return confirmed

    async def _hand_strays_over(self) -> None:
        """Write each stray copy to the replicas that answered without it. A fallback's copy
        of a write whose hint went to a replica that was then lost (removed, or replaced
        before it passed the write on) may be the last one: kept here, no read would ever
        find it. Replicas merge it like a hint; the next round finds them holding it and
        drops the copy."""
        lacking, self._lacking = self._lacking, {}
        for node, items in sorted(lacking.items()):
            for batch in batches(items, HANDOVER_BYTES):
                if not self._view.readable(node):
                    break
                try:
                    await self._peers.request(
                        self._view.address_of(node), ReplicaWriteBatch(batch), CONFIRM_TIMEOUT
                    )
                except (OSError, P2PIndexError):
                    self._stats.incr("copies.handover_failures")
                    break
                self._stats.incr("copies.handed_over", len(batch))

    async def _drop_strays(self, confirmed: dict[bytes, bytes]) -> None:
        """Remove copies every replica of their key holds; the ring is looked at again right
        before each removal, with no await in between, as is the record."""
        me = self._view.node_id
        for key in confirmed:
            self._strays.pop(key, None)

        def stray(key: bytes) -> bool:
            return me not in self._view.ring.preference_list(key, self._n)

        self._stats.incr("copies.dropped", await self._index.drop_copies(confirmed, stray))

    async def _reap(self, confirmed: dict[bytes, bytes]) -> int:
        """Save the markers first, then remove the tombstones: a crash in between leaves a
        marker for a tombstone still stored, which is harmless; the other order is not."""
        if not confirmed:
            return 0
        now = self._wall_clock()
        for key in confirmed:
            self._reaped_at[key] = now
        await self._save_markers(extra=confirmed)
        reaped = 0
        for key, record in confirmed.items():
            self._candidates.pop(key, None)
            if await self._index.reap(key, record):
                reaped += 1
            else:
                self._reaped_at.pop(key, None)  # written again meanwhile: nothing to reap
        self._stats.incr("tombstones.reaped", reaped)
        return reaped

    async def _expire_markers(self) -> None:
        """Drop markers past their time, but only once no replica of the key still stores
        the tombstone (or anything older): a straggler that has not reaped yet needs the
        others' markers to confirm its own reap, and would otherwise keep it forever."""
        shadow = self._index.shadow
        horizon = self._wall_clock() - self.grace * MARKER_TTL_GRACES
        changed = False
        old: list[bytes] = []
        for key, reaped_at in list(self._reaped_at.items()):
            if key not in shadow:  # the key was written again: its record carries the clock
                del self._reaped_at[key]
                changed = True
            elif reaped_at < horizon:
                old.append(key)
        for key in await self._nobody_stores(old[:CONFIRM_BATCH]):
            del self._reaped_at[key]
            del shadow[key]
            self._stats.incr("tombstones.markers_expired")
            changed = True
        for key in [key for key in shadow if key not in self._reaped_at]:
            del shadow[key]  # reaped by a planted bug or left by a failed save: not ours
            changed = True
        if changed:
            await self._save_markers()

    async def _nobody_stores(self, keys: list[bytes]) -> list[bytes]:
        """The marked keys no other replica stores at or below the marker's version (asked
        for what is in their storage, not what they answer reads with)."""
        ring = self._view.ring
        if not keys or len(ring.nodes) < self._n:
            return []
        shadow = self._index.shadow
        asks, waiting = self._replicas_to_ask(keys)

        def answered(_node: str, wanted: list[bytes], reply: Message) -> None:
            if not isinstance(reply, RecordsReply):
                return
            stored = dict(reply.items)
            for key in wanted:
                record = stored.get(key)
                if record is not None and key in shadow:
                    theirs = _decoded(record)
                    if theirs is None:
                        continue  # unreadable: count it as storing something older
                    if versions.descends(shadow[key][1].clock, theirs.clock):
                        continue  # it still stores the tombstone (or older): keep ours
                waiting[key] -= 1

        await self._ask_all(asks, RecordsRequest, answered)
        return [key for key, left in waiting.items() if left == 0 and key in shadow]

    async def _save_markers(self, extra: dict[bytes, bytes] | None = None) -> None:
        shadow = self._index.shadow
        rows = [
            [key, shadow[key][0], reaped_at]
            for key, reaped_at in sorted(self._reaped_at.items())
            if key in shadow
        ]
        for key, record in (extra or {}).items():
            if key not in shadow:
                rows.append([key, record, self._reaped_at[key]])
        doc = cbor2.dumps(rows)
        if doc != self._saved:
            await self._storage.set_meta(MARKERS_META, doc)
            self._saved = doc

"""Ownership handoff: moving data when the ring changes because a node joins or leaves.

A joining node is SYNCING: it takes writes for its new ranges at once, but does not count
toward read quorums (a coordinator reads from the node the joiner displaced instead) until
it has pulled every range it now replicates from a current owner. The pull is paginated
and applied one batch at a time, which is the back-pressure: an owner never sends faster
than the joiner commits. Progress is saved in the node's metadata after every batch, so a
handoff interrupted by a crash resumes where it stopped.

A leaving node pushes every key it holds to the nodes that take over its place in each
preference list, then stops taking writes and pushes again the keys written meanwhile; the
writes it keeps hints for (``hints``) go to their keys' replicas; only then does it
announce that it left. A node that cannot reach one of them for
``LEAVE_PATIENCE`` seconds abandons the leave and stays (``LeaveAbandoned``): leaving
anyway would take the only copies of some writes (and the hints it holds) with it, and
a node cut off from the others could not even tell them it left.

When a member is removed, each node that gains arcs pulls them from every old replica that
remains (``pull_gained``), and answers no reads until it has them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from p2pindex.config import Limits
from p2pindex.core.batching import batches
from p2pindex.core.ring import Arc, Ring, arc_holding, key_token
from p2pindex.errors import LeaveAbandoned, P2PIndexError, StorageFailure
from p2pindex.node.eventlog import EventLog
from p2pindex.node.peers import PeerPool
from p2pindex.node.stats import StatisticsStore
from p2pindex.storage.base import Storage
from p2pindex.types import Address
from p2pindex.wire.messages import (
    RangeScan,
    RangeScanReply,
    ReplicaWriteBatch,
    StatusReply,
    StatusRequest,
)

log = logging.getLogger(__name__)
events = EventLog(log, trio.current_time)

PROGRESS_LOG_INTERVAL = 5.0
"""Seconds between the progress lines of a handoff in the log."""
BATCH_KEYS = 512
BATCH_BYTES = Limits().max_frame // 2
"""Most key and record bytes one pushed batch carries, so the peer's frame limit holds."""
PROGRESS_META = "handoff.progress"
SYNCED_META = "handoff.synced"
LEFT_META = "handoff.left"
"""Set once a leave handed everything over: the next start drops what the node kept."""
RETRY_DELAY = 1.0
ARCS_PER_CHUNK = 256
"""Ranges one worker takes at a time (a node holds about 3 x 2,048 of them)."""
ARCS_PER_SCAN = 1024
"""Arcs in one RangeScan (the receiver's limit, MAX_SCAN_ARCS, is the same)."""
PARALLEL_CHUNKS = 8
SAVE_INTERVAL = 0.5
LEAVE_PATIENCE = 60.0
"""Seconds a leaving node keeps trying a node that takes its place while every push to it
fails (it is down, cut off, or refuses), before it abandons the leave (a short partition
heals within it)."""
STATUS_TIMEOUT = 5.0
"""Seconds a leaving node waits for another member to say whether it is leaving too."""
GAINED_ATTEMPTS = 5
"""Tries per source when pulling arcs gained by a removal, before it is left to
anti-entropy."""


class HandoffView(Protocol):
    node_id: str

    @property
    def ring(self) -> Ring: ...

    def usable(self, node_id: str) -> bool: ...

    def holds_copies(self, node_id: str) -> bool:
        """Whether a pull may read ``node_id``'s copies (a DEGRADED member's too)."""
        ...

    def address_of(self, node_id: str) -> Address: ...


class WrittenKeys(Protocol):
    """The keys a node commits while it leaves (``IndexManager``)."""

    def track_writes(self) -> None: ...

    def commit_mark(self) -> int: ...

    async def written(self) -> dict[bytes, int] | None: ...


class HandingOver(Protocol):
    handing_over: bool
    """Set once the node has pushed its ranges: it takes no more writes."""


class BatchApplier(Protocol):
    """Applies received (key, record) pairs; called positionally, so the node's method
    may name its parameter as it likes."""

    async def __call__(self, items: list[tuple[bytes, bytes]], /) -> None: ...


@dataclass
class HandoffProgress:
    """What status shows about a handoff in progress (or the last one)."""

    direction: str = "idle"
    ranges_total: int = 0
    ranges_done: int = 0
    keys: int = 0
    bytes: int = 0
    started: float = 0.0
    finished: float | None = None
    last_error: str = ""
    second_pass_keys: int | None = None
    """A leave's second push: the keys written while the first one ran (None before it)."""
    hints: int = 0
    """Writes a leave handed from this node's hints to their keys' replicas."""
    abandoned: str = ""
    """Why a leave was abandoned (the node stayed); empty otherwise."""
    clock: Callable[[], float] = field(default=trio.current_time, repr=False)

    def eta(self, elapsed: float) -> float | None:
        """Seconds left at the pace so far (ranges are many and similar in size, so the
        fraction of ranges done is a fair measure of the work done); None before any."""
        if self.finished is not None:
            return 0.0
        if not self.ranges_done or not self.ranges_total:
            return None
        return elapsed * (self.ranges_total - self.ranges_done) / self.ranges_done

    def doc(self) -> dict[str, object]:
        end = self.finished if self.finished is not None else self.clock()
        elapsed = max(end - self.started, 1e-9) if self.started else 0.0
        eta = self.eta(elapsed)
        return {
            "direction": self.direction,
            "ranges_total": self.ranges_total,
            "ranges_done": self.ranges_done,
            "keys": self.keys,
            "bytes": self.bytes,
            "elapsed_s": round(elapsed, 3),
            "keys_per_s": round(self.keys / elapsed, 1) if elapsed else 0.0,
            "bytes_per_s": round(self.bytes / elapsed, 1) if elapsed else 0.0,
            "done": self.finished is not None,
            "percent": round(100 * self.ranges_done / self.ranges_total, 1)
            if self.ranges_total
            else 0.0,
            "eta_s": None if eta is None else round(eta, 1),
            "last_error": self.last_error,
            "second_pass_keys": self.second_pass_keys,
            "hints": self.hints,
            "abandoned": self.abandoned,
        }


class RecordMover:
    """What the two tasks that copy records between replicas share (ownership handoff here,
    anti-entropy in ``antientropy``): the store they read, the peers they ask, the node's
    way to apply a batch of records, and its statistics."""

    def __init__(
        self,
        storage: Storage,
        peers: PeerPool,
        apply_batch: BatchApplier,
        stats: StatisticsStore,
    ) -> None:
        self._storage = storage
        self._peers = peers
        self._apply_batch = apply_batch
        self._stats = stats


class OwnershipHandoff(RecordMover):
    def __init__(
        self,
        view: HandoffView,
        storage: Storage,
        peers: PeerPool,
        apply_batch: BatchApplier,
        stats: StatisticsStore,
        n_replicas: int,
    ) -> None:
        super().__init__(storage, peers, apply_batch, stats)
        self._view = view
        self._n = n_replicas
        self.progress = HandoffProgress()
        self._saved_at = float("-inf")
        self._logged_at = float("-inf")

    def _log_started(self) -> None:
        progress = self.progress
        self._logged_at = trio.current_time()
        verb = "pushing" if progress.direction == "out" else "pulling"
        events.info(
            "handoff",
            "handoff %s started: %s %d range(s)%s",
            progress.direction,
            verb,
            progress.ranges_total,
            f", resuming at {progress.ranges_done}" if progress.ranges_done else "",
        )

    def _log_progress(self) -> None:
        """At most one line every PROGRESS_LOG_INTERVAL seconds while a handoff runs."""
        now = trio.current_time()
        if now - self._logged_at < PROGRESS_LOG_INTERVAL:
            return
        self._logged_at = now
        progress = self.progress
        events.info(
            "handoff",
            "handoff %s: %d of %d range(s), %d key(s), %d byte(s) so far",
            progress.direction,
            progress.ranges_done,
            progress.ranges_total,
            progress.keys,
            progress.bytes,
        )

    def _log_finished(self) -> None:
        doc = self.progress.doc()
        again = self.progress.second_pass_keys
        events.info(
            "handoff-done",  # its own budget: progress lines never hold the summary back
            "handoff %s finished: %d key(s), %d byte(s) in %.1fs%s",
            doc["direction"],
            doc["keys"],
            doc["bytes"],
            doc["elapsed_s"],
            "" if again is None else f" ({again} key(s) written during the push sent again)",
        )

    def already_synced(self) -> bool:
        return bool(self._storage.get_meta(SYNCED_META))

    async def mark_synced(self) -> None:
        await self._write_meta(SYNCED_META, b"1")

    async def forget_synced(self) -> None:
        """After handing every range over (a leave): what this node holds stops being
        current as soon as it is gone, so coming back it pulls its ranges as a joiner
        does instead of serving its old copies as replicas that never left; and it drops
        them first (``drop_copies_if_it_left``)."""
        await self._write_meta(SYNCED_META, b"")
        await self._write_meta(LEFT_META, b"1")

    async def drop_copies_if_it_left(self) -> None:
        """Started again after it left, drop every record it kept before joining. The others
        hold all of it (the leave handed it over) and anything newer; what it kept can only
        be older. Kept, it would bring back keys deleted while it was away once their
        tombstones were reaped (after the tombstone grace): merged with replicas that hold
        nothing for such a key, an old live record wins, and anti-entropy spreads it."""
        if self._storage.get_meta(LEFT_META) != b"1":
            return
        total = self._storage.count()
        events.info(
            "handoff",
            "this node left the cluster when it last ran: dropping the %d record(s) it kept "
            "(the others hold them, and anything newer) before joining again",
            total,
        )
        while batch := self._storage.scan_range(0, 0, None, BATCH_KEYS):
            try:
                async with trio.open_nursery() as nursery:  # one commit for the batch
                    for key, _record in batch:
                        nursery.start_soon(self._storage.remove, key)
            except* StorageFailure:
                self._stats.incr("handoff.meta_failures")
                await trio.sleep(RETRY_DELAY)
        await self._write_meta(LEFT_META, b"")
        log.info("dropped the %d record(s) kept from before the leave", total)

    async def _write_meta(self, name: str, value: bytes) -> None:
        """Write handoff metadata, retrying while storage refuses (a full disk): the node
        runs on meanwhile, and an unwritten mark only means more work after a restart."""
        while True:
            try:
                await self._storage.set_meta(name, value)
                return
            except StorageFailure:
                self._stats.incr("handoff.meta_failures")
                await trio.sleep(RETRY_DELAY)

    # --- joining ----------------------------------------------------------------------------

    async def pull_ranges(self, *, from_every_replica: bool = False) -> None:
        """Pull every range this node replicates from a node that held it before the join
        (``from_every_replica``: from every other replica of it, for a replacement).

        Returns when all ranges are in; retries a range against another owner (or later)
        when its source fails, so it never gives up on data. Ranges go in chunks of up to
        ARCS_PER_CHUNK, several chunks at once; each chunk asks each source for all of the
        chunk's arcs it held in one scan (most arcs are small, so round trips dominate). The
        saved progress is the index below which every range is done, and a resumed handoff
        restarts from there (re-applying a record is harmless: replicas merge).

        A replacement holds the dead member's tokens, so no live node is displaced: every
        range comes from all its surviving replicas (``pull_gained``), whose union holds
        every write a quorum acknowledged, the dead member's among them.
        """
        me = self._view.node_id
        ring = self._view.ring
        if from_every_replica:
            arcs = [
                (start, end, ring.preference_list_for_token(end, self._n))
                for start, end in ring.ranges_for(me, self._n)
            ]
            await self.pull_gained(arcs, direction="in")
            await self.mark_synced()
            return
        before = ring.without_node(me)
        ranges = ring.ranges_for(me, self._n)
        resume_at = self._load_progress()
        self.progress = HandoffProgress(
            direction="in",
            ranges_total=len(ranges),
            ranges_done=resume_at,
            started=trio.current_time(),
        )
        self._log_started()
        done = [index < resume_at for index in range(len(ranges))]
        chunks = iter(
            range(first, min(first + ARCS_PER_CHUNK, len(ranges)))
            for first in range(resume_at, len(ranges), ARCS_PER_CHUNK)
        )

        def finished(index: int) -> None:
            done[index] = True
            self.progress.ranges_done += 1

        async def worker() -> None:
            for chunk in chunks:
                await self._pull_chunk(list(chunk), ranges, ring, before, finished)
                await self._save_progress(done)

        async with trio.open_nursery() as nursery:
            for _ in range(PARALLEL_CHUNKS):
                nursery.start_soon(worker)
        await self._write_meta(PROGRESS_META, b"")
        await self.mark_synced()
        self.progress.finished = trio.current_time()
        self._log_finished()

    async def _pull_chunk(
        self,
        indices: list[int],
        ranges: list[tuple[int, int]],
        ring: Ring,
        before: Ring,
        finished: Callable[[int], None],
    ) -> None:
        """Pull the ranges at ``indices``, each from a node that held it in ``before``."""
        sources = {
            index: _sources(ranges[index][1], ring, before, self._n, self._view.node_id)
            for index in indices
        }
        failed: set[str] = set()
        while sources:
            by_source: dict[str, list[int]] = {}
            for index, candidates in sources.items():
                source = next(
                    (n for n in candidates if n not in failed and self._view.holds_copies(n)),
                    None,
                )
                if source is not None:
                    by_source.setdefault(source, []).append(index)
            for source, group in by_source.items():

                def arc_done(position: int, group: list[int] = group) -> None:
                    finished(group[position])
                    del sources[group[position]]

                try:
                    await self._pull_from(source, [ranges[i] for i in group], arc_done)
                except (OSError, P2PIndexError) as exc:
                    failed.add(source)
                    self._stats.incr("handoff.source_failures")
                    self.progress.last_error = f"{source}: {exc}"
                    events.info(
                        "handoff-error",
                        "handoff in: pulling from %s failed (another owner or a retry takes "
                        "over): %s",
                        source,
                        exc,
                    )
            if sources and not by_source:  # every owner of what is left is down or failed
                failed.clear()
                await trio.sleep(RETRY_DELAY)

    async def _pull_from(
        self, source: str, arcs: list[tuple[int, int]], arc_done: Callable[[int], None]
    ) -> None:
        """Scan ``arcs`` on ``source``, applying what comes back; ``arc_done(i)`` is called
        once arc ``i`` is complete here."""
        address = self._view.address_of(source)
        position = 0
        after: bytes | None = None
        while position < len(arcs):
            asked = arcs[position : position + ARCS_PER_SCAN]
            scan = RangeScan([a for a, _ in asked], [b for _, b in asked], after, BATCH_KEYS)
            reply = await self._peers.request(address, scan, timeout=30.0)
            if not isinstance(reply, RangeScanReply):
                raise P2PIndexError(f"unexpected reply {type(reply).__name__} to a range scan")
            complete = reply.arcs_done
            if not 0 <= complete <= len(asked) or (complete < len(asked) and not reply.items):
                raise P2PIndexError(
                    f"{source} answered a scan of {len(asked)} arcs with {complete}"
                )
            if reply.items:
                await self._apply_batch(reply.items)
                self.progress.keys += len(reply.items)
                self.progress.bytes += sum(len(k) + len(r) for k, r in reply.items)
                self._stats.incr("handoff.keys_in", len(reply.items))
                self._log_progress()
            for offset in range(complete):
                arc_done(position + offset)
            position += complete
            after = reply.items[-1][0] if complete < len(asked) else None

    def _load_progress(self) -> int:
        raw = self._storage.get_meta(PROGRESS_META)
        return int(json.loads(raw)["watermark"]) if raw else 0

    async def _save_progress(self, done: list[bool]) -> None:
        """Persist the watermark, at most every SAVE_INTERVAL seconds."""
        now = trio.current_time()
        if now - self._saved_at < SAVE_INTERVAL:
            return
        self._saved_at = now
        watermark = next((i for i, finished in enumerate(done) if not finished), len(done))
        try:
            await self._storage.set_meta(
                PROGRESS_META, json.dumps({"watermark": watermark}).encode()
            )
        except StorageFailure:
            # Saved progress only shortens a handoff resumed after a crash; the next save
            # (or a full restart of the pull) covers for this one.
            self._stats.incr("handoff.meta_failures")

    # --- after a removal ---------------------------------------------------------------------

    async def pull_gained(
        self, arcs: list[tuple[int, int, tuple[str, ...]]], direction: str = "gained"
    ) -> None:
        """Pull the arcs this node gained when a member was removed from *every* old replica
        of each that is still reachable (``core.ring.gained_arcs`` names them).

        No displaced node hands its copy over here: the removed one is gone, so a write
        acknowledged by it and one other replica is on that other replica only. The union of
        the remaining old replicas holds every write a quorum acknowledged. A source that
        is down is retried while it is reachable, then skipped: its copies come back through
        anti-entropy once it returns. A DEGRADED source is read like any other: its disk
        refuses writes, not reads, and it may hold the only copy left.
        """
        by_source: dict[str, list[tuple[int, int]]] = {}
        for start, end, sources in arcs:
            for source in sources:
                if source != self._view.node_id:
                    by_source.setdefault(source, []).append((start, end))
        self.progress = HandoffProgress(
            direction=direction,
            ranges_total=sum(len(group) for group in by_source.values()),
            started=trio.current_time(),
        )
        self._log_started()

        def arc_done(_position: int) -> None:
            self.progress.ranges_done += 1

        async def pull(source: str, group: list[tuple[int, int]]) -> None:
            for _attempt in range(GAINED_ATTEMPTS):
                if not self._view.holds_copies(source):
                    break
                try:
                    await self._pull_from(source, group, arc_done)
                    return
                except (OSError, P2PIndexError) as exc:
                    self._stats.incr("handoff.source_failures")
                    self.progress.last_error = f"{source}: {exc}"
                    await trio.sleep(RETRY_DELAY)
            self._stats.incr("handoff.gained_sources_skipped")
            events.info(
                "handoff-error",
                "handoff gained: %s could not be read; anti-entropy brings its copies later",
                source,
            )

        async with trio.open_nursery() as nursery:
            for source, group in sorted(by_source.items()):
                nursery.start_soon(pull, source, group)
        self.progress.finished = trio.current_time()
        self._log_finished()

    # --- leaving ----------------------------------------------------------------------------

    async def push_all(self, written: WrittenKeys | None = None) -> list[tuple[Arc, int]]:
        """A leave's first pass: give every key this node replicates to the nodes that
        replace it. ``hand_over`` ends the handoff after its second pass. Returns each range
        with ``written``'s commit mark when its scan began (see ``written_after_scan``)."""
        ranges = self._view.ring.ranges_for(self._view.node_id, self._n)
        self.progress = HandoffProgress(
            direction="out", ranges_total=len(ranges), started=trio.current_time()
        )
        self._log_started()
        return list(zip(ranges, await self._push_ranges(ranges, written), strict=True))

    async def _push_ranges(
        self, ranges: list[tuple[int, int]], written: WrittenKeys | None = None
    ) -> list[int]:
        marks: list[int] = []
        ring = self._view.ring
        after_ring = ring.without_node(self._view.node_id)
        # Most ranges hold a few keys each (a node has about 3 x 2,048 of them): records of
        # many ranges go out together, so the push costs a request per BATCH_KEYS keys and
        # not one per range. A shorter push also leaves fewer writes for the second pass.
        pending: list[tuple[bytes, bytes]] = []
        for start, end in ranges:
            marks.append(written.commit_mark() if written is not None else 0)
            cursor: bytes | None = None
            while True:
                items = self._storage.scan_range(start, end, cursor, BATCH_KEYS)
                pending += items
                if len(pending) >= BATCH_KEYS:
                    await self._push_batch(pending, ring, after_ring)
                    pending = []
                if len(items) < BATCH_KEYS:
                    break
                cursor = items[-1][0]
            self.progress.ranges_done += 1
        if pending:
            await self._push_batch(pending, ring, after_ring)
        return marks

    async def hand_over(self, written: WrittenKeys, view: HandingOver) -> None:
        """A leaving node's handoff. Replicas keep writing to it while it pushes, and a
        write that lands after its range went would leave with it. So: push everything,
        stop taking writes, wait for the commits in flight, push again what was written
        meanwhile. The handoff is finished (in ``status`` and the log, with what both
        passes sent) only after the second pass: the figures an operator compares with
        ``p2pindex plan remove``."""
        written.track_writes()
        try:
            scanned = await self.push_all(written)
        except LeaveAbandoned:
            await written.written()  # stops the tracking
            raise
        view.handing_over = True
        commits = await written.written()
        if commits is None:
            log.info("handoff out: too many keys were written during the push; pushing all again")
            self.progress.ranges_done = 0
            await self._push_ranges(self._view.ring.ranges_for(self._view.node_id, self._n))
        else:
            keys = written_after_scan(commits, scanned)
            log.info(
                "handoff out: pushing again the %d key(s) written after their range was read",
                len(keys),
            )
            self.progress.second_pass_keys = len(keys)
            await self.push_keys(keys)
        self.progress.finished = trio.current_time()
        self._log_finished()

    @property
    def n_replicas(self) -> int:
        return self._n

    async def others_leaving(self) -> list[str]:
        """The other live members whose status says they are leaving too, asked at once.

        Each leave is decided alone, on the ring as it was, so leaves that run together
        hand data to one another: every node of a cluster stopped with SIGTERM at once
        pushed its keys to nodes that were leaving too, and all of it was gone."""
        me = self._view.node_id
        leaving: list[str] = []

        async def ask(node: str) -> None:
            try:
                reply = await self._peers.request(
                    self._view.address_of(node),
                    StatusRequest(leaving_only=True),
                    timeout=STATUS_TIMEOUT,
                )
            except (OSError, P2PIndexError):
                return  # down or unreachable: its leave, if any, could not finish either
            if isinstance(reply, StatusReply) and reply.status.get("leaving") is True:
                leaving.append(node)

        async with trio.open_nursery() as nursery:
            for node in sorted(self._view.ring.nodes):
                if node != me and self._view.usable(node):
                    nursery.start_soon(ask, node)
        return sorted(leaving)

    async def push_keys(self, keys: set[bytes]) -> None:
        """Push ``keys`` again (those written after ``push_all`` read their range) to the
        nodes that replace this one: such a write would otherwise leave with this node."""
        me = self._view.node_id
        ring = self._view.ring
        after_ring = ring.without_node(me)
        ordered = sorted(keys)
        for first in range(0, len(ordered), BATCH_KEYS):
            chunk = ordered[first : first + BATCH_KEYS]
            stored = self._storage.get_many(chunk)
            items = [(key, stored[key]) for key in chunk if key in stored]
            if items:
                await self._push_batch(items, ring, after_ring)

    async def _push_batch(
        self, items: list[tuple[bytes, bytes]], ring: Ring, after_ring: Ring
    ) -> None:
        by_target: dict[str, list[tuple[bytes, bytes]]] = {}
        for key, record in items:
            token = key_token(key)
            old = set(ring.preference_list_for_token(token, self._n))
            for node in after_ring.preference_list_for_token(token, self._n):
                if node not in old:
                    by_target.setdefault(node, []).append((key, record))
        for target, batch in (
            (target, batch)
            for target, items in by_target.items()
            for batch in batches(items, BATCH_BYTES)
        ):
            # Patience runs from the first failure in a row, whether the target is down or
            # alive and refusing every push (a member that removed this node refuses it for
            # good while gossip still shows it alive): only a push that lands resets it.
            failing_since: float | None = None
            while True:
                try:
                    await self._peers.request(
                        self._view.address_of(target), ReplicaWriteBatch(batch), timeout=30.0
                    )
                    break
                except (OSError, P2PIndexError) as exc:
                    self._stats.incr("handoff.push_failures")
                    self.progress.last_error = f"{target}: {exc}"
                    now = trio.current_time()
                    if failing_since is None:
                        failing_since = now
                    elif now - failing_since >= LEAVE_PATIENCE:
                        how = (
                            "refused every push"
                            if self._view.usable(target)
                            else "was down or unreachable"
                        )
                        raise LeaveAbandoned(
                            f"node {target}, which takes over some of this node's ranges, "
                            f"{how} for {LEAVE_PATIENCE:g}s ({exc}); "
                            f"{self.progress.keys} key(s) were handed over before that"
                        ) from None
                    await trio.sleep(RETRY_DELAY)
            self.progress.keys += len(batch)
            self.progress.bytes += sum(len(k) + len(r) for k, r in batch)
            self._stats.incr("handoff.keys_out", len(batch))
            self._log_progress()


def _sources(token: int, ring: Ring, before: Ring, n: int, me: str) -> list[str]:
    """The nodes that held the range ending at ``token`` before this node joined, the one
    this node displaces first.

    The displaced node gives up the range, so taking its copy keeps every quorum
    intersecting: a write acknowledged by two of the old replicas is on two of the new
    ones (the joiner standing in for the displaced node). A copy from another old replica
    may lack a write that reached only the displaced node and one other, and a quorum of
    the new replicas could then miss it. The others are the fallback while it is down.
    """
    owners = set(ring.preference_list_for_token(token, n))
    held = [node for node in before.preference_list_for_token(token, n) if node != me]
    return sorted(held, key=lambda node: node in owners)


def written_after_scan(commits: dict[bytes, int], scanned: list[tuple[Arc, int]]) -> set[bytes]:
    """The keys of ``commits`` (key -> number of its last commit) whose last commit came
    after the first pass began reading their range (``scanned``: each range with the commit
    number then). A key committed before went out with that pass; pushing it again would
    only move its bytes twice. A key outside every range is kept, to be safe."""
    ranges = [arc for arc, _ in scanned]
    starts = [start for start, _ in ranges]
    again: set[bytes] = set()
    for key, commit in commits.items():
        index = arc_holding(ranges, starts, key_token(key))
        if index is None or commit > scanned[index][1]:
            again.add(key)
    return again

"""A simulated disk: MemoryStorage plus commit latency, durability modes and disk faults.

A :class:`SimDisk` is the disk of one simulated machine; it outlives the node processes that
use it. Each process gets a :class:`SimStorage` (the Storage seam) from :meth:`SimDisk.open`.

The model. Every write is applied to the disk's MemoryStorage at once (so it is visible to
``get`` before ``put`` returns, as the Storage protocol promises), then takes a commit latency
drawn from the seed; ``put`` returns when the commit is done. Until then the write is *in
flight*. Once committed it is *synced* immediately when the node runs with ``fsync=True``, or
at the next periodic write-back otherwise (the OS flushing its page cache). An undo journal
remembers every write that is not yet synced, so :meth:`SimDisk.crash` can roll back exactly
what a crash loses:

* ``DiskMode.KEPT`` (the process was killed): writes in flight are lost; committed ones stay.
* ``DiskMode.UNSYNCED_LOST`` (power cut): writes in flight and committed-but-unsynced ones are
  lost. With ``fsync=True`` nothing acknowledged is lost; a node that acknowledges before its
  commit returns loses what it acknowledged.
* ``DiskMode.WIPED``: the disk comes back empty (the runner keeps the node's identity).

Deleting delivered hints is not journaled: a lost delete only causes a redundant, idempotent
redelivery, and keeping it is equally valid, so either outcome is a real crash outcome.

Faults: ``full`` makes every write that adds data fail with ``StorageFailure`` before it
changes anything (removals still work, as on a full file system); ``fsync_error_rate`` makes a
commit fail after the write was applied — the write is rolled back and ``StorageFailure`` raised
(fsyncgate: the data must not be trusted); ``latency_factor`` slows commits (a slow disk).
While the machine is paused every storage call waits.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Final

import trio

from p2pindex.core.terms import Term
from p2pindex.errors import StorageFailure
from p2pindex.sim.faults import DiskMode
from p2pindex.storage.base import Hint, HintBacklog, require_open
from p2pindex.storage.index_rows import IndexScanPage, KeyFilter
from p2pindex.storage.memory import MemoryStorage
from p2pindex.types import NodeId

PRUNE_EVERY: Final = 256
"""Drop synced entries from the undo journal once it holds this many."""


class _Status(Enum):
    IN_FLIGHT = "in_flight"
    COMMITTED = "committed"


@dataclass(slots=True)
class _Entry:
    """One not-yet-synced write and what it takes to undo it."""

    status: _Status
    records: list[tuple[bytes, bytes | None, bytes | None]]
    """(key, record written or None for a removal, record before)."""
    meta: tuple[str, bytes, bytes | None] | None = None
    hint: tuple[NodeId, bytes, bytes, float] | None = None
    committed_at: float = 0.0


async def _always_running() -> None:
    return None


class SimDisk:
    """The disk of one simulated machine (survives crashes unless wiped)."""

    def __init__(
        self,
        name: str,
        rng: random.Random,
        *,
        latency: float = 0.002,
        fsync: bool = True,
        writeback_interval: float = 5.0,
        gate: Callable[[], Awaitable[None]] = _always_running,
    ) -> None:
        if latency < 0 or writeback_interval <= 0:
            raise ValueError("latency must be >= 0 and writeback_interval > 0")
        self.name = name
        self.latency = latency
        self.fsync = fsync
        self.writeback_interval = writeback_interval
        self.full = False
        self.fsync_error_rate = 0.0
        self.latency_factor = 1.0
        self.stats: dict[str, int] = {"commits": 0, "failures": 0, "lost_writes": 0}
        self._rng = rng
        self._gate = gate
        self._image = MemoryStorage()
        self._journal: dict[int, _Entry] = {}
        self._next_entry = 0
        self._current: SimStorage | None = None

    @property
    def image(self) -> MemoryStorage:
        """The disk's current contents (read-only use: samplers and divergence checks)."""
        return self._image

    def records(self) -> dict[bytes, bytes]:
        """Every record the disk holds now, committed or in flight."""
        image = self._image
        return dict(image.scan_range(0, 0, None, image.count() + 1))

    def durable_records(self) -> dict[bytes, bytes]:
        """The records a kill -9 now would leave: ``records`` without writes in flight.

        What a crash takes beyond these was committed, so a correct node may have
        acknowledged it; the runner tells the checkers about exactly that loss.
        """
        records = self.records()
        in_flight = [e for e in self._journal.values() if e.status is _Status.IN_FLIGHT]
        for entry in reversed(in_flight):
            for key, written, before in reversed(entry.records):
                if records.get(key) != written:
                    continue
                if before is None:
                    records.pop(key, None)
                else:
                    records[key] = before
        return records

    async def provision(self, meta: dict[str, bytes]) -> None:
        """Write metadata straight to stable storage, as an installer would before first boot."""
        if self._current is not None:
            raise ValueError(f"disk {self.name} is in use; provision it before the first start")
        for name, value in meta.items():
            await self._image.set_meta(name, value)

    def open(self) -> SimStorage:
        """The Storage a newly started process sees; the previous one must be crashed."""
        if self._current is not None and self._current.alive:
            raise ValueError(f"disk {self.name} is already in use by a running process")
        self._current = SimStorage(self)
        return self._current

    async def crash(self, mode: DiskMode) -> int:
        """The process died: roll back what ``mode`` loses. Returns the writes lost."""
        if self._current is not None:
            self._current.alive = False
        if mode is DiskMode.WIPED:
            lost = self._image.count()
            self._image = MemoryStorage()
            self._journal.clear()
            self.stats["lost_writes"] += lost
            return lost
        synced_before = self._synced_before()
        doomed = [
            entry
            for entry in self._journal.values()
            if entry.status is _Status.IN_FLIGHT
            or (mode is DiskMode.UNSYNCED_LOST and entry.committed_at > synced_before)
        ]
        self._journal.clear()
        for entry in reversed(doomed):
            await self._undo(entry)
        self.stats["lost_writes"] += len(doomed)
        return len(doomed)

    # ----------------------------------------------------------------- internals

    def _synced_before(self) -> float:
        """Commits at or before this virtual time have reached stable storage."""
        now = trio.current_time()
        if self.fsync:
            return now
        return (now // self.writeback_interval) * self.writeback_interval

    def _begin(self, entry: _Entry) -> int:
        if len(self._journal) >= PRUNE_EVERY:
            synced_before = self._synced_before()
            self._journal = {
                number: kept
                for number, kept in self._journal.items()
                if kept.status is _Status.IN_FLIGHT or kept.committed_at > synced_before
            }
        number = self._next_entry
        self._next_entry += 1
        self._journal[number] = entry
        return number

    async def _commit(self, number: int, owner: SimStorage) -> None:
        """Wait out the commit latency; fail it (and roll it back) on an fsync error."""
        latency = self.latency * self.latency_factor
        # The commit finishes even if the caller is cancelled (a request timeout does not stop
        # the disk); a crash is what loses it, through the journal. One shielded scope with a
        # deadline is the sleep (half the cost of trio.sleep inside a shield).
        if latency:
            done_at = trio.current_time() + self._rng.expovariate(1 / latency)
            with trio.CancelScope(shield=True, deadline=done_at):
                await trio.sleep_forever()
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
        entry = self._journal.get(number)
        if not owner.alive or entry is None:
            # The process was crashed: its tasks were cancelled, so end like they would.
            await trio.lowlevel.checkpoint_if_cancelled()
            raise StorageFailure("the process crashed before the commit finished")
        if self.fsync_error_rate and self._rng.random() < self.fsync_error_rate:
            del self._journal[number]
            await self._undo(entry)
            self.stats["failures"] += 1
            raise StorageFailure(f"simulated fsync error (EIO) on {self.name}")
        entry.status = _Status.COMMITTED
        entry.committed_at = trio.current_time()
        self.stats["commits"] += 1
        if self.fsync:
            del self._journal[number]

    async def _undo(self, entry: _Entry) -> None:
        image = self._image
        for key, written, before in reversed(entry.records):
            if image.get(key) != written:
                continue
            if before is None:
                await image.remove(key)
            else:
                await image.put(key, before)
        if entry.meta is not None:
            # A first-ever meta value cannot be unset through the Storage API; keeping it is
            # also a valid crash outcome (the commit may have finished just before the kill).
            name, written_meta, before_meta = entry.meta
            if before_meta is not None and image.get_meta(name) == written_meta:
                await image.set_meta(name, before_meta)
        if entry.hint is not None:
            target, key, record, created = entry.hint
            held = sum(backlog.count for backlog in image.hint_backlog())
            for hint in reversed(image.hints_for(target, held)):
                if (hint.key, hint.record, hint.created) == (key, record, created):
                    await image.delete_hints([hint.hint_id])
                    break


class SimStorage:
    """The Storage seam of one process over a SimDisk."""

    def __init__(self, disk: SimDisk) -> None:
        self._disk = disk
        self.alive = True
        self._closed = False

    # reads: straight from the disk image

    def get(self, key: bytes) -> bytes | None:
        self._check_open()
        return self._disk.image.get(key)

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        self._check_open()
        return self._disk.image.get_many(keys)

    def scan_range(
        self, start: int, end: int, after: bytes | None, limit: int
    ) -> list[tuple[bytes, bytes]]:
        self._check_open()
        return self._disk.image.scan_range(start, end, after, limit)

    def scan_digests(
        self, start: int, end: int, after: bytes | None, limit: int
    ) -> list[tuple[bytes, bytes]]:
        self._check_open()
        return self._disk.image.scan_digests(start, end, after, limit)

    def count(self) -> int:
        self._check_open()
        return self._disk.image.count()

    def disk_usage(self) -> dict[str, int]:
        return {}

    def index_scan(self, page: IndexScanPage) -> list[tuple[Term, bytes]]:
        self._check_open()
        return self._disk.image.index_scan(page)

    def key_scan(
        self, prefix: bytes, after: bytes | None, limit: int, keep: KeyFilter = None
    ) -> list[bytes]:
        self._check_open()
        return self._disk.image.key_scan(prefix, after, limit, keep)

    def hints_for(self, target: NodeId, limit: int) -> list[Hint]:
        self._check_open()
        return self._disk.image.hints_for(target, limit)

    def hint_backlog(self) -> list[HintBacklog]:
        self._check_open()
        return self._disk.image.hint_backlog()

    def get_meta(self, name: str) -> bytes | None:
        self._check_open()
        return self._disk.image.get_meta(name)

    # writes: applied at once, durable after the commit

    async def put(self, key: bytes, record: bytes) -> None:
        await self.put_many([(key, record)])

    async def put_many(self, items: list[tuple[bytes, bytes]]) -> None:
        await self._enter(adds_data=True)
        image = self._disk.image
        before: list[tuple[bytes, bytes | None, bytes | None]] = [
            (key, record, image.get(key) if isinstance(key, bytes) else None)
            for key, record in items
        ]
        await self._apply(_Entry(_Status.IN_FLIGHT, before), lambda: image.put_many_now(items))

    async def remove(self, key: bytes) -> None:
        await self._enter(adds_data=False)
        image = self._disk.image
        previous = image.get(key)
        entry = _Entry(_Status.IN_FLIGHT, [(key, None, previous)])
        await self._apply(entry, lambda: image.remove_now(key))

    async def add_hint(self, target: NodeId, key: bytes, record: bytes, created: float) -> None:
        await self._enter(adds_data=True)
        image = self._disk.image
        entry = _Entry(_Status.IN_FLIGHT, [], hint=(target, key, record, float(created)))
        await self._apply(entry, lambda: image.add_hint_now(target, key, record, created))

    async def delete_hints(self, hint_ids: list[int]) -> None:
        await self._enter(adds_data=False)
        await self._disk.image.delete_hints(hint_ids)

    async def set_meta(self, name: str, value: bytes) -> None:
        await self._enter(adds_data=True)
        image = self._disk.image
        previous = image.get_meta(name) if isinstance(name, str) and name else None
        entry = _Entry(_Status.IN_FLIGHT, [], meta=(name, value, previous))
        await self._apply(entry, lambda: image.set_meta_now(name, value))

    async def aclose(self) -> None:
        self._closed = True
        await trio.lowlevel.checkpoint()

    # ----------------------------------------------------------------- internals

    def _check_open(self) -> None:
        require_open(self._closed)
        if not self.alive:
            raise StorageFailure("the process using this storage crashed")

    async def _enter(self, *, adds_data: bool) -> None:
        # No waiting here, not even for a paused machine: the Storage promise is that a write
        # is visible before the first await, and the node's read-merge-write relies on it. A
        # paused machine's writes wait for the gate after they are applied (in _apply).
        self._check_open()
        await trio.lowlevel.checkpoint_if_cancelled()
        if adds_data and self._disk.full:
            self._disk.stats["failures"] += 1
            raise StorageFailure(f"simulated disk full (ENOSPC) on {self._disk.name}")

    async def _apply(self, entry: _Entry, write: Callable[[], None]) -> None:
        """Apply ``write`` to the image under a journal entry, then wait for its commit.

        The write itself is instantaneous and the commit is shielded: once a write is applied
        its commit runs to the end even if the caller is cancelled, as a real disk's would;
        only a crash (the journal) loses it.
        """
        number = self._disk._begin(entry)
        try:
            write()
        except (StorageFailure, ValueError, TypeError):
            self._disk._journal.pop(number, None)
            raise
        await self._disk._gate()
        await self._disk._commit(number, self)

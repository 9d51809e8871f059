"""Deliberate defects for proving the simulation harness, planted from outside the node.

Each bug is the *wrong* version of one rule the real code keeps. The simulator plants it
through a seam it owns anyway, so no production module knows the bug exists: the storage
it hands a node (storage bugs), the SWIM configuration (no suspicion), the version rules
the node is built with (last-writer-wins, no dots), and the network between the nodes and
their clients (a definite answer after a write was sent; rewritten at the client's end,
where the replies are plain frames even when the cluster is secure).
simulations/planted_bugs.py and tests/integration/test_planted_bugs.py plant one at a time
and require the checker that guards the broken rule to catch it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import trio

from p2pindex.config import Limits
from p2pindex.core import versions
from p2pindex.core.swim import SwimConfig
from p2pindex.core.versions import VersionedObject, VersionVector
from p2pindex.errors import StorageFailure, Timeout, Unavailable
from p2pindex.net.base import Transport
from p2pindex.net.secure.connector import Connector
from p2pindex.node.replica import Versioning
from p2pindex.storage.base import Storage
from p2pindex.types import Address
from p2pindex.wire.codec import FrameDecoder, encode_frame
from p2pindex.wire.messages import ErrorReply

PLANTED_BUGS: Final = frozenset(
    {
        "lww",
        "ack-before-commit",
        "hints-dropped-on-restart",
        "early-tombstone-reap",
        "no-dots",
        "swim-no-suspicion",
        "definite-after-send",
        "ack-failed-commit",
    }
)


def unknown_bugs(bugs: frozenset[str]) -> str | None:
    """Why ``bugs`` cannot be planted, in a scenario author's words; None if they can."""
    unknown = bugs - PLANTED_BUGS
    if not unknown:
        return None
    return (
        f"unknown planted bug(s) {', '.join(sorted(unknown))}; known: "
        f"{', '.join(sorted(PLANTED_BUGS))}"
    )


@dataclass(frozen=True, slots=True)
class PlantedSeams:
    """What a node is built with instead of the real pieces (the real ones where no bug)."""

    storage: Storage
    transport: Transport
    swim_config: SwimConfig | None
    versioning: Versioning | None
    write_back: AckBeforeCommit | None
    """Needs a nursery of the node's process to commit in (``run_in``)."""
    drop_hints_at_start: bool


def plant(bugs: frozenset[str], storage: Storage, transport: Transport) -> PlantedSeams:
    """The seams of one node process with ``bugs`` planted."""
    write_back = None
    if "ack-failed-commit" in bugs:
        storage = AckFailedCommit(storage)
    if "early-tombstone-reap" in bugs:
        storage = EarlyTombstoneReap(storage)
    if "ack-before-commit" in bugs:
        storage = write_back = AckBeforeCommit(storage)
    swim_config = None
    if "swim-no-suspicion" in bugs:
        # A failed probe convicts at once: no suspicion period for the member to refute.
        swim_config = dataclasses.replace(
            SwimConfig.default(), suspicion_mult=1e-3, lifeguard=False
        )
    versioning = None
    if bugs & {"lww", "no-dots"}:
        versioning = PlantedVersioning(lww="lww" in bugs, no_dots="no-dots" in bugs)
    return PlantedSeams(
        storage,
        transport,
        swim_config,
        versioning,
        write_back,
        drop_hints_at_start="hints-dropped-on-restart" in bugs,
    )


def plant_client(bugs: frozenset[str], connector: Connector) -> Connector:
    """How a simulated client reaches the nodes with ``bugs`` planted."""
    if "definite-after-send" in bugs:
        return DefiniteAfterSend(connector, Limits())
    return connector


async def prepare(seams: PlantedSeams, storage: Storage) -> None:
    """What happens to a node's disk before its process starts (``hints-dropped-on-restart``:
    forget every hint and the copy it kept with it, as if neither had been made durable;
    the copy alone would still reach the key's replicas through the reaper)."""
    if seams.drop_hints_at_start:
        for backlog in storage.hint_backlog():
            hints = storage.hints_for(backlog.target, backlog.count)
            await storage.delete_hints([h.hint_id for h in hints])
            for hint in hints:
                if storage.get(hint.key) == hint.record:
                    await storage.remove(hint.key)


# --- version rules ------------------------------------------------------------------------


def last_write_wins(obj: VersionedObject) -> VersionedObject:
    """Keep only the sibling with the highest dot: concurrent writes are silently dropped."""
    winner = max(obj.siblings, key=lambda s: (s.dot.counter, s.dot.actor))
    return VersionedObject(obj.clock, (winner,))


@dataclass(frozen=True, slots=True)
class PlantedVersioning:
    """Version rules with ``lww`` (siblings collapse to one) and/or ``no-dots`` (a partial
    context cannot tell which siblings it saw, so every sibling is kept)."""

    lww: bool
    no_dots: bool

    def apply(self, current: VersionedObject | None, write: versions.Write) -> VersionedObject:
        seen = write.context
        if self.no_dots and current is not None and not versions.descends(seen, current.clock):
            write = write._replace(context=VersionVector())
        updated = versions.apply(current, write)
        return last_write_wins(updated) if self.lww else updated

    def merge(self, a: VersionedObject, b: VersionedObject) -> VersionedObject:
        merged = versions.merge(a, b)
        return last_write_wins(merged) if self.lww else merged


# --- storage ------------------------------------------------------------------------------


class _StorageWrapper:
    """Everything the wrapper does not change goes straight to the real storage."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    async def put(self, key: bytes, record: bytes) -> None:
        await self.put_many([(key, record)])

    async def put_many(self, items: list[tuple[bytes, bytes]]) -> None:
        await self._storage.put_many(items)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)


class AckBeforeCommit(_StorageWrapper):
    """A write-back cache in front of the node's storage (``ack-before-commit``).

    ``put`` and ``put_many`` return at once, leaving the record in memory, and commit it in
    a background task of the node's process: everything above (the coordinator's own
    commit, a replica's ack) then acknowledges a write that a crash in the next
    milliseconds loses. Reads see the buffered records, so the node's read-merge-write
    stays atomic and nothing but a crash (or a failed commit) tells this apart from the
    real storage.
    """

    def __init__(self, storage: Storage) -> None:
        super().__init__(storage)
        self._buffered: dict[bytes, bytes] = {}
        self._spawn: Callable[..., None] | None = None

    def run_in(self, spawn: Callable[..., None]) -> None:
        """Commit in tasks of this nursery (the process's: a crash cancels them)."""
        self._spawn = spawn

    def get(self, key: bytes) -> bytes | None:
        buffered = self._buffered.get(key)
        return buffered if buffered is not None else self._storage.get(key)

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        found = self._storage.get_many([key for key in keys if key not in self._buffered])
        found.update((key, self._buffered[key]) for key in keys if key in self._buffered)
        return found

    async def put_many(self, items: list[tuple[bytes, bytes]]) -> None:
        assert self._spawn is not None, "run_in() first"
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


class AckFailedCommit(_StorageWrapper):
    """Storage that hides a failed commit (``ack-failed-commit``): ``put`` and ``put_many``
    return normally when the commit failed (a full disk, an fsync error), so the node
    acknowledges a write that is not stored and never learns its storage is failing."""

    async def put_many(self, items: list[tuple[bytes, bytes]]) -> None:
        with contextlib.suppress(StorageFailure):
            await self._storage.put_many(items)


class EarlyTombstoneReap(_StorageWrapper):
    """Storage that drops a tombstone instead of keeping it (``early-tombstone-reap``): a
    stale replica's copy of the key then comes back, as no delete stands against it."""

    async def put_many(self, items: list[tuple[bytes, bytes]]) -> None:
        kept = []
        for key, record in items:
            if versions.decode_object(record).is_deleted:
                await self._storage.remove(key)
            else:
                kept.append((key, record))
        if kept:
            await self._storage.put_many(kept)


# --- the network ------------------------------------------------------------------------


class DefiniteAfterSend:
    """The network between the nodes and a client, turning the ``timeout`` or
    ``quorum_failed`` the client is sent (the write may be on replicas) into ``unavailable``
    (definite: nothing written). It sits at the client's end, above the client's session
    when the cluster is secure: there the replies are still plain frames."""

    def __init__(self, connector: Connector, limits: Limits) -> None:
        self._connector = connector
        self._limits = limits

    async def connect(self, address: Address) -> trio.abc.Stream:
        return _DefiniteReplies(await self._connector.connect(address), self._limits)


_INDETERMINATE_CODES: Final = frozenset({Timeout.code, "quorum_failed"})


class _DefiniteReplies(trio.abc.Stream):
    def __init__(self, stream: trio.abc.Stream, limits: Limits) -> None:
        self._stream = stream
        self._frames = FrameDecoder(limits)
        self._received = b""
        """Rewritten bytes past what the last ``receive_some`` could return."""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        while not self._received:
            data = await self._stream.receive_some(max_bytes)
            if not data:
                return data
            self._received = self._rewrite(bytes(data))
        size = len(self._received) if max_bytes is None else max_bytes
        out, self._received = self._received[:size], self._received[size:]
        return out

    def _rewrite(self, data: bytes) -> bytes:
        out = bytearray()
        for frame in self._frames.feed(data):
            message = frame.message
            if isinstance(message, ErrorReply) and message.code in _INDETERMINATE_CODES:
                failure = Unavailable(1, 0, f"the write failed: {message.message}")
                message = ErrorReply(failure.code, str(failure), 1, 0)
            assert message is not None
            out += encode_frame(message, frame.request_id)
        return bytes(out)

    async def aclose(self) -> None:
        await self._stream.aclose()

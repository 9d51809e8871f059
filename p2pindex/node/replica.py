"""IndexManager: this node's replica operations on its own storage.

All read-merge-write sequences run on the trio thread without an await between the read and
the storage call that makes the new record visible, so concurrent writes to one key are
serialised without locks (Storage makes a put visible before it awaits the commit).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import trio

from p2pindex.config import Limits
from p2pindex.core import versions
from p2pindex.core.digest_read import version_digest
from p2pindex.core.newest import put_newest
from p2pindex.core.terms import IndexTerms
from p2pindex.core.versions import VersionedObject, VersionVector
from p2pindex.errors import (
    InvalidRequest,
    NotReady,
    Overloaded,
    RecordLimitExceeded,
    SiblingLimitExceeded,
    StorageFailure,
)
from p2pindex.net.channel import FastPath, Respond
from p2pindex.node.stats import StatisticsStore
from p2pindex.storage.base import Storage
from p2pindex.wire.errors import reply_for_error
from p2pindex.wire.messages import (
    Message,
    ReplicaAck,
    ReplicaDigestMany,
    ReplicaDigestManyReply,
    ReplicaRead,
    ReplicaReadMany,
    ReplicaReadManyReply,
    ReplicaReadReply,
    ReplicaReadSettled,
    ReplicaWrite,
    ReplicaWriteMany,
)

REPLICA_REQUESTS = (
    ReplicaRead,
    ReplicaReadMany,
    ReplicaDigestMany,
    ReplicaReadSettled,
    ReplicaWrite,
    ReplicaWriteMany,
)
"""What ``ReplicaService.serve`` answers."""


class Versioning(Protocol):
    """The rules that make a new version and merge two (core.versions). A seam, so the
    simulator can build a node with wrong rules and prove its checkers catch them."""

    def apply(self, current: VersionedObject | None, write: versions.Write) -> VersionedObject:
        """The new version of ``current`` that ``write`` makes."""
        ...

    def merge(self, a: VersionedObject, b: VersionedObject) -> VersionedObject: ...


class DottedVersions:
    """The real rules: dotted version vectors (core.versions)."""

    apply = staticmethod(versions.apply)
    merge = staticmethod(versions.merge)


WRITTEN_TRACK_MAX = 200_000
"""Keys a leaving node remembers writing while it pushes its ranges; beyond that it pushes
every range again instead."""
DECODED_CACHE = 8192
"""Decoded records kept per node (a few MB): enough for the keys being written right now."""


class IndexManager:
    def __init__(
        self,
        storage: Storage,
        actor: str,
        limits: Limits,
        stats: StatisticsStore,
        *,
        fresh_actor: Callable[[], str] | None = None,
        versioning: Versioning | None = None,
        issued: int = 0,
    ):
        self.storage = storage
        self.actor = actor
        """Version-vector actor: the node id plus a storage epoch, so a node whose disk was
        wiped never reissues a dot it already used."""
        self.issued = issued
        """The highest counter ``actor`` has issued, over every key: each new dot goes above
        it (``versions.update``'s floor), so forgetting a key never lets a dot repeat."""
        self._fresh_actor = fresh_actor
        """Makes a new actor when a commit fails (see ``_commit_or_forget``)."""
        self._limits = limits
        self._stats = stats
        self._commit_seconds = stats.histogram("storage.commit")
        self._versioning = versioning or DottedVersions()
        self._decoded: dict[bytes, tuple[bytes, VersionedObject]] = {}
        self._committing: dict[bytes, list[trio.Event]] = {}
        """Keys whose record is pending (visible, not yet committed), with one event per
        commit in flight, set when it ends either way (see ``_settled``)."""
        self._written: dict[bytes, int] | None = None
        """Keys committed since ``track_writes``, each with the number of its last commit
        (None when not tracking), for a leaving node's second push; past
        WRITTEN_TRACK_MAX it is dropped and ``written`` says so."""
        self._written_overflow = False
        self._commits = 0
        """Commits noted while tracking: ``commit_mark`` tells the handoff where it is."""
        self.shadow: dict[bytes, tuple[bytes, VersionedObject]] = {}
        """Reaped tombstones (node/reaper.py): a key absent from storage reads as its
        marker, so stale copies merge against the delete and lose, and new writes get a
        clock above it. A write of the key drops its marker."""

    def read(self, key: bytes) -> VersionedObject | None:
        known = self._decoded.get(key)
        if known is not None:
            return known[1]
        record = self.storage.get(key)
        if record is None:
            marker = self.shadow.get(key) if self.shadow else None
            return None if marker is None else marker[1]
        return self._decoded_stored(key, record)

    def read_many(self, keys: list[bytes]) -> dict[bytes, VersionedObject]:
        """``read`` for a batch of keys (one storage lookup); absent keys are left out."""
        decoded = self._decoded
        found: dict[bytes, VersionedObject] = {}
        missing: list[bytes] = []
        for key in keys:
            known = decoded.get(key)
            if known is None:
                missing.append(key)
            else:
                found[key] = known[1]
        if missing:
            for key, record in self.storage.get_many(missing).items():
                found[key] = self._decoded_stored(key, record)
            if self.shadow:
                for key in missing:
                    marker = self.shadow.get(key)
                    if marker is not None and key not in found:
                        found[key] = marker[1]
        return found

    def records(self, keys: list[bytes]) -> list[bytes | None]:
        """The stored record of each key, None where there is none (what replica reads
        answer)."""
        decoded = self._decoded
        missing = [key for key in keys if key not in decoded]
        stored = self.storage.get_many(missing) if missing else {}
        records = [known[0] if (known := decoded.get(key)) else stored.get(key) for key in keys]
        if self.shadow:
            for position, key in enumerate(keys):
                if records[position] is None and key in self.shadow:
                    records[position] = self.shadow[key][0]
        return records

    def read_records(self, keys: list[bytes]) -> list[tuple[bytes, VersionedObject] | None]:
        """``read_many`` with each record's bytes as stored: a digest read compares the
        other replicas' digests with the digest of these bytes."""
        decoded = self._decoded
        missing = [key for key in keys if key not in decoded]
        stored = self.storage.get_many(missing) if missing else {}
        found: list[tuple[bytes, VersionedObject] | None] = []
        for key in keys:
            known = decoded.get(key)
            if known is None:
                record = stored.get(key)
                if record is not None:
                    known = (record, self._decoded_stored(key, record))
                elif self.shadow:
                    known = self.shadow.get(key)
            found.append(known)
        return found

    def _decoded_stored(self, key: bytes, record: bytes) -> VersionedObject:
        """Decode and keep a record read from storage (callers come here on a cache miss)."""
        obj = versions.decode_object(record)
        self._remember(key, record, obj)
        return obj

    def decode(self, key: bytes, record: bytes) -> VersionedObject:
        """Decode a record of ``key`` (ValueError if it is bad). Replicas in sync send the
        bytes this node holds, whose decoded form is usually kept already."""
        known = self._decoded.get(key)
        if known is not None and known[0] == record:
            return known[1]
        return versions.decode_object(record)

    def _remember(self, key: bytes, record: bytes, obj: VersionedObject) -> None:
        """Keep the record of a key this node stores or read, with its decoded form: every
        write reads its key first, and a storage read plus a decode (with its canonical-form
        check) cost more than the rest of a replica write.

        Every record this node stores goes through this class, and a record is kept here
        only once it is in storage or staged there before the caller's next await, so a kept
        entry is the key's stored (or pending) record and reads trust it. A write whose
        commit fails forgets its keys (``_commit_or_forget``): storage then shows the last
        committed record again, and so must every read.
        """
        decoded = self._decoded
        if self.shadow:
            self.shadow.pop(key, None)  # a record of the key exists again
        # Re-inserting moves the key to the end, so the key least recently stored (or read
        # from storage) goes first: a hot key rewritten all the time stays rather than being
        # evicted, read back and decoded again every DECODED_CACHE new keys.
        put_newest(decoded, key, (record, obj), DECODED_CACHE)

    def new_version(
        self,
        key: bytes,
        context: VersionVector,
        value: bytes | None,
        terms: IndexTerms = (),
    ) -> tuple[VersionedObject, bytes]:
        """The new version of ``key`` with this node as its actor, and its encoding.

        The caller must ``commit`` it before its next await, so no other write to the key
        can interleave. Refuses (definitely, before anything is stored or sent) a write that
        would exceed the sibling limit.
        """
        obj, record = version = self._versioned(self.read(key), context, value, terms)
        self._remember(key, record, obj)
        return version

    def new_versions(
        self,
        writes: Sequence[
            tuple[bytes, VersionVector, bytes | None]
            | tuple[bytes, VersionVector, bytes | None, IndexTerms]
        ],
    ) -> list[tuple[VersionedObject, bytes] | InvalidRequest]:
        """``new_version`` for several writes at once, each seeing those before it (a key
        may repeat); a refused write gets its error in its place.

        The caller must ``commit_many`` the results before its next await.
        """
        staged = self.read_many([write[0] for write in writes])
        made: list[tuple[VersionedObject, bytes] | InvalidRequest] = []
        for key, context, value, *rest in writes:
            terms: IndexTerms = rest[0] if rest else ()
            current = staged.get(key)
            try:
                version = self._versioned(current, context, value, terms)
            except InvalidRequest as exc:
                made.append(exc)
                continue
            staged[key] = version[0]
            self._remember(key, version[1], version[0])
            made.append(version)
        return made

    def _versioned(
        self,
        current: VersionedObject | None,
        context: VersionVector,
        value: bytes | None,
        terms: IndexTerms = (),
    ) -> tuple[VersionedObject, bytes]:
        claim = versions.unseen_claim(context, current)
        if claim is not None:
            self._stats.incr("rejected.forged_context")
            raise InvalidRequest(
                f"the context claims write {claim[1]} by {claim[0]!r}, which no replica has "
                "made; pass the context a read returned, unmodified"
            )
        updated = self._versioning.apply(
            current, versions.Write(context, self.actor, value, terms, self.issued)
        )
        self.issued = max(self.issued, updated[0]._counters.get(self.actor, 0))
        if updated.sibling_count > self._limits.sibling_max:
            self._stats.incr("writes.refused_siblings")
            raise SiblingLimitExceeded(
                f"key would have {updated.sibling_count} siblings (limit "
                f"{self._limits.sibling_max}); read it and write with its context to resolve them"
            )
        record = versions.encode_object(updated)
        check_record_size(len(record), current, self._limits, self._stats)
        return updated, record

    async def commit(self, key: bytes, record: bytes) -> None:
        await self._put_one(key, record)

    async def commit_many(self, records: list[tuple[bytes, bytes]]) -> None:
        """Commit ``new_versions`` results in one transaction (only when ``plain``)."""
        await self._commit_or_forget(
            [key for key, _record in records], self.storage.put_many(records)
        )

    async def reap(self, key: bytes, record: bytes) -> bool:
        """Remove the tombstone ``record`` of ``key`` from storage, keeping it as the key's
        marker; False (nothing done) when the key holds anything else by now. Nothing is
        awaited between the check and the removal, so no write can slip in between."""
        current = self.records([key])[0]
        if current != record or key in self.shadow:
            return False
        obj = self.decode(key, record)
        self._decoded.pop(key, None)
        self.shadow[key] = (record, obj)
        await self.storage.remove(key)
        return True

    async def drop_copies(self, copies: dict[bytes, bytes], stray: Callable[[bytes], bool]) -> int:
        """Remove each copy ``key: record`` of a key this node is no replica of (``stray``,
        asked right before each removal), if it still holds ``record`` (nothing awaited
        between the checks and the removal); returns how many went.

        A copy holding a dot of this node's actor is a write it coordinated (as a
        fallback). Forgetting it and then writing the key again would give the new dot a
        clock entry above the forgotten one, which supersedes it on the replicas that still
        hold it: an acknowledged write lost. So, as when a commit is forgotten, the actor is
        retired first (once), and later dots cover nothing of this one's."""
        if any(self._carries_actor(key, record) for key, record in copies.items()):
            self._retire_actor()
        dropped = 0
        for key, record in copies.items():
            if not stray(key) or self.records([key])[0] != record or key in self.shadow:
                continue
            self._decoded.pop(key, None)
            await self.storage.remove(key)
            dropped += 1
        return dropped

    def _carries_actor(self, key: bytes, record: bytes) -> bool:
        try:
            return self.actor in self.decode(key, record).clock
        except ValueError:
            return True  # cannot tell: retiring costs one actor, keeping it may cost a write

    async def _put_one(self, key: bytes, record: bytes) -> None:
        await self._commit_or_forget([key], self.storage.put(key, record))

    async def _commit_or_forget(self, keys: list[bytes], write: Awaitable[None]) -> None:
        """Await a storage write of ``keys``; if it fails (or its waiter is cancelled, when
        the outcome is unknown here) forget them, so reads go back to what storage holds."""
        done = trio.Event()
        committing = self._committing
        for key in keys:
            committing.setdefault(key, []).append(done)
        started = time.perf_counter()
        try:
            await write
            self._commit_seconds.observe(time.perf_counter() - started)
            if self._written is not None:
                self._note_written(keys)
        except BaseException:
            for key in keys:
                self._decoded.pop(key, None)
            self._retire_actor()
            raise
        finally:
            done.set()
            for key in keys:
                pending = committing.get(key)
                if pending is not None:
                    pending.remove(done)
                    if not pending:
                        del committing[key]

    def track_writes(self) -> None:
        """Start recording the keys committed from now on (see ``written``)."""
        self._written = {}
        self._written_overflow = False

    def commit_mark(self) -> int:
        """The number of the last commit noted since ``track_writes``: a key ``written``
        lists with a number at most this was already in storage when it was taken."""
        return self._commits

    def _note_written(self, keys: list[bytes]) -> None:
        assert self._written is not None
        self._commits += 1
        self._written.update(dict.fromkeys(keys, self._commits))
        if len(self._written) > WRITTEN_TRACK_MAX:
            self._written = {}
            self._written_overflow = True

    async def written(self) -> dict[bytes, int] | None:
        """Once every commit in flight now has ended: the keys committed since
        ``track_writes``, each with the number of its last commit (None if there were too
        many to keep: then all of them count); tracking stops."""
        for pending in list(self._committing.values()):
            for done in list(pending):
                await done.wait()
        keys, self._written = self._written, None
        return None if self._written_overflow else keys

    def _retire_actor(self) -> None:
        """Never issue another dot under the actor of a version that was forgotten.

        While its commit was pending the version was visible: a read may have returned it,
        read repair may have copied it to other replicas, a concurrent write may have merged
        it. Forgetting it lowers this actor's counter again, and the next write would reuse
        the dot for another value; replicas holding the first value would then take the
        second for one they already have and drop it, losing an acknowledged write. A fresh
        actor makes every later dot new, as a fresh epoch does after a crash.
        """
        if self._fresh_actor is not None:
            self.actor = self._fresh_actor()
            self.issued = 0
            self._stats.incr("versions.actor_retired")

    async def committed_records(self, keys: list[bytes]) -> list[bytes | None]:
        """``records`` once no commit of ``keys`` is in flight: only what a crash cannot
        take back (``ReplicaReadSettled`` says who needs that)."""
        await self._settled(keys)
        return self.records(keys)  # no await since the last check: nothing staged between

    async def _settled(self, keys: list[bytes]) -> bool:
        """Wait until no commit of ``keys`` is in flight; False if none was. The keys are
        checked again after every wait, all with no await in between, so a write staged
        meanwhile is waited for too.

        A write that changes nothing (the record already holds it) is acknowledged without
        a commit of its own, which is right only once the record that holds it is
        committed: a pending one may still fail (its write is then rolled back) or die in
        a crash, and the ack would outlive the data. So such a write waits for the commits
        in flight and is merged again: onto the committed record, or onto what is left.
        """
        committing = self._committing
        waited = False
        while pending := next((p for key in keys if (p := committing.get(key))), None):
            waited = True
            await pending[0].wait()
        return waited

    async def apply(self, key: bytes, incoming: VersionedObject) -> VersionedObject:
        """Merge a version sent by a coordinator, a repair or a handoff; never overwrite."""
        current = self.read(key)
        merged = incoming if current is None else self._merge(current, incoming)
        if merged == current and self.shadow and key in self.shadow:
            self._stats.incr("tombstones.stale_dropped")
        if merged != current:
            record = versions.encode_object(merged)
            self._remember(key, record, merged)
            await self._put_one(key, record)
        elif await self._settled([key]):
            return await self.apply(key, incoming)
        return merged

    def _merge(self, a: VersionedObject, b: VersionedObject) -> VersionedObject:
        return self._versioning.merge(a, b)

    async def apply_many(self, items: list[tuple[bytes, bytes, VersionedObject]]) -> None:
        """Merge a batch in one commit (replica writes, hint delivery, ownership handoff).

        Each item is (key, record, the record decoded). A record that decoded is in
        canonical form, so when it wins the merge outright (the usual replica write) its
        bytes are stored as they came instead of being encoded again (equal objects encode
        to equal bytes: tests/unit/test_versions.py).
        """
        changed: dict[bytes, bytes] = {}
        latest = self.read_many([key for key, _record, _incoming in items])
        for key, incoming_record, incoming in items:
            current = latest.get(key)
            merged = incoming if current is None else self._merge(current, incoming)
            if merged == current and self.shadow and key in self.shadow:
                self._stats.incr("tombstones.stale_dropped")
            if merged != current:
                latest[key] = merged
                same = merged == incoming
                record = incoming_record if same else versions.encode_object(merged)
                changed[key] = record
                self._remember(key, record, merged)
        unchanged = [item for item in items if item[0] not in changed]
        if changed:
            await self._commit_or_forget(
                list(changed), self.storage.put_many(list(changed.items()))
            )
        if unchanged and await self._settled([key for key, _record, _obj in unchanged]):
            await self.apply_many(unchanged)


def check_record_size(
    size: int, current: VersionedObject | None, limits: Limits, stats: StatisticsStore
) -> None:
    """Refuse (definitely, before anything is stored or sent) a write whose record would
    exceed the record limit, so every record stays small enough for replication, repair and
    handoff to carry. Every node runs this same check when it coordinates a write, and a
    replica takes what a coordinator checked. A write that resolves an oversized record
    (from an older version) into a smaller one is let through."""
    limit = limits.record_limit
    if size <= limit or (current is not None and size < _size_of(current)):
        return
    stats.incr("writes.refused_record_size")
    raise RecordLimitExceeded(
        f"the key's record would grow to {size} bytes (limit {limit}) with every value "
        "written without a context kept as a sibling; read it and write with its context "
        "to replace them"
    )


def _size_of(obj: VersionedObject) -> int:
    return len(versions.encode_object(obj))


class HintKeeper(Protocol):
    async def keep(self, target: str, key: bytes, record: bytes) -> None: ...


_Item = tuple[bytes, bytes, str | None, VersionedObject]
"""(key, record, the primary a hinted write stands in for, decoded record)."""


class ReplicaService:
    """The replica side of the data path: what a node does for a coordinator's
    ReplicaRead and ReplicaWrite.

    Reads are answered synchronously and writes that arrived together are merged and
    committed together (``write_many``: one storage transaction for a frame's worth), so a
    node pays no task and no commit per replica message (see ``net.channel.FastPath``).
    Each write is acknowledged only after its commit, as with one write at a time.
    """

    def __init__(
        self,
        index: IndexManager,
        hints: HintKeeper,
        stats: StatisticsStore,
        *,
        degraded: Callable[[], str | None],
        storage_failed: Callable[[StorageFailure], None],
        unreadable: Callable[[list[bytes]], str | None] = lambda _keys: None,
    ) -> None:
        self._index = index
        self._unreadable = unreadable
        """Why this node's copies of these keys may lack writes now (still receiving
        ranges), or None: the replica read is then refused, so the coordinator counts the
        other replicas."""
        self._hints = hints
        self._stats = stats
        self._apply_seconds = stats.histogram("replica.apply")
        self._degraded = degraded
        """The reason this node takes no writes now, or None."""
        self._storage_failed = storage_failed

    def fast_path(self) -> FastPath:
        writes = self.write_many
        return FastPath(
            answer={
                ReplicaRead: self.read,
                ReplicaReadMany: self.read,
                ReplicaDigestMany: self.read,
            },
            batch={ReplicaWrite: writes, ReplicaWriteMany: writes},
        )

    def read(self, message: Message) -> Message:
        many = isinstance(message, ReplicaReadMany | ReplicaDigestMany)
        if not many:
            assert isinstance(message, ReplicaRead)
        keys = message.keys if many else [message.key]  # type: ignore[attr-defined]
        refusal = self._unreadable(keys)
        if refusal is not None:
            self._stats.incr("replica.reads_refused")
            return reply_for_error(NotReady(refusal))
        records = self._index.records(keys)
        if isinstance(message, ReplicaDigestMany):
            return ReplicaDigestManyReply(list(map(version_digest, keys, records)))
        return ReplicaReadManyReply(records) if many else ReplicaReadReply(records[0])

    async def serve(self, message: Message) -> Message:
        """One replica request (``REPLICA_REQUESTS``) outside a connection's fast path."""
        if isinstance(message, ReplicaWrite | ReplicaWriteMany):
            return await self.write(message)
        if isinstance(message, ReplicaReadSettled):
            return await self.read_settled(message)
        return self.read(message)

    async def read_settled(self, message: ReplicaReadSettled) -> Message:
        """Committed records only (the tombstone reaper's confirmation reads)."""
        refusal = self._unreadable(message.keys)
        if refusal is not None:
            self._stats.incr("replica.reads_refused")
            return reply_for_error(NotReady(refusal))
        return ReplicaReadManyReply(await self._index.committed_records(message.keys))

    async def write(self, message: ReplicaWrite | ReplicaWriteMany) -> Message:
        replies: list[Message] = []
        await self.write_many([message], lambda _position, reply: replies.append(reply))
        return replies[0]

    async def write_many(self, messages: list[Message], respond: Respond) -> None:
        """Answer each ReplicaWrite or ReplicaWriteMany: an ack once all it carries is
        committed, or the error (then nothing it carries was stored)."""
        accepted: list[tuple[int, list[_Item]]] = []
        for position, message in enumerate(messages):
            try:
                accepted.append((position, self._items(message)))
            except InvalidRequest as exc:
                respond(position, reply_for_error(exc))
        if not accepted:
            return
        items = [item for _position, carried in accepted for item in carried]
        try:
            reason = self._degraded()
            if reason is not None:
                raise StorageFailure(reason)
            started = time.perf_counter()
            await self._apply_items(items)
            self._apply_seconds.observe(time.perf_counter() - started)
        except (StorageFailure, Overloaded) as exc:  # Overloaded: a full hint store
            failure = reply_for_error(exc)
            for position, _carried in accepted:
                respond(position, failure)
            return
        self._stats.incr("replica.writes", len(items))
        ack = ReplicaAck()
        for position, _carried in accepted:
            respond(position, ack)

    def _items(self, message: Message) -> list[_Item]:
        if isinstance(message, ReplicaWrite):
            return [(message.key, message.record, message.hint_for, self._decode(message.record))]
        assert isinstance(message, ReplicaWriteMany)
        return [(key, record, None, self._decode(record)) for key, record in message.items]

    async def _apply_items(self, items: list[_Item]) -> None:
        try:
            for key, record, hint_for, _obj in items:
                if hint_for is not None:
                    await self._hints.keep(hint_for, key, record)
            await self._index.apply_many([(key, record, obj) for key, record, _hint, obj in items])
        except StorageFailure as exc:
            self._storage_failed(exc)
            raise

    def _decode(self, record: bytes) -> VersionedObject:
        return decode_incoming(record, self._stats)


def decode_incoming(record: bytes, stats: StatisticsStore) -> VersionedObject:
    """A record another node sent; a bad one is counted and refused as an InvalidRequest
    (nothing stored), whichever path it came by (replica write, repair, handoff)."""
    try:
        return versions.decode_object(record)
    except ValueError as exc:
        stats.incr("rejected.bad_record")
        raise InvalidRequest(f"bad record: {exc}") from None

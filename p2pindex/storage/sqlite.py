"""SQLite storage, the durable default: WAL, group commit on one writer thread, reads in place.

Layout (schema version 3):

* ``kv(token, key, digest, record)`` WITHOUT ROWID with primary key ``(token, key)``: one
  B-tree serves point reads (the token is recomputed from the key) and ordered arc scans. A
  ``key`` primary key plus a token index is slower per random upsert (README, Measuring),
  because every write then dirties a page in two B-trees. ``token`` is stored as
  ``key_token(key) - 2**63``: SQLite integers are signed 64-bit, and the shift maps
  0..2**64-1 onto -2**63..2**63-1 keeping order, so ``ORDER BY token`` is ring order.
* ``kv_count(n)``, kept exact by triggers inside the same transactions, so ``count()`` is a point
  read instead of a scan of every row. It counts committed keys only.
* ``hints(id, target, key, record, created)`` indexed by ``(target, id)``; ids are handed out here,
  so a hint still waiting for its commit already has its final id.
* ``meta(name, value)``.
* Schema version 2 adds the index rows of ``p2pindex.storage.index_rows``:
  ``idx(name, term, key)`` WITHOUT ROWID with primary key ``(name, term, key)`` (the one
  B-tree is the covering index a query walks in (term, key) order; SQLite orders INTEGER
  terms before BLOB ones) and ``live(key)`` WITHOUT ROWID, the keys with a live sibling in key
  order (key listing). ``_apply`` reads the old records of the batch's keys and moves their
  rows in the same transaction as the records, so a committed index always matches the
  committed records. A version 1 file is upgraded on open (its rows derived from its records).
* Schema version 3 stores each record's anti-entropy digest (``core.digest.key_digest``) in
  ``kv.digest``, written by ``_apply`` with the record, so ``scan_digests`` reads no record.
  A version 1 or 2 file is upgraded on open (``kv`` rebuilt with the digests).
* The file is recognised by ``PRAGMA application_id`` and versioned by ``PRAGMA user_version``,
  which keeps every ``meta`` name free for the node.

Threads: the trio thread runs every public method, owns the read connection (``query_only``)
and the pending batches; the writer thread owns the write connection (created by a worker
thread during ``open``, hence ``check_same_thread=False``) and nothing else. They share only a
``queue.SimpleQueue`` of sealed batches and ``TrioToken.run_sync_soon`` (FIFO) for the outcomes,
so no locks are needed.

Group commit: every write lands in the open batch, whose dict is also the overlay ``get`` and
``scan_range`` consult before the file, so it is visible at once. If the writer is idle the batch
is sealed and sent at once; otherwise it keeps filling while the previous one commits and is sent
when that one is done. At most two batches are pending (one committing, one filling); all writes
of a batch share one ``trio.Event``. A failed commit fails every write of its batch, and dropping
the batch from the overlay reveals the committed state, while newer writes to the same keys live
in the later batch and stay visible.

Durability: in WAL mode a committed transaction is in the WAL file, in the OS, before COMMIT
returns; ``synchronous=NORMAL`` therefore survives kill -9, and ``FULL`` (``fsync=True``) also
fsyncs the WAL at every commit, surviving power loss.

The GIL: CPython's sqlite3 releases the GIL around every statement step and must win it back
afterwards, which is slow while the trio thread keeps it busy. A per-row ``executemany`` steps
once per row; measured with a 1024-row upsert batch while another thread spun, executemany took
75 ms median and up to 508 ms, one multi-row ``VALUES`` statement 59 ms and at most 115 ms
(idle: 37 against 42 ms). So the writer sends statements of up to 1024 rows: a typical batch is
BEGIN, one statement, COMMIT.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

from p2pindex.core.digest import key_digest
from p2pindex.core.ring import ArcPiece, arc_pieces, key_token
from p2pindex.core.terms import Term, term_order
from p2pindex.errors import StorageFailure
from p2pindex.storage.base import (
    Hint,
    HintBacklog,
    require_bytes,
    require_hint,
    require_hint_ids,
    require_limit,
    require_meta_name,
)
from p2pindex.storage.index_rows import (
    IndexScanPage,
    KeyFilter,
    facts_of,
    prefix_end,
    require_cursor,
)
from p2pindex.storage.memory import backlog_of
from p2pindex.storage.sqlite_file import (
    _MIN_MAX_BYTES,
    WalCheckpoints,
    lock_file,
    make_private,
    open_reader,
    open_writer,
    truncate_if_due,
    wal_path,
)
from p2pindex.storage.sqlite_sql import (
    _ANY_INDEX_ROW,
    _BACKLOG,
    _BACKLOG_EXCEPT,
    _DELETE_HINTS,
    _DELETE_IDX,
    _DELETE_KV,
    _DELETE_LIVE,
    _GET_KV,
    _GET_MANY,
    _GET_MANY_FROM,
    _HINTS_FOR,
    _INDEX_AFTER,
    _INDEX_CHUNK,
    _INDEX_FROM,
    _INSERT_HINTS,
    _INSERT_IDX,
    _INSERT_LIVE,
    _KEYS_AFTER,
    _KEYS_FROM,
    _TOKEN_OFFSET,
    _UPSERT_KV,
    _UPSERT_META,
    SCANS,
    ScanColumn,
)
from p2pindex.types import NodeId


@dataclass(eq=False, slots=True)
class _Batch:
    """Writes that commit together; while pending, also the overlay reads consult."""

    led: bool = False
    """Inline mode: a task has taken charge of committing this batch."""
    kv: dict[bytes, tuple[int, bytes | None]] = field(default_factory=dict)
    """key -> (ring token, record); a None record is a pending removal."""
    hints_added: dict[int, Hint] = field(default_factory=dict)
    hints_deleted: set[int] = field(default_factory=set)
    meta: dict[str, bytes] = field(default_factory=dict)
    done: trio.Event = field(default_factory=trio.Event)
    error: str | None = None


class _State(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class SqliteStorage:
    """The Storage protocol over one SQLite file. Create it with ``await SqliteStorage.open()``.

    ``aclose()`` is required: it lets the commits in flight finish, stops the writer thread and
    releases the file. It is shielded from cancellation, and every write that started before it
    either completes or raises StorageFailure; writes started after it raise at once. Using the
    object as ``async with`` closes it on exit.
    """

    def __init__(
        self,
        path: Path,
        lock_fd: int,
        writer: sqlite3.Connection,
        reader: sqlite3.Connection,
        next_hint_id: int,
        writer_thread: bool,
    ) -> None:
        self._path = path
        self._lock_fd = lock_fd
        self._reader = reader
        self._next_hint_id = next_hint_id
        self._trio_token = trio.lowlevel.current_trio_token()
        self._queue: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self._open: _Batch | None = None
        self._committing: _Batch | None = None
        self._refusal: str | None = None
        """Why writes are refused (closed, or the writer thread died); None while writable."""
        self._state = _State.OPEN
        self._closed = trio.Event()
        self._writer = writer
        self._thread: threading.Thread | None = None
        self._wal = WalCheckpoints(path, self._trio_token)
        if writer_thread:
            self._thread = threading.Thread(
                target=self._writer_main,
                args=(writer,),
                name=f"p2pindex-sqlite {path}",
                daemon=True,
            )
            self._thread.start()

    @classmethod
    async def open(
        cls,
        path: Path | str,
        *,
        fsync: bool = False,
        max_bytes: int | None = None,
        writer_thread: bool | None = None,
    ) -> SqliteStorage:
        """Open or create the store at ``path``.

        ``fsync=True`` makes every commit survive power loss, not only kill -9. ``max_bytes``
        caps the file (``PRAGMA max_page_count``): a commit that would grow past it fails with
        "database or disk is full", exactly like a full disk. Raises StorageFailure when the
        file cannot be used: not SQLite, another application's database, an unknown schema
        version, read-only, or already open elsewhere (a ``<path>.lock`` file is flock-ed).

        ``writer_thread`` (default: the same as ``fsync``) commits batches on a dedicated
        thread. Without fsync a commit never waits for the disk, and committing on the trio
        thread is cheaper than handing each batch across threads (the two threads would
        spend their time passing the GIL back and forth); WAL checkpoints, which do sync,
        still run on a worker thread. With fsync every commit waits for the disk, so it
        belongs on the writer thread.
        """
        path = Path(path)
        if max_bytes is not None and (
            isinstance(max_bytes, bool)
            or not isinstance(max_bytes, int)
            or max_bytes < _MIN_MAX_BYTES
        ):
            raise ValueError(
                f"max_bytes must be an integer of at least {_MIN_MAX_BYTES}, not {max_bytes!r}"
            )
        lock_fd = lock_file(path)
        try:
            make_private(path)
        except OSError as exc:
            os.close(lock_fd)
            raise StorageFailure(f"cannot open {path}: {exc.strerror}") from exc
        writer: sqlite3.Connection | None = None
        threaded = fsync if writer_thread is None else writer_thread
        try:
            # Unpacked in a second step: straight into the Optional ``writer``, mypy would
            # infer the call's result as Optional too and never narrow ``writer``.
            opened = await trio.to_thread.run_sync(open_writer, path, fsync, max_bytes, threaded)
            writer, next_hint_id = opened
            reader = open_reader(path) if threaded else writer
        except BaseException:
            if writer is not None:
                writer.close()
            os.close(lock_fd)
            raise
        return cls(path, lock_fd, writer, reader, next_hint_id, threaded)

    async def __aenter__(self) -> SqliteStorage:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # Reads: synchronous, on the trio thread, the pending batches first.

    def get(self, key: bytes) -> bytes | None:
        require_bytes("key", key)
        entry = self._pending_entry(key)
        if entry is not None:
            return entry[1]
        return self._read_committed(key)

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        """See Storage.get_many: the keys no pending batch holds are read by one statement,
        which costs less than half a ``get`` each."""
        found: dict[bytes, bytes] = {}
        wanted: list[bytes] = []
        for key in keys:
            require_bytes("key", key)
            entry = self._pending_entry(key)
            if entry is None:
                wanted.append(key)
            elif entry[1] is not None:
                found[key] = entry[1]
        if len(wanted) < _GET_MANY_FROM:
            for key in wanted:
                record = self._read_committed(key)
                if record is not None:
                    found[key] = record
            return found
        pairs = [(key_token(key) - _TOKEN_OFFSET, key) for key in wanted]
        try:
            found.update(_GET_MANY.run(self._reader, pairs))
        except sqlite3.Error as exc:
            raise self._read_failure(exc) from exc
        return found

    def _pending_entry(self, key: bytes) -> tuple[int, bytes | None] | None:
        """The newest pending write of ``key`` (a None record: a pending removal), or None."""
        for batch in (self._open, self._committing):
            if batch is not None:
                entry = batch.kv.get(key)
                if entry is not None:
                    return entry
        return None

    def _read_committed(self, key: bytes) -> bytes | None:
        try:
            rows = self._reader.execute(_GET_KV, (key_token(key) - _TOKEN_OFFSET, key)).fetchall()
        except sqlite3.Error as exc:
            raise self._read_failure(exc) from exc
        return rows[0][0] if rows else None

    def scan_range(
        self, start: int, end: int, after: bytes | None, limit: int
    ) -> list[tuple[bytes, bytes]]:
        """See Storage.scan_range; wrapped arcs are walked clockwise from ``start``."""
        return self._scan_arc(start, end, after, limit, "record", _the_record)

    def scan_digests(
        self, start: int, end: int, after: bytes | None, limit: int
    ) -> list[tuple[bytes, bytes]]:
        """See Storage.scan_digests: committed rows give the digest stored beside their
        record (the record is not read); pending writes are digested here."""
        return self._scan_arc(start, end, after, limit, "digest", key_digest)

    def _scan_arc(
        self,
        start: int,
        end: int,
        after: bytes | None,
        limit: int,
        column: ScanColumn,
        of_pending: Callable[[bytes, bytes], bytes],
    ) -> list[tuple[bytes, bytes]]:
        """(key, ``column``) of the arc's keys: committed rows overlaid with the pending
        batches, whose records ``of_pending(key, record)`` turns into the column's value."""
        pieces = arc_pieces(start, end, after)
        require_limit(limit)
        pending: dict[bytes, tuple[int, bytes | None]] = {}
        for batch in (self._committing, self._open):
            if batch is not None:
                pending.update(batch.kv)
        # Each pending removal can hide one stored row, so fetch that many extra.
        hidden = sum(1 for _token, record in pending.values() if record is None)
        found: list[tuple[bytes, bytes]] = []
        for piece in pieces:
            wanted = limit - len(found)
            if wanted <= 0:
                break
            merged: dict[bytes, tuple[int, bytes | None]] = {
                key: (token, value)
                for token, key, value in self._scan(piece, wanted + hidden, column)
            }
            merged.update(
                (key, (token, None if record is None else of_pending(key, record)))
                for key, (token, record) in pending.items()
                if piece.contains(token, key)
            )
            rows = sorted(
                (token, key, value) for key, (token, value) in merged.items() if value is not None
            )
            found.extend((key, value) for _token, key, value in rows[:wanted])
        return found

    def disk_usage(self) -> dict[str, int]:
        """The database and WAL file sizes (a missing WAL, after a TRUNCATE, is 0)."""
        usage = {}
        for kind, path in (("database", self._path), ("wal", wal_path(self._path))):
            try:
                usage[kind] = path.stat().st_size
            except OSError:
                usage[kind] = 0
        return usage

    def index_scan(self, page: IndexScanPage) -> list[tuple[Term, bytes]]:
        """See ``MemoryStorage.index_scan``; pending writes overlay the committed rows."""
        terms, after, limit, keep = page.terms, page.after, page.limit, page.keep
        require_cursor(after)
        require_limit(limit)
        pending = self._pending_records()
        found: list[tuple[Term, bytes]] = []
        cursor = after
        if cursor is not None and term_order(cursor[0]) < term_order(terms.lo):
            cursor = None
        exhausted = False
        while len(found) < limit:
            wanted = max(limit - len(found), _INDEX_CHUNK if keep else 0) + len(pending)
            args: tuple[object, ...]
            if cursor is None:
                sql, args = _INDEX_FROM, (terms.index, terms.lo, terms.hi, wanted)
            else:
                sql, args = _INDEX_AFTER, (terms.index, cursor[0], cursor[1], terms.hi, wanted)
            try:
                rows = self._reader.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise self._read_failure(exc) from exc
            found += [
                (term, key)
                for term, key in rows
                if key not in pending and (keep is None or keep(key))
            ]
            if len(rows) < wanted:
                exhausted = True
                break
            cursor = rows[-1][0], rows[-1][1]
        if pending:
            start = None if after is None else (term_order(after[0]), after[1])
            found += [
                (term, key)
                for key, record in pending.items()
                if keep is None or keep(key)
                for name, term in facts_of(record)[1]
                if name == terms.index
                and terms.contains(term)
                and (start is None or (term_order(term), key) > start)
            ]
            found.sort(key=lambda row: (term_order(row[0]), row[1]))
            if not exhausted and cursor is not None:
                # Rows past the last one read from the file may have committed neighbours
                # not read yet; leave them to the next page.
                last = (term_order(cursor[0]), cursor[1])
                found = [row for row in found if (term_order(row[0]), row[1]) <= last]
        return found[:limit]

    def key_scan(
        self, prefix: bytes, after: bytes | None, limit: int, keep: KeyFilter = None
    ) -> list[bytes]:
        """See ``MemoryStorage.key_scan``; pending writes overlay the committed keys."""
        require_bytes("prefix", prefix)
        require_limit(limit)
        pending = self._pending_records()
        end = prefix_end(prefix)
        found: list[bytes] = []
        cursor = after if after is not None and after >= prefix else None
        exhausted = False
        while len(found) < limit:
            wanted = max(limit - len(found), _INDEX_CHUNK if keep else 0) + len(pending)
            if cursor is None:
                sql, args = _KEYS_FROM, (prefix, wanted)
            else:
                sql, args = _KEYS_AFTER, (cursor, wanted)
            try:
                rows = [row[0] for row in self._reader.execute(sql, args).fetchall()]
            except sqlite3.Error as exc:
                raise self._read_failure(exc) from exc
            inside = [key for key in rows if end is None or key < end]
            found += [key for key in inside if key not in pending and (keep is None or keep(key))]
            if len(rows) < wanted or len(inside) < len(rows):
                exhausted = True
                break
            cursor = rows[-1]
        if pending:
            found += [
                key
                for key, record in pending.items()
                if facts_of(record)[0]
                and key.startswith(prefix)
                and (after is None or key > after)
                and (keep is None or keep(key))
            ]
            found.sort()
            if not exhausted and cursor is not None and len(found) > limit:
                found = [key for key in found if key <= cursor]
        return found[:limit]

    def _pending_records(self) -> dict[bytes, bytes | None]:
        pending: dict[bytes, bytes | None] = {}
        for batch in (self._committing, self._open):
            if batch is not None:
                pending.update((key, record) for key, (_token, record) in batch.kv.items())
        return pending

    def count(self) -> int:
        """Committed keys (tombstones included); writes still committing are not counted yet."""
        try:
            return self._reader.execute("SELECT n FROM kv_count").fetchall()[0][0]
        except sqlite3.Error as exc:
            raise self._read_failure(exc) from exc

    def hints_for(self, target: NodeId, limit: int) -> list[Hint]:
        """Oldest first, meaning first stored (hint ids only grow)."""
        require_limit(limit)
        added, deleted = self._pending_hints()
        try:
            rows = self._reader.execute(_HINTS_FOR, (target, limit + len(deleted))).fetchall()
        except sqlite3.Error as exc:
            raise self._read_failure(exc) from exc
        held = {row[0]: Hint(*row) for row in rows if row[0] not in deleted}
        held.update((hint_id, hint) for hint_id, hint in added.items() if hint.target == target)
        return [held[hint_id] for hint_id in sorted(held)[:limit]]

    def hint_backlog(self) -> list[HintBacklog]:
        added, deleted = self._pending_hints()
        try:
            if added or deleted:
                # Pending ids are left to the overlay, so a commit racing this read counts once.
                excluded = json.dumps(sorted(deleted | added.keys()))
                rows = self._reader.execute(_BACKLOG_EXCEPT, (excluded,)).fetchall()
            else:
                rows = self._reader.execute(_BACKLOG).fetchall()
        except sqlite3.Error as exc:
            raise self._read_failure(exc) from exc
        stored = {
            target: HintBacklog(target, count, size, oldest) for target, count, size, oldest in rows
        }
        for line in backlog_of(list(added.values())):
            held = stored.get(line.target)
            stored[line.target] = (
                line
                if held is None
                else HintBacklog(
                    line.target,
                    held.count + line.count,
                    held.bytes + line.bytes,
                    min(held.oldest, line.oldest),
                )
            )
        return [stored[target] for target in sorted(stored)]

    def get_meta(self, name: str) -> bytes | None:
        require_meta_name(name)
        for batch in (self._open, self._committing):
            if batch is not None and name in batch.meta:
                return batch.meta[name]
        try:
            rows = self._reader.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchall()
        except sqlite3.Error as exc:
            raise self._read_failure(exc) from exc
        return rows[0][0] if rows else None

    # Writes: into the open batch, then wait for its commit.

    async def put(self, key: bytes, record: bytes) -> None:
        require_bytes("key", key)
        require_bytes("record", record)
        batch = self._batch_for_write()
        batch.kv[key] = (key_token(key), record)
        await self._commit(batch)

    async def put_many(self, items: list[tuple[bytes, bytes]]) -> None:
        """All items commit in one transaction; for a repeated key the last item wins."""
        for key, record in items:
            require_bytes("key", key)
            require_bytes("record", record)
        if not items:
            self._check_writable()
            await trio.lowlevel.checkpoint()
            return
        batch = self._batch_for_write()
        for key, record in items:
            batch.kv[key] = (key_token(key), record)
        await self._commit(batch)

    async def remove(self, key: bytes) -> None:
        require_bytes("key", key)
        batch = self._batch_for_write()
        batch.kv[key] = (key_token(key), None)
        await self._commit(batch)

    async def add_hint(self, target: NodeId, key: bytes, record: bytes, created: float) -> None:
        require_hint(target, key, record, created)
        batch = self._batch_for_write()
        hint = Hint(self._next_hint_id, target, key, record, float(created))
        self._next_hint_id += 1
        batch.hints_added[hint.hint_id] = hint
        await self._commit(batch)

    async def delete_hints(self, hint_ids: list[int]) -> None:
        """Ids that are not held (already delivered) are ignored."""
        ids = require_hint_ids(hint_ids)
        if not ids:
            self._check_writable()
            await trio.lowlevel.checkpoint()
            return
        batch = self._batch_for_write()
        batch.hints_deleted.update(ids)
        await self._commit(batch)

    async def set_meta(self, name: str, value: bytes) -> None:
        require_meta_name(name)
        require_bytes("meta value", value)
        batch = self._batch_for_write()
        batch.meta[name] = value
        await self._commit(batch)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            if self._state is not _State.OPEN:
                await self._closed.wait()
                return
            self._state = _State.CLOSING
            self._refusal = "storage is closed"
            while (pending := self._open or self._committing) is not None:
                await pending.done.wait()
            if self._thread is not None:
                self._queue.put(None)
                await trio.to_thread.run_sync(self._thread.join)
                self._reader.close()
            else:
                while self._wal.checkpointing:
                    await trio.sleep(0.01)
                self._writer.close()
            os.close(self._lock_fd)
            self._state = _State.CLOSED
            self._closed.set()

    # Trio-thread side of group commit.

    def _check_writable(self) -> None:
        if self._refusal is not None:
            raise StorageFailure(self._refusal)

    def _batch_for_write(self) -> _Batch:
        """The open batch; the caller fills it and calls ``_commit`` with no await in between."""
        self._check_writable()
        if self._open is None:
            self._open = _Batch()
        return self._open

    async def _commit(self, batch: _Batch) -> None:
        if self._thread is None:
            await self._commit_inline(batch)
        else:
            if self._committing is None:
                self._send_open_batch()
            await batch.done.wait()
        if batch.error is not None:
            raise StorageFailure(f"commit to {self._path} failed: {batch.error}")

    async def _commit_inline(self, batch: _Batch) -> None:
        """The first writer of a batch lets the rest of this scheduler tick join it, then
        commits it on the trio thread; the others wait for that commit."""
        if batch.led:
            await batch.done.wait()
            return
        batch.led = True
        await trio.lowlevel.cancel_shielded_checkpoint()
        hold = self._wal.hold
        if hold is not None:
            with trio.CancelScope(shield=True):  # the batch's other writers wait for it
                await hold.wait()
        if self._open is batch:
            self._open = None
        batch.error = _apply(self._writer, batch)
        batch.done.set()
        self._wal.after_commit()

    def _send_open_batch(self) -> None:
        self._committing, self._open = self._open, None
        self._queue.put(self._committing)

    def _batch_committed(self, batch: _Batch, error: str | None) -> None:
        """Runs on the trio thread once the writer has committed (or failed) ``batch``."""
        self._committing = None
        batch.error = error
        batch.done.set()
        if self._open is not None:
            self._send_open_batch()

    def _writer_died(self, reason: str) -> None:
        self._refusal = reason
        for batch in (self._committing, self._open):
            if batch is not None:
                batch.error = reason
                batch.done.set()
        self._committing = self._open = None

    def _pending_hints(self) -> tuple[dict[int, Hint], set[int]]:
        """Hints added and ids deleted by pending batches, applied in commit order."""
        added: dict[int, Hint] = {}
        deleted: set[int] = set()
        for batch in (self._committing, self._open):
            if batch is not None:
                added.update(batch.hints_added)
                for hint_id in batch.hints_deleted:
                    added.pop(hint_id, None)
                deleted |= batch.hints_deleted
        return added, deleted

    def _scan(
        self, piece: ArcPiece, limit: int, column: ScanColumn
    ) -> list[tuple[int, bytes, bytes]]:
        args: tuple[object, ...]
        scan_from, scan_after = SCANS[column]
        if piece.after is None:
            sql, args = scan_from, (piece.lo - _TOKEN_OFFSET, piece.hi - _TOKEN_OFFSET, limit)
        else:
            token, key = piece.after
            sql, args = scan_after, (token - _TOKEN_OFFSET, key, piece.hi - _TOKEN_OFFSET, limit)
        try:
            rows = self._reader.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise self._read_failure(exc) from exc
        return [(token + _TOKEN_OFFSET, key, record) for token, key, record in rows]

    def _read_failure(self, exc: sqlite3.Error) -> StorageFailure:
        if self._state is _State.CLOSED:
            return StorageFailure("storage is closed")
        return StorageFailure(f"read from {self._path} failed: {exc}")

    # Writer thread.

    def _writer_main(self, conn: sqlite3.Connection) -> None:
        try:
            committed = 0
            while (batch := self._queue.get()) is not None:
                error = _apply(conn, batch)
                self._trio_token.run_sync_soon(self._batch_committed, batch, error)
                committed += 1
                truncate_if_due(conn, self._path, committed)
        except trio.RunFinishedError:
            return  # the trio run ended without aclose(); nobody is waiting for an answer
        except BaseException as exc:
            with contextlib.suppress(trio.RunFinishedError):
                self._trio_token.run_sync_soon(
                    self._writer_died, f"storage writer thread failed: {exc!r}"
                )
            raise
        finally:
            conn.close()


def _the_record(_key: bytes, record: bytes) -> bytes:
    return record


def _apply(conn: sqlite3.Connection, batch: _Batch) -> str | None:
    """Commit one batch in one transaction; the sqlite error text on failure."""
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.execute("BEGIN IMMEDIATE")
        puts = []
        removals = []
        for key, (token, record) in batch.kv.items():
            if record is None:
                removals.append((token - _TOKEN_OFFSET, key))
            else:
                puts.append((token - _TOKEN_OFFSET, key, key_digest(key, record), record))
        _move_index_rows(conn, batch)
        _UPSERT_KV.run(conn, puts)
        _DELETE_KV.run(conn, removals)
        _INSERT_HINTS.run(
            conn,
            [(h.hint_id, h.target, h.key, h.record, h.created) for h in batch.hints_added.values()],
        )
        _DELETE_HINTS.run(conn, [(hint_id,) for hint_id in batch.hints_deleted])
        _UPSERT_META.run(conn, list(batch.meta.items()))
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        # A failed ROLLBACK leaves the transaction open; the next batch retries it first.
        with contextlib.suppress(sqlite3.Error):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        return str(exc)
    return None


def _move_index_rows(conn: sqlite3.Connection, batch: _Batch) -> None:
    """Inside ``_apply``'s transaction: the index rows of the batch's keys go from what their
    committed records said to what the new records say.

    While no key of the store has ever had an index term (``idx`` is empty), the old records
    need not be read: they had no terms, and the live-key rows are set outright (an insert
    that finds the key, or a delete that finds nothing, changes nothing). That keeps a store
    that uses no indexes within a statement per batch of what it cost before indexes."""
    if not batch.kv:
        return
    added: list[tuple[object, ...]] = []
    dropped: list[tuple[object, ...]] = []
    became_live: list[tuple[object, ...]] = []
    became_dead: list[tuple[object, ...]] = []
    if conn.execute(_ANY_INDEX_ROW).fetchone()[0] == 0:
        for key, (_token, record) in batch.kv.items():
            live, terms = facts_of(record)
            (became_live if live else became_dead).append((key,))
            added += [(name, term, key) for name, term in terms]
    else:
        old = dict(
            _GET_MANY.run(
                conn, [(token - _TOKEN_OFFSET, key) for key, (token, _r) in batch.kv.items()]
            )
        )
        for key, (_token, record) in batch.kv.items():
            was = facts_of(old.get(key))
            now = facts_of(record)
            if was == now:
                continue
            if was[0] != now[0]:
                (became_live if now[0] else became_dead).append((key,))
            dropped += [(name, term, key) for name, term in was[1] - now[1]]
            added += [(name, term, key) for name, term in now[1] - was[1]]
    _DELETE_IDX.run(conn, dropped)
    _INSERT_IDX.run(conn, added)
    _DELETE_LIVE.run(conn, became_dead)
    _INSERT_LIVE.run(conn, became_live)

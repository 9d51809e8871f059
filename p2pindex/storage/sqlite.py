"""SQLite storage, the durable default: WAL, group commit on one writer thread, reads in place.

Layout (schema version 1):

* ``kv(token, key, record)`` WITHOUT ROWID with primary key ``(token, key)``: one B-tree serves
  point reads (the token is recomputed from the key) and ordered arc scans. A ``key`` primary key
  plus a token index is slower per random upsert (README, Measuring), because every write then
  dirties a page in two B-trees. ``token`` is stored as ``key_token(key) - 2**63``: SQLite
  integers are signed 64-bit, and the shift maps 0..2**64-1 onto -2**63..2**63-1 keeping order,
  so ``ORDER BY token`` is ring order.
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
import fcntl
import json
import os
import queue
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import outcome
import trio

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
from p2pindex.storage.index_rows import KeyFilter, TermRange, facts_of, prefix_end, require_cursor
from p2pindex.storage.memory import backlog_of
from p2pindex.types import NodeId

SCHEMA_VERSION = 2
_UPGRADABLE_FROM = 1
APPLICATION_ID = 0x70326978
"""``PRAGMA application_id`` of a p2pindex storage file (ASCII "p2ix")."""

CACHE_KIB = 16_000
"""Page cache per connection; two connections keep a 1M-key node well inside its memory budget."""

_TOKEN_OFFSET = 1 << 63
_WAL_AUTOCHECKPOINT_PAGES = 4000
_CHECKPOINT_EVERY_COMMITS = 200
_WAL_RESET_FRAMES = 4000
"""WAL pages (16 MB at 4 KiB) past which a checkpoint holds commits so the WAL can rewind."""
_JOURNAL_SIZE_LIMIT = 16 << 20
"""What a rewound WAL file is cut back to; otherwise it is reused but never shrunk, so it
stayed at its high-water mark (56 MB beside an 8 MB database after 30,000 writes)."""
_WAL_TRUNCATE_BYTES = 32 << 20
"""A WAL file past this is rewound at once: with the writer thread by a TRUNCATE checkpoint,
which empties it; inline, by a held checkpoint (see _maybe_checkpoint)."""
_WRITER_SIZE_CHECK_EVERY = 64
"""Commits between looks at the WAL's size (one stat call)."""
_WRITER_BUSY_MS = 5000
_READER_BUSY_MS = 200
_MIN_MAX_BYTES = 64 << 10

_SCHEMA = (
    "CREATE TABLE kv (token INTEGER NOT NULL, key BLOB NOT NULL, record BLOB NOT NULL,"
    " PRIMARY KEY (token, key)) WITHOUT ROWID",
    "CREATE TABLE kv_count (n INTEGER NOT NULL)",
    "INSERT INTO kv_count (n) VALUES (0)",
    "CREATE TRIGGER kv_inserted AFTER INSERT ON kv BEGIN UPDATE kv_count SET n = n + 1; END",
    "CREATE TRIGGER kv_deleted AFTER DELETE ON kv BEGIN UPDATE kv_count SET n = n - 1; END",
    "CREATE TABLE hints (id INTEGER PRIMARY KEY, target TEXT NOT NULL, key BLOB NOT NULL,"
    " record BLOB NOT NULL, created REAL NOT NULL)",
    "CREATE INDEX hints_by_target ON hints (target, id)",
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
)
_INDEX_SCHEMA = (
    "CREATE TABLE idx (name TEXT NOT NULL, term ANY NOT NULL, key BLOB NOT NULL,"
    " PRIMARY KEY (name, term, key)) WITHOUT ROWID",
    "CREATE TABLE live (key BLOB PRIMARY KEY) WITHOUT ROWID",
)


class _RowsStatement:
    """A statement over many rows, sent as one multi-row statement per 1024 rows (see the GIL
    note). Every statement here is idempotent per row (a repeated row of a query returns a
    repeated result), so a chunk is padded up to a power of two by repeating its last row: a
    few SQL texts stay prepared and one step does the chunk.
    """

    MAX_ROWS = 1024

    def __init__(self, head: str, row: str, tail: str = "") -> None:
        self._sql: dict[int, str] = {}
        size = 1
        while size <= self.MAX_ROWS:
            self._sql[size] = head + ",".join([row] * size) + tail
            size *= 2

    def run(self, conn: sqlite3.Connection, rows: Sequence[tuple[object, ...]]) -> list[Any]:
        """Run the statement over ``rows``; what a query returns, all chunks together."""
        found: list[Any] = []
        for first in range(0, len(rows), self.MAX_ROWS):
            chunk = rows[first : first + self.MAX_ROWS]
            size = 1 << (len(chunk) - 1).bit_length()
            values = [value for row in chunk for value in row]
            values.extend(chunk[-1] * (size - len(chunk)))
            found += conn.execute(self._sql[size], values).fetchall()
        return found


_UPSERT_KV = _RowsStatement(
    "INSERT INTO kv (token, key, record) VALUES ",
    "(?,?,?)",
    " ON CONFLICT (token, key) DO UPDATE SET record = excluded.record",
)
_DELETE_KV = _RowsStatement(
    "DELETE FROM kv WHERE (token, key) IN (SELECT column1, column2 FROM (VALUES ", "(?,?)", "))"
)
_INSERT_HINTS = _RowsStatement(
    "INSERT INTO hints (id, target, key, record, created) VALUES ",
    "(?,?,?,?,?)",
    " ON CONFLICT (id) DO NOTHING",
)
_DELETE_HINTS = _RowsStatement("DELETE FROM hints WHERE id IN (", "?", ")")
_UPSERT_META = _RowsStatement(
    "INSERT INTO meta (name, value) VALUES ",
    "(?,?)",
    " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
)

_GET_KV = "SELECT record FROM kv WHERE token = ? AND key = ?"
_INSERT_IDX = _RowsStatement(
    "INSERT INTO idx (name, term, key) VALUES ", "(?,?,?)", " ON CONFLICT DO NOTHING"
)
_DELETE_IDX = _RowsStatement(
    "DELETE FROM idx WHERE (name, term, key) IN (SELECT column1, column2, column3 FROM (VALUES ",
    "(?,?,?)",
    "))",
)
_INSERT_LIVE = _RowsStatement("INSERT INTO live (key) VALUES ", "(?)", " ON CONFLICT DO NOTHING")
_DELETE_LIVE = _RowsStatement("DELETE FROM live WHERE key IN (", "?", ")")
_INDEX_FROM = (
    "SELECT term, key FROM idx WHERE name = ? AND term >= ? AND term <= ?"
    " ORDER BY term, key LIMIT ?"
)
_INDEX_AFTER = (
    "SELECT term, key FROM idx WHERE name = ? AND (term, key) > (?, ?) AND term <= ?"
    " ORDER BY term, key LIMIT ?"
)
_KEYS_FROM = "SELECT key FROM live WHERE key >= ? ORDER BY key LIMIT ?"
_KEYS_AFTER = "SELECT key FROM live WHERE key > ? ORDER BY key LIMIT ?"
_ANY_INDEX_ROW = "SELECT EXISTS (SELECT 1 FROM idx)"
_INDEX_CHUNK = 256
"""Rows fetched per statement when a key filter may drop some of them."""


_GET_MANY = _RowsStatement(
    "SELECT kv.key, kv.record FROM (VALUES ",
    "(?,?)",
    ") AS wanted CROSS JOIN kv ON kv.token = wanted.column1 AND kv.key = wanted.column2",
)
"""Point reads of many keys in one step: the wanted (token, key) pairs as a table joined to
``kv`` by its primary key."""
_GET_MANY_FROM = 4
"""Below this many keys a ``get`` each is cheaper than one joined read."""
_SCAN_FROM = (
    "SELECT token, key, record FROM kv WHERE token >= ? AND token <= ? ORDER BY token, key LIMIT ?"
)
_SCAN_AFTER = (
    "SELECT token, key, record FROM kv WHERE (token, key) > (?, ?) AND token <= ?"
    " ORDER BY token, key LIMIT ?"
)
_HINTS_FOR = (
    "SELECT id, target, key, record, created FROM hints WHERE target = ? ORDER BY id LIMIT ?"
)
_BACKLOG = (
    "SELECT target, count(*), sum(length(key) + length(record)), min(created) FROM hints"
    " GROUP BY target"
)
_BACKLOG_EXCEPT = (
    "SELECT target, count(*), sum(length(key) + length(record)), min(created) FROM hints"
    " WHERE id NOT IN (SELECT value FROM json_each(?)) GROUP BY target"
)


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
        self._checkpointing = False
        self._commits_since_checkpoint = 0
        self._wal_frames = 0
        """WAL size (pages) the last checkpoint saw."""
        self._hold: trio.Event | None = None
        """Set while commits wait for a checkpoint that lets the WAL start over."""
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
        lock_fd = _lock(path)
        try:
            _make_private(path)
        except OSError as exc:
            os.close(lock_fd)
            raise StorageFailure(f"cannot open {path}: {exc.strerror}") from exc
        writer: sqlite3.Connection | None = None
        threaded = fsync if writer_thread is None else writer_thread
        try:
            writer, next_hint_id = await trio.to_thread.run_sync(
                _open_writer, path, fsync, max_bytes, threaded
            )
            reader = _open_reader(path) if threaded else writer
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
            merged = {
                key: (token, record) for token, key, record in self._scan(piece, wanted + hidden)
            }
            merged.update(
                (key, entry) for key, entry in pending.items() if piece.contains(entry[0], key)
            )
            rows = sorted(
                (token, key, record)
                for key, (token, record) in merged.items()
                if record is not None
            )
            found.extend((key, record) for _token, key, record in rows[:wanted])
        return found

    def disk_usage(self) -> dict[str, int]:
        """The database and WAL file sizes (a missing WAL, after a TRUNCATE, is 0)."""
        usage = {}
        for kind, path in (("database", self._path), ("wal", _wal_path(self._path))):
            try:
                usage[kind] = path.stat().st_size
            except OSError:
                usage[kind] = 0
        return usage

    def index_scan(
        self,
        terms: TermRange,
        after: tuple[Term, bytes] | None,
        limit: int,
        keep: KeyFilter = None,
    ) -> list[tuple[Term, bytes]]:
        """See ``MemoryStorage.index_scan``; pending writes overlay the committed rows."""
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
                while self._checkpointing:
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
        if self._hold is not None:
            with trio.CancelScope(shield=True):  # the batch's other writers wait for it
                await self._hold.wait()
        if self._open is batch:
            self._open = None
        batch.error = _apply(self._writer, batch)
        batch.done.set()
        self._maybe_checkpoint()

    def _maybe_checkpoint(self) -> None:
        """Move the WAL into the database on a worker thread now and then (it syncs).

        The WAL starts over only when a commit finds it fully checkpointed, which never
        happens while commits keep coming during each checkpoint: under steady writes it
        grew without bound (90 MB in 10 s). So once it is past ``_WAL_RESET_FRAMES``, the
        next checkpoint holds new commits (they keep batching, the event loop runs on) until
        it is done, and the first commit after it rewinds the WAL.
        """
        self._commits_since_checkpoint += 1
        if self._checkpointing:
            return
        # Checkpoints that lag behind steady writes let the file outgrow the reset threshold
        # many times over (47 MB seen); one past _WAL_TRUNCATE_BYTES is rewound at once.
        oversized = (
            self._commits_since_checkpoint % _WRITER_SIZE_CHECK_EVERY == 0
            and _wal_bytes(self._path) > _WAL_TRUNCATE_BYTES
        )
        if self._commits_since_checkpoint < _CHECKPOINT_EVERY_COMMITS and not oversized:
            return
        self._checkpointing = True
        self._commits_since_checkpoint = 0
        if self._wal_frames > _WAL_RESET_FRAMES or oversized:
            self._hold = trio.Event()

        def finished(frames: int) -> None:
            self._checkpointing = False
            self._wal_frames = frames
            if self._hold is not None:
                self._hold.set()
                self._hold = None

        def done(result: outcome.Outcome) -> None:  # runs on the worker thread
            frames = result.value if isinstance(result, outcome.Value) else 0
            with contextlib.suppress(trio.RunFinishedError):
                self._trio_token.run_sync_soon(finished, frames)

        trio.lowlevel.start_thread_soon(lambda: _checkpoint(self._path), done)

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

    def _scan(self, piece: ArcPiece, limit: int) -> list[tuple[int, bytes, bytes]]:
        if piece.after is None:
            sql, args = _SCAN_FROM, (piece.lo - _TOKEN_OFFSET, piece.hi - _TOKEN_OFFSET, limit)
        else:
            token, key = piece.after
            sql, args = _SCAN_AFTER, (token - _TOKEN_OFFSET, key, piece.hi - _TOKEN_OFFSET, limit)
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
                if committed % _WRITER_SIZE_CHECK_EVERY == 0:
                    _truncate_if_large(conn, self._path)
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
                puts.append((token - _TOKEN_OFFSET, key, record))
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


def _make_private(path: Path) -> None:
    """Create the store file 0600 before SQLite does (SQLite gives its -wal and -shm files
    the mode of the main file), and take group and world access off files an older version
    left readable: they hold every value in clear."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    for name in (path.name, path.name + "-wal", path.name + "-shm", path.name + ".lock"):
        part = path.with_name(name)
        with contextlib.suppress(FileNotFoundError):
            mode = part.stat().st_mode
            if mode & 0o077:
                part.chmod(mode & 0o700)


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


def _lock(path: Path) -> int:
    """Hold an exclusive flock on ``<path>.lock`` so two nodes never share one store."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StorageFailure(
            f"cannot open {path}: cannot create {lock_path}: {exc.strerror}"
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise StorageFailure(
            f"cannot open {path}: it is already open in another process or storage object"
            f" ({lock_path} is locked)"
        ) from exc
    return fd


def _open_writer(
    path: Path, fsync: bool, max_bytes: int | None, threaded: bool
) -> tuple[sqlite3.Connection, int]:
    """Runs in a worker thread: connect, configure, check or create the schema."""
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StorageFailure(f"cannot open {path}: {exc}") from exc
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StorageFailure(
                f"cannot open {path}: it cannot switch to WAL journaling (journal mode {mode});"
                " is it read-only?"
            )
        conn.execute(f"PRAGMA synchronous = {'FULL' if fsync else 'NORMAL'}")
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        conn.execute(f"PRAGMA busy_timeout = {_WRITER_BUSY_MS}")
        # A multi-row upsert inside BEGIN ... COMMIT keeps a statement journal of every page
        # it changes; past 64 KiB SQLite spills it to a new file in /var/tmp, so a batch
        # commit created, wrote and deleted a temporary file besides writing the WAL.
        conn.execute("PRAGMA temp_store = MEMORY")
        # Inline commits checkpoint from a worker thread instead (see _maybe_checkpoint).
        autocheckpoint = _WAL_AUTOCHECKPOINT_PAGES if threaded else 0
        conn.execute(f"PRAGMA wal_autocheckpoint = {autocheckpoint}")
        conn.execute(f"PRAGMA journal_size_limit = {_JOURNAL_SIZE_LIMIT}")
        if max_bytes is not None:
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {max_bytes // page_size}")
        return conn, _prepare_schema(conn, path)
    except sqlite3.Error as exc:
        conn.close()
        raise StorageFailure(f"cannot open {path}: {exc}") from exc
    except StorageFailure:
        conn.close()
        raise


def _prepare_schema(conn: sqlite3.Connection, path: Path) -> int:
    """Create the schema in a new file or check an existing one; returns the next hint id."""
    conn.execute("BEGIN IMMEDIATE")
    application_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if application_id == 0 and version == 0:
        if conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]:
            raise StorageFailure(
                f"cannot open {path}: it is another application's SQLite database"
                " (it has tables but no p2pindex application id)"
            )
        for statement in (*_SCHEMA, *_INDEX_SCHEMA):
            conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    elif application_id != APPLICATION_ID:
        raise StorageFailure(
            f"cannot open {path}: it is another application's SQLite database"
            f" (application id {application_id:#x})"
        )
    elif version == _UPGRADABLE_FROM:
        _add_index_tables(conn)
    elif version != SCHEMA_VERSION:
        raise StorageFailure(
            f"cannot open {path}: it has storage schema version {version},"
            f" this p2pindex reads version {SCHEMA_VERSION}"
        )
    # Always written, so a read-only file is refused here rather than at the first put.
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    next_hint_id = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM hints").fetchone()[0]
    conn.execute("COMMIT")
    return next_hint_id


def _wal_path(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def _wal_bytes(path: Path) -> int:
    try:
        return _wal_path(path).stat().st_size
    except OSError:
        return 0


def _truncate_if_large(conn: sqlite3.Connection, path: Path) -> None:
    """On the writer thread, between batches: empty a WAL grown past its bound. A failure
    (a long read holding the WAL) is left for the next look; the WAL only grows meanwhile."""
    if _wal_bytes(path) > _WAL_TRUNCATE_BYTES:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _add_index_tables(conn: sqlite3.Connection) -> None:
    """Upgrade a version 1 file: derive every key's index rows from its record."""
    for statement in _INDEX_SCHEMA:
        conn.execute(statement)
    rows = conn.execute("SELECT key, record FROM kv")
    while chunk := rows.fetchmany(1024):
        added: list[tuple[object, ...]] = []
        live: list[tuple[object, ...]] = []
        for key, record in chunk:
            is_live, terms = facts_of(record)
            if is_live:
                live.append((key,))
            added += [(name, term, key) for name, term in terms]
        _INSERT_IDX.run(conn, added)
        _INSERT_LIVE.run(conn, live)


def _checkpoint(path: Path) -> int:
    """A PASSIVE checkpoint on its own connection: never blocks the writer or readers.
    Returns the WAL's size in pages (0 when the checkpoint failed)."""
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {_READER_BUSY_MS}")
            row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return 0  # the next one retries; the WAL only grows meanwhile
    return int(row[1]) if row and row[1] > 0 else 0


def _open_reader(path: Path) -> sqlite3.Connection:
    """The trio thread's connection; WAL lets it read while the writer commits."""
    try:
        conn = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise StorageFailure(f"cannot open {path} for reading: {exc}") from exc
    try:
        conn.execute("PRAGMA query_only = ON")
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        conn.execute(f"PRAGMA busy_timeout = {_READER_BUSY_MS}")
    except sqlite3.Error as exc:
        conn.close()
        raise StorageFailure(f"cannot open {path} for reading: {exc}") from exc
    return conn

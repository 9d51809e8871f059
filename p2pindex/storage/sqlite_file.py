"""The SQLite store's file: opening it (lock, mode 0600, connections, pragmas), creating,
checking or upgrading its schema, and keeping its WAL in bounds.

``storage.sqlite`` holds the store itself (group commit, reads); this module is what happens
to the file around it. The schema and layout are described there.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from pathlib import Path

import outcome
import trio

from p2pindex.core.digest import key_digest
from p2pindex.errors import StorageFailure
from p2pindex.storage.index_rows import facts_of
from p2pindex.storage.sqlite_sql import _INSERT_IDX, _INSERT_LIVE

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
"""1: records; 2: their index rows (``idx``, ``live``); 3: each record's anti-entropy digest
stored beside it (``kv.digest``). Older files are upgraded when opened."""
APPLICATION_ID = 0x70326978
"""``PRAGMA application_id`` of a p2pindex storage file (ASCII "p2ix")."""

CACHE_KIB = 16_000
"""Page cache per connection; two connections keep a 1M-key node well inside its memory budget."""

_WAL_AUTOCHECKPOINT_PAGES = 4000
_CHECKPOINT_EVERY_COMMITS = 200
_WAL_RESET_FRAMES = 4000
"""WAL pages (16 MB at 4 KiB) past which a checkpoint holds commits so the WAL can rewind."""
_JOURNAL_SIZE_LIMIT = 16 << 20
"""What a rewound WAL file is cut back to; otherwise it is reused but never shrunk, so it
stayed at its high-water mark (56 MB beside an 8 MB database after 30,000 writes)."""
_WAL_TRUNCATE_BYTES = 32 << 20
"""A WAL file past this is rewound at once: with the writer thread by a TRUNCATE checkpoint,
which empties it; inline, by a held checkpoint (see WalCheckpoints.after_commit)."""
_WRITER_SIZE_CHECK_EVERY = 64
"""Commits between looks at the WAL's size (one stat call)."""
_WRITER_BUSY_MS = 5000
_READER_BUSY_MS = 200
_MIN_MAX_BYTES = 64 << 10

_KV_TABLE = (
    "CREATE TABLE {table} (token INTEGER NOT NULL, key BLOB NOT NULL, digest BLOB NOT NULL,"
    " record BLOB NOT NULL, PRIMARY KEY (token, key)) WITHOUT ROWID"
)
"""``digest`` is ``core.digest.key_digest(key, record)``, written with the record. It comes
before the record because SQLite stores a row's columns in order: reading it never walks the
overflow pages of a large record, so an anti-entropy scan reads 16 bytes a key, not the
record."""
_KV_TRIGGERS = (
    "CREATE TRIGGER kv_inserted AFTER INSERT ON kv BEGIN UPDATE kv_count SET n = n + 1; END",
    "CREATE TRIGGER kv_deleted AFTER DELETE ON kv BEGIN UPDATE kv_count SET n = n - 1; END",
)
_SCHEMA = (
    _KV_TABLE.format(table="kv"),
    "CREATE TABLE kv_count (n INTEGER NOT NULL)",
    "INSERT INTO kv_count (n) VALUES (0)",
    *_KV_TRIGGERS,
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


def make_private(path: Path) -> None:
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


def lock_file(path: Path) -> int:
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


def open_writer(
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
        # Inline commits checkpoint from a worker thread instead (see WalCheckpoints.after_commit).
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
    elif version in (1, 2):
        keys = conn.execute("SELECT n FROM kv_count").fetchone()[0]
        log.info(
            "upgrading %s from storage schema %d to %d (%d keys; the node starts when done)",
            path,
            version,
            SCHEMA_VERSION,
            keys,
        )
        began = time.monotonic()
        if version == 1:
            _add_index_tables(conn)
        _add_digests(conn)
        log.info(
            "upgraded %s to storage schema %d in %.1f s",
            path,
            SCHEMA_VERSION,
            time.monotonic() - began,
        )
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


def wal_path(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def wal_bytes(path: Path) -> int:
    try:
        return wal_path(path).stat().st_size
    except OSError:
        return 0


def _truncate_if_large(conn: sqlite3.Connection, path: Path) -> None:
    """On the writer thread, between batches: empty a WAL grown past its bound. A failure
    (a long read holding the WAL) is left for the next look; the WAL only grows meanwhile."""
    if wal_bytes(path) > _WAL_TRUNCATE_BYTES:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _add_digests(conn: sqlite3.Connection) -> None:
    """Upgrade a version 2 file: rebuild ``kv`` with each record's digest beside it (a new
    column cannot go before an existing one). The row count is unchanged."""
    conn.create_function("p2pindex_key_digest", 2, key_digest, deterministic=True)
    conn.execute(_KV_TABLE.format(table="kv_upgraded"))
    conn.execute(
        "INSERT INTO kv_upgraded (token, key, digest, record)"
        " SELECT token, key, p2pindex_key_digest(key, record), record FROM kv ORDER BY token, key"
    )
    conn.execute("DROP TABLE kv")  # and its triggers
    conn.execute("ALTER TABLE kv_upgraded RENAME TO kv")
    for statement in _KV_TRIGGERS:
        conn.execute(statement)


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


def open_reader(path: Path) -> sqlite3.Connection:
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


class WalCheckpoints:
    """When the WAL of an inline-committing store is moved into the database."""

    def __init__(self, path: Path, trio_token: trio.lowlevel.TrioToken) -> None:
        self._path = path
        self._trio_token = trio_token
        self.checkpointing = False
        """A checkpoint runs on a worker thread (the store closes only once it is done)."""
        self._commits_since_checkpoint = 0
        self._wal_frames = 0
        """WAL size (pages) the last checkpoint saw."""
        self.hold: trio.Event | None = None
        """Set while commits wait for a checkpoint that lets the WAL start over."""

    def after_commit(self) -> None:
        """Move the WAL into the database on a worker thread now and then (it syncs).

        The WAL starts over only when a commit finds it fully checkpointed, which never
        happens while commits keep coming during each checkpoint: under steady writes it
        grew without bound (90 MB in 10 s). So once it is past ``_WAL_RESET_FRAMES``, the
        next checkpoint holds new commits (they keep batching, the event loop runs on) until
        it is done, and the first commit after it rewinds the WAL.
        """
        self._commits_since_checkpoint += 1
        if self.checkpointing:
            return
        # Checkpoints that lag behind steady writes let the file outgrow the reset threshold
        # many times over (47 MB seen); one past _WAL_TRUNCATE_BYTES is rewound at once.
        oversized = (
            self._commits_since_checkpoint % _WRITER_SIZE_CHECK_EVERY == 0
            and wal_bytes(self._path) > _WAL_TRUNCATE_BYTES
        )
        if self._commits_since_checkpoint < _CHECKPOINT_EVERY_COMMITS and not oversized:
            return
        self.checkpointing = True
        self._commits_since_checkpoint = 0
        if self._wal_frames > _WAL_RESET_FRAMES or oversized:
            self.hold = trio.Event()

        def finished(frames: int) -> None:
            self.checkpointing = False
            self._wal_frames = frames
            if self.hold is not None:
                self.hold.set()
                self.hold = None

        def done(result: outcome.Outcome) -> None:  # runs on the worker thread
            frames = result.value if isinstance(result, outcome.Value) else 0
            with contextlib.suppress(trio.RunFinishedError):
                self._trio_token.run_sync_soon(finished, frames)

        trio.lowlevel.start_thread_soon(lambda: _checkpoint(self._path), done)


def truncate_if_due(conn: sqlite3.Connection, path: Path, committed: int) -> None:
    """On the writer thread, after its ``committed``-th commit: now and then, empty a WAL
    grown past its bound (see ``_truncate_if_large``)."""
    if committed % _WRITER_SIZE_CHECK_EVERY == 0:
        _truncate_if_large(conn, path)

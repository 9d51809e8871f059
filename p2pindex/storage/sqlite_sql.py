"""The SQL of the SQLite store: its multi-row statements and the token encoding.

Kept apart from the store (``storage.sqlite``) and the file management
(``storage.sqlite_file``), which both run them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Literal, get_args

_TOKEN_OFFSET = 1 << 63
"""Ring tokens are stored shifted by this: SQLite integers are signed 64-bit (see
``storage.sqlite``)."""


class _RowsStatement:
    """A statement over many rows, sent as one multi-row statement per 1024 rows (see the GIL
    note in ``storage.sqlite``). Every statement here is idempotent per row (a repeated row of
    a query returns a repeated result), so a chunk is padded up to a power of two by repeating
    its last row: a few SQL texts stay prepared and one step does the chunk.
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
    "INSERT INTO kv (token, key, digest, record) VALUES ",
    "(?,?,?,?)",
    " ON CONFLICT (token, key) DO UPDATE SET digest = excluded.digest, record = excluded.record",
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
    "SELECT token, key, {column} FROM kv WHERE token >= ? AND token <= ?"
    " ORDER BY token, key LIMIT ?"
)
_SCAN_AFTER = (
    "SELECT token, key, {column} FROM kv WHERE (token, key) > (?, ?) AND token <= ?"
    " ORDER BY token, key LIMIT ?"
)
ScanColumn = Literal["record", "digest"]
SCANS: dict[ScanColumn, tuple[str, str]] = {
    column: (_SCAN_FROM.format(column=column), _SCAN_AFTER.format(column=column))
    for column in get_args(ScanColumn)
}
"""An arc scan's two statements (from an arc's start, after a key) per column read: the
records, or only their digests (anti-entropy)."""
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

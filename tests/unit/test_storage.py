"""Behaviour of the Storage backends: one suite over both, then what only SQLite has.

The SQLite tests that need a commit to be "in flight" stall the writer thread the way another
process would: a second connection holds the write lock (BEGIN IMMEDIATE), so the writer waits
in its busy handler until the test releases it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pindex.core.digest import key_digest
from p2pindex.core.ring import key_token
from p2pindex.errors import StorageFailure
from p2pindex.storage.base import HintBacklog, Storage
from p2pindex.storage.memory import MemoryStorage
from p2pindex.storage.sqlite import SqliteStorage
from p2pindex.types import NodeId

RING = 1 << 64
A = NodeId("a" * 16)
B = NodeId("b" * 16)

Opener = Callable[[], Awaitable[Storage]]


@pytest.fixture(params=["memory", "sqlite", "sqlite-thread"])
def open_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens a fresh, empty store of the backend under test on every call.

    SQLite runs in both commit modes: inline on the trio thread (the default without fsync)
    and on its writer thread (the default with fsync)."""
    counter = itertools.count()

    async def opener() -> Storage:
        if request.param == "memory":
            return MemoryStorage()
        return await SqliteStorage.open(
            tmp_path / f"store{next(counter)}.db", writer_thread=request.param == "sqlite-thread"
        )

    return opener


@pytest.fixture
async def storage(open_storage: Opener) -> AsyncIterator[Storage]:
    store = await open_storage()
    yield store
    await store.aclose()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    """The threaded mode: its tests stall commits by holding the file's write lock."""
    store = await SqliteStorage.open(tmp_path / "store.db", writer_thread=True)
    yield store
    await store.aclose()


def ring_order(start: int, end: int, after: bytes | None, keys: set[bytes]) -> list[bytes]:
    """Brute force: the keys in the arc (start, end], clockwise from start, after ``after``."""
    arc_length = (end - start - 1) % RING + 1

    def position(key: bytes) -> tuple[int, bytes]:
        return ((key_token(key) - start - 1) % RING, key)

    inside = sorted(position(key) for key in keys if position(key)[0] < arc_length)
    if after is not None:
        inside = [place for place in inside if place > position(after)]
    return [key for _distance, key in inside]


def record_of(key: bytes) -> bytes:
    return b"record:" + key


@contextlib.contextmanager
def writer_stalled(path: Path) -> Iterator[None]:
    """Hold the database write lock from another connection until the block ends."""
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        yield
    finally:
        blocker.close()


async def outcome_of(write: Awaitable[None], into: dict[str, object], name: str) -> None:
    try:
        await write
    except StorageFailure as exc:
        into[name] = exc
    else:
        into[name] = "ok"


# The common suite.


async def test_get_returns_what_put_stored(storage: Storage) -> None:
    assert storage.get(b"k") is None
    await storage.put(b"k", b"one")
    assert storage.get(b"k") == b"one"
    await storage.put(b"k", b"two")
    assert storage.get(b"k") == b"two"
    await storage.put(b"", b"empty key")
    assert storage.get(b"") == b"empty key"
    assert storage.count() == 2


async def test_put_many_stores_every_item_and_last_duplicate_wins(storage: Storage) -> None:
    await storage.put_many([(b"a", b"1"), (b"b", b"2"), (b"a", b"3")])
    assert (storage.get(b"a"), storage.get(b"b")) == (b"3", b"2")
    assert storage.count() == 2
    await storage.put_many([])
    assert storage.count() == 2


async def test_put_many_with_a_bad_item_changes_nothing(storage: Storage) -> None:
    with pytest.raises(TypeError, match="record must be bytes"):
        await storage.put_many([(b"a", b"1"), (b"b", "not bytes")])  # type: ignore[list-item]
    assert storage.get(b"a") is None
    assert storage.count() == 0


async def test_bad_arguments_are_refused_with_clear_errors(storage: Storage) -> None:
    with pytest.raises(TypeError, match="key must be bytes, not str"):
        await storage.put("k", b"v")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key must be bytes"):
        storage.get("k")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="start must be a ring token"):
        storage.scan_range(-1, 5, None, 10)
    with pytest.raises(ValueError, match="end must be a ring token"):
        storage.scan_range(0, RING, None, 10)
    with pytest.raises(ValueError, match="limit must be a non-negative integer"):
        storage.scan_range(0, 5, None, -1)
    with pytest.raises(ValueError, match="hint target"):
        await storage.add_hint(NodeId(""), b"k", b"v", 1.0)
    with pytest.raises(ValueError, match="finite number"):
        await storage.add_hint(A, b"k", b"v", float("nan"))
    with pytest.raises(TypeError, match="hint ids must be integers"):
        await storage.delete_hints(["1"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="meta name"):
        await storage.set_meta("", b"v")
    assert storage.count() == 0
    assert storage.hint_backlog() == []


async def test_get_many_answers_as_get_does_for_every_key(storage: Storage) -> None:
    stored = [b"key-%d" % i for i in range(700)]
    await storage.put_many([(key, record_of(key)) for key in stored[:400]])
    await storage.put_many([(key, record_of(key)) for key in stored[400:]])
    for key in stored[::7]:
        await storage.remove(key)
    rng = random.Random(5)
    # Around the one-statement threshold and past a statement's row limit (512), with
    # absent keys and repeats mixed in.
    for size in (0, 1, 3, 4, 5, 17, 600):
        keys = [rng.choice(stored) for _ in range(size)] + [b"absent"] * (size % 2)
        expected = {key: storage.get(key) for key in keys if storage.get(key) is not None}
        assert storage.get_many(keys) == expected
    with pytest.raises(TypeError, match="key must be bytes"):
        storage.get_many([b"ok", "k"])  # type: ignore[list-item]


async def test_remove_drops_the_key(storage: Storage) -> None:
    await storage.put_many([(b"a", b"1"), (b"b", b"2")])
    await storage.remove(b"a")
    await storage.remove(b"never stored")
    assert storage.get(b"a") is None
    assert storage.count() == 1
    assert storage.scan_range(0, 0, None, 10) == [(b"b", b"2")]
    await storage.put(b"a", b"again")
    assert storage.get(b"a") == b"again"
    assert storage.count() == 2


async def test_concurrent_puts_all_land(storage: Storage) -> None:
    keys = [b"key-%d" % i for i in range(300)]
    async with trio.open_nursery() as nursery:
        for key in keys:
            nursery.start_soon(storage.put, key, record_of(key))
    assert storage.count() == len(keys)
    assert all(storage.get(key) == record_of(key) for key in keys)


async def test_scan_range_walks_a_wrapped_arc_clockwise(storage: Storage) -> None:
    keys = sorted((b"w%d" % i for i in range(40)), key=key_token)
    await storage.put_many([(key, record_of(key)) for key in keys])
    start = key_token(keys[30])  # exclusive
    end = key_token(keys[9])  # inclusive; start > end, so the arc wraps past zero
    expected = keys[31:] + keys[:10]
    assert [key for key, _ in storage.scan_range(start, end, None, 100)] == expected
    assert storage.scan_range(start, end, None, 3) == [(k, record_of(k)) for k in keys[31:34]]
    assert [key for key, _ in storage.scan_range(start, end, keys[38], 3)] == [
        keys[39],
        keys[0],
        keys[1],
    ]
    assert storage.scan_range(start, end, keys[20], 100) == []  # after lies outside the arc
    assert storage.scan_range(start, end, None, 0) == []
    everything = storage.scan_range(start, start, None, 100)
    assert [key for key, _ in everything] == keys[31:] + keys[:31]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    keys=st.sets(st.binary(max_size=4), max_size=30),
    data=st.data(),
)
async def test_scan_range_matches_brute_force(
    open_storage: Opener, keys: set[bytes], data: st.DataObject
) -> None:
    store = await open_storage()
    try:
        await store.put_many([(key, record_of(key)) for key in keys])
        token = st.integers(0, RING - 1)
        if keys:
            near_key = st.builds(
                lambda key, shift: (key_token(key) + shift) % RING,
                st.sampled_from(sorted(keys)),
                st.sampled_from([-1, 0, 1]),
            )
            token = st.one_of(token, near_key)
        for _ in range(4):
            start = data.draw(token, label="start")
            end = data.draw(st.one_of(token, st.just(start)), label="end")
            limit = data.draw(st.integers(1, 8), label="limit")
            expected = ring_order(start, end, None, keys)
            paged: list[bytes] = []
            after = None
            while True:
                page = store.scan_range(start, end, after, limit)
                assert all(record == record_of(key) for key, record in page)
                digests = store.scan_digests(start, end, after, limit)
                assert digests == [(key, key_digest(key, record)) for key, record in page]
                paged.extend(key for key, _ in page)
                if len(page) < limit:
                    break
                after = page[-1][0]
            assert paged == expected
            after = data.draw(
                st.one_of(
                    st.binary(max_size=4), *([st.sampled_from(sorted(keys))] if keys else [])
                ),
                label="after",
            )
            found = [key for key, _ in store.scan_range(start, end, after, limit)]
            assert found == ring_order(start, end, after, keys)[:limit]
    finally:
        await store.aclose()


async def test_hints_are_listed_oldest_first_per_target(storage: Storage) -> None:
    await storage.add_hint(A, b"k1", b"r1", 10.0)
    await storage.add_hint(B, b"k2", b"r22", 11.0)
    await storage.add_hint(A, b"k3", b"r333", 12.0)
    await storage.add_hint(A, b"k1", b"r1-newer", 13.0)
    listed = storage.hints_for(A, 10)
    assert [(h.key, h.record, h.created) for h in listed] == [
        (b"k1", b"r1", 10.0),
        (b"k3", b"r333", 12.0),
        (b"k1", b"r1-newer", 13.0),
    ]
    assert all(h.target == A for h in listed)
    assert [h.hint_id for h in listed] == sorted({h.hint_id for h in listed})
    assert storage.hints_for(A, 2) == listed[:2]
    assert storage.hints_for(NodeId("c" * 16), 10) == []
    assert storage.hint_backlog() == [
        HintBacklog(A, 3, (2 + 2) + (2 + 4) + (2 + 8), 10.0),
        HintBacklog(B, 1, 2 + 3, 11.0),
    ]


async def test_deleted_hints_are_gone(storage: Storage) -> None:
    for i in range(5):
        await storage.add_hint(A, b"k%d" % i, b"r", float(i))
    await storage.add_hint(B, b"kb", b"r", 100.0)
    ids = [hint.hint_id for hint in storage.hints_for(A, 10)]
    missing = max(ids) + 1000
    await storage.delete_hints([ids[0], ids[3], missing])
    await storage.delete_hints([])
    assert [hint.hint_id for hint in storage.hints_for(A, 10)] == [ids[1], ids[2], ids[4]]
    assert storage.hint_backlog()[0] == HintBacklog(A, 3, 3 * 3, 1.0)
    await storage.delete_hints([hint.hint_id for hint in storage.hints_for(B, 10)])
    assert [line.target for line in storage.hint_backlog()] == [A]


async def test_meta_values_are_kept_by_name(storage: Storage) -> None:
    assert storage.get_meta("ring") is None
    await storage.set_meta("ring", b"v1")
    await storage.set_meta("other", b"x")
    await storage.set_meta("ring", b"v2")
    assert storage.get_meta("ring") == b"v2"
    assert storage.get_meta("other") == b"x"


async def test_a_closed_store_refuses_everything(storage: Storage) -> None:
    await storage.put(b"k", b"v")
    await storage.aclose()
    await storage.aclose()
    with pytest.raises(StorageFailure, match="closed"):
        await storage.put(b"k", b"v2")
    with pytest.raises(StorageFailure, match="closed"):
        await storage.add_hint(A, b"k", b"v", 1.0)
    with pytest.raises(StorageFailure, match="closed"):
        storage.get(b"k")
    for keys in ([b"k"], [b"k%d" % i for i in range(10)]):
        with pytest.raises(StorageFailure, match="closed"):
            storage.get_many(keys)
    with pytest.raises(StorageFailure, match="closed"):
        storage.count()


# MemoryStorage only.


async def test_memory_put_is_visible_before_its_first_suspension() -> None:
    store = MemoryStorage()
    write = store.put(b"k", b"v")
    write.send(None)  # runs the put up to the checkpoint that stands in for the commit
    assert store.get(b"k") == b"v"
    write.close()


async def test_memory_failing_disk_refuses_writes_and_changes_nothing() -> None:
    store = MemoryStorage()
    await store.put(b"k", b"v")
    store.fail_writes = "disk unplugged"
    writes = [
        store.put(b"k", b"v2"),
        store.put_many([(b"n", b"v")]),
        store.remove(b"k"),
        store.add_hint(A, b"k", b"v", 1.0),
        store.delete_hints([1]),
        store.set_meta("m", b"v"),
    ]
    for write in writes:
        with pytest.raises(StorageFailure, match="disk unplugged"):
            await write
    assert (store.get(b"k"), store.get(b"n"), store.count()) == (b"v", None, 1)
    assert store.hint_backlog() == [] and store.get_meta("m") is None
    store.fail_writes = None
    await store.put(b"k", b"v3")
    assert store.get(b"k") == b"v3"
    with pytest.raises(StorageFailure, match="simulated disk failure: full"):
        await MemoryStorage(fail_writes="full").put(b"k", b"v")


# SqliteStorage only.


async def test_sqlite_put_is_visible_while_its_commit_is_stalled(
    sqlite_store: SqliteStorage, tmp_path: Path
) -> None:
    await sqlite_store.put(b"old", b"committed")
    await sqlite_store.add_hint(A, b"hk0", b"hr0", 1.0)
    committed_hint = sqlite_store.hints_for(A, 1)[0].hint_id
    done: dict[str, object] = {}
    async with trio.open_nursery() as nursery:
        with writer_stalled(tmp_path / "store.db"):
            nursery.start_soon(outcome_of, sqlite_store.put(b"new", b"pending"), done, "put")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(outcome_of, sqlite_store.remove(b"old"), done, "remove")
            nursery.start_soon(outcome_of, sqlite_store.set_meta("m", b"pending"), done, "meta")
            nursery.start_soon(
                outcome_of, sqlite_store.add_hint(A, b"hk", b"hr", 2.0), done, "hint"
            )
            unhint = sqlite_store.delete_hints([committed_hint])
            nursery.start_soon(outcome_of, unhint, done, "unhint")
            await trio.testing.wait_all_tasks_blocked()
            assert done == {}
            assert sqlite_store.get(b"new") == b"pending"
            assert sqlite_store.get(b"old") is None
            assert sqlite_store.get_many([b"new", b"old", b"none"]) == {b"new": b"pending"}
            assert sqlite_store.scan_range(0, 0, None, 10) == [(b"new", b"pending")]
            assert sqlite_store.get_meta("m") == b"pending"
            assert [(h.key, h.created) for h in sqlite_store.hints_for(A, 10)] == [(b"hk", 2.0)]
            assert sqlite_store.hint_backlog() == [HintBacklog(A, 1, 4, 2.0)]
            assert sqlite_store.count() == 1  # count() reports committed keys only
    assert done == dict.fromkeys(["put", "remove", "meta", "hint", "unhint"], "ok")
    assert sqlite_store.count() == 1
    assert sqlite_store.scan_range(0, 0, None, 10) == [(b"new", b"pending")]
    assert [(h.key, h.created) for h in sqlite_store.hints_for(A, 10)] == [(b"hk", 2.0)]


async def test_sqlite_scan_merges_pending_writes_in_order(
    sqlite_store: SqliteStorage, tmp_path: Path
) -> None:
    rng = random.Random(5)
    committed = {rng.randbytes(3): b"c" for _ in range(60)}
    await sqlite_store.put_many(list(committed.items()))
    touched = rng.sample(sorted(committed), 30)
    removed = set(touched[:20])
    rewritten = dict.fromkeys(touched[20:], b"rewritten")
    added = {rng.randbytes(3): b"added" for _ in range(20)}
    expected = {**committed, **rewritten, **added}
    for key in removed:
        expected.pop(key)
    async with trio.open_nursery() as nursery:
        with writer_stalled(tmp_path / "store.db"):
            nursery.start_soon(sqlite_store.put, b"first", b"alone in its batch")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(sqlite_store.put_many, list({**rewritten, **added}.items()))
            for key in removed:
                nursery.start_soon(sqlite_store.remove, key)
            await trio.testing.wait_all_tasks_blocked()
            expected[b"first"] = b"alone in its batch"
            for start, end in [
                (0, 0),
                (1 << 63, 1 << 62),
                (rng.randrange(RING), rng.randrange(RING)),
            ]:
                for limit in (1, 7, 100):
                    paged: list[tuple[bytes, bytes]] = []
                    after = None
                    while page := sqlite_store.scan_range(start, end, after, limit):
                        digests = sqlite_store.scan_digests(start, end, after, limit)
                        assert digests == [(k, key_digest(k, r)) for k, r in page]
                        paged.extend(page)
                        after = page[-1][0]
                    assert [key for key, _ in paged] == ring_order(start, end, None, set(expected))
                    assert all(record == expected[key] for key, record in paged)
    assert dict(sqlite_store.scan_range(0, 0, None, 1000)) == expected
    assert sqlite_store.count() == len(expected)


async def test_sqlite_failed_commit_fails_every_write_of_the_batch(tmp_path: Path) -> None:
    path = tmp_path / "small.db"
    async with await SqliteStorage.open(path, max_bytes=64 << 10, writer_thread=True) as store:
        done: dict[str, object] = {}
        big = b"x" * 4096
        async with trio.open_nursery() as nursery:
            with writer_stalled(path):
                nursery.start_soon(outcome_of, store.put(b"primer", b"small"), done, "primer")
                await trio.testing.wait_all_tasks_blocked()
                for i in range(40):  # 160 KiB in the second batch: more than the file may hold
                    nursery.start_soon(outcome_of, store.put(b"big%d" % i, big), done, f"big{i}")
                nursery.start_soon(outcome_of, store.add_hint(A, b"k", big, 1.0), done, "hint")
                nursery.start_soon(outcome_of, store.set_meta("m", b"v"), done, "meta")
                await trio.testing.wait_all_tasks_blocked()
                assert store.get(b"big7") == big
        assert done.pop("primer") == "ok"
        assert len(done) == 42
        for outcome in done.values():
            assert isinstance(outcome, StorageFailure)
            assert "database or disk is full" in str(outcome)
        assert all(store.get(b"big%d" % i) is None for i in range(40))
        assert store.scan_range(0, 0, None, 100) == [(b"primer", b"small")]
        assert store.count() == 1
        assert store.hints_for(A, 10) == [] and store.hint_backlog() == []
        assert store.get_meta("m") is None
        await store.put(b"after", b"the failure")  # the store keeps working
        assert store.get(b"after") == b"the failure"


@pytest.mark.parametrize("failing_first", [True, False])
async def test_sqlite_failed_batch_keeps_the_newer_pending_write(
    tmp_path: Path, failing_first: bool
) -> None:
    path = tmp_path / "small.db"
    big = b"x" * (200 << 10)
    writes = [("big", big), ("small", b"small")]
    if not failing_first:
        writes.reverse()
    async with await SqliteStorage.open(path, max_bytes=64 << 10, writer_thread=True) as store:
        done: dict[str, object] = {}
        async with trio.open_nursery() as nursery:
            with writer_stalled(path):
                for name, record in writes:  # each write goes to its own batch
                    nursery.start_soon(outcome_of, store.put(b"x", record), done, name)
                    await trio.testing.wait_all_tasks_blocked()
                assert store.get(b"x") == writes[-1][1]
        assert done["small"] == "ok"
        assert isinstance(done["big"], StorageFailure)
        assert store.get(b"x") == b"small"
        assert store.count() == 1


async def test_sqlite_inline_failed_commit_fails_the_batch_and_hides_it(tmp_path: Path) -> None:
    async with await SqliteStorage.open(tmp_path / "s.db", max_bytes=64 << 10) as store:
        await store.put(b"primer", b"small")
        done: dict[str, object] = {}
        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(outcome_of, store.put(b"big%d" % i, b"x" * 4096), done, i)
        assert all(isinstance(o, StorageFailure) for o in done.values()) and len(done) == 40
        assert all(store.get(b"big%d" % i) is None for i in range(40))
        assert store.get(b"primer") == b"small"
        await store.put(b"after", b"the failure")
        assert store.get(b"after") == b"the failure"


async def test_sqlite_reopen_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = await SqliteStorage.open(path)
    await store.put_many([(b"k%d" % i, record_of(b"k%d" % i)) for i in range(50)])
    await store.remove(b"k7")
    await store.add_hint(A, b"hk", b"hr", 5.0)
    await store.add_hint(A, b"hk2", b"hr2", 6.0)
    first_hints = store.hints_for(A, 10)
    await store.set_meta("node", b"id")
    await store.aclose()

    async with await SqliteStorage.open(path) as store:
        assert store.count() == 49
        assert store.get(b"k7") is None
        assert store.get(b"k8") == record_of(b"k8")
        assert len(store.scan_range(0, 0, None, 100)) == 49
        assert store.hints_for(A, 10) == first_hints
        assert store.get_meta("node") == b"id"
        await store.add_hint(A, b"hk3", b"hr3", 7.0)
        assert store.hints_for(A, 10)[-1].hint_id > first_hints[-1].hint_id


async def test_sqlite_refuses_a_second_open_of_the_same_file(
    sqlite_store: SqliteStorage, tmp_path: Path
) -> None:
    with pytest.raises(StorageFailure, match="already open"):
        await SqliteStorage.open(tmp_path / "store.db")
    assert sqlite_store.get(b"k") is None


async def test_sqlite_writes_in_flight_when_closing_complete(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = await SqliteStorage.open(path)
    done: dict[str, object] = {}
    async with trio.open_nursery() as nursery:
        for i in range(100):
            nursery.start_soon(outcome_of, store.put(b"k%d" % i, b"v"), done, str(i))
        await trio.testing.wait_all_tasks_blocked()
        await store.aclose()
    assert set(done.values()) == {"ok"}
    with pytest.raises(StorageFailure, match="closed"):
        await store.put(b"late", b"v")
    async with await SqliteStorage.open(path) as store:
        assert store.count() == 100


async def test_sqlite_open_refuses_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(os.urandom(8192))
    with pytest.raises(StorageFailure, match=r"cannot open .*junk\.db.*not a database"):
        await SqliteStorage.open(path)
    path.write_bytes(b"x" * 10)
    with pytest.raises(StorageFailure, match="not a database"):
        await SqliteStorage.open(path)


async def test_sqlite_open_refuses_another_applications_database(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(path)) as other:
        other.execute("CREATE TABLE accounts (id INTEGER)")
        other.commit()
    with pytest.raises(StorageFailure, match="another application's SQLite database"):
        await SqliteStorage.open(path)


async def test_sqlite_open_refuses_an_unknown_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    await (await SqliteStorage.open(path)).aclose()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StorageFailure, match="schema version 99, this p2pindex reads version 3"):
        await SqliteStorage.open(path)


def make_older(path: Path, version: int) -> None:
    """Rewrite a closed store as a file of schema ``version`` (1 or 2) had it: ``kv``
    without digests, and for version 1 no index tables."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.executescript(
            "BEGIN;"
            "CREATE TABLE kv_old (token INTEGER NOT NULL, key BLOB NOT NULL,"
            " record BLOB NOT NULL, PRIMARY KEY (token, key)) WITHOUT ROWID;"
            "INSERT INTO kv_old SELECT token, key, record FROM kv;"
            "DROP TABLE kv;"
            "ALTER TABLE kv_old RENAME TO kv;"
            "CREATE TRIGGER kv_inserted AFTER INSERT ON kv"
            " BEGIN UPDATE kv_count SET n = n + 1; END;"
            "CREATE TRIGGER kv_deleted AFTER DELETE ON kv"
            " BEGIN UPDATE kv_count SET n = n - 1; END;"
            + ("DROP TABLE idx; DROP TABLE live;" if version == 1 else "")
            + f"PRAGMA user_version = {version};"
            "COMMIT;"
        )


@pytest.mark.parametrize("version", [1, 2])
async def test_sqlite_upgrades_an_older_file_with_digests_beside_records(
    tmp_path: Path, version: int, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "store.db"
    items = [(os.urandom(8), os.urandom(size)) for size in (10, 100, 5000, 70_000) * 25]
    async with await SqliteStorage.open(path) as store:
        await store.put_many(items)
    make_older(path, version)
    caplog.set_level("INFO", logger="p2pindex.storage.sqlite_file")
    async with await SqliteStorage.open(path) as store:
        assert f"from storage schema {version} to 3 (100 keys" in caplog.text
        assert "upgraded" in caplog.text
        assert store.count() == len(items)
        records = store.scan_range(0, 0, None, 1000)
        assert sorted(records) == sorted(items)
        assert store.scan_digests(0, 0, None, 1000) == [
            (key, key_digest(key, record)) for key, record in records
        ]
        await store.put(b"new", b"record")  # the count triggers came back with the table
        await store.remove(items[0][0])
        assert store.count() == len(items)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        columns = [row[1] for row in conn.execute("PRAGMA table_info(kv)")]
        assert columns == ["token", "key", "digest", "record"]  # the digest before the record
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def test_sqlite_open_refuses_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with await SqliteStorage.open(path) as store:
        await store.put_many([(os.urandom(20), os.urandom(100)) for _ in range(3000)])
    with contextlib.closing(sqlite3.connect(path)) as conn:  # fold the WAL into the file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.seek(size // 2)
        file.write(os.urandom(size - size // 2))
    with pytest.raises(StorageFailure, match="malformed"):
        store = await SqliteStorage.open(path)
        try:
            store.scan_range(0, 0, None, 10_000)
        finally:
            await store.aclose()


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable, even for root (which ignores permission bits)."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        yield
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root and chattr +i is not available here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


async def test_sqlite_open_refuses_a_read_only_file(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with await SqliteStorage.open(path) as store:
        await store.put(b"k", b"v")
    with read_only(path), pytest.raises(StorageFailure, match="readonly database"):
        await SqliteStorage.open(path)
    async with await SqliteStorage.open(path) as store:  # nothing was left locked
        assert store.get(b"k") == b"v"


async def test_the_wal_starts_over_under_steady_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commits arriving during every checkpoint used to keep the WAL from ever rewinding."""
    import p2pindex.storage.sqlite_file as sqlite_module

    monkeypatch.setattr(sqlite_module, "_CHECKPOINT_EVERY_COMMITS", 5)
    monkeypatch.setattr(sqlite_module, "_WAL_RESET_FRAMES", 100)
    store = await SqliteStorage.open(tmp_path / "data.sqlite3")
    rng = random.Random(1)

    async def writer(commits: int) -> None:
        for _ in range(commits):
            await store.put_many([(b"k%d" % rng.randrange(5000), b"r" * 200) for _ in range(8)])

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(writer, 400)
    wal_bytes = os.path.getsize(tmp_path / "data.sqlite3-wal")
    await store.aclose()
    # 3200 commits of 8 scattered keys write several thousand pages; a WAL that rewinds
    # stays near the reset threshold.
    assert wal_bytes < 1500 * 4096


_BATCH_COMMITS = """
import os, sys, trio
from p2pindex.storage.sqlite import SqliteStorage

async def main(path, fsync):
    async with await SqliteStorage.open(path, fsync=fsync) as store:
        for round_ in range(3):  # inserts, then updates of the same keys: existing pages change
            await store.put_many([(b"key%05d" % i, os.urandom(200)) for i in range(1500)])

trio.run(main, sys.argv[1], sys.argv[2] == "fsync")
"""


@pytest.mark.parametrize("mode", ["inline", "fsync"])
def test_sqlite_batch_commits_create_no_temporary_files(tmp_path: Path, mode: str) -> None:
    """A multi-row upsert inside a transaction keeps a statement journal; SQLite used to spill
    it to a new file in its temporary directory on every large commit (created, written,
    deleted: invisible afterwards, but a directory's mtime records it)."""
    scratch = tmp_path / "sqlite-tmp"
    scratch.mkdir()
    before = scratch.stat().st_mtime_ns
    env = {**os.environ, "SQLITE_TMPDIR": str(scratch)}
    command = [sys.executable, "-c", _BATCH_COMMITS, str(tmp_path / "store.db"), mode]
    subprocess.run(command, env=env, check=True, timeout=120)
    assert scratch.stat().st_mtime_ns == before
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("threaded", [False, True], ids=["inline", "writer-thread"])
@pytest.mark.parametrize("bounded", [True, False], ids=["bounded", "control"])
async def test_a_wal_grown_past_its_bound_is_rewound_and_cut_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threaded: bool, bounded: bool
) -> None:
    """Only the size check rewinds the WAL here (the periodic checkpoint never runs), so the
    control without it shows what the check prevents."""
    from p2pindex.storage import sqlite_file as sqlite_module

    bound = 256 << 10
    monkeypatch.setattr(sqlite_module, "_WAL_TRUNCATE_BYTES", bound if bounded else 1 << 40)
    monkeypatch.setattr(sqlite_module, "_JOURNAL_SIZE_LIMIT", 64 << 10)
    monkeypatch.setattr(sqlite_module, "_WAL_AUTOCHECKPOINT_PAGES", 0)
    monkeypatch.setattr(sqlite_module, "_CHECKPOINT_EVERY_COMMITS", 1 << 30)
    monkeypatch.setattr(sqlite_module, "_WRITER_SIZE_CHECK_EVERY", 4)
    storage = await SqliteStorage.open(tmp_path / "data.db", writer_thread=threaded)
    largest = 0
    try:
        value = os.urandom(2048)
        for round_ in range(600):
            await storage.put_many([(b"wal-%d-%d" % (round_, i), value) for i in range(4)])
            largest = max(largest, storage.disk_usage()["wal"])
        with trio.fail_after(10):  # the last checkpoint may still be running inline
            while bounded and storage.disk_usage()["wal"] > 2 * bound:
                await storage.put(b"one more", b"v")
                await trio.sleep(0.01)
        usage = storage.disk_usage()
    finally:
        await storage.aclose()
    assert usage["database"] > 0
    if bounded:
        assert largest < 8 * bound, (largest, usage)
    else:
        assert largest > 16 * bound, "the control never grew: the test cannot tell"

"""Index rows kept by both storage backends: derived from each stored record, in its commit.

A model (a dict of key -> record) says what every scan must answer; random writes, deletes
(tombstones), sibling records and removals must leave both backends agreeing with it.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from p2pindex.core import versions
from p2pindex.core.terms import normalize, term_order
from p2pindex.core.versions import VersionVector
from p2pindex.storage.base import Storage
from p2pindex.storage.index_rows import (
    IndexScanPage,
    TermRange,
    check_range,
    facts_of,
    prefix_end,
)
from p2pindex.storage.memory import MemoryStorage
from p2pindex.storage.sqlite import SqliteStorage
from tests.unit.test_storage import make_older

Opener = Callable[[], Awaitable[Storage]]


@pytest.fixture(params=["memory", "sqlite", "sqlite-thread"])
def open_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    counter = itertools.count()

    async def opener() -> Storage:
        if request.param == "memory":
            return MemoryStorage()
        return await SqliteStorage.open(
            tmp_path / f"store{next(counter)}.db", writer_thread=request.param == "sqlite-thread"
        )

    return opener


def record(value: bytes | None, index: dict[str, list[object]] | None = None) -> bytes:
    obj = versions.update(None, VersionVector(), "n1", value, normalize(index))
    return versions.encode_object(obj)


def siblings(*writes: tuple[bytes, dict[str, list[object]]]) -> bytes:
    obj = None
    for actor, (value, index) in enumerate(writes):
        made = versions.update(None, VersionVector(), f"n{actor}", value, normalize(index))
        obj = made if obj is None else versions.merge(obj, made)
    assert obj is not None
    return versions.encode_object(obj)


def model_rows(model: dict[bytes, bytes], terms: TermRange, keep=None) -> list[tuple]:
    rows = [
        (term, key)
        for key, rec in model.items()
        for name, term in facts_of(rec)[1]
        if name == terms.index and terms.contains(term) and (keep is None or keep(key))
    ]
    return sorted(rows, key=lambda row: (term_order(row[0]), row[1]))


def model_keys(model: dict[bytes, bytes], prefix: bytes) -> list[bytes]:
    return sorted(k for k, rec in model.items() if facts_of(rec)[0] and k.startswith(prefix))


async def page_all(store: Storage, terms: TermRange, size: int, keep=None) -> list[tuple]:
    found: list[tuple] = []
    after = None
    while True:
        page = store.index_scan(IndexScanPage(terms, after, size, keep))
        found += page
        if len(page) < size:
            return found
        after = page[-1]


async def test_rows_follow_writes_tombstones_and_siblings(open_storage: Opener) -> None:
    store = await open_storage()
    await store.put(b"o1", record(b"v", {"total": [420], "email": ["a@b.example"]}))
    await store.put(b"o2", record(b"v", {"total": [100]}))
    await store.put(b"o3", siblings((b"x", {"total": [7]}), (b"y", {"total": [9000]})))
    totals = check_range("total", 0, 10_000)
    assert store.index_scan(IndexScanPage(totals, None, 10)) == [
        (7, b"o3"),
        (100, b"o2"),
        (420, b"o1"),
        (9000, b"o3"),
    ]
    assert store.index_scan(IndexScanPage(check_range("email", b"a", b"z"), None, 10)) == [
        (b"a@b.example", b"o1")
    ]
    # A new version replaces the terms; a tombstone removes them and the key from listings.
    await store.put(b"o1", record(b"v2", {"total": [421]}))
    await store.put(b"o2", record(None))
    assert store.index_scan(IndexScanPage(totals, None, 10)) == [
        (7, b"o3"),
        (421, b"o1"),
        (9000, b"o3"),
    ]
    assert store.index_scan(IndexScanPage(check_range("email", b"a", b"z"), None, 10)) == []
    assert store.key_scan(b"", None, 10) == [b"o1", b"o3"]
    await store.remove(b"o3")
    assert store.index_scan(IndexScanPage(totals, None, 10)) == [(421, b"o1")]
    assert store.key_scan(b"o", None, 10) == [b"o1"]
    await store.aclose()


async def test_integer_and_byte_terms_never_share_a_range(open_storage: Opener) -> None:
    store = await open_storage()
    await store.put(b"k1", record(b"v", {"x": [5, b"5"]}))
    assert store.index_scan(IndexScanPage(check_range("x", 0, 10), None, 10)) == [(5, b"k1")]
    assert store.index_scan(IndexScanPage(check_range("x", b"", b"\xff"), None, 10)) == [
        (b"5", b"k1")
    ]
    await store.aclose()


@pytest.mark.parametrize("seed", range(6))
async def test_random_histories_agree_with_the_model(open_storage: Opener, seed: int) -> None:
    rng = random.Random(seed)
    store = await open_storage()
    model: dict[bytes, bytes] = {}
    keys = [f"k{i:02d}".encode() for i in range(40)]
    for _ in range(12):
        batch: list[tuple[bytes, bytes]] = []
        for _ in range(rng.randint(1, 12)):
            key = rng.choice(keys)
            roll = rng.random()
            if roll < 0.2:
                rec = record(None)
            elif roll < 0.35:
                rec = siblings(
                    (b"a", {"n": [rng.randint(0, 20)]}), (b"b", {"n": [rng.randint(0, 20)]})
                )
            else:
                rec = record(b"v", {"n": [rng.randint(0, 20)], "s": [rng.choice(["x", "y"])]})
            batch.append((key, rec))
        if rng.random() < 0.2 and model:
            gone = rng.choice(sorted(model))
            await store.remove(gone)
            model.pop(gone)
        await store.put_many(batch)
        model.update(batch)
        terms = check_range("n", rng.randint(0, 10), rng.randint(10, 20))
        odd = (lambda key: key[-1] % 2 == 1) if rng.random() < 0.5 else None
        size = rng.randint(1, 7)
        assert await page_all(store, terms, size, odd) == model_rows(model, terms, odd)
        assert store.key_scan(b"k1", None, 100) == model_keys(model, b"k1")
    await store.aclose()


async def test_paging_keys_resumes_exactly_after_the_last(open_storage: Opener) -> None:
    store = await open_storage()
    await store.put_many([(f"p{i:03d}".encode(), record(b"v")) for i in range(50)])
    await store.put(b"q", record(b"v"))
    found: list[bytes] = []
    after = None
    while page := store.key_scan(b"p", after, 7):
        found += page
        after = page[-1]
    assert found == [f"p{i:03d}".encode() for i in range(50)]
    await store.aclose()


async def test_a_version_1_file_gets_its_index_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = await SqliteStorage.open(path)
    await store.put(b"k", record(b"v", {"n": [3]}))
    await store.aclose()
    make_older(path, 1)
    store = await SqliteStorage.open(path)
    assert store.index_scan(IndexScanPage(check_range("n", 0, 9), None, 10)) == [(3, b"k")]
    assert store.key_scan(b"", None, 10) == [b"k"]
    await store.aclose()


def test_ranges_refuse_mixed_or_reversed_bounds() -> None:
    with pytest.raises(ValueError, match="one of each"):
        check_range("n", 1, b"2")
    with pytest.raises(ValueError, match="above its high end"):
        check_range("n", 5, 1)


def test_prefix_end_is_the_least_key_above_the_prefix() -> None:
    assert prefix_end(b"ab") == b"ac"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") is None
    assert prefix_end(b"") is None


def test_unparseable_records_count_as_live_and_unindexed() -> None:
    assert facts_of(b"opaque") == (True, frozenset())
    assert facts_of(record(None)) == (False, frozenset())


def test_memory_backend_starts_empty() -> None:
    assert MemoryStorage().key_scan(b"", None, 5) == []


@pytest.mark.parametrize(
    ("lo", "hi", "said"),
    [
        (b"b", b"a", "low end 'b' is above its high end 'a'"),
        (9, -3, "low end 9 is above its high end -3"),
        (b"\xff", b"\x00", "low end 0xff is above its high end 0x00"),
    ],
)
def test_a_backward_range_names_its_terms_as_the_user_gave_them(lo, hi, said) -> None:
    with pytest.raises(ValueError, match=said):
        check_range("tag", lo, hi)

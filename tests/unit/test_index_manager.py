"""IndexManager's kept records: reads trust them, so they must always match storage."""

from __future__ import annotations

import pytest

from p2pindex.config import Limits
from p2pindex.core import versions
from p2pindex.core.versions import VersionVector
from p2pindex.errors import StorageFailure
from p2pindex.node.replica import IndexManager
from p2pindex.node.stats import StatisticsStore
from p2pindex.storage.memory import MemoryStorage


class FlakyStorage(MemoryStorage):
    """Memory storage that counts reads and can fail its next commits."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False
        self.reads = 0

    def get(self, key: bytes) -> bytes | None:
        self.reads += 1
        return super().get(key)

    def get_many(self, keys):  # type: ignore[no-untyped-def]
        self.reads += 1
        return super().get_many(keys)

    async def put(self, key: bytes, record: bytes) -> None:
        await self.put_many([(key, record)])

    async def put_many(self, items: list[tuple[bytes, bytes]]) -> None:
        if self.failing:
            raise StorageFailure("disk unplugged")
        await super().put_many(items)


def index_on(storage: MemoryStorage, actor: str = "n1.e1") -> IndexManager:
    return IndexManager(storage, actor, Limits(), StatisticsStore())


def values(obj: versions.VersionedObject | None) -> list[bytes | None]:
    assert obj is not None
    return sorted(sibling.value for sibling in obj.siblings)  # type: ignore[type-var]


async def test_a_written_key_is_read_back_without_asking_storage() -> None:
    storage = FlakyStorage()
    index = index_on(storage)
    obj, record = index.new_version(b"k", VersionVector(), b"v1")
    await index.commit(b"k", record)
    storage.reads = 0
    assert index.read(b"k") == obj
    assert index.read_many([b"k", b"absent"]) == {b"k": obj}
    assert index.records([b"k", b"absent"]) == [record, None]
    assert storage.get(b"k") == record
    assert storage.reads == 3  # the absent key twice, and the check above


@pytest.mark.parametrize("batched", [False, True])
async def test_a_failed_commit_is_forgotten_so_reads_show_storage_again(batched: bool) -> None:
    storage = FlakyStorage()
    index = index_on(storage)
    first, record = index.new_version(b"k", VersionVector(), b"v1")
    await index.commit(b"k", record)
    storage.failing = True
    with pytest.raises(StorageFailure):
        if batched:
            [(_obj, lost)] = index.new_versions([(b"k", first.clock, b"v2")])  # type: ignore[misc]
            await index.commit_many([(b"k", lost)])
        else:
            _obj, lost = index.new_version(b"k", first.clock, b"v2")
            await index.commit(b"k", lost)
    assert index.read(b"k") == first
    assert index.read_many([b"k"]) == {b"k": first}
    assert index.records([b"k"]) == [record]


async def test_a_failed_replica_merge_is_forgotten_too() -> None:
    storage = FlakyStorage()
    index = index_on(storage)
    mine, record = index.new_version(b"k", VersionVector(), b"mine")
    await index.commit(b"k", record)
    theirs = versions.update(None, VersionVector(), "n2.e1", b"theirs")
    storage.failing = True
    with pytest.raises(StorageFailure):
        await index.apply_many([(b"k", versions.encode_object(theirs), theirs)])
    with pytest.raises(StorageFailure):
        await index.apply(b"k", theirs)
    assert index.read(b"k") == mine


async def test_every_kind_of_write_updates_what_reads_return() -> None:
    storage = FlakyStorage()
    index = index_on(storage)
    _obj, record = index.new_version(b"k", VersionVector(), b"mine")
    await index.commit(b"k", record)
    assert values(index.read(b"k")) == [b"mine"]
    # A concurrent write from another coordinator, merged in one at a time and batched.
    theirs = versions.update(None, VersionVector(), "n2.e1", b"theirs")
    await index.apply(b"k", theirs)
    assert values(index.read(b"k")) == [b"mine", b"theirs"]
    other = versions.update(None, VersionVector(), "n3.e1", b"other")
    await index.apply_many([(b"k", versions.encode_object(other), other)])
    assert values(index.read(b"k")) == [b"mine", b"other", b"theirs"]
    # Whatever reads return is exactly what storage holds.
    stored = storage.get(b"k")
    assert stored is not None
    assert index.read(b"k") == versions.decode_object(stored)
    assert index.records([b"k"]) == [stored]
    # A write with the full context replaces all three.
    current = index.read(b"k")
    assert current is not None
    [(_obj, resolved)] = index.new_versions([(b"k", current.clock, b"resolved")])  # type: ignore[misc]
    await index.commit_many([(b"k", resolved)])
    assert values(index.read(b"k")) == [b"resolved"]
    assert storage.get(b"k") == resolved


async def test_a_fresh_manager_reads_what_an_earlier_one_stored() -> None:
    storage = FlakyStorage()
    obj, record = index_on(storage).new_version(b"k", VersionVector(), b"v1")
    await index_on(storage).commit(b"k", record)
    assert index_on(storage).read(b"k") == obj


async def test_kept_records_are_bounded_and_a_rewritten_key_is_kept_longest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("p2pindex.node.replica.DECODED_CACHE", 4)
    storage = FlakyStorage()
    index = index_on(storage)

    async def write(key: bytes) -> None:
        current = index.read(key)
        context = VersionVector() if current is None else current.clock
        _obj, record = index.new_version(key, context, b"v")
        await index.commit(key, record)

    for key in (b"hot", b"a", b"b", b"c"):
        await write(key)
    await write(b"hot")  # rewritten: now the most recently stored
    for key in (b"d", b"e", b"f"):  # three new keys push out a, b and c
        await write(key)
    storage.reads = 0
    index.read(b"hot")
    assert storage.reads == 0
    index.read(b"a")
    assert storage.reads == 1


def dots(obj: versions.VersionedObject) -> set[tuple[str, int]]:
    return {sibling.dot for sibling in obj.siblings}


@pytest.mark.parametrize("batched", [False, True])
async def test_a_forgotten_version_s_dot_is_never_issued_again(batched: bool) -> None:
    """Seeds 1721, 1875 and 1883: while a commit was pending, a concurrent read returned the
    pending version and read repair copied it to the other replicas; the commit failed, the
    node forgot the version and issued its dot again for the next write. The replicas took
    that write for the version they held and dropped it: an acknowledged write lost."""
    storage = FlakyStorage()
    fresh = iter(["n1.e2", "n1.e3"])
    index = IndexManager(
        storage, "n1.e1", Limits(), StatisticsStore(), fresh_actor=lambda: next(fresh)
    )
    first, record = index.new_version(b"k", VersionVector(), b"v1")
    await index.commit(b"k", record)
    storage.failing = True
    exposed, pending = index.new_version(b"k", first.clock, b"v2")
    assert index.records([b"k"]) == [pending]  # what a read, and read repair, sees meanwhile
    with pytest.raises(StorageFailure):
        if batched:
            await index.commit_many([(b"k", pending)])
        else:
            await index.commit(b"k", pending)
    storage.failing = False
    later, record = index.new_version(b"k", first.clock, b"v3")
    await index.commit(b"k", record)
    assert dots(later).isdisjoint(dots(exposed))
    # A replica that holds the exposed version keeps the later write as a sibling of it.
    merged = versions.merge(exposed, later)
    assert values(merged) == [b"v2", b"v3"]


async def test_a_key_whose_history_was_forgotten_gets_a_dot_above_every_earlier_one() -> None:
    """Seed 3896 with reaping on: a tombstone carrying this node's dot n1.e1:3 was reaped on
    every replica, and this node's marker expired (a forward clock jump aged it) while the
    other replicas kept theirs. The next write of the key here started the key's counter
    again at 1; the replicas merged it against their markers, took n1.e1:1 for a write the
    tombstone already covers and dropped it: an acknowledged write lost."""
    storage = MemoryStorage()
    index = index_on(storage)
    clock = VersionVector()
    for value in (b"v1", b"v2", None):
        obj, record = index.new_version(b"k", clock, value)
        await index.commit(b"k", record)
        clock = obj.clock
    tombstone = index.read(b"k")
    assert tombstone is not None and tombstone.is_deleted
    assert await index.reap(b"k", storage.get(b"k") or b"")
    index.shadow.clear()  # the marker expired here; the other replicas still hold theirs
    assert index.read(b"k") is None
    fresh, _ = index.new_version(b"k", VersionVector(), b"again")
    merged = versions.merge(tombstone, fresh)
    assert values(merged) == [b"again"]


async def test_the_highest_issued_counter_carries_over_to_the_next_manager_only_as_given() -> None:
    """A clean restart keeps the epoch and passes the saved counter on (node.py); a new
    manager told about it never goes below it, for any key."""
    storage = MemoryStorage()
    first = index_on(storage)
    for number in range(5):
        _, record = first.new_version(f"k{number}".encode(), VersionVector(), b"v")
        await first.commit(f"k{number}".encode(), record)
    assert first.issued == 5
    later = IndexManager(storage, "n1.e1", Limits(), StatisticsStore(), issued=first.issued)
    obj, _ = later.new_version(b"new", VersionVector(), b"v")
    assert dots(obj) == {("n1.e1", 6)}


async def test_keys_written_while_tracked_are_listed_and_too_many_say_so(monkeypatch) -> None:
    from p2pindex.node import replica

    storage = MemoryStorage()
    index = index_on(storage)
    _, record = index.new_version(b"before", VersionVector(), b"v")
    await index.commit(b"before", record)
    index.track_writes()
    for key in (b"a", b"b"):
        _, record = index.new_version(key, VersionVector(), b"v")
        await index.commit(key, record)
    assert await index.written() == {b"a": 1, b"b": 2}
    index.track_writes()
    _, record = index.new_version(b"a", VersionVector(), b"v")
    await index.commit(b"a", record)
    mark = index.commit_mark()
    for key in (b"b", b"a"):
        _, record = index.new_version(key, VersionVector(), b"v")
        await index.commit(key, record)
    # a key's number is its last commit's, and later than a mark taken before that commit
    written = await index.written()
    assert written is not None and written[b"a"] > written[b"b"] > mark
    monkeypatch.setattr(replica, "WRITTEN_TRACK_MAX", 2)
    index.track_writes()
    for key in (b"c", b"d", b"e"):
        _, record = index.new_version(key, VersionVector(), b"v")
        await index.commit(key, record)
    assert await index.written() is None  # the caller pushes everything again


@pytest.mark.parametrize("own", [True, False])
async def test_a_dropped_copy_of_its_own_write_is_never_superseded_by_its_next_write(
    own: bool,
) -> None:
    """A fallback coordinated a write, a replica holds it, the fallback drops its stray copy
    and then coordinates the key again: the replica must keep the first write (ci seed 27099
    lost it: the second dot's clock covered the first)."""
    actors = iter(["n2.e2", "n2.e3"])
    fallback = IndexManager(
        MemoryStorage(), "n2.e1", Limits(), StatisticsStore(), fresh_actor=lambda: next(actors)
    )
    if own:
        first, record = fallback.new_version(b"k", VersionVector(), b"first")
    else:  # a copy it only held (written by another node): no reason to change actor
        first = versions.update(None, VersionVector(), "n9.e1", b"first")
        record = versions.encode_object(first)
    await fallback.commit(b"k", record)
    replica = versions.decode_object(record)
    dropped = await fallback.drop_copies({b"k": record}, stray=lambda key: True)
    assert dropped == 1 and fallback.records([b"k"]) == [None]
    assert fallback.actor == ("n2.e2" if own else "n2.e1")
    second, _ = fallback.new_version(b"k", VersionVector(), b"second")
    assert values(versions.merge(replica, second)) == [b"first", b"second"]


async def test_a_copy_no_longer_stray_or_changed_since_is_kept() -> None:
    storage = MemoryStorage()
    index = index_on(storage)
    _obj, record = index.new_version(b"k", VersionVector(), b"v")
    await index.commit(b"k", record)
    assert await index.drop_copies({b"k": record}, stray=lambda key: False) == 0
    assert await index.drop_copies({b"k": b"older"}, stray=lambda key: True) == 0
    assert storage.get(b"k") == record

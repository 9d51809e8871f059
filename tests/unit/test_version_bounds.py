"""Versions cannot be wedged: no context or stored record makes ``update`` fail, forged
contexts are refused before any arithmetic, and oversized writes are refused up front."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pindex.config import Limits
from p2pindex.core.versions import (
    MAX_COUNTER,
    SANE_COUNTER,
    Dot,
    Sibling,
    VersionedObject,
    VersionVector,
    decode_object,
    descends,
    encode_object,
    unseen_claim,
    update,
)
from p2pindex.errors import InvalidRequest, RecordLimitExceeded
from p2pindex.node.replica import IndexManager
from p2pindex.node.stats import StatisticsStore
from p2pindex.storage.memory import MemoryStorage

ACTORS = st.sampled_from(["n1.e1", "n1.e1+", "n2.e1", "x"]) | st.text(min_size=1, max_size=4)
COUNTERS = st.sampled_from([1, 2, SANE_COUNTER, SANE_COUNTER + 1, MAX_COUNTER - 1, MAX_COUNTER])
COUNTERS = COUNTERS | st.integers(1, MAX_COUNTER)
VECTORS = st.dictionaries(ACTORS, COUNTERS, max_size=5).map(VersionVector)


@st.composite
def objects(draw: st.DrawFn) -> VersionedObject | None:
    clock = draw(VECTORS)
    if not clock:
        return None
    actor = draw(st.sampled_from(sorted(clock)))
    counter = draw(st.integers(1, clock[actor]))
    value = draw(st.none() | st.binary(max_size=3))
    return VersionedObject(clock, [Sibling(Dot(actor, counter), value)])


@settings(max_examples=400)
@given(objects(), VECTORS, ACTORS, st.none() | st.binary(max_size=3))
def test_update_never_fails_and_supersedes_what_it_saw(
    current: VersionedObject | None, context: VersionVector, actor: str, value: bytes | None
) -> None:
    new = update(current, context, actor, value)
    assert descends(new.clock, context)
    if current is not None:
        assert descends(new.clock, current.clock)
        assert new.clock != current.clock  # the write is news to every copy
    assert value in [sibling.value for sibling in new.siblings]
    assert decode_object(encode_object(new)) == new  # every result can be stored and sent


def test_a_key_whose_counter_is_exhausted_stays_writable_and_deletable() -> None:
    wedged = VersionedObject(
        VersionVector({"n1.e1": MAX_COUNTER}), [Sibling(Dot("n1.e1", MAX_COUNTER), b"old")]
    )
    rewritten = update(wedged, wedged.context, "n1.e1", b"new")
    assert rewritten.values == [b"new"]
    deleted = update(rewritten, rewritten.context, "n1.e1", None)
    assert deleted.is_deleted


@given(objects(), VECTORS)
def test_a_claim_is_refused_only_above_the_sane_range_and_beyond_what_is_held(
    current: VersionedObject | None, context: VersionVector
) -> None:
    claim = unseen_claim(context, current)
    held = current.clock if current is not None else VersionVector()
    over = {a: c for a, c in context.items() if c > SANE_COUNTER and c > held.get(a, 0)}
    assert (claim is None) == (not over)
    if claim is not None:
        assert claim in over.items()


def manager(limits: Limits | None = None) -> IndexManager:
    return IndexManager(MemoryStorage(), "n1.e1", limits or Limits(), StatisticsStore())


async def test_a_forged_context_is_refused_and_nothing_changes() -> None:
    index = manager()
    obj, record = index.new_version(b"k", VersionVector(), b"v")
    await index.commit(b"k", record)
    forged = VersionVector({"n1.e1": MAX_COUNTER})
    with pytest.raises(InvalidRequest, match="no replica has made"):
        index.new_version(b"k", forged, b"evil")
    assert index.read(b"k") == obj
    # The context a read returned still works.
    new, _ = index.new_version(b"k", obj.context, b"w")
    assert new.values == [b"w"]


async def test_a_record_over_the_limit_is_refused_and_a_resolving_write_is_not() -> None:
    limits = Limits(max_value=1000, max_frame=16 * 1024, max_record=3000)
    index = manager(limits)
    for _ in range(2):
        _obj, record = index.new_version(b"k", VersionVector(), b"x" * 1000)
        await index.commit(b"k", record)
    before = index.read(b"k")
    assert before is not None and len(before.values) == 2
    with pytest.raises(RecordLimitExceeded, match="limit 3000"):
        index.new_version(b"k", VersionVector(), b"x" * 1000)
    assert index.read(b"k") == before
    made = index.new_versions([(b"k", VersionVector(), b"y" * 1000)])
    assert isinstance(made[0], RecordLimitExceeded)
    resolved, _ = index.new_version(b"k", before.context, b"z" * 1000)
    assert resolved.values == [b"z" * 1000]

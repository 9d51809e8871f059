"""Dotted version vectors: update and merge semantics, the merge laws, the record format."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import reduce

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pindex.core.versions import (
    ContextOfAnotherKey,
    Dot,
    Sibling,
    VersionedObject,
    VersionVector,
    Write,
    apply,
    decode_context,
    decode_object,
    descends,
    encode_context,
    encode_object,
    join,
    merge,
    update,
)

ACTORS = ("n1", "n2", "n3", "n4")
EMPTY = VersionVector()


def dots(obj: VersionedObject) -> dict[Dot, bytes | None]:
    return {sibling.dot: sibling.value for sibling in obj.siblings}


# --- simulated histories ------------------------------------------------------------------


@dataclass
class History:
    """Replicas of one key, written by coordinators (each a replica) with contexts clients
    read at some earlier time, and synchronised pairwise in arbitrary order."""

    replicas: dict[str, VersionedObject | None]
    writes: list[tuple[Dot, bytes | None, VersionVector]] = field(default_factory=list)
    states: list[VersionedObject] = field(default_factory=list)


@st.composite
def histories(draw: st.DrawFn, max_steps: int = 30) -> History:
    history = History(dict.fromkeys(ACTORS))
    contexts = [EMPTY]
    for step in range(draw(st.integers(1, max_steps))):
        action = draw(st.sampled_from(["write", "write", "sync", "read"])) if step else "write"
        if action == "write":
            actor = draw(st.sampled_from(ACTORS))
            context = draw(st.sampled_from(contexts))
            value = draw(st.none() | st.binary(max_size=3))
            new = update(history.replicas[actor], context, actor, value)
            dot = Dot(actor, new.clock[actor])
            assert dots(new)[dot] == value
            history.writes.append((dot, value, context))
            history.replicas[actor] = new
            history.states.append(new)
        elif action == "sync":
            source, target = draw(st.sampled_from(ACTORS)), draw(st.sampled_from(ACTORS))
            incoming, local = history.replicas[source], history.replicas[target]
            if incoming is not None:
                merged = incoming if local is None else merge(local, incoming)
                history.replicas[target] = merged
                history.states.append(merged)
        else:
            copy = history.replicas[draw(st.sampled_from(ACTORS))]
            if copy is not None:
                contexts.append(copy.context)
    return history


def live_states(history: History) -> list[VersionedObject]:
    return [copy for copy in history.replicas.values() if copy is not None]


@settings(max_examples=200)
@given(history=histories(), data=st.data())
def test_merging_every_replica_keeps_exactly_the_writes_nobody_superseded(
    history: History, data: st.DataObject
) -> None:
    copies = data.draw(st.permutations(live_states(history)))
    final = reduce(merge, copies)
    survivors = {
        dot: value
        for dot, value, _ in history.writes
        if not any(context.get(dot.actor) >= dot.counter for _, _, context in history.writes)
    }
    assert dots(final) == survivors
    assert final.clock == reduce(join, (copy.clock for copy in copies))


@given(history=histories(), data=st.data())
def test_merge_is_commutative_associative_and_idempotent(
    history: History, data: st.DataObject
) -> None:
    pick = st.sampled_from(history.states)
    a, b, c = data.draw(pick), data.draw(pick), data.draw(pick)
    assert merge(a, b) == merge(b, a)
    assert merge(merge(a, b), c) == merge(a, merge(b, c))
    assert merge(a, a) == a
    assert descends(merge(a, b).clock, a.clock) and descends(merge(a, b).clock, b.clock)


@given(history=histories(), data=st.data())
def test_folding_replicas_in_any_order_converges(history: History, data: st.DataObject) -> None:
    copies = live_states(history)
    first = data.draw(st.permutations(copies))
    second = data.draw(st.permutations(copies))
    assert reduce(merge, first) == reduce(merge, second)


@given(history=histories())
def test_records_round_trip_and_equal_objects_have_equal_bytes(history: History) -> None:
    for state in history.states:
        data = encode_object(state)
        decoded = decode_object(data)
        assert decoded == state
        assert encode_object(decoded) == data
        assert decode_context(encode_context(state.context)) == state.context
    copies = live_states(history)
    if len(copies) > 1:
        forward, backward = reduce(merge, copies), reduce(merge, reversed(copies))
        assert encode_object(forward) == encode_object(backward)


# --- update -------------------------------------------------------------------------------


def test_first_write_gets_the_first_dot_of_its_coordinator() -> None:
    obj = update(None, EMPTY, "n1", b"v")
    assert obj.clock == VersionVector({"n1": 1})
    assert obj.siblings == (Sibling(Dot("n1", 1), b"v"),)
    assert obj.values == [b"v"] and obj.sibling_count == 1 and not obj.is_deleted
    assert obj.context == obj.clock


def test_a_write_with_the_read_context_replaces_what_was_read() -> None:
    first = update(None, EMPTY, "n1", b"a")
    second = update(first, first.context, "n2", b"b")
    assert second.values == [b"b"]
    assert second.clock == VersionVector({"n1": 1, "n2": 1})


def test_an_empty_context_on_an_existing_key_adds_a_sibling() -> None:
    first = update(None, EMPTY, "n1", b"a")
    second = update(first, EMPTY, "n1", b"b")
    assert sorted(second.values) == [b"a", b"b"]
    assert [s.dot for s in second.siblings] == [Dot("n1", 1), Dot("n1", 2)]


def test_siblings_the_context_did_not_cover_survive() -> None:
    a = update(None, EMPTY, "n1", b"a")
    both = update(a, EMPTY, "n1", b"b")
    read_before_b = a.context
    third = update(both, read_before_b, "n1", b"c")
    assert sorted(third.values) == [b"b", b"c"]


def test_a_delete_is_a_version() -> None:
    obj = update(None, EMPTY, "n1", b"a")
    deleted = update(obj, obj.context, "n1", None)
    assert deleted.is_deleted and deleted.values == [] and deleted.sibling_count == 1
    concurrent = update(deleted, EMPTY, "n2", b"new")
    assert not concurrent.is_deleted and concurrent.values == [b"new"]
    assert concurrent.sibling_count == 2


def test_new_dot_is_past_anything_the_context_names_for_the_actor() -> None:
    """A coordinator whose copy is behind must not reuse a counter the context has seen."""
    obj = update(None, VersionVector({"n1": 5}), "n1", b"x")
    assert obj.siblings[0].dot == Dot("n1", 6)


@given(
    history=st.lists(st.sampled_from([b"a", b"b", None]), min_size=1, max_size=6),
    floor=st.integers(min_value=0, max_value=1000),
)
def test_a_write_after_its_key_was_forgotten_survives_every_earlier_version(
    history: list[bytes | None], floor: int
) -> None:
    """With ``floor`` at the highest counter the actor issued, a write made with no memory
    of the key (no local copy, an empty context) is never covered by an earlier version."""
    obj: VersionedObject | None = None
    issued = 0
    for value in history:
        obj = update(obj, EMPTY if obj is None else obj.context, "n1", value, floor=issued)
        issued = max(issued, obj.clock["n1"])
    assert obj is not None
    fresh = update(None, EMPTY, "n1", b"new", floor=max(issued, floor))
    assert fresh.siblings[0].dot.counter > max(issued, floor)
    assert b"new" in merge(obj, fresh).values


def test_a_write_record_applies_every_one_of_its_fields() -> None:
    """``apply`` is ``update`` with the write as one record: context, actor, value, terms
    and floor all reach the new version."""
    first = update(None, EMPTY, "n1", b"a")
    concurrent = update(None, EMPTY, "n2", b"b")
    current = merge(first, concurrent)
    made = apply(current, Write(first.context, "n1", b"c", (("x", 1),), floor=41))
    assert sorted(made.values) == [b"b", b"c"]  # covers what its context saw, keeps the rest
    assert made.clock["n1"] == 42
    assert made.index_terms == frozenset({("x", 1)})
    assert made == update(current, first.context, "n1", b"c", (("x", 1),), floor=41)


def test_update_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError):
        update(None, {"n1": 1}, "n1", b"x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        update(None, EMPTY, "", b"x")
    with pytest.raises(TypeError):
        update(None, EMPTY, "n1", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        update(b"raw", EMPTY, "n1", b"x")  # type: ignore[arg-type]


def test_merge_of_divergent_replicas_keeps_concurrent_writes() -> None:
    base = update(None, EMPTY, "n1", b"base")
    left = update(base, base.context, "n1", b"left")
    right = update(base, base.context, "n2", b"right")
    merged = merge(left, right)
    assert sorted(merged.values) == [b"left", b"right"]
    resolved = update(merged, merged.context, "n3", b"resolved")
    assert merge(resolved, left).values == [b"resolved"]


def test_merge_picks_one_value_when_a_dot_was_reused() -> None:
    a = update(None, EMPTY, "n1", b"a")
    b = update(None, EMPTY, "n1", b"b")
    assert merge(a, b) == merge(b, a)
    assert merge(a, b).values == [b"b"]


# --- version vectors --------------------------------------------------------------------


@given(st.dictionaries(st.sampled_from(ACTORS), st.integers(0, 50)), st.randoms())
def test_version_vectors_are_canonical(entries: dict[str, int], order) -> None:
    shuffled = list(entries.items())
    order.shuffle(shuffled)
    a, b = VersionVector(entries), VersionVector(shuffled)
    assert a == b and hash(a) == hash(b)
    assert list(a) == sorted(actor for actor, counter in entries.items() if counter)
    assert all(a.get(actor) == counter for actor, counter in entries.items())


vectors = st.dictionaries(st.sampled_from(ACTORS), st.integers(0, 5)).map(VersionVector)


@given(vectors, vectors, vectors)
def test_join_and_descends(a: VersionVector, b: VersionVector, c: VersionVector) -> None:
    assert join(a, b) == join(b, a)
    assert join(join(a, b), c) == join(a, join(b, c))
    assert descends(join(a, b), a) and descends(join(a, b), b) and descends(a, a)
    assert descends(a, b) == (join(a, b) == a)


def test_version_vector_rejects_bad_entries() -> None:
    with pytest.raises(ValueError, match="outside"):
        VersionVector({"n1": -1})
    with pytest.raises(TypeError):
        VersionVector({"n1": True})
    with pytest.raises(TypeError):
        VersionVector({1: 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="twice"):
        VersionVector([("n1", 1), ("n1", 2)])


def test_versioned_object_constructor_checks_invariants() -> None:
    clock = VersionVector({"n1": 2})
    one, two = Sibling(Dot("n1", 1), b"a"), Sibling(Dot("n1", 2), b"b")
    assert VersionedObject(clock, [one, two]).values == [b"a", b"b"]
    with pytest.raises(ValueError, match="out of order"):
        VersionedObject(clock, [two, one])
    with pytest.raises(ValueError, match="twice"):
        VersionedObject(clock, [one, one])
    with pytest.raises(ValueError, match="not covered"):
        VersionedObject(VersionVector({"n1": 1}), [two])
    with pytest.raises(ValueError, match="at least one"):
        VersionedObject(clock, [])
    with pytest.raises(ValueError, match="outside"):
        Dot("n1", 0)


# --- decoding garbage ---------------------------------------------------------------------


def record(*items: object) -> bytes:
    return cbor2.dumps(list(items))


GOOD = record(1, 2, "n1", 3, "n2", 1, 0, 3, b"a", 1, 1, None)


def test_the_documented_layout_decodes() -> None:
    obj = decode_object(GOOD)
    assert obj.clock == VersionVector({"n1": 3, "n2": 1})
    assert obj.siblings == (Sibling(Dot("n1", 3), b"a"), Sibling(Dot("n2", 1), None))
    assert encode_object(obj) == GOOD


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "not valid CBOR"),
        (b"\xff\x00", "not valid CBOR"),
        (cbor2.dumps({"a": 1}), "array"),
        (record(3, 1, "n1", 1, 0, 1, b"a"), "format"),
        (record(1.0, 1, "n1", 1, 0, 1, b"a"), "format"),
        (record(1, 0), "clock size"),
        (record(1, True, "n1", 1, 0, 1, b"a"), "clock size"),
        (record(1, 1, "n1", 1), "does not fit"),
        (record(1, 1, "n1", 1, 0, 1), "does not fit"),
        (record(1, 1, "", 1, 0, 1, b"a"), "actor"),
        (record(1, 1, b"n1", 1, 0, 1, b"a"), "actor"),
        (record(1, 1, "n1", -1, 0, 1, b"a"), "bad counter"),
        (record(1, 1, "n1", 0, 0, 1, b"a"), "bad counter"),
        (record(1, 1, "n1", 1.5, 0, 1, b"a"), "bad counter"),
        (record(1, 1, "n1", 2**64, 0, 1, b"a"), "tag 2 is not allowed"),  # a bignum
        (record(1, 2, "n2", 1, "n1", 1, 0, 1, b"a"), "out of order"),
        (record(1, 2, "n1", 1, "n1", 1, 0, 1, b"a"), "repeated"),
        (record(1, 1, "n1", 1, 1, 1, b"a"), "actor index"),
        (record(1, 1, "n1", 1, "n1", 1, b"a"), "actor index"),
        (record(1, 1, "n1", 1, 0, -2, b"a"), "bad counter"),
        (record(1, 1, "n1", 1, 0, 2, b"a"), "not covered"),
        (record(1, 1, "n1", 1, 0, 1, "text"), "value of type str"),
        (record(1, 1, "n1", 2, 0, 1, b"a", 0, 1, b"a"), "duplicate dot"),
        (record(1, 1, "n1", 2, 0, 2, b"a", 0, 1, b"a"), "out of order"),
        (GOOD + b"\x00", "canonical"),
        (b"\x9f" + GOOD[1:] + b"\xff", "indefinite"),
    ],
)
def test_bad_records_are_refused_with_the_problem_named(data: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        decode_object(data)


@given(st.binary(max_size=64))
def test_random_bytes_either_decode_canonically_or_raise_value_error(data: bytes) -> None:
    for decode, encode in ((decode_object, encode_object), (decode_context, encode_context)):
        try:
            decoded = decode(data)
        except ValueError:
            continue
        assert encode(decoded) == data


atoms = st.integers(-2, 4) | st.sampled_from(["n1", "n2", ""]) | st.binary(max_size=2)
structured_garbage = st.lists(atoms | st.none() | st.booleans() | st.floats(0, 2), max_size=14)


@given(structured_garbage)
def test_arrays_of_the_right_atoms_either_decode_canonically_or_raise_value_error(
    items: list[object],
) -> None:
    data = cbor2.dumps(items)
    for decode, encode in ((decode_object, encode_object), (decode_context, encode_context)):
        try:
            decoded = decode(data)
        except ValueError:
            continue
        assert encode(decoded) == data


def test_decode_refuses_non_bytes() -> None:
    with pytest.raises(TypeError):
        decode_object("text")  # type: ignore[arg-type]


def test_contexts_round_trip_and_refuse_garbage() -> None:
    assert encode_context(EMPTY) == cbor2.dumps([1])
    assert decode_context(encode_context(EMPTY)) == EMPTY
    vector = VersionVector({"n2": 4, "n1": 7})
    assert decode_context(encode_context(vector)) == vector
    for data, problem in [
        (b"", "not valid CBOR"),
        (cbor2.dumps([1, "n1"]), "without a counter"),
        (cbor2.dumps([1, "n1", 0]), "bad counter"),
        (cbor2.dumps([1, "n1", -3]), "bad counter"),
        (cbor2.dumps([1, "n2", 1, "n1", 1]), "out of order"),
        (cbor2.dumps([1, "n1", 1, "n1", 2]), "repeated"),
        (cbor2.dumps([4, "n1", 1]), "format"),
        (cbor2.dumps([3, "n1", 1]), "no valid key tag"),
        (cbor2.dumps([3, b"short", "n1", 1]), "no valid key tag"),
        (cbor2.dumps([3, b"8 bytes!", "n1"]), "without a counter"),
        (cbor2.dumps([1, "n1", 1]) + b"\x01", "canonical"),
    ]:
        with pytest.raises(ValueError, match=problem):
            decode_context(data)


def test_a_context_given_out_for_a_key_is_refused_with_any_other_key() -> None:
    vector = VersionVector({"n1": 7, "n2": 4})
    tagged = encode_context(vector, b"user:1")
    assert decode_context(tagged, b"user:1") == vector
    assert decode_context(tagged) == vector  # no key to check against: the clock alone
    with pytest.raises(ContextOfAnotherKey):
        decode_context(tagged, b"user:2")
    # untagged contexts (older releases, a key never written) carry no key to check
    assert decode_context(encode_context(vector), b"user:2") == vector


@given(st.binary(max_size=40), st.binary(max_size=40))
def test_only_the_same_key_opens_a_tagged_context(key: bytes, other: bytes) -> None:
    tagged = encode_context(VersionVector({"n1": 1}), key)
    if key == other:
        assert decode_context(tagged, other) == VersionVector({"n1": 1})
    else:
        with pytest.raises(ContextOfAnotherKey):
            decode_context(tagged, other)

"""Index terms: checked at the edge, carried by their version, encoded canonically."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pindex.core import terms, versions
from p2pindex.core.terms import TermLimits, normalize
from p2pindex.core.versions import VersionVector

names = st.sampled_from(["a", "b", "email", "total", "é"])
term_values = st.one_of(
    st.integers(-(1 << 63), (1 << 63) - 1), st.binary(max_size=20), st.text(max_size=10)
)
indexes = st.dictionaries(names, st.lists(term_values, max_size=3), max_size=4)


def test_text_is_utf8_bytes_and_a_single_term_may_stand_alone() -> None:
    assert normalize({"email": "a@b.example", "total": 420}) == (
        ("email", b"a@b.example"),
        ("total", 420),
    )


def test_integers_sort_before_byte_strings_within_an_index() -> None:
    assert normalize({"x": [b"a", 5, -3]}) == (("x", -3), ("x", 5), ("x", b"a"))


@pytest.mark.parametrize(
    ("index", "problem"),
    [
        ({"x": [1.5]}, "must be an integer, text or bytes"),
        ({"x": [True]}, "must be an integer, text or bytes"),
        ({"x": [None]}, "must be an integer, text or bytes"),
        ({"x": [1 << 63]}, "outside signed 64-bit"),
        ({"x": [b"a" * 300]}, "too long"),
        ({7: [1]}, "must be text"),
        ({"": [1]}, "must not be empty"),
        ({"n" * 65: [1]}, "characters long"),
        ({"$key": [1]}, "reserved"),
        ({"x": list(range(33))}, "at most 32"),
        ({"x\udcff": [1]}, r"index name 'x\\udcff' is not valid UTF-8 \(a lone surrogate"),
        ({"x": ["a\udcff"]}, r"the text 'a\\udcff' is not valid UTF-8 \(a lone surrogate"),
    ],
)
def test_bad_terms_are_refused_with_the_problem_named(index: dict, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        normalize(index)


def test_limits_are_configurable() -> None:
    small = TermLimits(max_terms=2, max_term_bytes=4, max_name_chars=3)
    assert normalize({"abc": [b"1234", 2]}, small)
    with pytest.raises(ValueError, match="at most 2"):
        normalize({"abc": [1, 2, 3]}, small)
    with pytest.raises(ValueError, match="too long"):
        normalize({"abc": [b"12345"]}, small)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(indexes)
def test_terms_round_trip_through_their_wire_form(index: dict) -> None:
    canonical = normalize(index)
    assert terms.decode(terms.encode(canonical)) == canonical


def test_wire_terms_out_of_order_or_repeated_are_refused() -> None:
    with pytest.raises(ValueError, match="out of order"):
        terms.decode(cbor2.dumps(["b", 1, "a", 1]))
    with pytest.raises(ValueError, match="repeated"):
        terms.decode(cbor2.dumps(["a", 1, "a", 1]))
    with pytest.raises(ValueError, match="flat array"):
        terms.decode(cbor2.dumps({"a": 1}))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(indexes, indexes)
def test_records_with_terms_round_trip_and_merge_keeps_each_writes_terms(a: dict, b: dict) -> None:
    one = versions.update(None, VersionVector(), "n1", b"a", normalize(a))
    two = versions.update(None, VersionVector(), "n2", b"b", normalize(b))
    merged = versions.merge(one, two)
    assert versions.decode_object(versions.encode_object(merged)) == merged
    assert merged.index_terms == frozenset(normalize(a)) | frozenset(normalize(b))


def test_a_write_with_context_replaces_the_terms_it_supersedes() -> None:
    first = versions.update(None, VersionVector(), "n1", b"a", normalize({"x": [1]}))
    second = versions.update(first, first.context, "n1", b"b", normalize({"x": [2]}))
    assert second.index_terms == {("x", 2)}
    gone = versions.update(second, second.context, "n1", None)
    assert gone.index_terms == frozenset()


def test_a_delete_cannot_carry_terms() -> None:
    with pytest.raises(ValueError, match="no index terms"):
        versions.update(None, VersionVector(), "n1", None, normalize({"x": [1]}))


def test_records_without_terms_keep_format_1() -> None:
    obj = versions.update(None, VersionVector(), "n1", b"a")
    assert cbor2.loads(versions.encode_object(obj))[0] == 1
    indexed = versions.update(None, VersionVector(), "n1", b"a", normalize({"x": [1]}))
    assert cbor2.loads(versions.encode_object(indexed))[0] == 2


def test_a_format_2_record_without_terms_is_not_canonical() -> None:
    data = cbor2.dumps([2, 1, "n1", 1, 0, 1, b"a", []])
    with pytest.raises(ValueError, match="carries no index terms"):
        versions.decode_object(data)


@pytest.mark.parametrize(
    ("items", "problem"),
    [
        ([2, 1, "n1", 1, 0, 1, None, ["x", 1]], "tombstone that carries index terms"),
        ([2, 1, "n1", 1, 0, 1, b"a", ["x", 1.5]], "bad index terms"),
        ([2, 1, "n1", 1, 0, 1, b"a", ["b", 1, "a", 1]], "bad index terms"),
        ([2, 1, "n1", 1, 0, 2, b"a", ["x", 1]], "not covered"),
    ],
)
def test_bad_indexed_records_are_refused(items: list, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        versions.decode_object(cbor2.dumps(items))


def test_index_facts_read_records_without_building_them() -> None:
    one = versions.update(None, VersionVector(), "n1", b"a", normalize({"x": [1, b"q"]}))
    two = versions.merge(one, versions.update(None, VersionVector(), "n2", None))
    assert versions.index_facts(versions.encode_object(two)) == (
        True,
        frozenset({("x", 1), ("x", b"q")}),
    )
    gone = versions.update(two, two.context, "n1", None)
    assert versions.index_facts(versions.encode_object(gone)) == (False, frozenset())

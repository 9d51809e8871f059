"""Anti-entropy digests: arcs split exactly, digests ignore order, diffs find every difference."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pindex.core.digest import (
    EMPTY_DIGEST,
    PieceDigest,
    SliceDigests,
    diff_keys,
    differing,
    fold,
    key_digest,
    slice_width,
)
from p2pindex.core.ring import RING_SIZE, arc_covers, arc_length, arc_pieces, split_arc

tokens = st.integers(0, RING_SIZE - 1)
keys = st.binary(min_size=1, max_size=12)
records = st.binary(max_size=20)


def in_arc(token: int, arc: tuple[int, int]) -> bool:
    return any(piece.lo <= token <= piece.hi for piece in arc_pieces(arc[0], arc[1], None))


@given(start=tokens, end=tokens, parts=st.integers(1, 40), probe=tokens)
def test_split_pieces_cover_the_arc_exactly_once(
    start: int, end: int, parts: int, probe: int
) -> None:
    pieces = split_arc((start, end), parts)
    assert sum(arc_length(piece) for piece in pieces) == arc_length((start, end))
    assert pieces[0][0] == start and pieces[-1][1] == end
    assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))
    holders = [piece for piece in pieces if in_arc(probe, piece)]
    assert len(holders) == (1 if in_arc(probe, (start, end)) else 0)


def test_a_short_arc_is_not_split_into_empty_pieces() -> None:
    assert split_arc((10, 13), 16) == [(10, 13)]
    assert len(split_arc((5, 5), 16)) == 16


@pytest.mark.parametrize("bad", [(-1, 3), (0, RING_SIZE), (True, 3)])
def test_split_refuses_tokens_outside_the_ring(bad: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="ring token"):
        split_arc(bad, 2)


def test_split_refuses_a_bad_part_count() -> None:
    with pytest.raises(ValueError, match="parts"):
        split_arc((0, 10), 0)


@given(items=st.dictionaries(keys, records, max_size=20), data=st.data())
def test_fold_ignores_order_and_counts_keys(items: dict[bytes, bytes], data: st.DataObject) -> None:
    digests = [key_digest(k, r) for k, r in items.items()]
    shuffled = data.draw(st.permutations(digests))
    assert fold(digests) == fold(shuffled)
    assert fold(digests).count == len(items)


def test_empty_piece_has_the_empty_digest() -> None:
    assert fold([]) == PieceDigest(EMPTY_DIGEST, 0)


@given(items=st.dictionaries(keys, records, min_size=1, max_size=20), data=st.data())
def test_changing_one_record_changes_the_digest(
    items: dict[bytes, bytes], data: st.DataObject
) -> None:
    key = data.draw(st.sampled_from(sorted(items)))
    changed = dict(items)
    changed[key] = items[key] + b"!"
    assert fold(key_digest(k, r) for k, r in items.items()) != fold(
        key_digest(k, r) for k, r in changed.items()
    )


def test_key_and_record_boundary_is_part_of_the_digest() -> None:
    assert key_digest(b"ab", b"c") != key_digest(b"a", b"bc")


@given(mine=st.dictionaries(keys, records, max_size=15), theirs=st.dictionaries(keys, records))
def test_diff_pulls_what_differs_and_pushes_what_they_lack(
    mine: dict[bytes, bytes], theirs: dict[bytes, bytes]
) -> None:
    a = {k: key_digest(k, r) for k, r in mine.items()}
    b = {k: key_digest(k, r) for k, r in theirs.items()}
    diff = diff_keys(a, b)
    assert set(diff.pull) == {k for k in theirs if mine.get(k) != theirs[k]}
    assert set(diff.push) == set(mine) - set(theirs)
    assert diff.pull == sorted(diff.pull) and diff.push == sorted(diff.push)
    after = dict(mine)
    after.update({k: theirs[k] for k in diff.pull})
    assert all(after[k] == theirs[k] for k in theirs)


def test_differing_names_the_pieces_that_differ() -> None:
    same = PieceDigest(EMPTY_DIGEST, 0)
    other = PieceDigest(b"\x01" * 16, 1)
    assert differing([same, other, same], [same, same, same]) == [1]
    with pytest.raises(ValueError, match="pieces"):
        differing([same], [])


def test_slice_width_keeps_a_round_near_its_budget() -> None:
    assert slice_width(100, 8192) == RING_SIZE
    assert slice_width(81920, 8192) == RING_SIZE // 10
    with pytest.raises(ValueError, match="budget"):
        slice_width(10, 0)


@given(
    held=st.dictionaries(keys, st.tuples(tokens, records), max_size=30),
    arcs=st.lists(st.tuples(tokens, tokens), min_size=1, max_size=4),
    edges=st.booleans(),
)
def test_slice_digests_answer_like_a_scan_of_each_arc(
    held: dict[bytes, tuple[int, bytes]], arcs: list[tuple[int, int]], edges: bool
) -> None:
    if edges and held:  # arcs that start or end exactly on a held token
        some = sorted(token for token, _record in held.values())
        arcs = [(some[0], some[-1]), (some[-1], some[0]), *arcs]
    local = SliceDigests(
        (token, key, key_digest(key, record)) for key, (token, record) in held.items()
    )
    assert len(local) == len(held)
    for arc in arcs:
        inside = {
            key: key_digest(key, record)
            for key, (token, record) in held.items()
            if in_arc(token, arc)
        }
        assert local.piece(arc) == fold(inside.values())
        assert local.keys([arc]) == inside
    every = {}
    for arc in arcs:
        every |= local.keys([arc])
    assert local.keys(arcs) == every


@given(outer=st.tuples(tokens, tokens), parts=st.integers(1, 40), data=st.data())
def test_an_arc_covers_its_pieces_and_nothing_that_reaches_past_it(
    outer: tuple[int, int], parts: int, data: st.DataObject
) -> None:
    pieces = split_arc(outer, parts)
    assert all(arc_covers(outer, piece) for piece in pieces)
    inner = data.draw(st.tuples(tokens, tokens))
    if arc_covers(outer, inner):  # then both ends of inner, and one past its start, are in
        assert in_arc(inner[1], outer) and in_arc((inner[0] + 1) % RING_SIZE, outer)
    start, end = outer
    if start != end:
        assert not arc_covers(outer, (start, (end + 1) % RING_SIZE))
        assert not arc_covers(outer, ((start - 1) % RING_SIZE, end))
        assert not arc_covers(outer, (end, end))
    assert arc_covers((start, start), inner)

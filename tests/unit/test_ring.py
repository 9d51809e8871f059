"""The consistent-hash ring: placement, balance, minimal movement, arcs for handoff."""

from __future__ import annotations

import math

import mmh3
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from p2pindex.core.ring import (
    RING_SIZE,
    EmptyRingError,
    Ring,
    arc_holding,
    key_token,
    node_tokens,
)
from p2pindex.types import NodeRole

# Node ids are hex strings derived from public keys; hashing makes any distinct strings
# behave like random ids, so drawing 16 random bytes covers the real case.
node_ids = st.binary(min_size=16, max_size=16).map(bytes.hex)


def id_sets(min_size: int, max_size: int) -> st.SearchStrategy[list[str]]:
    return st.integers(min_size, max_size).flatmap(
        lambda size: st.lists(node_ids, min_size=size, max_size=size, unique=True)
    )


SAMPLE_KEYS = [b"key-%d" % i for i in range(3000)]
slow = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def in_arc(token: int, arc: tuple[int, int]) -> bool:
    start, end = arc
    if start < end:
        return start < token <= end
    return token > start or token <= end


def arc_length(arc: tuple[int, int]) -> int:
    start, end = arc
    return (end - start) % RING_SIZE or RING_SIZE


# --- tokens -------------------------------------------------------------------------------


def test_key_token_is_unsigned_murmur3_64() -> None:
    for key in (b"", b"a", b"\x00\xff" * 40):
        assert key_token(key) == mmh3.hash64(key, signed=False)[0]
        assert 0 <= key_token(key) < RING_SIZE


@given(node=node_ids, vnodes=st.integers(1, 300))
def test_node_tokens_depend_only_on_the_id_one_per_stratum(node: str, vnodes: int) -> None:
    tokens = node_tokens(node, vnodes)
    assert tokens == node_tokens(node, vnodes)
    assert len(tokens) == vnodes
    assert [(token * vnodes) >> 64 for token in tokens] == list(range(vnodes))


def test_node_tokens_differ_between_ids() -> None:
    assert node_tokens("node-a", 64) != node_tokens("node-b", 64)


@pytest.mark.parametrize("vnodes", [0, -1, 2**20 + 1])
def test_bad_vnodes_are_refused(vnodes: int) -> None:
    with pytest.raises(ValueError, match="vnodes"):
        Ring(["a"], vnodes=vnodes)
    with pytest.raises(ValueError, match="vnodes"):
        node_tokens("a", vnodes)


def test_bad_node_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        Ring(["a", ""])
    with pytest.raises(TypeError):
        Ring(["a", 3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="single str"):
        Ring("abc")


# --- lookups ------------------------------------------------------------------------------


@given(nodes=id_sets(1, 12), n=st.integers(1, 15), keys=st.lists(st.binary(), max_size=20))
def test_preference_list_is_n_distinct_members_and_the_start_of_the_walk(
    nodes: list[str], n: int, keys: list[bytes]
) -> None:
    ring = Ring(nodes, vnodes=32)
    for key in keys:
        preference = ring.preference_list(key, n)
        walk = list(ring.walk(key))
        assert sorted(walk) == sorted(nodes)
        assert len(preference) == min(n, len(nodes))
        assert len(set(preference)) == len(preference)
        assert list(preference) == walk[:n]
        assert ring.preference_list_for_token(key_token(key), n) == preference


@given(nodes=id_sets(2, 8), keys=st.lists(st.binary(), min_size=1, max_size=10))
def test_roles_primary_first_then_replicas(nodes: list[str], keys: list[bytes]) -> None:
    ring = Ring(nodes, vnodes=16)
    for key in keys:
        roles = ring.roles(key, 3)
        preference = ring.preference_list(key, 3)
        assert list(roles) == list(preference)
        assert roles[preference[0]] is NodeRole.PRIMARY
        assert all(roles[node] is NodeRole.REPLICA for node in preference[1:])


@given(nodes=id_sets(1, 10), order=st.randoms(use_true_random=False))
def test_every_node_computes_the_same_ring(nodes: list[str], order) -> None:
    shuffled = list(nodes)
    order.shuffle(shuffled)
    a, b = Ring(nodes, vnodes=64), Ring(shuffled, vnodes=64)
    assert a == b and hash(a) == hash(b)
    for key in SAMPLE_KEYS[:200]:
        assert a.preference_list(key, 3) == b.preference_list(key, 3)


@given(nodes=id_sets(2, 6), vnodes=st.integers(1, 40))
def test_a_token_belongs_to_its_own_arc(nodes: list[str], vnodes: int) -> None:
    """Arcs are (previous token, token]: a key landing exactly on a token is that token's."""
    ring = Ring(nodes, vnodes=vnodes)
    all_tokens = sorted((token, node) for node in nodes for token in node_tokens(node, vnodes))
    for position, (token, owner) in enumerate(all_tokens):
        following = all_tokens[(position + 1) % len(all_tokens)]
        if following[0] == token:
            continue
        assert ring.preference_list_for_token(token, 1) == (owner,)
        if token + 1 < RING_SIZE:
            assert ring.preference_list_for_token(token + 1, 1) == (following[1],)


def test_lookup_past_the_last_token_wraps_to_the_first() -> None:
    ring = Ring(["a", "b", "c"], vnodes=4)
    first = min((token, node) for node in "abc" for token in node_tokens(node, 4))
    assert ring.preference_list_for_token(RING_SIZE - 1, 1) == (first[1],)
    assert ring.preference_list_for_token(0, 1) == (first[1],)


def test_single_node_owns_everything() -> None:
    ring = Ring(["solo"], vnodes=8)
    assert ring.preference_list(b"k", 3) == ("solo",)
    assert ring.roles(b"k", 3) == {"solo": NodeRole.PRIMARY}
    assert ring.ownership(3) == {"solo": 1.0}
    assert ring.ranges_for("solo", 1) == [(0, 0)]


def test_empty_ring_lookups_raise_a_clear_error() -> None:
    ring = Ring([])
    assert ring.nodes == frozenset() and len(ring) == 0
    with pytest.raises(EmptyRingError, match="no nodes"):
        ring.preference_list(b"k", 3)
    with pytest.raises(EmptyRingError):
        ring.roles(b"k", 1)
    with pytest.raises(EmptyRingError):
        next(ring.walk(b"k"))
    with pytest.raises(EmptyRingError):
        ring.ownership()


def test_bad_lookup_arguments_are_refused() -> None:
    ring = Ring(["a", "b"], vnodes=4)
    with pytest.raises(ValueError, match="at least 1"):
        ring.preference_list(b"k", 0)
    with pytest.raises(TypeError):
        ring.preference_list(b"k", True)
    with pytest.raises(ValueError, match="outside"):
        ring.preference_list_for_token(RING_SIZE, 1)
    with pytest.raises(ValueError, match="outside"):
        ring.preference_list_for_token(-1, 1)
    with pytest.raises(ValueError, match="not on the ring"):
        ring.ranges_for("c", 1)


def test_membership_changes_build_new_rings() -> None:
    ring = Ring(["a", "b"], vnodes=8)
    grown = ring.with_node("c")
    assert grown == Ring(["a", "b", "c"], vnodes=8)
    assert grown.without_node("c") == ring
    assert ring.nodes == frozenset({"a", "b"})
    with pytest.raises(ValueError, match="already"):
        ring.with_node("a")
    with pytest.raises(ValueError, match="not on the ring"):
        ring.without_node("c")


# --- balance and movement (default vnodes) ---------------------------------------------------


@slow
@example(nodes=[f"{i:032x}" for i in range(64)])
@given(nodes=id_sets(3, 64))
def test_primary_ownership_is_balanced_at_the_default_vnodes(nodes: list[str]) -> None:
    shares = Ring(nodes).ownership()
    assert set(shares) == set(nodes)
    assert math.isclose(sum(shares.values()), 1.0)
    assert max(shares.values()) / min(shares.values()) <= 1.25


@slow
@given(nodes=id_sets(3, 64), newcomer=node_ids)
def test_a_join_moves_about_its_share_and_only_to_the_newcomer(
    nodes: list[str], newcomer: str
) -> None:
    if newcomer in nodes:
        return
    before = Ring(nodes)
    after = before.with_node(newcomer)
    moved = 0
    for key in SAMPLE_KEYS:
        old, new = before.preference_list(key, 3), after.preference_list(key, 3)
        if old[0] != new[0]:
            assert new[0] == newcomer
            moved += 1
        # Replicas too: a join only inserts the newcomer into a preference list.
        without = tuple(node for node in new if node != newcomer)
        assert old[: len(without)] == without
    expected = len(SAMPLE_KEYS) / (len(nodes) + 1)
    spread = 5 * math.sqrt(expected) + 0.15 * expected
    assert abs(moved - expected) <= spread


# --- whole-ring views -----------------------------------------------------------------------


ring_cases = given(
    nodes=id_sets(1, 7),
    vnodes=st.integers(1, 24),
    n=st.integers(1, 8),
    keys=st.lists(st.binary(), max_size=30),
)
"""A small ring, a replica count (possibly above its size) and some keys."""


def probe_tokens(nodes: list[str], vnodes: int, keys: list[bytes]) -> list[int]:
    """The keys' tokens, the ring's edges (either side of some node tokens) and both ends."""
    edges = [t + d for node in nodes for t in node_tokens(node, vnodes)[:3] for d in (-1, 0, 1)]
    return [key_token(key) for key in keys] + [t % RING_SIZE for t in edges] + [0, RING_SIZE - 1]


@settings(max_examples=40, deadline=None)
@ring_cases
def test_ranges_for_agree_with_preference_lists(
    nodes: list[str], vnodes: int, n: int, keys: list[bytes]
) -> None:
    ring = Ring(nodes, vnodes=vnodes)
    tokens = probe_tokens(nodes, vnodes, keys)
    ranges = {node: ring.ranges_for(node, n) for node in nodes}
    for arcs in ranges.values():
        assert arcs == sorted(arcs)
        assert all(start < end for start, end in arcs[:-1])
        assert sum(arc_length(arc) for arc in arcs) <= RING_SIZE
    for token in tokens:
        preference = ring.preference_list_for_token(token, n)
        for node, arcs in ranges.items():
            assert any(in_arc(token, arc) for arc in arcs) == (node in preference)


@settings(max_examples=60, deadline=None)
@ring_cases
def test_arc_holding_finds_the_one_range_of_a_node_that_holds_a_token(
    nodes: list[str], vnodes: int, n: int, keys: list[bytes]
) -> None:
    ring = Ring(nodes, vnodes=vnodes)
    tokens = probe_tokens(nodes, vnodes, keys)
    for node in nodes:
        arcs = ring.ranges_for(node, n)
        starts = [start for start, _ in arcs]
        for token in tokens:
            holding = [i for i, arc in enumerate(arcs) if in_arc(token, arc)]
            assert arc_holding(arcs, starts, token) == (holding[0] if holding else None)
            assert len(holding) <= 1


@settings(max_examples=40, deadline=None)
@given(nodes=id_sets(2, 7), vnodes=st.integers(1, 24), n=st.integers(1, 6), data=st.data())
def test_every_key_of_an_arc_has_the_same_replicas_before_and_after_a_node_leaves(
    nodes: list[str], vnodes: int, n: int, data: st.DataObject
) -> None:
    """Handoff looks up the old or new owners of a whole arc by its end token."""
    ring = Ring(nodes, vnodes=vnodes)
    node = data.draw(st.sampled_from(nodes))
    gone = data.draw(st.sampled_from(nodes))
    smaller = ring.without_node(gone)
    for start, end in ring.ranges_for(node, n):
        length = arc_length((start, end))
        inside = {(start + offset) % RING_SIZE for offset in (1, length // 2, length)}
        for view in (ring, smaller):
            expected = set(view.preference_list_for_token(end, n))
            for token in inside:
                assert set(view.preference_list_for_token(token, n)) == expected


@settings(max_examples=30, deadline=None)
@given(nodes=id_sets(1, 7), vnodes=st.integers(1, 24), n=st.integers(1, 5))
def test_ownership_matches_the_length_of_the_ranges(nodes: list[str], vnodes: int, n: int) -> None:
    ring = Ring(nodes, vnodes=vnodes)
    shares = ring.ownership(n)
    count = min(n, len(nodes))
    assert math.isclose(sum(shares.values()), 1.0)
    for node in nodes:
        covered = sum(arc_length(arc) for arc in ring.ranges_for(node, n))
        assert math.isclose(shares[node], covered / RING_SIZE / count, rel_tol=1e-9)


def test_ranges_for_everyone_in_every_list_is_the_whole_ring() -> None:
    ring = Ring(["a", "b", "c"], vnodes=8)
    assert ring.ranges_for("b", 3) == [(0, 0)]
    assert ring.ranges_for("b", 5) == [(0, 0)]


# --- a replacement takes a dead node's tokens ------------------------------------------------


@slow
@given(nodes=id_sets(3, 8), new=node_ids, n=st.integers(1, 4), pick=st.integers(0, 7))
def test_a_node_with_another_nodes_token_source_takes_exactly_its_place(
    nodes: list[str], new: str, n: int, pick: int
) -> None:
    """Every preference list of the new ring is the old one with the replaced node renamed:
    the newcomer holds the replaced node's ranges, and no other node's ranges change."""
    dead = nodes[pick % len(nodes)]
    if new in nodes:
        return
    before = Ring(nodes, 64)
    after = before.without_node(dead).with_node(new, source=dead)
    assert after.token_source(new) == dead and after.sources == {new: dead}
    rename = {dead: new}
    for key in SAMPLE_KEYS[:500]:
        old = before.preference_list(key, n)
        assert after.preference_list(key, n) == tuple(rename.get(x, x) for x in old)
    assert after.ranges_for(new, n) == before.ranges_for(dead, n)
    # A chain: the replacement replaced in turn keeps the same tokens.
    again = after.without_node(new).with_node("f" * 32, source=after.token_source(new))
    assert again.ranges_for("f" * 32, n) == before.ranges_for(dead, n)


def test_rings_differ_by_their_token_sources() -> None:
    plain = Ring(["a", "b", "c"], 16)
    taken = Ring(["a", "b", "c"], 16, {"c": "z", "q": "r"})
    assert taken.sources == {"c": "z"}, "sources of absent nodes are ignored"
    assert plain != taken and hash(plain) != hash(taken)
    assert taken == Ring(["c", "b", "a"], 16, {"c": "z"})
    assert taken.without_node("b").sources == {"c": "z"}
    assert Ring(["a"], 16, {"a": "a"}).sources == {}
    with pytest.raises(ValueError, match="empty"):
        Ring(["a"], 16, {"a": ""})

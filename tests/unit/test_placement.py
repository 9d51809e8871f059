"""The documented placement rules of core/placement.py, as properties over any ring, key and
set of usable nodes: sloppy replaces each unusable primary with the next usable node beyond
the preference list (with a hint naming it); strict counts usable primaries only."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from p2pindex.core.placement import Target, select_targets
from p2pindex.core.ring import Ring

NODES = [f"{i:016x}" for i in range(1, 9)]


@st.composite
def situations(draw: st.DrawFn) -> tuple[Ring, bytes, int, frozenset[str]]:
    members = draw(st.lists(st.sampled_from(NODES), min_size=1, max_size=8, unique=True))
    ring = Ring(members, 16)
    key = draw(st.binary(min_size=1, max_size=16))
    n = draw(st.integers(1, len(members)))
    usable = frozenset(draw(st.sets(st.sampled_from(members))))
    return ring, key, n, usable


@given(situations())
def test_strict_targets_are_exactly_the_usable_primaries_in_order(situation) -> None:
    ring, key, n, usable = situation
    targets = select_targets(ring, key, n, usable.__contains__, strict=True)
    primaries = ring.preference_list(key, n)
    assert targets == [Target(node) for node in primaries if node in usable]


@given(situations())
def test_sloppy_targets_fill_each_missing_primary_with_the_next_usable_node(situation) -> None:
    ring, key, n, usable = situation
    targets = select_targets(ring, key, n, usable.__contains__)
    primaries = ring.preference_list(key, n)
    missing = [node for node in primaries if node not in usable]
    beyond = [node for node in ring.walk(key) if node not in primaries and node in usable]
    expected_fallbacks = [
        Target(fallback, hint_for=primary)
        for primary, fallback in zip(missing, beyond, strict=False)
    ]
    assert targets == [Target(node) for node in primaries if node in usable] + expected_fallbacks


@given(situations())
def test_sloppy_targets_are_usable_distinct_and_never_more_than_n(situation) -> None:
    ring, key, n, usable = situation
    targets = select_targets(ring, key, n, usable.__contains__)
    nodes = [target.node for target in targets]
    assert len(nodes) == len(set(nodes)) <= n
    assert all(node in usable for node in nodes)
    # Sloppy reaches n whenever the ring has n usable members; strict may fall short.
    assert len(nodes) == min(n, len(usable))
    strict = select_targets(ring, key, n, usable.__contains__, strict=True)
    assert len(strict) <= len(targets)


@given(situations())
def test_with_every_node_usable_both_modes_send_to_the_preference_list(situation) -> None:
    ring, key, n, _ = situation
    expected = [Target(node) for node in ring.preference_list(key, n)]
    assert select_targets(ring, key, n, lambda _node: True) == expected
    assert select_targets(ring, key, n, lambda _node: True, strict=True) == expected

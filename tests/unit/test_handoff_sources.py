"""Where a node takes the ranges it gains: from the node a joiner displaces, so quorums still
meet; after a removal, from every old replica that remains."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pindex.core.ring import Ring, gained_arcs, key_token
from p2pindex.node.handoff import _sources


def test_every_range_comes_first_from_the_replica_the_joiner_displaces() -> None:
    rng = random.Random(7)
    for trial in range(20):
        old = [f"node-{trial}-{i}" for i in range(rng.randint(3, 7))]
        ring = Ring([*old, "joiner"])
        before = ring.without_node("joiner")
        for start, end in ring.ranges_for("joiner", 3):
            sources = _sources(end, ring, before, 3, "joiner")
            new_owners = set(ring.preference_list_for_token(end, 3))
            old_owners = before.preference_list_for_token(end, 3)
            assert sorted(sources) == sorted(old_owners)
            displaced = [node for node in old_owners if node not in new_owners]
            assert len(displaced) == 1, (start, end)
            assert sources[0] == displaced[0]
            # With the displaced node's copy in place of its own, any two of the new
            # replicas meet any two of the old ones.
            stand_in = {displaced[0]: "joiner"}
            as_old = {stand_in.get(node, node) for node in old_owners}
            assert as_old == new_owners


@settings(max_examples=25, deadline=None)
@given(
    size=st.integers(min_value=3, max_value=8),
    removed=st.integers(min_value=1, max_value=2),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_gained_arcs_are_exactly_the_keys_a_removal_gives_a_node(
    size: int, removed: int, seed: int
) -> None:
    """After a removal a node must pull what it newly replicates (node/gained.py) from the
    old replicas that remain: every key it gained lies in one of its gained arcs, no other
    key does, and the arc names those replicas."""
    rng = random.Random(seed)
    nodes = [f"n{i}" for i in range(size)]
    before = Ring(nodes, vnodes=16)
    gone = set(rng.sample(nodes, min(removed, size - 1)))
    after = Ring([node for node in nodes if node not in gone], vnodes=16)
    arcs = {node: gained_arcs(before, after, node, 3) for node in after.nodes}
    for _ in range(300):
        key = rng.randbytes(8)
        token = key_token(key)
        old = set(before.preference_list(key, 3))
        for node in after.nodes:
            gained = node in after.preference_list(key, 3) and node not in old
            hits = [src for start, end, src in arcs[node] if _in_arc(token, start, end)]
            assert gained == bool(hits), (node, key)
            if hits:
                assert set(hits[0]) == old - gone


def _in_arc(token: int, start: int, end: int) -> bool:
    return start < token <= end if start < end else token > start or token <= end

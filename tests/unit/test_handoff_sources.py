"""Where a joining node takes each range from: the node it displaces, so quorums still meet."""

from __future__ import annotations

import random

from p2pindex.core.ring import Ring
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

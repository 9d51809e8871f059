"""A leaving node's second pass pushes again only the keys written after the first pass
read their range: the rest went out already, and sending them twice inflates what a leave
moves (compared with ``p2pindex plan remove``)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pindex.core.ring import Ring, arc_holding, key_token
from p2pindex.node.handoff import written_after_scan

NODES = ["node-a", "node-b", "node-c", "node-d", "node-e"]


@settings(max_examples=50, deadline=None)
@given(
    keys=st.lists(st.binary(max_size=12), min_size=1, max_size=60, unique=True),
    data=st.data(),
)
def test_keys_committed_after_their_range_was_read_go_again_the_rest_do_not(
    keys: list[bytes], data: st.DataObject
) -> None:
    ring = Ring(NODES, vnodes=8)
    ranges = ring.ranges_for("node-a", 3)
    starts = [start for start, _ in ranges]
    # The first pass reads the ranges in order; commits are numbered as they happen.
    marks = sorted(
        data.draw(st.lists(st.integers(0, 100), min_size=len(ranges), max_size=len(ranges)))
    )
    scanned = list(zip(ranges, marks, strict=True))
    commits = {key: data.draw(st.integers(1, 120)) for key in keys}
    again = written_after_scan(commits, scanned)
    for key, commit in commits.items():
        index = arc_holding(ranges, starts, key_token(key))
        if index is None:  # not this node's key: nothing says the pass carried it
            assert key in again
        else:
            assert (key in again) == (commit > marks[index]), (key, commit, marks[index])


def test_a_commit_before_any_range_was_read_is_not_sent_twice() -> None:
    ring = Ring(NODES, vnodes=8)
    ranges = ring.ranges_for("node-a", 3)
    mine = [k for k in (b"k%d" % i for i in range(200)) if "node-a" in ring.preference_list(k, 3)]
    scanned = [(arc, 5) for arc in ranges]
    commits = {mine[0]: 5, mine[1]: 6, b"": 1}
    again = written_after_scan(commits, scanned)
    assert mine[0] not in again and mine[1] in again
    assert (b"" in again) == ("node-a" not in ring.preference_list(b"", 3))

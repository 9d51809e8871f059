"""Coverage plans: every key is asked of exactly min(r, readable primaries) of its primaries,
never of an unreadable (dead, syncing) node, and whatever falls short is reported."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pindex.core.coverage import ArcFilter, key_filter, merge_runs, plan_coverage
from p2pindex.core.ring import RING_SIZE, Ring, key_token

NODES = [f"{c}" * 16 for c in "abcdef"]


@st.composite
def setups(draw):
    count = draw(st.integers(1, 6))
    nodes = NODES[:count]
    n = draw(st.integers(1, 3))
    r = draw(st.integers(1, 3))
    readable = draw(st.sets(st.sampled_from(nodes)))
    seed = draw(st.integers(0, 1000))
    return Ring(nodes, vnodes=8), n, r, frozenset(readable), seed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(setups())
def test_every_key_is_asked_of_enough_readable_primaries_or_reported(setup) -> None:
    ring, n, r, readable, seed = setup
    prefer = NODES[seed % len(NODES)]
    plan = plan_coverage(ring, n, r, readable.__contains__, random.Random(seed), prefer=prefer)
    filters = {node: ArcFilter(runs) for node, runs in plan.assignments.items()}
    uncovered = ArcFilter(plan.uncovered) if plan.uncovered else None
    keys = [f"key{i}".encode() for i in range(300)]
    for key in keys:
        primaries = ring.preference_list(key, n)
        sources = [node for node in primaries if node in readable]
        asked = [node for node, accepts in filters.items() if accepts(key)]
        assert set(asked) <= set(sources), "asked a node that is not a readable primary"
        assert len(asked) == min(r, len(sources))
        short = len(sources) < r
        assert (uncovered is not None and uncovered(key)) == short
    assert plan.complete == (plan.uncovered_share == 0.0)
    assert set(plan.excluded) == ring.nodes - readable


def test_with_every_node_a_replica_one_node_answers_for_the_whole_ring() -> None:
    ring = Ring(NODES[:3], vnodes=64)
    plan = plan_coverage(ring, 3, 1, lambda node: True, random.Random(1))
    assert list(plan.assignments.values()) == [((0, 0),)]
    assert key_filter(((0, 0),)) is None
    assert plan.complete


def test_a_dead_node_leaves_quorum_incomplete_only_where_too_few_remain() -> None:
    ring = Ring(NODES[:3], vnodes=64)
    alive = set(NODES[:2])
    quorum = plan_coverage(ring, 3, 2, alive.__contains__, random.Random(1))
    assert quorum.complete  # two live replicas of every arc
    three = plan_coverage(ring, 3, 3, alive.__contains__, random.Random(1))
    assert not three.complete and three.uncovered_share == 1.0


def test_a_syncing_node_is_never_a_source() -> None:
    ring = Ring(NODES[:4], vnodes=32)
    syncing = NODES[3]
    plan = plan_coverage(ring, 2, 1, lambda node: node != syncing, random.Random(3))
    assert syncing not in plan.assignments
    assert syncing in plan.excluded
    assert plan.complete  # every arc keeps another replica


def test_the_share_of_a_missing_arc_is_reported() -> None:
    ring = Ring(NODES[:5], vnodes=16)
    gone = set(NODES[:2])
    plan = plan_coverage(ring, 2, 1, lambda node: node not in gone, random.Random(2))
    # Keys whose both replicas are gone are the uncovered share.
    keys = [f"k{i}".encode() for i in range(4000)]
    lost = sum(1 for key in keys if set(ring.preference_list(key, 2)) <= gone)
    assert abs(plan.uncovered_share - lost / len(keys)) < 0.05
    assert not plan.complete


def test_runs_merge_across_the_wrap() -> None:
    assert merge_runs([(10, 20), (20, 30), (40, 50)]) == ((10, 30), (40, 50))
    assert merge_runs([(90, 5), (5, 30), (60, 90)]) == ((60, 30),)
    assert merge_runs([(90, 5), (5, 90)]) == ((0, 0),)
    whole_wrapped = ArcFilter([(RING_SIZE - 10, 5)])
    assert whole_wrapped(b"x") == (key_token(b"x") > RING_SIZE - 10 or key_token(b"x") <= 5)


def test_the_planning_node_reads_what_it_holds_itself() -> None:
    ring = Ring(NODES[:3], vnodes=64)
    for me in NODES[:3]:
        plan = plan_coverage(ring, 3, 1, lambda node: True, random.Random(5), prefer=me)
        assert list(plan.assignments) == [me]


def _disjoint_runs(cuts: list[int], take: list[bool]) -> list[tuple[int, int]]:
    """Every other arc of a ring cut at ``cuts``: disjoint runs, one of them maybe wrapping."""
    points = sorted(set(cuts))
    arcs = [(points[i - 1], points[i]) for i in range(len(points))]  # arc 0 wraps
    return [arc for arc, keep in zip(arcs, take, strict=False) if keep]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.integers(0, RING_SIZE - 1), min_size=2, max_size=12),
    st.lists(st.booleans(), min_size=12, max_size=12),
    st.integers(0, RING_SIZE - 1),
    st.integers(0, RING_SIZE - 1),
)
def test_runs_overlap_exactly_when_some_token_is_in_both(cuts, take, start, end) -> None:
    held = _disjoint_runs(cuts, take)
    arcs = ArcFilter(held)
    asked = [(start, end)]
    expected = _brute_overlap(held, asked)
    assert arcs.overlaps(asked) is expected


def _brute_overlap(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> bool:
    def intervals(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
        out = []
        for start, end in runs:
            if start == end:
                out.append((0, RING_SIZE - 1))
            elif start < end:
                out.append((start + 1, end))
            else:
                if start < RING_SIZE - 1:
                    out.append((start + 1, RING_SIZE - 1))
                out.append((0, end))
        return out

    return any(
        max(lo1, lo2) <= min(hi1, hi2) for lo1, hi1 in intervals(a) for lo2, hi2 in intervals(b)
    )


def test_an_arc_touching_another_only_at_its_open_start_does_not_overlap() -> None:
    arcs = ArcFilter([(100, 200)])
    assert not arcs.overlaps([(200, 300)])  # (200, 300] starts after 200
    assert not arcs.overlaps([(50, 100)])  # (50, 100] ends before 101
    assert arcs.overlaps([(50, 101)])
    assert arcs.overlaps([(0, 0)])  # the whole ring

"""Capacity planning: the plan agrees with key-by-key ground truth and refuses bad changes."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pindex.core.planning import (
    NodeLoad,
    PlanRefused,
    distinct_data,
    placeholder_ids,
    plan_add,
    plan_remove,
)
from p2pindex.core.ring import Ring

NODES = ["n-alpha", "n-bravo", "n-charlie"]


def loads_for(ring: Ring, n: int, keys: list[bytes], size: int) -> list[NodeLoad]:
    """What each node of ``ring`` would report holding for ``keys`` of ``size`` bytes."""
    held = dict.fromkeys(ring.nodes, 0)
    for key in keys:
        for node in ring.preference_list(key, n):
            held[node] += 1
    return [NodeLoad(node, count, count * size) for node, count in held.items()]


def random_keys(count: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(12) for _ in range(count)]


def true_moves(before: Ring, after: Ring, n: int, keys: list[bytes]) -> int:
    return sum(
        len(set(after.preference_list(k, n)) - set(before.preference_list(k, n))) for k in keys
    )


def test_adding_a_node_moves_what_key_by_key_placement_moves_within_five_percent():
    keys = random_keys(6000)
    before = Ring(NODES)
    plan = plan_add(NODES, 3, loads_for(before, 3, keys, 100), 1, new_ids=["n-delta"])
    truth = true_moves(before, before.with_node("n-delta"), 3, keys)
    assert plan.distinct_keys == len(keys)
    assert abs(plan.moved_keys - truth) <= 0.05 * truth
    assert plan.moved_bytes == pytest.approx(plan.moved_keys * 100, rel=0.001)
    newcomer = next(p for p in plan.nodes if p.node_id == "n-delta")
    assert newcomer.joining and newcomer.share_before == 0
    assert newcomer.keys_in == plan.moved_keys  # with N = 3 of 3 only the newcomer gains
    assert sum(p.keys_out for p in plan.nodes) == pytest.approx(plan.moved_keys, abs=3)
    assert sum(p.share_after for p in plan.nodes) == pytest.approx(1.0)
    assert plan.moved_bytes <= 1.1 * plan.ideal_bytes


def test_removing_a_node_moves_its_copies_and_nothing_else():
    nodes = [*NODES, "n-delta", "n-echo"]
    keys = random_keys(6000, seed=2)
    before = Ring(nodes)
    plan = plan_remove(nodes, 3, loads_for(before, 3, keys, 50), "n-bravo")
    truth = true_moves(before, before.without_node("n-bravo"), 3, keys)
    assert abs(plan.moved_keys - truth) <= 0.05 * truth
    leaver = next(p for p in plan.nodes if p.node_id == "n-bravo")
    assert leaver.leaving and leaver.share_after == 0 and leaver.keys_in == 0
    assert leaver.keys_out == pytest.approx(plan.moved_keys, abs=3)
    assert plan.moved_bytes == pytest.approx(plan.ideal_bytes, rel=0.001)


def test_placeholders_stand_in_for_new_nodes_and_never_clash():
    assert placeholder_ids(2, ["new-1"]) == ["new-2", "new-3"]
    plan = plan_add(NODES, 3, [NodeLoad(n, 1000, 100_000) for n in NODES], 3)
    assert [p.node_id for p in plan.nodes if p.joining] == ["new-1", "new-2", "new-3"]
    # Three newcomers in six: half the copies move, close to the least possible.
    assert plan.moved_fraction == pytest.approx(0.5, abs=0.03)
    assert plan.moved_bytes <= 1.1 * plan.ideal_bytes


def test_a_dead_member_that_cannot_report_does_not_spoil_the_estimate():
    nodes = [*NODES, "n-delta"]
    keys = random_keys(4000, seed=3)
    ring = Ring(nodes)
    loads = loads_for(ring, 3, keys, 10)
    keys_estimate, bytes_estimate = distinct_data(ring, 3, loads[1:])
    assert keys_estimate == pytest.approx(len(keys), rel=0.05)
    assert bytes_estimate == pytest.approx(len(keys) * 10, rel=0.05)


@pytest.mark.parametrize(
    ("nodes", "n", "target", "reason"),
    [
        (NODES, 3, "n-zulu", "no member of the ring has the id 'n-zulu'"),
        (NODES, 3, "n-alpha", "would leave 2 nodes, fewer than N=3"),
        (NODES, 1, "n-alpha", "holds the only copy of its keys"),
        (["n-alpha"], 1, "n-alpha", "the only member"),
    ],
)
def test_removals_that_would_lose_data_or_break_n_are_refused(nodes, n, target, reason):
    with pytest.raises(PlanRefused, match=reason):
        plan_remove(nodes, n, [NodeLoad(x, 1, 1) for x in nodes], target)


@pytest.mark.parametrize(
    ("count", "new_ids", "reason"),
    [
        (0, [], "must be 1..64"),
        (65, [], "must be 1..64"),
        (True, [], "must be 1..64"),
        (1, ["n-alpha"], "already a member"),
        (1, ["x", "y"], "at most 1 distinct"),
    ],
)
def test_bad_additions_are_refused(count, new_ids, reason):
    with pytest.raises(PlanRefused, match=reason):
        plan_add(NODES, 3, [], count, new_ids=new_ids)


@settings(max_examples=40, deadline=None)
@given(
    st.sets(st.text("abcdef", min_size=1, max_size=4), min_size=4, max_size=7),
    st.integers(2, 3),
    st.data(),
)
def test_copies_are_conserved_when_the_ring_stays_at_least_n_large(nodes, n, data):
    """With at least N nodes before and after, every copy gained is a copy lost."""
    ordered = sorted(nodes)
    loads = [NodeLoad(x, 1000, 1000) for x in ordered]
    if data.draw(st.booleans()):
        plan = plan_add(ordered, n, loads, 1, vnodes=16)
    else:
        plan = plan_remove(ordered, n, loads, data.draw(st.sampled_from(ordered)), vnodes=16)
    gained = sum(p.keys_in for p in plan.nodes)
    lost = sum(p.keys_out for p in plan.nodes)
    assert abs(gained - lost) <= len(plan.nodes)
    assert sum(p.share_after for p in plan.nodes) == pytest.approx(1.0)


def test_plans_place_a_replacement_at_the_tokens_it_took():
    """A member that replaced another (``serve --replace``) holds that member's tokens: a
    plan to remove it moves exactly what removing the replaced member would have moved."""
    nodes = [*NODES, "n-delta", "n-echo"]
    keys = random_keys(6000, seed=3)
    original = Ring(nodes)
    replaced = [*(n for n in nodes if n != "n-bravo"), "n-new"]
    sources = {"n-new": "n-bravo"}
    ring = Ring(replaced, original.vnodes, sources)
    plan = plan_remove(replaced, 3, loads_for(ring, 3, keys, 50), "n-new", sources=sources)
    before = plan_remove(nodes, 3, loads_for(original, 3, keys, 50), "n-bravo")
    assert plan.moved_keys == before.moved_keys and plan.moved_bytes == before.moved_bytes
    added = plan_add(replaced, 3, loads_for(ring, 3, keys, 50), 1, sources=sources)
    assert added.moved_keys == plan_add(nodes, 3, loads_for(original, 3, keys, 50), 1).moved_keys

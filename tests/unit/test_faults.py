"""Fault schedules: partition shapes, validation of bad schedules, generation from a seed."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pindex.sim.faults import (
    DEFAULT_MIX,
    INSTANT_KINDS,
    DiskMode,
    Fault,
    FaultKind,
    FaultSchedule,
    GenerationPolicy,
    PartitionShape,
    ScheduleError,
    fault_from_dict,
    fault_links,
    generate_schedule,
    partition_links,
    resolve_partition,
    resolve_schedule,
    validate_schedule,
)

NODES = [f"n{i}" for i in range(1, 6)]


def reachable(links: frozenset[tuple[str, str]], nodes: list[str], src: str) -> set[str]:
    return {dst for dst in nodes if dst != src and (src, dst) not in links}


# --- partition shapes -------------------------------------------------------------------------


def test_halves_cut_every_link_between_the_groups_both_ways() -> None:
    links = partition_links(PartitionShape.HALVES, [("n1", "n2"), ("n3", "n4", "n5")])
    assert ("n1", "n3") in links and ("n3", "n1") in links
    assert ("n1", "n2") not in links and ("n3", "n4") not in links
    assert len(links) == 2 * 2 * 3


def test_one_way_blocks_only_the_first_group_sending() -> None:
    links = partition_links(PartitionShape.ONE_WAY, [("n1",), ("n2", "n3")])
    assert links == {("n1", "n2"), ("n1", "n3")}


def test_bridge_node_sees_both_sides_that_cannot_see_each_other() -> None:
    groups = [("n1", "n2"), ("n3", "n4"), ("n5",)]
    links = partition_links(PartitionShape.BRIDGE, groups)
    assert reachable(links, NODES, "n5") == {"n1", "n2", "n3", "n4"}
    assert reachable(links, NODES, "n1") == {"n2", "n5"}
    assert reachable(links, NODES, "n3") == {"n4", "n5"}


@pytest.mark.parametrize("size", [5, 6, 7, 8, 9])
def test_majorities_ring_gives_each_node_a_different_majority(size: int) -> None:
    nodes = [f"n{i}" for i in range(1, size + 1)]
    links = partition_links(PartitionShape.RING, [tuple(nodes)])
    views = []
    for node in nodes:
        seen = reachable(links, nodes, node) | {node}
        assert len(seen) > size // 2, f"{node} sees only {sorted(seen)}"
        assert len(seen) < size, f"{node} sees everyone in a ring of {size}"
        views.append(frozenset(seen))
    assert len(set(views)) == size
    assert all((b, a) in links for a, b in links), "ring partitions are symmetric"


@given(
    st.integers(2, 9),
    st.sampled_from([s for s in PartitionShape if s is not PartitionShape.LINKS]),
    st.integers(0, 10_000),
)
@settings(max_examples=200, deadline=None)
def test_resolved_partitions_are_valid_for_every_shape_and_size(
    size: int, shape: PartitionShape, seed: int
) -> None:
    nodes = [f"n{i}" for i in range(1, size + 1)]
    if shape in (PartitionShape.RING, PartitionShape.BRIDGE, PartitionShape.MAJORITY) and size < 3:
        with pytest.raises(ScheduleError):
            resolve_partition(shape, nodes, random.Random(seed))
        return
    groups = resolve_partition(shape, nodes, random.Random(seed))
    fault = Fault(1.0, FaultKind.PARTITION, 2.0, (), {"shape": shape.value, "groups": groups})
    validate_schedule(FaultSchedule((fault,)), nodes, 10.0)
    members = [name for group in groups for name in group]
    assert sorted(members) == sorted(nodes)
    assert fault_links(fault) or shape is PartitionShape.RING


# --- validation -------------------------------------------------------------------------------


def entry(**fields: object) -> Fault:
    return fault_from_dict(fields, "faults.schedule[0]")


def test_unknown_fault_kind_is_named() -> None:
    with pytest.raises(ScheduleError, match="unknown fault kind 'meteor'"):
        entry(at=1, kind="meteor")


def test_unknown_parameter_is_named_with_the_allowed_ones() -> None:
    with pytest.raises(ScheduleError, match=r"unknown key 'rat'.*expected: at, duration"):
        entry(at=1, kind="loss", rat=0.5, duration=2)


def test_rate_out_of_range_is_refused() -> None:
    with pytest.raises(ScheduleError, match=r"rate: 1.5 is above the maximum 1"):
        entry(at=1, kind="loss", rate=1.5, duration=2)


def test_partition_of_more_nodes_than_exist_is_impossible() -> None:
    groups = [["n1", "n2", "n3"], ["n4", "n5", "n6"]]
    schedule = FaultSchedule((entry(at=1, kind="partition", duration=5, groups=groups),))
    with pytest.raises(ScheduleError, match="partitions 6 nodes but the cluster has only 5"):
        validate_schedule(schedule, NODES, 60.0)


def test_partition_naming_a_missing_node_is_refused() -> None:
    groups = [["n1"], ["n9"]]
    schedule = FaultSchedule((entry(at=1, kind="partition", duration=5, groups=groups),))
    with pytest.raises(ScheduleError, match="node 'n9' does not exist"):
        validate_schedule(schedule, NODES, 60.0)


def test_node_in_two_groups_is_refused() -> None:
    groups = [["n1", "n2"], ["n2", "n3"]]
    schedule = FaultSchedule((entry(at=1, kind="partition", duration=5, groups=groups),))
    with pytest.raises(ScheduleError, match="more than one group"):
        validate_schedule(schedule, NODES, 60.0)


def test_fault_past_the_end_is_refused() -> None:
    schedule = FaultSchedule((entry(at=50, kind="pause", duration=20, nodes=["n1"]),))
    with pytest.raises(ScheduleError, match="ends at 70s, after the run's duration of 60s"):
        validate_schedule(schedule, NODES, 60.0)


def test_crashing_a_node_that_is_already_down_is_refused() -> None:
    schedule = FaultSchedule(
        (
            entry(at=5, kind="crash", duration=10, nodes=["n2"]),
            entry(at=8, kind="pause", duration=3, nodes=["n2"]),
        )
    )
    with pytest.raises(ScheduleError, match="node n2 is already down"):
        validate_schedule(schedule, NODES, 60.0)


def test_node_fault_without_a_node_is_refused() -> None:
    with pytest.raises(ScheduleError, match="name the node"):
        validate_schedule(FaultSchedule((entry(at=5, kind="disk_full", duration=3),)), NODES, 60)


def test_clock_jump_has_no_duration_and_needs_an_offset() -> None:
    with pytest.raises(ScheduleError, match="instantaneous"):
        validate_schedule(
            FaultSchedule((entry(at=5, kind="clock_jump", duration=3, nodes=["n1"], offset=9),)),
            NODES,
            60,
        )
    with pytest.raises(ScheduleError, match="missing parameter 'offset'"):
        validate_schedule(FaultSchedule((entry(at=5, kind="clock_jump", nodes=["n1"]),)), NODES, 60)


def test_shape_only_partitions_are_resolved_from_the_seed() -> None:
    schedule = FaultSchedule((entry(at=1, kind="partition", duration=5, shape="isolate"),))
    first = resolve_schedule(schedule, NODES, random.Random(3))
    again = resolve_schedule(schedule, NODES, random.Random(3))
    assert first == again
    groups = first.faults[0].params["groups"]
    assert len(groups[0]) == 1 and len(groups[1]) == 4
    validate_schedule(first, NODES, 60)


def test_schedule_round_trips_through_its_file_form() -> None:
    schedule = generate_schedule(random.Random(5), NODES, 120.0, count=24)
    parsed = FaultSchedule(
        tuple(fault_from_dict(document, f"[{i}]") for i, document in enumerate(schedule.to_list()))
    )
    assert parsed == schedule


# --- generation -------------------------------------------------------------------------------


@given(st.integers(0, 2**32), st.integers(5, 9), st.integers(12, 40))
@settings(max_examples=200, deadline=None)
def test_generated_schedules_are_valid_and_cover_every_kind(
    seed: int, size: int, count: int
) -> None:
    nodes = [f"n{i}" for i in range(1, size + 1)]
    policy = GenerationPolicy()
    schedule = generate_schedule(random.Random(seed), nodes, 120.0, count=count, policy=policy)
    validate_schedule(schedule, nodes, 120.0)
    assert len(schedule) == count
    assert len(schedule.kinds()) >= 6
    down = [f for f in schedule.faults if f.kind in (FaultKind.CRASH, FaultKind.PAUSE)]
    for fault in down:
        overlapping = [o for o in down if o is not fault and o.at < fault.end and fault.at < o.end]
        assert len(overlapping) < policy.max_down
    wipes = [f for f in down if f.params.get("disk") == DiskMode.WIPED.value]
    assert len(wipes) <= policy.max_wipes
    for fault in schedule.faults:
        assert fault.at >= policy.warmup
        assert fault.end <= 120.0 - policy.tail
        assert (fault.duration == 0) == (fault.kind in INSTANT_KINDS)


def test_generation_is_a_function_of_the_seed() -> None:
    one = generate_schedule(random.Random(11), NODES, 120.0, count=25)
    two = generate_schedule(random.Random(11), NODES, 120.0, count=25)
    other = generate_schedule(random.Random(12), NODES, 120.0, count=25)
    assert one == two
    assert one != other


def test_power_loss_is_not_generated_when_the_nodes_do_not_fsync() -> None:
    policy = GenerationPolicy(power_loss=False, max_wipes=0)
    for seed in range(30):
        schedule = generate_schedule(
            random.Random(seed),
            NODES,
            120.0,
            count=30,
            kinds=[FaultKind.CRASH, FaultKind.LOSS],
            policy=policy,
        )
        modes = {f.params["disk"] for f in schedule.faults if f.kind is FaultKind.CRASH}
        assert modes <= {DiskMode.KEPT.value}


def test_too_many_kinds_for_the_count_is_refused() -> None:
    with pytest.raises(ScheduleError, match="cannot cover 12 kinds"):
        generate_schedule(random.Random(1), NODES, 120.0, count=5, kinds=DEFAULT_MIX)


def test_a_run_too_short_for_faults_is_refused() -> None:
    with pytest.raises(ScheduleError, match="leaves no room"):
        generate_schedule(random.Random(1), NODES, 10.0, count=3, kinds=[FaultKind.LOSS])

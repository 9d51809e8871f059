"""Small clusters of real SWIM engines in the virtual-time simulator."""

from __future__ import annotations

from p2pindex.core.swim import SwimConfig
from p2pindex.sim.swim_sim import SimNode, SwimSimulation
from p2pindex.types import Liveness

CFG = SwimConfig.default()


def views(nodes: list[SimNode], subject: SimNode) -> set[Liveness | None]:
    out = set()
    for node in nodes:
        member = node.swim.member(subject.node_id)
        out.add(member.liveness if member else None)
    return out


def one_view(nodes: list[SimNode]) -> bool:
    first = {(m.node_id, m.incarnation, m.liveness) for m in nodes[0].swim.members()}
    return all(
        {(m.node_id, m.incarnation, m.liveness) for m in n.swim.members()} == first for n in nodes
    ) and all(liveness is Liveness.ALIVE for _, _, liveness in first)


def test_nodes_join_through_a_seed_and_converge() -> None:
    sim = SwimSimulation(seed=1)
    first = sim.add_node(CFG)
    nodes = [first] + [sim.add_node(CFG, seeds=[first.address]) for _ in range(11)]
    sim.run_until(10.0)
    assert one_view(nodes)
    assert len(nodes[5].swim.members()) == 12
    assert sim.max_datagram <= 1200


def test_join_retries_until_the_seed_starts() -> None:
    sim = SwimSimulation(seed=2)
    seed = sim.add_node(CFG)
    sim.crash(seed)
    late = sim.add_node(CFG, seeds=[seed.address])
    sim.run_until(5.0)
    assert not late.swim.joined
    sim.restart(seed, incarnation=2, seeds=[])
    sim.run_until(40.0)
    assert late.swim.joined
    assert seed.swim.member(late.node_id).liveness is Liveness.ALIVE
    assert late.swim.statistics()["join_attempts"] >= 3


def test_crash_is_detected_and_leave_is_recorded_as_left() -> None:
    sim = SwimSimulation(seed=3, loss=0.01)
    nodes = sim.build(CFG, 30)
    sim.run_until(2.0)
    crashed, leaving = nodes[7], nodes[9]
    sim.crash(crashed)
    leaving.swim.leave(sim.now)
    sim.run_until(sim.now + 1.0)
    assert leaving.swim.leave_complete(sim.now)
    sim.crash(leaving)
    sim.run_until(sim.now + 20.0)
    others = [n for n in nodes if n.up]
    assert views(others, crashed) == {Liveness.DEAD}
    assert views(others, leaving) == {Liveness.LEFT}


def test_restart_with_same_identity_at_a_new_address() -> None:
    sim = SwimSimulation(seed=4)
    nodes = sim.build(CFG, 20)
    sim.run_until(2.0)
    node = nodes[3]
    sim.crash(node)
    sim.run_until(4.0)
    sim.restart(node, incarnation=1, seeds=[nodes[0].address], new_address=True)
    sim.run_until(12.0)
    for other in nodes:
        member = other.swim.member(node.node_id)
        assert member.address == node.address
        assert member.liveness is Liveness.ALIVE
        assert member.incarnation >= 2  # it out-voted its previous life
    assert one_view(nodes)


def test_partition_heals_without_help() -> None:
    sim = SwimSimulation(seed=5)
    nodes = sim.build(CFG, 16)
    sim.partition([nodes[:8], nodes[8:]])
    sim.run_until(120.0)
    assert views(nodes[:8], nodes[12]) == {Liveness.DEAD}
    sim.partition(None)
    sim.run_until(180.0)
    assert one_view(nodes)


def test_memberlist_profile_never_heals_a_long_partition() -> None:
    sim = SwimSimulation(seed=5)
    nodes = sim.build(SwimConfig.memberlist_lan(), 16)
    sim.partition([nodes[:8], nodes[8:]])
    sim.run_until(200.0)
    sim.partition(None)
    sim.run_until(300.0)
    assert nodes[0].swim.member(nodes[12].node_id) is None


def test_stalled_node_catches_up_and_runs_are_reproducible() -> None:
    def run() -> list[tuple[str, int, Liveness]]:
        sim = SwimSimulation(seed=6, loss=0.02)
        nodes = sim.build(CFG, 12)
        sim.at(3.0, lambda: sim.stall(nodes[2], 4.0))
        sim.run_until(30.0)
        assert nodes[2].swim.statistics()["stalls"] >= 1
        return sorted((m.node_id, m.incarnation, m.liveness) for m in nodes[0].swim.members())

    first = run()
    assert first == run()
    assert {liveness for _, _, liveness in first} == {Liveness.ALIVE}

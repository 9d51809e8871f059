"""Relayed removals: what a node tells others of a removal, and when it ignores one."""

from __future__ import annotations

from p2pindex.core.swim import Member
from p2pindex.node.admin import readmitted, removal_notice
from p2pindex.node.cluster_view import ClusterView
from p2pindex.types import Address, Liveness, NodeState
from p2pindex.wire.messages import RemoveRequest

GONE = "d" * 16
NEW = "e" * 16


def member(liveness: Liveness, incarnation: int) -> Member:
    return Member(GONE, Address("10.0.0.9", 7000), incarnation, liveness, NodeState.ACTIVE)


def test_a_notice_carries_the_incarnation_and_the_replacement():
    view = ClusterView("a" * 16, Address("10.0.0.1", 7000))
    view.remove(GONE, 5, NEW, source=GONE)
    view.rebuild_ring()
    assert removal_notice(view, GONE) == RemoveRequest(
        GONE, relayed=True, replaced_by=NEW, incarnation=5
    )
    view.remove("c" * 16, 2, None)
    assert removal_notice(view, "c" * 16).replaced_by is None
    # The replacement left since: its place is given up, and the notice no longer names it.
    assert view.forget_successor(NEW)
    view.rebuild_ring()
    assert NEW not in view.ring.nodes
    assert removal_notice(view, GONE).replaced_by is None


def test_a_removal_older_than_the_members_return_is_ignored():
    """Admitted again and restarted (a higher incarnation, alive): a node that missed the
    admission must not take it out again."""
    assert readmitted(member(Liveness.ALIVE, 6), 5)
    assert readmitted(member(Liveness.SUSPECT, 6), 5)
    assert not readmitted(member(Liveness.DEAD, 6), 5)
    assert not readmitted(member(Liveness.ALIVE, 5), 5)
    assert not readmitted(None, 5)
    assert not readmitted(member(Liveness.ALIVE, 9), None)

"""The cluster view answers from its members and the ``now`` it is given, nothing else."""

from __future__ import annotations

import pytest

from p2pindex.core.swim import Member
from p2pindex.errors import InvalidRequest
from p2pindex.node.cluster_view import ClusterView
from p2pindex.types import Address, Liveness, NodeState

ME = "a" * 16
PEER = "b" * 16


def view_with(liveness: Liveness, state: NodeState = NodeState.ACTIVE) -> ClusterView:
    view = ClusterView(ME, Address("10.0.0.1", 7000))
    view.members[PEER] = Member(PEER, Address("10.0.0.2", 7000), 1, liveness, state)
    return view


@pytest.mark.parametrize(
    ("liveness", "usable"),
    [
        (Liveness.ALIVE, True),
        (Liveness.SUSPECT, True),
        (Liveness.DEAD, False),
        (Liveness.LEFT, False),
    ],
)
def test_a_member_is_usable_while_alive_or_suspect(liveness: Liveness, usable: bool) -> None:
    assert view_with(liveness).usable(PEER, now=0.0) is usable


def test_an_unreachable_member_is_skipped_until_its_grace_ends() -> None:
    view = view_with(Liveness.ALIVE)
    view.unreachable_until[PEER] = 10.0
    assert not view.usable(PEER, now=9.9)
    assert view.usable(PEER, now=10.0)


def test_a_syncing_member_takes_writes_but_not_reads() -> None:
    view = view_with(Liveness.ALIVE, NodeState.SYNCING)
    assert view.usable(PEER, now=0.0)
    assert not view.readable(PEER, now=0.0)
    view.state = NodeState.SYNCING
    assert view.usable(ME, now=0.0) and not view.readable(ME, now=0.0)


def test_a_degraded_node_takes_no_writes_but_serves_reads() -> None:
    """A full disk refuses writes, not reads: a cluster whose disks all filled stays
    readable. The reaper and anti-entropy, which also write to a peer, still skip it."""
    view = view_with(Liveness.ALIVE, NodeState.DEGRADED)
    view.state = NodeState.DEGRADED
    assert not view.usable(PEER, now=0.0)
    assert not view.usable(ME, now=0.0)
    assert view.serves_reads(PEER, now=0.0) and view.serves_reads(ME, now=0.0, key=b"k")
    assert not view.readable(PEER, now=0.0) and not view.readable(ME, now=0.0)
    view.unreachable_until[PEER] = 10.0
    assert not view.serves_reads(PEER, now=9.9)  # unreachable is unreachable
    view.handing_over = True
    assert not view.serves_reads(ME, now=0.0)  # it has handed its ranges over


def test_a_syncing_or_gaining_node_serves_no_reads_of_what_it_is_receiving() -> None:
    view = view_with(Liveness.ALIVE, NodeState.SYNCING)
    assert not view.serves_reads(PEER, now=0.0)
    view.state = NodeState.SYNCING
    assert not view.serves_reads(ME, now=0.0, key=b"k")


def test_the_ring_keeps_dead_members_and_drops_left_and_removed_ones() -> None:
    view = view_with(Liveness.DEAD)
    assert view.rebuild_ring()
    assert view.ring.nodes == {ME, PEER}
    assert not view.rebuild_ring()
    view.removed[PEER] = 1
    assert view.rebuild_ring()
    assert view.ring.nodes == {ME}


def test_an_unknown_node_has_no_address() -> None:
    view = view_with(Liveness.ALIVE)
    assert view.address_of(ME) == Address("10.0.0.1", 7000)
    assert view.address_of(PEER) == Address("10.0.0.2", 7000)
    with pytest.raises(InvalidRequest, match="unknown node"):
        view.address_of("c" * 16)


def test_a_gaining_node_refuses_reads_of_its_gained_keys_only() -> None:
    from p2pindex.core.coverage import ArcFilter
    from p2pindex.core.ring import key_token

    view = view_with(Liveness.ALIVE)
    inside, outside = b"gained", b"kept"
    token = key_token(inside)
    assert not token - 1 < key_token(outside) <= token  # the two keys are told apart
    view.gaining["c" * 16] = ArcFilter([(token - 1, token)])
    assert not view.readable(ME, now=0.0, key=inside)
    assert view.readable(ME, now=0.0, key=outside)
    assert not view.readable(ME, now=0.0)  # asked for no key: gaining anything counts
    view.gaining.clear()
    assert view.readable(ME, now=0.0, key=inside)


def test_a_syncing_node_refuses_every_read_whatever_the_key() -> None:
    view = view_with(Liveness.ALIVE)
    view.state = NodeState.SYNCING
    assert not view.readable(ME, now=0.0, key=b"any")


# --- replacements -----------------------------------------------------------------------------

DEAD = "d" * 16
NEW = "e" * 16
OTHER = "f" * 16


def member(node_id: str, liveness: Liveness, tokens_of: str | None = None) -> Member:
    return Member(node_id, Address("10.0.0.9", 7000), 1, liveness, NodeState.ACTIVE, tokens_of)


def test_a_takeover_puts_the_replacement_at_the_dead_members_tokens_before_it_is_known():
    view = ClusterView(ME, Address("10.0.0.1", 7000))
    view.members = {
        m.node_id: m for m in (member(PEER, Liveness.ALIVE), member(DEAD, Liveness.DEAD))
    }
    view.rebuild_ring()
    before = view.ring
    view.remove(DEAD, 1, NEW)
    assert view.rebuild_ring()
    assert view.ring.nodes == {ME, PEER, NEW} and view.ring.sources == {NEW: DEAD}
    assert view.ring.ranges_for(NEW, 2) == before.ranges_for(DEAD, 2)
    assert not view.usable(NEW, now=0.0), "unknown until it joins: writes go to fallbacks"
    view.readmit(DEAD)
    view.rebuild_ring()
    assert view.ring == before and view.takeovers == {}


def test_a_claim_places_the_replacement_where_the_removal_was_missed():
    view = ClusterView(ME, Address("10.0.0.1", 7000))
    view.members = {
        m.node_id: m
        for m in (member(DEAD, Liveness.DEAD), member(NEW, Liveness.ALIVE, tokens_of=DEAD))
    }
    view.rebuild_ring()
    assert view.ring.nodes == {ME, NEW} and view.ring.sources == {NEW: DEAD}
    assert view.removed == {}, "the ring gives way; nothing is removed behind anyone's back"


def test_of_two_claims_on_one_members_tokens_the_running_one_wins():
    view = ClusterView(ME, Address("10.0.0.1", 7000))
    view.members = {
        m.node_id: m
        for m in (member(NEW, Liveness.DEAD, tokens_of=DEAD), member(OTHER, Liveness.ALIVE, DEAD))
    }
    view.rebuild_ring()
    assert view.ring.nodes == {ME, OTHER} and view.ring.sources == {OTHER: DEAD}


def test_a_node_never_drops_itself_from_its_own_ring():
    view = ClusterView(DEAD, Address("10.0.0.1", 7000))
    view.members = {NEW: member(NEW, Liveness.ALIVE, tokens_of=DEAD)}
    view.rebuild_ring()
    assert DEAD in view.ring.nodes


def test_removing_a_replacement_that_never_came_frees_the_place():
    view = ClusterView(ME, Address("10.0.0.1", 7000))
    view.members = {
        m.node_id: m for m in (member(PEER, Liveness.ALIVE), member(DEAD, Liveness.DEAD))
    }
    view.remove(DEAD, 1, NEW)
    view.rebuild_ring()
    assert NEW in view.ring.nodes
    view.remove(NEW, 0, None)
    view.rebuild_ring()
    assert view.ring.nodes == {ME, PEER} and view.ring.sources == {}


def test_a_replacement_of_a_replacement_keeps_the_first_members_tokens():
    """The claim reached this node before the relayed removal did: the ring still places
    the second replacement at the original member's tokens, as its own claim says."""
    view = ClusterView(ME, Address("10.0.0.1", 7000))
    view.members = {
        m.node_id: m
        for m in (member(NEW, Liveness.DEAD, tokens_of=DEAD), member(OTHER, Liveness.ALIVE, DEAD))
    }
    view.rebuild_ring()
    assert NEW not in view.ring.nodes, "displaced by the running claim"
    view.remove(NEW, 1, OTHER)
    view.rebuild_ring()
    assert view.takeovers == {NEW: (OTHER, DEAD)}
    assert view.ring.sources == {OTHER: DEAD}


def test_hints_for_a_replaced_member_go_to_whoever_holds_its_place_now():
    view = ClusterView(ME, Address("10.0.0.1", 7000))
    assert view.stand_in(DEAD) == DEAD
    view.remove(DEAD, 1, NEW, source=DEAD)
    assert view.stand_in(DEAD) == NEW
    view.remove(NEW, 1, OTHER)
    assert view.stand_in(DEAD) == OTHER, "a replacement replaced in turn"
    view.remove(PEER, 1, None)
    assert view.stand_in(PEER) == PEER, "a plain removal names nobody"

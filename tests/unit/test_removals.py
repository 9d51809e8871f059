"""Removals: who is out of the ring for good, remembered across restarts, and what a
removal sets going (the ring rebuilt, the gained ranges pulled). The tests run under trio,
as the node does: a removal's log line is stamped with trio's clock."""

from __future__ import annotations

import pytest

from p2pindex.core.ring import Ring
from p2pindex.core.swim import Member
from p2pindex.errors import InvalidRequest
from p2pindex.node.cluster_view import ClusterView
from p2pindex.node.removals import Removals
from p2pindex.node.stats import StatisticsStore
from p2pindex.storage.memory import MemoryStorage
from p2pindex.types import Address, Liveness, NodeState

ME = "a" * 16
PEER = "b" * 16
DEAD = "c" * 16
NEW = "d" * 16


class Harness:
    def __init__(self, storage: MemoryStorage | None = None) -> None:
        self.storage = storage or MemoryStorage()
        self.view = ClusterView(ME, Address("10.0.0.1", 7000))
        for node_id, host in ((PEER, "10.0.0.2"), (DEAD, "10.0.0.3")):
            self.view.members[node_id] = Member(
                node_id, Address(host, 7000), 3, Liveness.DEAD, NodeState.ACTIVE
            )
        self.view.rebuild_ring()
        self.saves: list[tuple[str, bytes]] = []
        self.gains: list[tuple[str, Ring]] = []
        self.stats = StatisticsStore()
        self.removals = Removals(
            self.view,
            self.storage,
            self.stats,
            cluster="prod",
            save_meta=lambda name, value: self.saves.append((name, value)),
            rebuild_ring=self.view.rebuild_ring,
            gain_from=lambda node_id, before: self.gains.append((node_id, before)),
        )

    async def flush(self) -> None:
        """What the node's background saves would have written."""
        for name, value in self.saves:
            await self.storage.set_meta(name, value)
        self.saves.clear()


async def test_a_removal_leaves_the_ring_pulls_the_gained_ranges_and_survives_a_restart():
    first = Harness()
    before = first.view.ring
    first.removals.remove(DEAD, replaced_by=NEW)
    assert DEAD in first.removals and len(first.removals) == 1
    assert DEAD not in first.view.ring.nodes
    assert first.gains == [(DEAD, before)]
    assert first.stats.get("membership.removed") == 1
    await first.flush()

    restarted = Harness(first.storage)
    restarted.removals.load()
    assert DEAD in restarted.removals
    assert restarted.view.takeovers[DEAD][0] == NEW
    assert restarted.view.removed[DEAD] == 3  # the incarnation it had


async def test_a_removal_that_changes_no_ring_pulls_nothing():
    harness = Harness()
    harness.removals.remove(DEAD)
    harness.gains.clear()
    harness.removals.remove(DEAD)  # told again by another member
    assert harness.gains == []


async def test_an_admitted_member_is_back_in_the_ring_after_a_restart_too():
    harness = Harness()
    harness.removals.remove(DEAD)
    harness.removals.readmit(DEAD)
    assert DEAD not in harness.removals
    assert DEAD in harness.view.ring.nodes
    await harness.flush()
    restarted = Harness(harness.storage)
    restarted.removals.load()
    assert DEAD not in restarted.removals


async def test_a_node_cannot_remove_itself_and_the_refusal_says_what_to_run():
    harness = Harness()
    with pytest.raises(InvalidRequest, match="use leave"):
        harness.removals.remove(ME)
    assert len(harness.removals) == 0 and harness.saves == []
    text = harness.removals.refusal(DEAD)
    assert f"p2pindex admit {DEAD}" in text and "'prod'" in text


async def test_an_unknown_member_is_removed_at_the_incarnation_the_sender_knew():
    harness = Harness()
    harness.removals.remove("e" * 16, incarnation=9)
    assert harness.view.removed["e" * 16] == 9

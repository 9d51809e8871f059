"""A leave whose node cannot read its own ranges (a storage failure while pushing them) is
abandoned: the node keeps its data and its place and says why, instead of the failure
escaping the leave (a supersede-like simulation with three nodes crashed a leaver mid-push,
and the harness died on the storage error)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import trio

from p2pindex.core.ring import Ring
from p2pindex.errors import StorageFailure
from p2pindex.node import leaving
from p2pindex.node.handoff import HandoffProgress
from p2pindex.node.stats import StatisticsStore


class FailingHandoff:
    n_replicas = 3

    def __init__(self) -> None:
        self.progress = HandoffProgress()

    async def others_leaving(self) -> list[str]:
        return []

    async def hand_over(self, written: Any, view: Any) -> None:
        await trio.lowlevel.checkpoint()
        raise StorageFailure("the disk went away")


async def test_a_storage_failure_while_handing_over_abandons_the_leave() -> None:
    view = SimpleNamespace(node_id="a", ring=Ring(["a", "b", "c", "d"]), handing_over=True)
    stats = StatisticsStore()
    handoff = FailingHandoff()
    left = await leaving.hand_over(handoff, None, None, view, stats)  # type: ignore[arg-type]
    assert left is False
    assert "the disk went away" in handoff.progress.abandoned
    assert view.handing_over is False and stats.get("handoff.leaves_abandoned") == 1

"""Ranges a node gains when a member is removed: pulled before the node serves reads of them.

A join has a displaced node that hands its copy to the joiner, which stays SYNCING until it
holds it. A removal has none: the removed member is gone, and a write acknowledged by it and
one other replica is now on that other replica only. The node that takes the removed
member's place in a preference list starts with nothing for those keys, and counted in a
quorum with the replica that missed the write, it would make the write look lost.

So each node that gains arcs pulls them from every old replica that remains
(``OwnershipHandoff.pull_gained``; their union holds every write a quorum acknowledged), and
meanwhile serves no reads: it refuses replica reads and index scans (a coordinator that
asked counts the other replicas; a query replans without it) and reads nothing locally when
it coordinates. Writes still reach it. The pending removals are saved in the node's metadata,
so a node that crashes before it is done pulls again after its restart.
"""

from __future__ import annotations

import json
import logging

import trio

from p2pindex.core.ring import Ring, gained_arcs
from p2pindex.errors import StorageFailure
from p2pindex.node.cluster_view import ClusterView
from p2pindex.node.handoff import OwnershipHandoff
from p2pindex.node.stats import StatisticsStore
from p2pindex.storage.base import Storage

log = logging.getLogger(__name__)

GAINING_META = "handoff.gaining"
"""The removed members whose arcs this node is still pulling (a JSON list)."""


class GainedRanges:
    def __init__(
        self,
        view: ClusterView,
        handoff: OwnershipHandoff,
        storage: Storage,
        stats: StatisticsStore,
        n_replicas: int,
    ) -> None:
        self._view = view
        self._handoff = handoff
        self._storage = storage
        self._stats = stats
        self._n = n_replicas

    def pending(self) -> list[str]:
        """Removals whose arcs a previous run of this node had not finished pulling."""
        raw = self._storage.get_meta(GAINING_META)
        try:
            return [str(node) for node in json.loads(raw)] if raw else []
        except (ValueError, TypeError):
            return []

    def refusal(self) -> str | None:
        """Why this node serves no reads now, or None."""
        if not self._view.gaining:
            return None
        removed = ", ".join(sorted(self._view.gaining))
        return (
            f"node {self._view.node_id} is still receiving the ranges it took over from "
            f"removed node(s) {removed}; another replica answers this read"
        )

    async def gain(self, removed: str, before: Ring) -> None:
        """Pull what this node replicates in the current ring but did not in ``before``
        (the ring with ``removed``), reading nothing meanwhile."""
        arcs = gained_arcs(before, self._view.ring, self._view.node_id, self._n)
        if not arcs:
            if removed in self._view.gaining:
                self._view.gaining.discard(removed)
                await self._save()
            return
        self._view.gaining.add(removed)
        await self._save()
        log.info(
            "member %s removed: pulling %d range(s) this node now replicates from the "
            "remaining replicas before serving reads of them",
            removed,
            len(arcs),
        )
        try:
            await self._handoff.pull_gained(arcs)
        finally:
            self._view.gaining.discard(removed)
        await self._save()
        self._stats.incr("handoff.gained_syncs")

    async def resume(self, nursery: trio.Nursery) -> None:
        """After a restart: pull again for every removal a crash interrupted."""
        for removed in self.pending():
            if removed in self._view.ring.nodes:
                continue  # admitted again since
            before = Ring(self._view.ring.nodes | {removed}, self._view.ring.vnodes)
            self._view.gaining.add(removed)
            nursery.start_soon(self.gain, removed, before)

    async def _save(self) -> None:
        try:
            doc = json.dumps(sorted(self._view.gaining)).encode()
            await self._storage.set_meta(GAINING_META, doc)
        except StorageFailure:
            # Unsaved, a crash before the pull ends leaves the gap to anti-entropy.
            self._stats.incr("handoff.meta_failures")

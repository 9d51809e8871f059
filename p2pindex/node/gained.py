"""Ranges a node gains when a member is removed: pulled before the node serves reads of them.

A join has a displaced node that hands its copy to the joiner, which stays SYNCING until it
holds it. A removal has none: the removed member is gone, and a write acknowledged by it and
one other replica is now on that other replica only. The node that takes the removed
member's place in a preference list starts with nothing for those keys, and counted in a
quorum with the replica that missed the write, it would make the write look lost.

So each node that gains arcs pulls them from every old replica that remains
(``OwnershipHandoff.pull_gained``; their union holds every write a quorum acknowledged), and
meanwhile serves no reads of the gained keys: it refuses replica reads of them and index
scans (a coordinator that asked counts the other replicas; a query replans without it) and
does not read them locally when it coordinates. Every other key it serves as before: a
replacement's newcomer is SYNCING at the same time, and a node refusing all its reads too
would leave keys of which no quorum is readable. Writes still reach it. The pending
removals are saved in the node's metadata, so a node that crashes before it is done pulls
again after its restart.
"""

from __future__ import annotations

import json
import logging

import trio

from p2pindex.core.coverage import ArcFilter
from p2pindex.core.ring import Ring, gained_arcs
from p2pindex.errors import StorageFailure
from p2pindex.node.cluster_view import ClusterView
from p2pindex.node.handoff import OwnershipHandoff
from p2pindex.node.stats import StatisticsStore
from p2pindex.storage.base import Storage

log = logging.getLogger(__name__)

Arcs = list[tuple[int, int, tuple[str, ...]]]
"""Gained arcs (start, end] with the remaining nodes that held each (``gained_arcs``)."""

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

    def refusal(self, keys: list[bytes]) -> str | None:
        """Why this node serves no read of ``keys`` now (one is in a gained arc), or None."""
        if not any(self._view.gains(key) for key in keys):
            return None
        return self._why("read")

    def scan_refusal(self, runs: list[tuple[int, int]]) -> str | None:
        """Why this node answers no scan of ``runs`` (all of the ring when empty), or None."""
        asked = runs or [(0, 0)]
        if not any(arcs.overlaps(asked) for arcs in self._view.gaining.values()):
            return None
        return self._why("scan")

    def _why(self, what: str) -> str:
        removed = ", ".join(sorted(self._view.gaining))
        return (
            f"node {self._view.node_id} is still receiving the ranges it took over from "
            f"removed node(s) {removed}; another replica answers this {what}"
        )

    def begin(self, removed: str, before: Ring) -> Arcs:
        """The arcs this node replicates in the current ring but did not in ``before`` (the
        ring with ``removed``); reads of their keys are refused from now until ``gain``
        has pulled them."""
        arcs = gained_arcs(before, self._view.ring, self._view.node_id, self._n)
        if arcs:
            self._view.gaining[removed] = ArcFilter([(start, end) for start, end, _ in arcs])
        else:
            self._view.gaining.pop(removed, None)
        return arcs

    async def gain(self, removed: str, arcs: Arcs) -> None:
        """Pull ``arcs`` (from ``begin``) from their remaining old replicas, then serve
        reads of them again."""
        await self._save()
        if not arcs:
            return
        log.info(
            "member %s removed: pulling %d range(s) this node now replicates from the "
            "remaining replicas before serving reads of them",
            removed,
            len(arcs),
        )
        try:
            await self._handoff.pull_gained(arcs)
        finally:
            self._view.gaining.pop(removed, None)
        await self._save()
        self._stats.incr("handoff.gained_syncs")

    async def resume(self, nursery: trio.Nursery) -> None:
        """After a restart: pull again for every removal a crash interrupted."""
        for removed in self.pending():
            if removed in self._view.ring.nodes:
                continue  # admitted again since
            ring = self._view.ring
            before = ring.with_node(removed, self._view.source_of(removed))
            nursery.start_soon(self.gain, removed, self.begin(removed, before))

    async def _save(self) -> None:
        try:
            doc = json.dumps(sorted(self._view.gaining)).encode()
            await self._storage.set_meta(GAINING_META, doc)
        except StorageFailure:
            # Unsaved, a crash before the pull ends leaves the gap to anti-entropy.
            self._stats.incr("handoff.meta_failures")

"""Members taken out of the ring for good: by `p2pindex remove`, by a replacement's
takeover, or by the auto-removal of the long dead; undone by `p2pindex admit`.

A removal changes whose ranges are whose, so it is remembered across restarts (a node that
forgot one would put the removed member's tokens back and route keys to a machine that is
gone), and a removal this node learns of starts the pull of the ranges it gains. Kept apart
from the node so that the one place deciding who is out of the ring is small enough to read
whole; the view (``ClusterView``) holds the sets, this module changes them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from p2pindex import errors
from p2pindex.core.ring import Ring
from p2pindex.node import restart_meta
from p2pindex.node.cluster_view import ClusterView
from p2pindex.node.eventlog import EventLog
from p2pindex.node.restart_meta import REMOVED_META, TAKEOVERS_META
from p2pindex.node.stats import StatisticsStore
from p2pindex.storage.base import Storage

log = logging.getLogger("p2pindex.node.node")
"""The node's logger: an operator reads one log, whichever module wrote the line."""
events = EventLog(log, trio.current_time)

SaveMeta = Callable[[str, bytes], None]
"""Save a named document in the store in the background (best effort, see Node)."""
RebuildRing = Callable[[], None]
GainFrom = Callable[[str, Ring], None]
"""Start pulling the ranges this node gains because ``node_id`` left the ring (given the
ring from before)."""


class Removals:
    def __init__(
        self,
        view: ClusterView,
        storage: Storage,
        stats: StatisticsStore,
        *,
        cluster: str,
        save_meta: SaveMeta,
        rebuild_ring: RebuildRing,
        gain_from: GainFrom,
    ) -> None:
        self._view = view
        self._storage = storage
        self._stats = stats
        self._cluster = cluster
        self._save_meta = save_meta
        self._rebuild_ring = rebuild_ring
        self._gain_from = gain_from

    def load(self) -> None:
        """Read the removals and takeovers saved before a restart into the view."""
        self._view.takeovers = restart_meta.load_takeovers(self._storage)
        self._view.removed = restart_meta.load_removed(self._storage)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._view.removed

    def __len__(self) -> int:
        return len(self._view.removed)

    def refusal(self, node_id: str) -> str:
        """What a removed node is told when it tries to come back, in an operator's words."""
        return (
            f"node {node_id} was removed from cluster {self._cluster!r} with "
            f"`p2pindex remove` and may not rejoin; to admit it again run `p2pindex admit "
            f"{node_id}` against a live member, then restart it (or start it with an empty "
            "data directory to join as a new node)"
        )

    def remove(
        self, node_id: str, replaced_by: str | None = None, incarnation: int | None = None
    ) -> None:
        """Take ``node_id`` out of this node's ring, ``replaced_by`` (if any) taking its
        tokens (and remember both across restarts). ``incarnation``: the member's, as the
        sender of the removal knew it, for one this node never saw."""
        view = self._view
        if node_id == view.node_id:
            raise errors.InvalidRequest("a node cannot remove itself; use leave")
        member = view.members.get(node_id)
        known = member.incarnation if member else incarnation or 0
        view.remove(node_id, known, replaced_by)
        self._stats.incr("membership.removed")
        where = f"{node_id} at {member.address if member else 'an unknown address'}"
        taken = f", its place taken by {replaced_by}" if replaced_by else ""
        events.info(f"member {node_id}", "member %s removed from the ring%s", where, taken)
        self.persist()
        before = view.ring
        self._rebuild_ring()
        if view.ring is not before:
            # The refusal starts now, before any read of a gained key can be served.
            self._gain_from(node_id, before)

    def readmit(self, node_id: str) -> None:
        """Undo the removal of ``node_id`` here (and remember it across restarts)."""
        self._view.readmit(node_id)
        self.persist()
        self._rebuild_ring()
        log.info("member %s admitted again: it may rejoin", node_id)

    def persist(self) -> None:
        self._save_meta(REMOVED_META, restart_meta.removed_doc(self._view.removed))
        self._save_meta(TAKEOVERS_META, restart_meta.takeovers_doc(self._view.takeovers))

"""IndexMonitor: the node's health and status documents (what `p2pindex status` shows)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from p2pindex.node.capacity import estimate_stored_bytes
from p2pindex.types import NodeRole

if TYPE_CHECKING:
    from p2pindex.node.node import Node


class IndexMonitor:
    def __init__(self, node: Node) -> None:
        self._node = node

    def member_docs(self) -> list[dict[str, Any]]:
        """What a client routes by (MembersReply): cheap, as clients ask every few seconds."""
        node = self._node
        return [
            {
                "node_id": m.node_id,
                "address": str(m.address),
                "liveness": m.liveness.value,
                "state": m.state.value,
                "incarnation": m.incarnation,
                "in_ring": m.node_id in node.ring.nodes,
            }
            for m in node.members()
        ]

    def _members_with_ownership(self) -> list[dict[str, Any]]:
        """The member documents plus each member's share of the keyspace, for status. The
        share walks every token of the ring (O(members x vnodes)) once per ring."""
        node = self._node
        ownership = node.ring.ownership(node.config.n_replicas)
        return [
            {**doc, "ownership": round(ownership.get(doc["node_id"], 0.0), 6)}
            for doc in self.member_docs()
        ]

    def status(self) -> dict[str, Any]:
        node = self._node
        stored_bytes = estimate_stored_bytes(node.storage)
        backlog = node.storage.hint_backlog()
        return {
            "node_id": node.node_id,
            "address": str(node.address),
            "cluster": node.config.cluster,
            "state": node.state.value,
            "state_reason": node.state_reason,
            "handoff": node.handoff.progress.doc() if node.handoff else None,
            "leaving": node.leaving,
            "tombstones": {
                "held": node.reaper.held if node.reaper else None,
                "reaped": node.stats.get("tombstones.reaped"),
                "markers": node.reaper.markers if node.reaper else 0,
                "stale_dropped": node.stats.get("tombstones.stale_dropped"),
                "grace_s": node.config.tombstone_grace,
            },
            "keys_outside_ranges": node.reaper.strays_found if node.reaper else None,
            "copies_dropped": node.stats.get("copies.dropped"),
            "n_replicas": node.config.n_replicas,
            "keys": node.storage.count(),
            "bytes": stored_bytes,
            "load": {
                **node.load.signals(),
                "storage_bytes": stored_bytes,
                "keys": node.storage.count(),
                "pending_hints": sum(b.count for b in backlog),
            },
            "members": self._members_with_ownership(),
            "hints": [
                {"target": b.target, "count": b.count, "bytes": b.bytes, "oldest": b.oldest}
                for b in backlog
            ],
            "statistics": {
                **node.stats.snapshot(),
                **{f"membership.{k}": v for k, v in node.membership_statistics().items()},
            },
        }

    def explain(self, key: bytes) -> dict[str, Any]:
        """The key's preference list with roles, fallbacks, liveness and pending hints."""
        node = self._node
        n = node.config.n_replicas
        primaries = node.ring.preference_list(key, n)
        hints = {b.target: b.count for b in node.storage.hint_backlog()}
        members = {m.node_id: m for m in node.members()}
        rows = []
        for node_id in node.ring.walk(key):
            role = (
                NodeRole.PRIMARY
                if node_id == primaries[0]
                else (NodeRole.REPLICA if node_id in primaries else NodeRole.FALLBACK)
            )
            member = members.get(node_id)
            rows.append(
                {
                    "node_id": node_id,
                    "role": role.value,
                    "address": str(member.address) if member else "",
                    "liveness": member.liveness.value if member else "unknown",
                    "state": member.state.value if member else "unknown",
                    "usable": node.usable(node_id),
                    "hints_held_here": hints.get(node_id, 0),
                }
            )
        return {"key": key.hex(), "n_replicas": n, "nodes": rows}

"""IndexMonitor: the node's health and status documents (what `p2pindex status` shows)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from p2pindex.node.capacity import estimate_stored_bytes
from p2pindex.types import Liveness, NodeRole
from p2pindex.version import __version__

if TYPE_CHECKING:
    from p2pindex.config import NodeConfig
    from p2pindex.core.ring import Ring
    from p2pindex.core.swim import Member
    from p2pindex.node.handoff import OwnershipHandoff
    from p2pindex.node.load import LoadMeter
    from p2pindex.node.reaper import TombstoneReaper
    from p2pindex.node.removals import Removals
    from p2pindex.node.stats import StatisticsStore
    from p2pindex.storage.base import Storage
    from p2pindex.types import Address, NodeState


class Monitored(Protocol):
    """What the monitor reads of a node: it depends on this, not on the Node class, so the
    node (which owns a monitor) and the monitor do not import each other."""

    node_id: str
    config: NodeConfig
    storage: Storage
    stats: StatisticsStore
    state_reason: str
    poor_health: int | None
    handoff: OwnershipHandoff | None
    removals: Removals
    leaving: bool
    reaper: TombstoneReaper | None
    load: LoadMeter

    @property
    def state(self) -> NodeState: ...

    @property
    def address(self) -> Address: ...

    @property
    def ring(self) -> Ring: ...

    @property
    def membership_confirmed(self) -> bool: ...

    def members(self) -> list[Member]: ...

    def reachable_ring_members(self) -> int: ...

    def membership_statistics(self) -> dict[str, int]: ...

    def usable(self, node_id: str) -> bool: ...


class IndexMonitor:
    def __init__(self, node: Monitored) -> None:
        self._node = node

    def member_docs(self) -> list[dict[str, Any]]:
        """What a client routes by (MembersReply): cheap, as clients ask every few seconds.

        Removed members are left out (status counts them): they are gone for good, and a
        list that kept them as dead forever hid the members that matter."""
        node = self._node
        ring = node.ring
        docs: list[dict[str, Any]] = []
        for m in node.members():
            if m.node_id in node.removals:
                continue
            doc = {
                "node_id": m.node_id,
                "address": str(m.address),
                "liveness": m.liveness.value,
                "state": m.state.value,
                "incarnation": m.incarnation,
                "in_ring": m.node_id in ring.nodes,
            }
            source = ring.token_source(m.node_id)
            if source != m.node_id:
                doc["tokens_of"] = source  # a replacement: the member whose tokens it holds
            docs.append(doc)
        return docs

    def _members_with_ownership(self) -> list[dict[str, Any]]:
        """The member documents plus each member's share of the keyspace, for status. The
        share walks every token of the ring (O(members x vnodes)) once per ring."""
        node = self._node
        ownership = node.ring.ownership(node.config.n_replicas)
        gone = (Liveness.DEAD.value, Liveness.LEFT.value)
        return [
            {
                **doc,
                "ownership": round(ownership.get(doc["node_id"], 0.0), 6),
                # A dead member's state is what it last said, not what it is now.
                "state_last_known": doc["liveness"] in gone,
            }
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
            "version": __version__,
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
            "ring_size": len(node.ring.nodes),
            "warnings": self._warnings(),
            "keys": node.storage.count(),
            "disk": node.storage.disk_usage(),
            "bytes": stored_bytes,
            "load": {
                **node.load.signals(),
                "storage_bytes": stored_bytes,
                "keys": node.storage.count(),
                "pending_hints": sum(b.count for b in backlog),
            },
            "members": self._members_with_ownership(),
            "removed_members": len(node.removals),
            "hints": [
                {"target": b.target, "count": b.count, "bytes": b.bytes, "oldest": b.oldest}
                for b in backlog
            ],
            "statistics": {
                **node.stats.snapshot(),
                **{f"membership.{k}": v for k, v in node.membership_statistics().items()},
            },
        }

    def _warnings(self) -> list[str]:
        node = self._node
        n = node.config.n_replicas
        size = len(node.ring.nodes)
        warnings = []
        if size < n:
            warnings.append(
                f"the cluster keeps N={n} copies of each key but has only {size} member(s): "
                f"every member holds every key, and a level needing more than {size} replies "
                "is refused; keys are copied up to N as nodes join"
            )
        running = node.reachable_ring_members()
        if size >= n > running:
            quorum = n // 2 + 1
            failing = (
                f"requests needing more than {running} replies (quorum and all) fail"
                if running < quorum
                else f"requests needing {n} replies (consistency all) fail"
            )
            warnings.append(
                f"only {running} of the ring's {size} members are up, fewer than N={n}: "
                f"{failing} until more come back, and writes wait on fallbacks and hints"
            )
        if not node.membership_confirmed:
            warnings.append(
                "no seed or known member has answered since this node started: it refuses "
                "reads and writes (not_ready) until one does; check that the seed addresses "
                "are right and reachable, and that a seed is up"
            )
        if node.poor_health is not None:
            warnings.append(
                f"local health is poor (score {node.poor_health}, 0 is healthy): this node's "
                "probes of its peers keep failing; look for packet loss on its network or a "
                "starved CPU"
            )
        abandoned = node.handoff.progress.abandoned if node.handoff else ""
        if abandoned:
            warnings.append(
                f"this node's last leave was abandoned and it serves on as a member: "
                f"{abandoned}; run the leave again once every member is reachable"
            )
        return warnings

    def explain(self, key: bytes) -> dict[str, Any]:
        """The key's preference list with roles, fallbacks, liveness and pending hints."""
        node = self._node
        n = node.config.n_replicas
        primaries = node.ring.preference_list(key, n)
        hints: dict[str, int] = {b.target: b.count for b in node.storage.hint_backlog()}
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

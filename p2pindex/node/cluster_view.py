"""What one node believes about the cluster: its members, which of them it may send a write
to or read from, their addresses, and the ring built from them.

It holds no clock and no tasks: every question that depends on time takes ``now``, so the
coordinator, hinted handoff and the status documents ask the same view the same way in a
process and in the simulator, and a test can ask it without a running node.
"""

from __future__ import annotations

from p2pindex.core.coverage import ArcFilter
from p2pindex.core.ring import DEFAULT_VNODES, Ring
from p2pindex.core.swim import Member
from p2pindex.errors import InvalidRequest
from p2pindex.types import Address, Liveness, NodeState


class ClusterView:
    def __init__(self, node_id: str, address: Address) -> None:
        self.node_id = node_id
        self.address = address
        """Where this node is reached (the advertised address once it listens)."""
        self.state = NodeState.ACTIVE
        """This node's own state, as it announces it."""
        self.members: dict[str, Member] = {}
        self.removed: dict[str, int] = {}
        """Members taken out of the ring, with the incarnation they had. They stay out when
        they restart (their connections are refused) until an operator admits them again."""
        self.address_holder: dict[Address, str] = {}
        """The member last seen alive at each address. A node that lost its disk comes back
        at its old address with a new identity; until the old identity is removed, requests
        meant for it would reach the newcomer (which holds none of its data) and count as
        its answers, so the old identity is treated as unusable instead."""
        self.handing_over = False
        """A leaving node that pushed its ranges: it takes no more writes (``Node.leave``)."""
        self.gaining: dict[str, ArcFilter] = {}
        """Removed members whose arcs this node gained and is still pulling, with those arcs:
        until it holds them it serves no reads of their keys (``node/gained.py``). Only
        those keys: refusing every read would take this node out of quorums it can serve,
        and while a replacement is still SYNCING that leaves keys with no readable quorum."""
        self.dead_since: dict[str, float] = {}
        self.unreachable_until: dict[str, float] = {}
        self.ring = Ring([node_id], DEFAULT_VNODES)

    def address_of(self, node_id: str) -> Address:
        if node_id == self.node_id:
            return self.address
        member = self.members.get(node_id)
        if member is None:
            raise InvalidRequest(f"unknown node {node_id}")
        return member.address

    def usable(self, node_id: str, now: float) -> bool:
        """May a write (or a read) be sent to ``node_id`` at ``now``?"""
        if node_id == self.node_id:
            return self.state is not NodeState.DEGRADED and not self.handing_over
        member = self.members.get(node_id)
        if member is None or member.liveness not in (Liveness.ALIVE, Liveness.SUSPECT):
            return False
        if member.state is NodeState.DEGRADED or node_id in self.removed:
            return False  # a removed node that restarted is alive but gets nothing
        if self.address_holder.get(member.address, node_id) != node_id:
            return False
        until = self.unreachable_until.get(node_id)
        return until is None or now >= until

    def gains(self, key: bytes) -> bool:
        """Whether ``key`` lies in arcs this node is still pulling after a removal."""
        return any(arcs(key) for arcs in self.gaining.values())

    def readable(self, node_id: str, now: float, key: bytes | None = None) -> bool:
        """Usable, and not still receiving its ranges (a SYNCING node may miss keys).

        ``key`` narrows a gaining node's refusal to the keys it gained; asked without a key
        (a scan plan, the reaper), a node that gains anything counts as unreadable."""
        if not self.usable(node_id, now):
            return False
        if node_id == self.node_id:
            if self.state is NodeState.SYNCING:
                return False
            return not self.gaining or (key is not None and not self.gains(key))
        member = self.members.get(node_id)
        return member is not None and member.state is not NodeState.SYNCING

    def live_addresses(self) -> list[tuple[str, Address]]:
        live = (Liveness.ALIVE, Liveness.SUSPECT)
        return [(m.node_id, m.address) for m in self.members.values() if m.liveness in live]

    def rebuild_ring(self) -> bool:
        """Rebuild the ring from the members that have not left or been removed; True when
        its member set changed. A dead member stays: transient failure does not move data."""
        nodes = {
            node_id
            for node_id, member in self.members.items()
            if member.liveness is not Liveness.LEFT and node_id not in self.removed
        }
        nodes.add(self.node_id)
        if nodes == self.ring.nodes:
            return False
        self.ring = Ring(nodes, DEFAULT_VNODES)
        return True

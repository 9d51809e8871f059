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
        self.accusers: dict[str, str] = {}
        """Who made each suspect or dead member so, as of the change ``members`` holds: an
        operator, or a checker, can tell a member's own verdict from one taken over by
        gossip."""
        self.removed: dict[str, int] = {}
        """Members taken out of the ring, with the incarnation they had. They stay out when
        they restart (their connections are refused) until an operator admits them again."""
        self.address_holder: dict[Address, str] = {}
        """The member last seen alive at each address. A node that lost its disk comes back
        at its old address with a new identity; until the old identity is removed, requests
        meant for it would reach the newcomer (which holds none of its data) and count as
        its answers, so the old identity is treated as unusable instead."""
        self.removed_notice = False
        """Another member said this node was removed (``admin._removed_here``): it stops."""
        self.handing_over = False
        """A leaving node that pushed its ranges: it takes no more writes (``Node.leave``)."""
        self.gaining: dict[str, ArcFilter] = {}
        """Removed members whose arcs this node gained and is still pulling, with those arcs:
        until it holds them it serves no reads of their keys (``node/gained.py``). Only
        those keys: refusing every read would take this node out of quorums it can serve,
        and while a replacement is still SYNCING that leaves keys with no readable quorum."""
        self.takeovers: dict[str, tuple[str, str]] = {}
        """Removed members whose place a `serve --replace` node took: removed id ->
        (replacement id, the id the ring derives its tokens from). The replacement holds
        the removed member's tokens, so it is in the ring (unusable until it is a member)
        from the moment of the removal, and no other node's ranges change."""
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
        if not self.holds_copies(node_id, now):
            return False
        return self.members[node_id].state is not NodeState.DEGRADED

    def holds_copies(self, node_id: str, now: float) -> bool:
        """May this node read ``node_id``'s stored copies (a handoff pull) at ``now``?

        As ``usable``, except that a DEGRADED member counts: its storage refuses writes, not
        reads, and after a removal it may hold the only remaining copy of a write the removed
        member acknowledged with it (index seed 80004: a node that gained the removed
        member's arcs skipped the degraded one, and a quorum query missed the write)."""
        if node_id == self.node_id:
            return True
        member = self.members.get(node_id)
        if member is None or not member.running or node_id in self.removed:
            return False  # a removed node that restarted is alive but gets nothing
        if self.address_holder.get(member.address, node_id) != node_id:
            return False
        until = self.unreachable_until.get(node_id)
        return until is None or now >= until

    def gains(self, key: bytes) -> bool:
        """Whether ``key`` lies in arcs this node is still pulling after a removal."""
        return any(arcs(key) for arcs in self.gaining.values())

    def readable(self, node_id: str, now: float, key: bytes | None = None) -> bool:
        """Usable and serving reads: a peer the reaper and anti-entropy may both read from
        and write to."""
        return self.usable(node_id, now) and self.serves_reads(node_id, now, key)

    def serves_reads(self, node_id: str, now: float, key: bytes | None = None) -> bool:
        """May a client's read (a key or a query's scan) be sent to ``node_id`` at ``now``?
        It must hold its copies and not be still receiving its ranges (a SYNCING node may
        miss keys). A DEGRADED member serves reads: its storage refuses writes, not reads,
        and a cluster whose disks all filled must stay readable, not go dark.

        ``key`` narrows a gaining node's refusal to the keys it gained; asked without a key
        (a scan plan, the reaper), a node that gains anything counts as unreadable."""
        if node_id == self.node_id:
            if self.state is NodeState.SYNCING or self.handing_over:
                return False
            return not self.gaining or (key is not None and not self.gains(key))
        if not self.holds_copies(node_id, now):
            return False
        member = self.members.get(node_id)
        return member is not None and member.state is not NodeState.SYNCING

    def live_addresses(self) -> list[tuple[str, Address]]:
        return [(m.node_id, m.address) for m in self.members.values() if m.running]

    def rebuild_ring(self) -> bool:
        """Rebuild the ring from the members that have not left or been removed; True when
        its member set changed. A dead member stays: transient failure does not move data."""
        nodes = {
            node_id
            for node_id, member in self.members.items()
            if member.liveness is not Liveness.LEFT and node_id not in self.removed
        }
        taken = self.token_sources()
        nodes |= {node_id for node_id in taken if self._placed(node_id)}
        nodes.add(self.node_id)
        sources = {node_id: source for node_id, source in taken.items() if node_id in nodes}
        # A member's own claim (signed by it) outranks what a relayed removal said.
        sources.update(
            (node_id, member.tokens_of)
            for node_id, member in self.members.items()
            if member.tokens_of and node_id in nodes
        )
        nodes -= self._given_way(nodes, sources)
        sources = {node_id: source for node_id, source in sources.items() if node_id in nodes}
        if nodes == self.ring.nodes and sources == self.ring.sources:
            return False
        self.ring = Ring(nodes, DEFAULT_VNODES, sources)
        return True

    def _given_way(self, nodes: set[str], sources: dict[str, str]) -> set[str]:
        """Nodes whose tokens a replacement took. The takeover's removal reaches the live
        members at once, but a member that missed it (or joined later) learns of the
        replacement only from its claim (``Member.tokens_of``): the claim wins over the
        member it replaced, so every ring that knows the replacement places it alike.
        Should several replacements claim one member's tokens (a replacement replaced),
        the running ones win."""
        claimants: dict[str, list[str]] = {}
        for node_id, source in sources.items():
            claimants.setdefault(source, []).append(node_id)
        gone: set[str] = set()
        for source, claiming in claimants.items():
            if source in nodes and source not in sources:
                gone.add(source)  # the original holder of the tokens
            running = [node_id for node_id in claiming if self._running(node_id)]
            if running and len(claiming) > 1:
                gone.update(node_id for node_id in claiming if node_id not in running)
        gone.discard(self.node_id)  # a node's own ring keeps it (ranges are asked of it)
        return gone

    def _running(self, node_id: str) -> bool:
        if node_id == self.node_id:
            return True
        member = self.members.get(node_id)
        return member is not None and member.running

    def token_sources(self) -> dict[str, str]:
        """Replacement id -> the id its tokens come from, for the takeovers in force."""
        return {
            new: source
            for old, (new, source) in self.takeovers.items()
            if old in self.removed and new not in self.removed
        }

    def _placed(self, node_id: str) -> bool:
        """A replacement stays in the ring unless it is known to have left."""
        member = self.members.get(node_id)
        return member is None or member.liveness is not Liveness.LEFT

    def source_of(self, node_id: str) -> str:
        """The id ``node_id``'s tokens come from, in the ring or (once removed) as they did."""
        if node_id in self.ring.nodes:
            return self.ring.token_source(node_id)
        member = self.members.get(node_id)
        if member is not None and member.tokens_of:
            return member.tokens_of
        return next((source for new, source in self.takeovers.values() if new == node_id), node_id)

    def replacing(self) -> str | None:
        """The member this node took the place of, if it is a replacement."""
        return next(
            (
                old
                for old, (new, _source) in self.takeovers.items()
                if new == self.node_id and old in self.removed
            ),
            None,
        )

    def remove(
        self,
        node_id: str,
        incarnation: int,
        replaced_by: str | None,
        source: str | None = None,
    ) -> None:
        """Take ``node_id`` out of the ring; ``replaced_by`` takes its tokens, those of
        ``source`` (by default the id ``node_id``'s own tokens come from). Call
        ``rebuild_ring`` next. A repeated removal keeps the first takeover."""
        if replaced_by is not None and replaced_by != node_id and node_id not in self.takeovers:
            taken = source if source is not None else self.source_of(node_id)
            self.takeovers[node_id] = (replaced_by, taken)
        self.removed[node_id] = incarnation

    def stand_in(self, node_id: str) -> str:
        """The node that now holds ``node_id``'s place: its replacement (and so on, for a
        replacement replaced in turn), or ``node_id`` itself."""
        seen = {node_id}
        while node_id in self.removed and node_id in self.takeovers:
            node_id = self.takeovers[node_id][0]
            if node_id in seen:
                break
            seen.add(node_id)
        return node_id

    def orphaned(self, node_id: str) -> bool:
        """Is nobody to come for what is kept for ``node_id``: it (or whoever took its place)
        was removed, or left? Only known departures count: a member this node merely has not
        heard of yet is not one."""
        holder = self.stand_in(node_id)
        member = self.members.get(holder)
        return holder in self.removed or (member is not None and member.liveness is Liveness.LEFT)

    def forget_successor(self, node_id: str) -> bool:
        """``node_id`` left: if it held a removed member's place, that takeover ends (the
        removal stays). True when something changed."""
        ended = [old for old, (new, _source) in self.takeovers.items() if new == node_id]
        for old in ended:
            del self.takeovers[old]
        return bool(ended)

    def forget_takeover_of(self, node_id: str) -> bool:
        """Another member says ``node_id``'s removal names no replacement (any longer): drop
        ours unless its replacement is running here. True when something changed."""
        taken = self.takeovers.get(node_id)
        if taken is None or self._running(taken[0]):
            return False
        del self.takeovers[node_id]
        return True

    def readmit(self, node_id: str) -> None:
        """Undo the removal of ``node_id``; a replacement it had keeps nothing of its place."""
        del self.removed[node_id]
        self.takeovers.pop(node_id, None)

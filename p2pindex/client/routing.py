"""Token-aware routing: which node a client sends each request to, and in what order to fail over.

Any node accepts any request and forwards it to a replica when it is not one, but that
costs an extra hop. A client that knows the member list rebuilds the same ring the nodes
use (tokens come from node ids) and sends a key's request straight to a live replica of
that key, the one of them that is fastest now (``core.replica_score``: measured latency
and requests outstanding), so a slow or stalled replica stops coordinating this client's
requests within about a second. Pure: time comes in as ``now`` so the failover order is
testable without sockets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from p2pindex.core.replica_score import ReplicaScores
from p2pindex.core.ring import Ring
from p2pindex.errors import ProtocolError
from p2pindex.types import Address, Liveness, consistency_from_wire, required_replies
from p2pindex.wire.messages import MembersReply, Message

DOWN_FOR = 2.0
"""Seconds an address that refused a connection, or answered ``unavailable``, is tried only
after every other one."""


@dataclass(frozen=True, slots=True)
class Member:
    node_id: str
    address: Address
    liveness: Liveness
    in_ring: bool
    """Whether the node places keys on this member (a removed or departed one it does not)."""
    tokens_of: str
    """The id its ring tokens come from: its own, or the member it replaced."""


def parse_members(reply: MembersReply) -> list[Member]:
    """Read the member documents; a malformed one means the node broke the protocol."""
    members = []
    for doc in reply.members:
        try:
            liveness = Liveness(doc["liveness"])
            members.append(
                Member(
                    str(doc["node_id"]),
                    Address.parse(str(doc["address"])),
                    liveness,
                    bool(doc.get("in_ring", liveness is not Liveness.LEFT)),
                    str(doc.get("tokens_of") or doc["node_id"]),
                )
            )
        except KeyError as exc:
            raise ProtocolError(f"the node's member list has an entry without {exc}") from None
        except (ValueError, TypeError):
            raise ProtocolError(
                f"the node's member list has an entry with a bad id, address or liveness "
                f"(node {str(doc.get('node_id'))[:64]!r})"
            ) from None
    return members


class Router:
    def __init__(self, seeds: list[Address]) -> None:
        self.seeds = list(seeds)
        self.n_replicas: int | None = None
        self._members: dict[str, Member] = {}
        self._ring: Ring | None = None
        self._ring_ids: frozenset[tuple[str, str]] = frozenset()
        self._ring_vnodes = 0
        self._down: dict[Address, float] = {}
        self._scores: ReplicaScores[str] = ReplicaScores()
        """Per member node id (a string hashes once; an address each time it is asked)."""
        self._id_of: dict[Address, str] = {}
        self._timed_levels: dict[object, bool] = {}

    def timed(self, message: Message) -> bool:
        """Whether the time ``message`` takes says how fast the node it goes to is: not for
        a request that waits for every replica, which takes as long wherever it goes (and,
        counted, would make the nodes that coordinate it look as slow as the slowest)."""
        return self.timed_level(getattr(message, "consistency", None))

    def timed_level(self, level: object) -> bool:
        """``timed`` for a request at ``level`` (None: one that has no level)."""
        n = self.n_replicas
        if level is None or n is None:
            return True
        known = self._timed_levels.get((level, n))
        if known is None:
            try:
                known = required_replies(consistency_from_wire(level), n) < n
            except ValueError:
                known = False
            if len(self._timed_levels) < 64:  # levels are few; a stray one is not kept
                self._timed_levels[(level, n)] = known
        return known

    def sent(self, address: Address, now: float) -> None:
        """A timed request went out to ``address`` (its end follows: ``ended``)."""
        self._scores.sent(self._id_of.get(address) or str(address), now)

    def ended(self, address: Address, elapsed: float, now: float) -> None:
        """A timed request to ``address`` ended after ``elapsed`` seconds, answered or not."""
        self._scores.answered(self._id_of.get(address) or str(address), elapsed, now)

    @property
    def members(self) -> list[Member]:
        return list(self._members.values())

    def update(self, reply: MembersReply) -> None:
        """Adopt a member list; the ring is rebuilt only when its member set changed."""
        members = parse_members(reply)
        if reply.n_replicas < 1:
            raise ProtocolError(f"member list claims N={reply.n_replicas}")
        ring_ids = frozenset((m.node_id, m.tokens_of) for m in members if m.in_ring)
        if ring_ids != self._ring_ids or reply.vnodes != self._ring_vnodes:
            try:
                self._ring = (
                    Ring(sorted(i for i, _ in ring_ids), reply.vnodes, dict(ring_ids))
                    if ring_ids
                    else None
                )
            except (ValueError, TypeError) as exc:
                raise ProtocolError(
                    f"cannot rebuild the ring from the member list: {exc}"
                ) from None
            self._ring_ids = ring_ids
            self._ring_vnodes = reply.vnodes
        self.n_replicas = reply.n_replicas
        self._members = {member.node_id: member for member in members}
        self._id_of = {member.address: member.node_id for member in members}

    def mark_down(self, address: Address, now: float) -> None:
        """Try ``address`` last for a while: it refused a connection, or it answered
        ``unavailable`` (a coordinator cut off from the other replicas answers that at once,
        so by its latency it would look like the best coordinator of all)."""
        self._down[address] = now + DOWN_FOR

    def mark_up(self, address: Address) -> None:
        self._down.pop(address, None)

    def replicas(self, key: bytes) -> tuple[str, ...]:
        """The key's preference list as far as this client knows it (empty before any)."""
        if self._ring is None or self.n_replicas is None:
            return ()
        return self._ring.preference_list(key, self.n_replicas)

    def _replicas_ranked(
        self, key: bytes, now: float, usable: Callable[[Address], bool]
    ) -> tuple[list[Address], list[Address]]:
        """The key's live replicas, best first, and the ones not worth trying now."""
        live: list[str] = []
        gone: list[Address] = []
        members = self._members
        for node_id in self.replicas(key):
            member = members.get(node_id)
            if member is None:
                continue
            if member.liveness in (Liveness.ALIVE, Liveness.SUSPECT) and usable(member.address):
                live.append(node_id)
            else:
                gone.append(member.address)
        return [members[node_id].address for node_id in self._scores.rank(live, now)], gone

    def candidates(self, key: bytes | None, now: float) -> Iterator[Address]:
        """Every address worth trying, best first, each once.

        Order: the key's live replicas (the fastest now first, see ``ReplicaScores``),
        then other live members (for no key, one due for a probe first), then the
        addresses the client was given, and last whatever recently failed or is believed
        dead (it may be back, and trying it late costs nothing when the rest works).
        """
        seen: set[Address] = set()
        later: list[Address] = []
        down = self._down
        members = self._members  # an update while a request fails over replaces the dict

        def usable(address: Address) -> bool:
            if not down:  # the usual case, and an address hashes slowly
                return True
            until = down.get(address)
            return until is None or until <= now

        if key is not None:
            ranked, gone = self._replicas_ranked(key, now, usable)
            # The first choice is yielded before the rest is worked out: most requests
            # need no other.
            for address in ranked:
                if address not in seen:
                    seen.add(address)
                    yield address
            later += [address for address in dict.fromkeys(gone) if address not in seen]
            seen.update(gone)
        alive: list[str] = []
        for member in members.values():
            if member.address in seen:
                continue
            seen.add(member.address)
            if member.liveness is Liveness.ALIVE and usable(member.address):
                alive.append(member.node_id)
            elif member.liveness is not Liveness.LEFT:
                later.append(member.address)
        # A request for no key (the member refresh) probes a replica avoided for being
        # slow, so it is measured again without a user's read waiting on it.
        for node_id in self._scores.rank(alive, now, probe=key is None):
            yield members[node_id].address
        for address in self.seeds:
            if address in seen:
                continue
            seen.add(address)
            if usable(address):
                yield address
            else:
                later.append(address)
        yield from later

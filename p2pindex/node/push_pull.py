"""The node's side of SWIM push-pull: the exchange over RPC, and the datagram windows it opens.

With security on, signed SWIM datagrams are judged by their sender's sequence once the
receiver keeps a window for it, and by the two clocks before that (``security.datagrams``).
A push-pull runs over an authenticated session, so it carries each side's sequence floor and
opens the other side's window there: members whose clocks are minutes apart still hear each
other. A datagram refused as stale starts such an exchange with its sender.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import trio

from p2pindex.core.swim import Member
from p2pindex.errors import InvalidRequest
from p2pindex.net.secure.manager import SecurityManager
from p2pindex.node.peers import PeerPool
from p2pindex.types import Address
from p2pindex.wire.messages import PushPull, PushPullReply

_MAX_REMEMBERED = 4096
"""Members whose last stale-triggered exchange is remembered (the table clears past it)."""

EXCHANGE_TIMEOUT = 5.0


class PushPullExchange:
    def __init__(
        self,
        peers: PeerPool,
        security: SecurityManager | None,
        members: Callable[[], Mapping[str, Member]],
        retry_after: float,
    ) -> None:
        self._peers = peers
        self._security = security
        self._members = members
        self._retry_after = retry_after
        self._next_allowed: dict[str, float] = {}
        self.start_push_pull: Callable[[Address, bool], None] | None = None
        """The membership driver's, once it exists: runs one exchange in the background."""
        if security is not None:
            security.sealer.on_stale = self._stale

    def floor(self) -> int | None:
        """What a push-pull tells its peer of this node's signed datagrams (security on)."""
        return None if self._security is None else self._security.sealer.sequence_floor()

    async def exchange(self, address: Address, payload: bytes, join: bool) -> bytes:
        """One push-pull with ``address``: this node's state out, the peer's back."""
        reply = await self._peers.request(
            address, PushPull(payload, join, self.floor()), EXCHANGE_TIMEOUT
        )
        if not isinstance(reply, PushPullReply):
            raise InvalidRequest(f"unexpected reply {type(reply).__name__} to a push-pull")
        if self._security is not None and reply.datagram_sequence is not None:
            sender = self._peers.node_of(address)  # whom the session authenticated
            if sender is not None:
                self._security.sealer.learn(sender, reply.datagram_sequence)
        return reply.state

    def _stale(self, sender: str) -> None:
        """A datagram from ``sender`` was refused because the clocks disagree: exchange
        with it (which opens both windows), at most once per ``retry_after`` seconds."""
        member = self._members().get(sender)
        if member is None or self.start_push_pull is None:
            return
        now = trio.current_time()
        if self._next_allowed.get(sender, -math.inf) > now:
            return
        if len(self._next_allowed) >= _MAX_REMEMBERED:
            self._next_allowed.clear()
        self._next_allowed[sender] = now + self._retry_after
        self.start_push_pull(member.address, False)

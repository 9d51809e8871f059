"""The coordinator's requests to replicas: sending them without a task per request, one
retry when a link breaks under one, counting failures, timing them (``rank`` orders a
request's replicas by what their requests took and how many are out, ``core.replica_score``),
and read repair.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import outcome
import trio

from p2pindex.core import versions
from p2pindex.core.quorum import ReadQuorum
from p2pindex.core.replica_score import ReplicaScores
from p2pindex.errors import ConnectionLost, P2PIndexError
from p2pindex.node.peers import PeerPool
from p2pindex.node.replica import IndexManager
from p2pindex.node.stats import StatisticsStore
from p2pindex.types import Address
from p2pindex.wire.messages import Message, ReplicaWrite

OnResult = Callable[[str, outcome.Outcome, Any], None]
"""``on_result(node, outcome, carried)``: a replica's answer, for what its message carried."""


class ReplicaCalls:
    def __init__(
        self,
        node_id: str,
        address_of: Callable[[str], Address],
        note_unreachable: Callable[[str], None],
        peers: PeerPool,
        index: IndexManager,
        stats: StatisticsStore,
        spawn: Callable[..., None],
        replica_timeout: float,
    ) -> None:
        self._node_id = node_id
        self._address_of = address_of
        self._note_unreachable = note_unreachable
        self._peers = peers
        self._index = index
        self._stats = stats
        self._spawn = spawn
        self._replica_timeout = replica_timeout
        self._scores: ReplicaScores[str] = ReplicaScores()

    def rank(self, nodes: list[str]) -> list[str]:
        """``nodes`` best first by their replies' latency and requests outstanding."""
        return self._scores.rank(nodes, trio.current_time())

    def send(
        self, node: str, message: Message, timeout: float, on_result: OnResult, carried: Any
    ) -> None:
        """Send one replica request; ``on_result(node, outcome, carried)`` follows.

        Over an open connection this costs no task; the first request to a peer connects
        in a task of its own. A connection that breaks under the request (a peer restarting
        its sessions, say) gets one retry on a fresh connection: replica reads and writes
        are idempotent, since a replica merges what it receives.
        """
        address = self._address_of(node)
        replica_timeout = min(timeout, self._replica_timeout)
        began = trio.current_time()
        self._scores.sent(node, began)
        deliver = _Delivery(
            self, node, address, message, replica_timeout, on_result, carried, began
        )
        if not self._peers.send_nowait(address, message, deliver, replica_timeout):
            self._spawn(self._send_connecting, address, message, replica_timeout, deliver)

    async def _send_connecting(
        self,
        address: Address,
        message: Message,
        timeout: float,
        deliver: Callable[[outcome.Outcome], None],
    ) -> None:
        try:
            reply = await self._peers.request(address, message, timeout)
        except (OSError, P2PIndexError) as exc:
            deliver(outcome.Error(exc))
        else:
            deliver(outcome.Value(reply))

    def note_failure(self, node: str, error: BaseException) -> None:
        """A refused connection is evidence the node is down: skip it until SWIM decides."""
        self._stats.incr(f"replica.errors.{type(error).__name__}")
        if isinstance(error, OSError):
            self._note_unreachable(node)

    def repair_if_stale(self, key: bytes, quorum: ReadQuorum) -> None:
        if quorum.merged is not None and quorum.stale_replicas():
            self._spawn(self._repair, key, quorum)

    async def _repair(self, key: bytes, quorum: ReadQuorum) -> None:
        """Read repair: send the merged version to every replica that answered with less."""
        merged = quorum.merged
        if merged is None:
            return
        for node in quorum.stale_replicas():
            self._stats.incr("repairs.read")
            try:
                if node == self._node_id:
                    await self._index.apply(key, merged)
                else:
                    await self._peers.request(
                        self._address_of(node),
                        ReplicaWrite(key, versions.encode_object(merged)),
                        self._replica_timeout,
                    )
            except (OSError, P2PIndexError):
                self._stats.incr("repairs.failed")


@dataclass(slots=True, eq=False)
class _Delivery:
    """Where the outcome of one replica request goes (see ``ReplicaCalls.send``).

    A class rather than a closure: the retry hands the callback to a new request, and a
    closure that names itself is a reference cycle, which made every replica request (and
    the writes and quorums it carries) garbage only the cyclic collector could free.
    """

    calls: ReplicaCalls
    node: str
    address: Address
    message: Message
    timeout: float
    on_result: OnResult
    carried: Any
    began: float
    retried: bool = False

    def __call__(self, result: outcome.Outcome) -> None:
        lost = isinstance(result, outcome.Error) and isinstance(result.error, ConnectionLost)
        if lost and not self.retried:
            self.retried = True
            calls = self.calls
            calls._stats.incr("replica.retries")
            calls._spawn(calls._send_connecting, self.address, self.message, self.timeout, self)
            return
        now = trio.current_time()
        self.calls._scores.answered(self.node, now - self.began, now)
        self.on_result(self.node, result, self.carried)


def unwrapped(result: outcome.Outcome) -> Message | OSError | P2PIndexError:
    """A replica's reply, or the failure that stood in for it (an outcome unwraps once)."""
    try:
        return result.unwrap()
    except (OSError, P2PIndexError) as exc:
        return exc

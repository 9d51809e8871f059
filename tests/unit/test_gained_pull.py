"""Pulling gained arcs after a removal reads a DEGRADED replica's copies too.

Index seed 80004: a write was acknowledged by n1 and n5; n5 was removed while n1's disk was
full (DEGRADED). The node that took n5's place pulled the arcs from every remaining old
replica it considered usable, which left n1 out, so it held nothing of the write, and a
quorum query read from it and the third replica (which had missed the write) claimed to be
complete without the key. A full disk refuses writes, not reads: n1's copy was there.
"""

from __future__ import annotations

import trio

from p2pindex.core.ring import Ring
from p2pindex.core.swim.state import Member
from p2pindex.node.cluster_view import ClusterView
from p2pindex.node.handoff import OwnershipHandoff
from p2pindex.node.stats import StatisticsStore
from p2pindex.storage.memory import MemoryStorage
from p2pindex.types import Address, Liveness, NodeState
from p2pindex.wire.messages import Message, RangeScan, RangeScanReply

ME, DEGRADED, GONE, DOWN = (c * 16 for c in "abcd")
ADDRESSES = {
    node: Address("127.0.0.1", 7000 + i) for i, node in enumerate((ME, DEGRADED, GONE, DOWN))
}


def view() -> ClusterView:
    subject = ClusterView(ME, ADDRESSES[ME])
    subject.ring = Ring([ME, DEGRADED, DOWN], 16)
    for node, liveness, state in (
        (DEGRADED, Liveness.ALIVE, NodeState.DEGRADED),
        (DOWN, Liveness.DEAD, NodeState.ACTIVE),
        (GONE, Liveness.ALIVE, NodeState.ACTIVE),
    ):
        subject.members[node] = Member(node, ADDRESSES[node], 1, liveness, state)
        subject.address_holder[ADDRESSES[node]] = node
    subject.removed[GONE] = 1
    return subject


def test_a_degraded_member_takes_no_writes_but_its_copies_can_be_read() -> None:
    subject = view()
    assert not subject.usable(DEGRADED, 0.0)
    assert subject.holds_copies(DEGRADED, 0.0)
    assert not subject.holds_copies(DOWN, 0.0)  # not running
    assert not subject.holds_copies(GONE, 0.0)  # removed, even though its process runs
    subject.unreachable_until[DEGRADED] = 5.0
    assert not subject.holds_copies(DEGRADED, 1.0)
    assert subject.holds_copies(DEGRADED, 5.0)


class NodeView:
    """The node's side of ``HandoffView`` over a ``ClusterView``, as ``Node`` provides it."""

    def __init__(self, cluster: ClusterView) -> None:
        self.node_id = cluster.node_id
        self.cluster = cluster

    @property
    def ring(self) -> Ring:
        return self.cluster.ring

    def usable(self, node_id: str) -> bool:
        return self.cluster.usable(node_id, trio.current_time())

    def holds_copies(self, node_id: str) -> bool:
        return self.cluster.holds_copies(node_id, trio.current_time())

    def address_of(self, node_id: str) -> Address:
        return self.cluster.address_of(node_id)


class Peers:
    """Every node answers a range scan with one record of its own."""

    def __init__(self) -> None:
        self.asked: list[Address] = []

    async def request(self, address: Address, message: Message, timeout: float) -> Message:
        assert isinstance(message, RangeScan)
        self.asked.append(address)
        holder = next(node for node, a in ADDRESSES.items() if a == address)
        return RangeScanReply([(b"held-by-" + holder[:1].encode(), b"record")], len(message.start))


async def test_pulling_gained_arcs_reads_the_degraded_replica() -> None:
    applied: list[tuple[bytes, bytes]] = []

    async def apply(items: list[tuple[bytes, bytes]]) -> None:
        applied.extend(items)

    peers = Peers()
    handoff = OwnershipHandoff(
        NodeView(view()),  # type: ignore[arg-type]
        MemoryStorage(),
        peers,  # type: ignore[arg-type]
        apply,
        StatisticsStore(),
        3,
    )
    with trio.fail_after(5):
        await handoff.pull_gained([(0, 1000, (ME, DEGRADED, DOWN))])
    assert peers.asked == [ADDRESSES[DEGRADED]]
    assert applied == [(b"held-by-b", b"record")]

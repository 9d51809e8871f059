"""A leave's patience runs out on a node taking over that refuses every push, not only on
one that is down.

Found by a helper: a node started again after it had been replaced was refused by every
member (they had removed it), yet gossip showed them alive, and patience was reset on
every failure while the target looked usable. Its SIGTERM leave retried for more than ten
minutes, past the minute the README promises.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from p2pindex.core.ring import Ring
from p2pindex.errors import LeaveAbandoned, PermissionDenied
from p2pindex.node.handoff import LEAVE_PATIENCE, OwnershipHandoff
from p2pindex.node.stats import StatisticsStore
from p2pindex.storage.memory import MemoryStorage
from p2pindex.types import Address
from p2pindex.wire.messages import Message, OkReply

ME = "e"


class View:
    node_id = ME
    ring = Ring(["a", "b", "c", "d", ME])

    def usable(self, node_id: str) -> bool:
        return True  # alive in gossip, every one of them

    def holds_copies(self, node_id: str) -> bool:
        return True

    def address_of(self, node_id: str) -> Address:
        return Address(node_id, 7000)


class Refusing:
    def __init__(self, refusing: set[str], until: float = float("inf")) -> None:
        self.refusing, self.until = refusing, until
        self.pushed = 0

    async def request(self, address: Address, message: Message, timeout: float) -> Message:
        if address.host in self.refusing and trio.current_time() < self.until:
            raise PermissionDenied(f"node {ME} was removed from cluster 'default'")
        self.pushed += 1
        return OkReply("ok")


async def leaver(peers: Refusing) -> OwnershipHandoff:
    storage = MemoryStorage()
    for i in range(200):
        await storage.put(b"k%d" % i, b"record")
    stats = StatisticsStore()
    return OwnershipHandoff(View(), storage, peers, None, stats, 3)  # type: ignore[arg-type]


async def test_a_node_taking_over_that_refuses_every_push_ends_the_leave_within_patience(
    autojump_clock: trio.testing.MockClock,
) -> None:
    subject = await leaver(Refusing({"a", "b", "c", "d"}))
    started = trio.current_time()
    with trio.fail_after(3 * LEAVE_PATIENCE):  # it retried for ever
        with pytest.raises(LeaveAbandoned, match="refused every push for 60s"):
            await subject.push_all()
    assert LEAVE_PATIENCE <= trio.current_time() - started < LEAVE_PATIENCE + 5


async def test_refusals_that_stop_within_patience_do_not_end_the_leave(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peers = Refusing({"a", "b", "c", "d"}, until=LEAVE_PATIENCE / 2)
    subject = await leaver(peers)
    await subject.push_all()
    assert peers.pushed > 0 and subject.progress.keys > 0

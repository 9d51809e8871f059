"""The per-target bound on hints: refused once full, counted, and lifted by delivery."""

from __future__ import annotations

import pytest
import trio

from p2pindex.errors import Overloaded
from p2pindex.node.hints import HintedHandoff
from p2pindex.node.stats import StatisticsStore
from p2pindex.storage.memory import MemoryStorage
from p2pindex.types import Address
from p2pindex.wire.messages import Message, OkReply, ReplicaWriteBatch

RECORD = b"r" * 36  # with a 4-byte key: 40 bytes per hint


class Reachable:
    def usable(self, node_id: str) -> bool:
        return True

    def address_of(self, node_id: str) -> Address:
        return Address("127.0.0.1", 9)


class AcceptingPeer:
    def __init__(self) -> None:
        self.delivered: list[bytes] = []

    async def request(self, address: Address, message: Message, timeout: float) -> Message:
        assert isinstance(message, ReplicaWriteBatch)
        self.delivered += [key for key, _record in message.items]
        return OkReply("ok")


def handoff(storage: MemoryStorage, peer: AcceptingPeer, stats: StatisticsStore) -> HintedHandoff:
    return HintedHandoff(
        Reachable(),
        storage,
        peer,
        stats,
        lambda: 1_000.0,
        max_bytes=100,  # type: ignore[arg-type]
    )


async def test_a_full_target_is_refused_counted_and_left_unchanged() -> None:
    storage, stats = MemoryStorage(), StatisticsStore()
    hints = handoff(storage, AcceptingPeer(), stats)
    await hints.keep("n1", b"key1", RECORD)
    await hints.keep("n1", b"key2", RECORD)
    with pytest.raises(Overloaded, match="hint store for n1 is full \\(80 bytes"):
        await hints.keep("n1", b"key3", RECORD)
    await hints.keep("n2", b"key3", RECORD)  # another target has its own bound
    assert stats.get("hints.refused_full") == 1
    assert {(b.target, b.count, b.bytes) for b in storage.hint_backlog()} == {
        ("n1", 2, 80),
        ("n2", 1, 40),
    }


async def test_the_bound_counts_hints_already_on_disk() -> None:
    storage, stats = MemoryStorage(), StatisticsStore()
    await storage.add_hint("n1", b"old1", RECORD, 1.0)
    await storage.add_hint("n1", b"old2", RECORD, 1.0)
    hints = handoff(storage, AcceptingPeer(), stats)  # a restarted node with a backlog
    with pytest.raises(Overloaded):
        await hints.keep("n1", b"key1", RECORD)


async def test_delivery_makes_room_again(autojump_clock: trio.testing.MockClock) -> None:
    storage, stats, peer = MemoryStorage(), StatisticsStore(), AcceptingPeer()
    hints = handoff(storage, peer, stats)
    await hints.keep("n1", b"key1", RECORD)
    await hints.keep("n1", b"key2", RECORD)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hints.run)
        await trio.sleep(1.5)
        assert sorted(peer.delivered) == [b"key1", b"key2"]
        assert storage.hint_backlog() == []
        await hints.keep("n1", b"key3", RECORD)
        nursery.cancel_scope.cancel()
    assert stats.get("hints.refused_full") == 0


async def test_hints_larger_together_than_a_frame_are_delivered_in_frame_sized_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import p2pindex.node.hints as hints_module

    monkeypatch.setattr(hints_module, "BATCH_BYTES", 100)

    class SizedPeer(AcceptingPeer):
        def __init__(self) -> None:
            super().__init__()
            self.sizes: list[int] = []

        async def request(self, address: Address, message: Message, timeout: float) -> Message:
            assert isinstance(message, ReplicaWriteBatch)
            self.sizes.append(sum(len(k) + len(r) for k, r in message.items))
            return await super().request(address, message, timeout)

    storage, stats, peer = MemoryStorage(), StatisticsStore(), SizedPeer()
    hints = HintedHandoff(Reachable(), storage, peer, stats, lambda: 1_000.0)  # type: ignore[arg-type]
    for i in range(7):
        await hints.keep("n1", f"key{i}".encode(), RECORD)
    assert await hints.deliver("n1") == 7
    assert sorted(peer.delivered) == [f"key{i}".encode() for i in range(7)]
    assert peer.sizes == [80, 80, 80, 40]


async def test_hints_delivered_are_not_summed_up_later_as_kept_for_a_member_down(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by a helper: 'kept 918 hint(s) ... for member X, which is down; 0 bytes held'
    was logged ten seconds after X came back and all of them were delivered."""
    storage, stats, peer = MemoryStorage(), StatisticsStore(), AcceptingPeer()
    hints = HintedHandoff(Reachable(), storage, peer, stats, lambda: 1_000.0)  # type: ignore[arg-type]
    for i in range(5):
        await hints.keep("n1", f"key{i}".encode(), RECORD)
    import p2pindex.node.hints as hints_module

    caplog.set_level("INFO")
    caplog.clear()  # the first hint of the outage is news, logged as it is kept
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hints.run)
        await trio.sleep(2 * hints_module.SUMMARY_INTERVAL)
        nursery.cancel_scope.cancel()
    assert sorted(peer.delivered) == [f"key{i}".encode() for i in range(5)]
    assert not [r for r in caplog.records if "which is down" in r.getMessage()]

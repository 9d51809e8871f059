"""Hinted writes nobody will come for: a leaving fallback's, and those kept for a member that
left or was removed with nobody in its place, go to their keys' current replicas.

Supersede seed 272: a leaving node took writes at ONE as a fallback (the key's replicas were
paused, out of disk space and failing fsync), then left; its range push skipped the key (it
was no replica of it) and its hints went with it, so two acknowledged writes were lost.
"""

from __future__ import annotations

import pytest
import trio

from p2pindex.core.ring import Ring
from p2pindex.core.swim import Member
from p2pindex.errors import ConnectionLost, LeaveAbandoned
from p2pindex.node.cluster_view import ClusterView
from p2pindex.node.hints import HintedHandoff
from p2pindex.node.stats import StatisticsStore
from p2pindex.storage.memory import MemoryStorage
from p2pindex.types import Address, Liveness, NodeState
from p2pindex.wire.messages import Message, OkReply, ReplicaWriteBatch

NODES = ["a", "b", "c", "d", "e"]
ME = "e"


class View:
    """The leaving fallback ``e`` in a five-node ring; ``down`` are unusable."""

    def __init__(self, down: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.node_id = ME
        self.ring = Ring(NODES)
        self.down = set(down)

    def usable(self, node_id: str) -> bool:
        return node_id not in self.down

    def address_of(self, node_id: str) -> Address:
        return Address(node_id, 7000)


class Peers:
    """Takes every batch except those to ``refusing``; records who got which keys."""

    def __init__(self, refusing: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.got: dict[str, list[bytes]] = {}
        self.refusing = set(refusing)

    async def request(self, address: Address, message: Message, timeout: float) -> Message:
        assert isinstance(message, ReplicaWriteBatch)
        if address.host in self.refusing:
            raise ConnectionLost(f"{address.host} is unreachable")
        self.got.setdefault(address.host, []).extend(key for key, _ in message.items)
        return OkReply("ok")


class Orphans:
    def __init__(self, gone: set[str]) -> None:
        self.gone = gone

    def stand_in(self, node_id: str) -> str:
        return node_id

    def orphaned(self, node_id: str) -> bool:
        return node_id in self.gone


def stray_keys(ring: Ring, count: int) -> list[bytes]:
    """Keys ``e`` does not replicate (it holds them only as a fallback)."""
    keys = (b"stray-%d" % i for i in range(10_000))
    return [k for k in keys if ME not in ring.preference_list(k, 3)][:count]


def hinted(view: View, peers: Peers, gone: set[str] = frozenset()) -> HintedHandoff:  # type: ignore[assignment]
    return HintedHandoff(
        view,  # type: ignore[arg-type]
        MemoryStorage(),
        peers,  # type: ignore[arg-type]
        StatisticsStore(),
        lambda: 1_000.0,
        departures=Orphans(set(gone)),
        n_replicas=3,
    )


async def keep_for_first_replica(hints: HintedHandoff, view: View, keys: list[bytes]) -> None:
    for key in keys:
        await hints.keep(view.ring.preference_list(key, 3)[0], key, b"record-" + key)


async def test_a_leave_gives_each_hinted_write_to_every_usable_replica_of_its_key() -> None:
    view, peers = View(down={"a"}), Peers()
    hints = hinted(view, peers)
    keys = stray_keys(view.ring, 40)
    await keep_for_first_replica(hints, view, keys)
    after = view.ring.without_node(ME)
    assert await hints.hand_over(after, patience=60.0) == 40
    for key in keys:
        wanted = {n for n in after.preference_list(key, 3) if n != "a"}
        assert wanted and {n for n, got in peers.got.items() if key in got} == wanted
    assert "a" not in peers.got
    assert hints._storage.hint_backlog() == []


async def test_a_replica_that_refuses_leaves_the_write_to_the_others() -> None:
    view, peers = View(), Peers(refusing={"b"})
    hints = hinted(view, peers)
    keys = [k for k in stray_keys(view.ring, 400) if "b" in view.ring.preference_list(k, 3)]
    await keep_for_first_replica(hints, view, keys)
    assert await hints.hand_over(view.ring.without_node(ME), patience=60.0) == len(keys)
    assert all(any(key in got for got in peers.got.values()) for key in keys)


async def test_a_leave_whose_hinted_writes_reach_no_replica_is_abandoned_keeping_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    view, peers = View(down={"a", "b", "c", "d"}), Peers()
    hints = hinted(view, peers)
    await keep_for_first_replica(hints, view, stray_keys(view.ring, 3))
    started = trio.current_time()
    with pytest.raises(LeaveAbandoned, match="3 write\\(s\\) this node keeps hints for"):
        await hints.hand_over(view.ring.without_node(ME), patience=60.0)
    assert trio.current_time() - started >= 60.0
    assert sum(b.count for b in hints._storage.hint_backlog()) == 3
    assert peers.got == {}


async def test_a_leave_waits_for_a_replica_that_comes_back_within_its_patience(
    autojump_clock: trio.testing.MockClock,
) -> None:
    view, peers = View(down={"a", "b", "c", "d"}), Peers()
    hints = hinted(view, peers)
    keys = stray_keys(view.ring, 5)
    await keep_for_first_replica(hints, view, keys)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hints.hand_over, view.ring.without_node(ME), 60.0)
        await trio.sleep(30)
        assert peers.got == {}
        view.down.clear()
    assert hints._storage.hint_backlog() == []


async def test_hints_for_a_member_nobody_will_come_for_go_to_the_keys_replicas(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``a`` left (or was removed with nobody in its place): its hints would wait for it
    until they expired, holding writes that may be on this node alone. ``b``'s hints wait
    for ``b``, which is only down."""
    view = View(down={"a", "b"})
    view.ring = view.ring.without_node("a")
    peers = Peers()
    hints = hinted(view, peers, gone={"a"})
    keys = stray_keys(view.ring, 30)
    for key in keys:
        await hints.keep("a", key, b"record")
    await hints.keep("b", b"waits-for-b", b"record")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hints.run)
        await trio.sleep(2.5)
        nursery.cancel_scope.cancel()
    assert [(b.target, b.count) for b in hints._storage.hint_backlog()] == [("b", 1)]
    for key in keys:
        replicas = set(view.ring.preference_list(key, 3)) - {"b", ME}
        assert {n for n, got in peers.got.items() if key in got} == replicas


def test_a_member_is_orphaned_once_it_left_or_was_removed_with_nobody_in_its_place() -> None:
    view = ClusterView("me", Address("me", 1))

    def member(node_id: str, liveness: Liveness) -> Member:
        return Member(node_id, Address(node_id, 1), 1, liveness, NodeState.ACTIVE)

    view.members = {
        "up": member("up", Liveness.ALIVE),
        "dead": member("dead", Liveness.DEAD),
        "left": member("left", Liveness.LEFT),
        "new": member("new", Liveness.ALIVE),
    }
    view.removed = {"gone": 1, "replaced": 1, "twice": 1, "new-gone": 1}
    view.takeovers = {"replaced": ("new", "replaced"), "twice": ("new-gone", "twice")}
    assert not view.orphaned("up")
    assert not view.orphaned("dead")  # only down: it may come back for its hints
    assert not view.orphaned("unheard-of")
    assert view.orphaned("left")
    assert view.orphaned("gone")
    assert not view.orphaned("replaced")  # its replacement takes them
    assert view.orphaned("twice")  # its replacement was removed in turn

"""Which peers anti-entropy visits: peers known to be behind first (a few a tick), then the
rotation's next one every tick, so a peer that keeps missing writes cannot stall the
rotation."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from p2pindex.core.ring import Ring
from p2pindex.errors import Timeout
from p2pindex.node.antientropy import BEHIND_ATTEMPTS, BEHIND_PER_TICK, AntiEntropy
from p2pindex.node.stats import StatisticsStore
from p2pindex.storage.memory import MemoryStorage
from p2pindex.types import NodeState

ME = "n0"
PEERS = [f"n{i}" for i in range(1, 9)]
INTERVAL = 5.0


class View:
    node_id = ME
    state = NodeState.ACTIVE

    def __init__(self) -> None:
        self.ring = Ring(frozenset({ME, *PEERS}))
        self.unreadable: set[str] = set()

    def readable(self, node_id: str) -> bool:
        return node_id not in self.unreadable


class Recorded(AntiEntropy):
    """Records the peer of every round instead of talking to it; ``failing`` peers time out."""

    def __init__(self, view: View) -> None:
        storage = MemoryStorage()
        super().__init__(
            view,  # type: ignore[arg-type]
            storage,
            None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            StatisticsStore(),
            random.Random(3),
            read_records=lambda keys: [storage.get(key) for key in keys],
            n_replicas=3,
            interval=INTERVAL,
            max_frame=1 << 20,
        )
        self.visited: list[str] = []
        self.failing: set[str] = set()

    async def round(self, peer: str, arc: tuple[int, int] | None = None) -> tuple[int, int]:
        self.visited.append(peer)
        if peer in self.failing:
            raise Timeout(f"{peer} did not answer")
        return (0, 0)


async def rounds(ae: Recorded, count: int) -> list[str]:
    """Run ``ae`` until it has visited ``count`` more peers; returns those peers."""
    start = len(ae.visited)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ae.run)
        while len(ae.visited) < start + count:
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    return ae.visited[start:]


async def test_a_peer_that_missed_a_write_is_visited_next(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ae = Recorded(View())
    late = (await rounds(ae, 2))[-1]  # just visited: the rotation would not return for 7 rounds
    ae.mark_behind(late)
    assert (await rounds(ae, 1))[:1] == [late]


async def test_behind_peers_take_every_other_round_and_the_rotation_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ae = Recorded(View())
    ae.failing.add("n1")
    seen: list[str] = []
    for _ in range(len(PEERS)):
        ae.mark_behind("n1")  # it misses writes all the time
        seen += await rounds(ae, 2)
    assert seen[0::2] == ["n1"] * len(PEERS)
    assert set(seen[1::2]) >= set(PEERS) - {"n1"}  # the rotation came round all the same


async def test_several_behind_peers_are_visited_in_one_tick_beside_the_rotation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ae = Recorded(View())
    await rounds(ae, 1)  # the first tick, so the next one starts clean
    behind = PEERS[: BEHIND_PER_TICK + 2]
    for peer in behind:
        ae.mark_behind(peer)
    started = trio.current_time()
    first_tick = await rounds(ae, BEHIND_PER_TICK + 1)
    assert first_tick[:BEHIND_PER_TICK] == behind[:BEHIND_PER_TICK]  # oldest marks first
    assert len(first_tick) == BEHIND_PER_TICK + 1  # and the rotation's peer, same tick
    assert trio.current_time() - started <= 1.5 * INTERVAL
    second_tick = await rounds(ae, 3)
    assert second_tick[:2] == behind[BEHIND_PER_TICK:]  # the rest wait one tick, no more
    assert ae._behind == {}


async def test_a_failed_round_is_retried_a_bounded_number_of_times(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ae = Recorded(View())
    ae.failing.add("n5")
    ae.mark_behind("n5")
    seen = await rounds(ae, 4 * BEHIND_ATTEMPTS)
    assert seen.count("n5") <= BEHIND_ATTEMPTS + 1  # its tries, and once in the rotation
    assert seen[0 : 2 * BEHIND_ATTEMPTS : 2] == ["n5"] * BEHIND_ATTEMPTS


@pytest.mark.parametrize("gone", ["unreadable", "left"])
async def test_a_behind_peer_waits_while_it_cannot_be_read_and_is_forgotten_once_gone(
    autojump_clock: trio.testing.MockClock, gone: str
) -> None:
    view = View()
    ae = Recorded(view)
    if gone == "unreadable":
        view.unreadable.add("n4")
    else:
        view.ring = Ring(frozenset({ME, *PEERS}) - {"n4"})
    ae.mark_behind("n4")
    assert "n4" not in await rounds(ae, 3)
    view.unreadable.clear()
    view.ring = Ring(frozenset({ME, *PEERS}))
    after = await rounds(ae, 2)
    if gone == "unreadable":
        assert "n4" in after
    else:
        assert ae._behind == {}  # forgotten, not waiting to come back


async def test_catch_up_compares_with_every_readable_member_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    view = View()
    view.unreadable.add("n7")
    ae = Recorded(view)
    ae.failing.add("n2")
    await ae.catch_up()
    assert sorted(ae.visited) == sorted(set(PEERS) - {"n7"})
    assert (await rounds(ae, 1))[:1] == ["n2"]  # a member it could not reach is tried first

"""WaitingRoom: past its limit the connection that has waited longest gives way."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from p2pindex.net.waiting_room import WaitingRoom


async def _wait_in(room: WaitingRoom, name: str, log: list[str], done: trio.Event) -> None:
    with room.wait() as scope:
        await done.wait()
    log.append(f"{name} {'evicted' if scope.cancelled_caught else 'done'}")


async def test_one_more_than_the_limit_evicts_the_one_waiting_longest() -> None:
    room = WaitingRoom(2)
    log: list[str] = []
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        for name in ("a", "b", "c", "d"):
            nursery.start_soon(_wait_in, room, name, log, done)
            await trio.testing.wait_all_tasks_blocked()
        assert log == ["a evicted", "b evicted"]
        assert len(room) == 2
        assert room.evicted == 2
        done.set()
    assert sorted(log[2:]) == ["c done", "d done"]
    assert len(room) == 0


async def test_a_connection_that_stopped_waiting_is_not_evicted_and_frees_its_place() -> None:
    room = WaitingRoom(1)
    with room.wait() as first:
        pass  # its handshake completed at once
    assert not first.cancelled_caught
    assert len(room) == 0
    log: list[str] = []
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_wait_in, room, "next", log, done)
        await trio.testing.wait_all_tasks_blocked()
        assert log == []  # the room had space again: nobody was evicted
        done.set()
    assert log == ["next done"]
    assert room.evicted == 0


async def test_without_a_limit_the_owner_evicts_the_oldest_on_demand() -> None:
    room = WaitingRoom()
    assert room.evict_oldest() is False  # nobody waits: the caller must refuse instead
    log: list[str] = []
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        for name in ("old", "new"):
            nursery.start_soon(_wait_in, room, name, log, done)
            await trio.testing.wait_all_tasks_blocked()
        assert room.evict_oldest() is True
        await trio.testing.wait_all_tasks_blocked()
        assert log == ["old evicted"]
        done.set()
    assert log == ["old evicted", "new done"]


def test_a_room_for_nobody_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        WaitingRoom(0)

"""The channel pool connects once per address however many tasks ask at once."""

from __future__ import annotations

from typing import Any, cast

import pytest
import trio

from p2pindex.net.channel import RpcChannel
from p2pindex.net.pool import ChannelPool
from p2pindex.types import Address

PEER = Address("10.0.0.2", 7000)


class FakeChannel:
    def __init__(self) -> None:
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True


class Connector:
    def __init__(self, failures: int = 0) -> None:
        self.attempts = 0
        self.failures = failures

    async def __call__(self, address: Address) -> RpcChannel:
        self.attempts += 1
        await trio.sleep(1.0)
        if self.attempts <= self.failures:
            raise OSError(f"{address} refused")
        return cast(RpcChannel, FakeChannel())


async def ask_many(pool: ChannelPool, count: int) -> list[Any]:
    results: list[Any] = []

    async def ask() -> None:
        try:
            results.append(await pool.channel(PEER))
        except OSError as exc:
            results.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(ask)
    return results


async def test_concurrent_askers_share_one_connection(autojump_clock: trio.abc.Clock) -> None:
    connect = Connector()
    pool = ChannelPool(connect, waiters_retry=False)
    results = await ask_many(pool, 5)
    assert connect.attempts == 1
    assert len({id(channel) for channel in results}) == 1
    assert pool.open_channel(PEER) is results[0]


async def test_a_failed_attempt_fails_its_waiters_when_they_do_not_retry(
    autojump_clock: trio.abc.Clock,
) -> None:
    connect = Connector(failures=1)
    results = await ask_many(ChannelPool(connect, waiters_retry=False), 3)
    assert connect.attempts == 1
    assert all(isinstance(result, OSError) for result in results)


async def test_waiters_that_retry_connect_again_after_a_failure(
    autojump_clock: trio.abc.Clock,
) -> None:
    connect = Connector(failures=1)
    results = await ask_many(ChannelPool(connect, waiters_retry=True), 3)
    assert connect.attempts == 2
    assert sum(isinstance(result, OSError) for result in results) == 1
    assert len({id(r) for r in results if not isinstance(r, OSError)}) == 1


async def test_a_closed_channel_is_replaced_and_aclose_closes_all(
    autojump_clock: trio.abc.Clock,
) -> None:
    connect = Connector()
    pool = ChannelPool(connect, waiters_retry=False)
    first = await pool.channel(PEER)
    await first.aclose()
    assert pool.open_channel(PEER) is None
    second = await pool.channel(PEER)
    assert second is not first and connect.attempts == 2
    await pool.aclose()
    assert second.closed
    with pytest.raises(OSError):
        connect.failures = 10
        await pool.channel(PEER)

"""A short call stays short: with every node stalled, a call of timeout T gives up within
T plus a margin of at most half of T (a flat quarter second made a 0.1 s call take up to
0.46 s with the channel's expiry pass)."""

from __future__ import annotations

import pytest
import trio

from p2pindex.client import connect
from p2pindex.errors import Timeout
from tests.support.cluster import running_cluster


@pytest.mark.parametrize("timeout", [0.05, 0.1, 2.0])
async def test_a_call_to_stalled_nodes_gives_up_soon_after_its_timeout(
    autojump_clock, timeout: float
) -> None:
    async with running_cluster(3) as cluster:
        addresses = [str(running.address) for running in cluster.nodes]
        async with connect(addresses, transport=cluster.client_transport(), timeout=2.0) as db:
            await db.put("k", "v", consistency="all")
            for _ in range(3):
                await db.get("k", consistency="one")  # connections open to the replicas
            for running in cluster.nodes:
                cluster.network.pause(running.address.host)
            started = trio.current_time()
            with pytest.raises(Timeout):
                await db.get("k", consistency="one", timeout=timeout)
            took = trio.current_time() - started
            for running in cluster.nodes:
                cluster.network.resume(running.address.host)
            await trio.sleep(0)
    sweep = 0.1  # a channel fails expired requests in passes at most this far apart
    assert took >= timeout
    assert took <= timeout + min(0.25, timeout / 2) + 0.05 * timeout + sweep, took

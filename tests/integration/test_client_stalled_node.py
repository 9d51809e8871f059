"""A stalled node (SIGSTOP, a starved process: it holds its connections and accepts new
ones, but answers nothing) stops getting a client's keys, batched or single, on the
simulated network: the client ranks replicas by the time their requests take, and a
connection whose handshake does not come within half the time left is given up for the next
replica (nothing was sent on it)."""

from __future__ import annotations

import pytest
import trio

from p2pindex.client import connect
from p2pindex.sim.network import SimTransport
from p2pindex.types import Address
from tests.support.cluster import running_cluster

KEYS = [f"k{i}" for i in range(30)]


class StallingHandshakes:
    """A client transport whose connections to ``stalled`` never complete their handshake,
    as with a secure node that was stopped: the kernel accepts, nothing answers."""

    def __init__(self, transport: SimTransport, stalled: Address) -> None:
        self.transport = transport
        self.stalled = stalled
        self.attempts = 0

    async def connect(self, address: Address) -> trio.abc.Stream:
        if address == self.stalled:
            self.attempts += 1
            await trio.sleep_forever()
        return await self.transport.connect(address)


async def test_batched_reads_stop_going_to_a_paused_replica_after_one_call(autojump_clock):
    async with running_cluster(3) as cluster:
        addresses = [str(running.address) for running in cluster.nodes]
        async with connect(addresses, transport=cluster.client_transport(), timeout=1.0) as db:
            written = await db.put_many([(key, "v") for key in KEYS], consistency="all")
            assert all(outcome.ok for outcome in written)
            warm = await db.get_many(KEYS, consistency="one")  # every connection is open
            assert all(outcome.ok for outcome in warm)
            cluster.network.pause(cluster.nodes[2].address.host)
            first = await db.get_many(KEYS, consistency="one")
            assert not all(outcome.ok for outcome in first), "no key went to it: proves nothing"
            began = trio.current_time()
            for _ in range(3):  # within SWIM's suspicion: only the ranking moves the keys
                again = await db.get_many(KEYS, consistency="one")
                assert all(outcome.ok for outcome in again), [o.error for o in again if o.error]
            assert trio.current_time() - began < 1.0


@pytest.mark.parametrize("batched", [False, True])
async def test_a_replica_that_never_completes_a_handshake_costs_half_a_call(
    autojump_clock, batched: bool
):
    """The client has no connection to the paused node yet: connecting to it stalls. With a
    timeout shorter than the handshake's own (2 s), the whole call used to go on it."""
    async with running_cluster(3) as cluster:
        seed = str(cluster.nodes[0].address)
        async with connect([seed], transport=cluster.client_transport()) as writer:
            await writer.put_many([(key, "v") for key in KEYS], consistency="all")
        stalling = StallingHandshakes(cluster.client_transport(), cluster.nodes[2].address)
        async with connect([seed], transport=stalling, timeout=1.0) as db:  # type: ignore[arg-type]
            if batched:
                read = await db.get_many(KEYS, consistency="one")
                assert all(outcome.ok for outcome in read), [o.error for o in read if o.error]
            else:
                for key in KEYS:
                    assert (await db.get(key, consistency="one")).values == [b"v"]
        assert stalling.attempts, "the client never went to the stalled node: proves nothing"

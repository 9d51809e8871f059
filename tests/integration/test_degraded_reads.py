"""A cluster whose disks filled stays readable: DEGRADED replicas (storage refusing writes)
serve key reads and query scans, while writes are refused definitely."""

from __future__ import annotations

import pytest
import trio

import p2pindex
from p2pindex.errors import StorageFailure, Unavailable
from p2pindex.types import NodeState
from tests.support.cluster import running_cluster


async def test_two_full_disks_of_three_leave_keys_and_queries_readable(autojump_clock) -> None:
    async with running_cluster(3) as cluster:
        addresses = [str(n.address) for n in cluster.nodes]
        transport = cluster.client_transport()
        async with p2pindex.connect(addresses, transport=transport, timeout=3.0) as db:
            await db.put("k", b"v", consistency="all", index={"n": [1]})
            for full in cluster.nodes[1:]:
                full.storage.fail_writes = "disk full"
                full.node.storage_failed(StorageFailure("disk full"))
            first = cluster.nodes[0].node
            with trio.fail_after(30):  # the state travels by gossip
                while any(
                    first.view.members[full.node.node_id].state is not NodeState.DEGRADED
                    for full in cluster.nodes[1:]
                ):
                    await trio.sleep(0.1)
            got = await db.get("k", consistency="quorum", strict=True)
            assert got.values == [b"v"]
            got = await db.get("k", consistency="all")
            assert got.values == [b"v"]
            page = await db.query("n", 1, consistency="quorum")
            assert page.keys == [b"k"] and page.complete
            with pytest.raises(Unavailable):  # writes need usable replicas: refused up front
                await db.put("k2", b"v", consistency="quorum", strict=True)

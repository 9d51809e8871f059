"""A full hint store is a spent budget, not a failed disk: the node refuses the hinted
write and serves on. Found by a helper: with the budget spent (0 bytes here, a long outage
with the default 256 MiB), every survivor of a crash went DEGRADED and 19 of 20 writes
failed."""

from __future__ import annotations

import trio

from p2pindex.client import connect
from p2pindex.errors import IndeterminateError
from p2pindex.types import NodeState
from tests.support.cluster import running_cluster


async def test_a_spent_hint_budget_refuses_hints_and_the_nodes_serve_on(autojump_clock):
    async with running_cluster(4, node_options={"hint_max_bytes_per_target": 0}) as cluster:
        victim = cluster.nodes[3]
        survivors = cluster.nodes[:3]
        cluster.crash(victim)
        await cluster.wait_dead(victim.node.node_id, 60, among=survivors)
        addresses = [str(running.address) for running in survivors]
        written: list[str] = []
        async with connect(addresses, transport=cluster.client_transport(), timeout=2.0) as db:
            for i in range(40):
                try:
                    await db.put(f"k{i}", "v", consistency="quorum")
                    written.append(f"k{i}")
                except IndeterminateError:
                    pass  # only a coordinator that stood in itself, with no hint kept
            await trio.sleep(1)
            refused = sum(r.node.stats.get("hints.refused_full") for r in survivors)
            assert refused > 0, "no write needed a hint: the test proves nothing"
            assert all(r.node.state is NodeState.ACTIVE for r in survivors)
            assert len(written) >= 30, written
            for key in written:  # acknowledged at QUORUM by the primaries: readable there
                assert (await db.get(key, consistency="quorum")).values == [b"v"]

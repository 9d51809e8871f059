"""A coordinator cut off from the other replicas answers `unavailable`; the client asks one
more node, on the simulated network (the client reaches every node, the nodes do not reach
each other across the cut)."""

from __future__ import annotations

import trio

from p2pindex.client import connect
from p2pindex.client.routing import DOWN_FOR
from p2pindex.errors import Unavailable
from p2pindex.types import Liveness
from tests.support.cluster import Cluster, RunningNode, running_cluster


def refused(running: RunningNode) -> int:
    """Puts ``running`` answered with `unavailable` so far (single and batched)."""
    return running.node.stats.get("requests.errors.put.unavailable")


async def cut(cluster: Cluster, links: list[tuple[str, str]]) -> None:
    """Block ``links`` both ways and wait until every node holds dead whom it cannot reach
    (while a member is only suspect, a write may still be sent to it and time out)."""
    links = [*links, *((b, a) for a, b in links)]
    cluster.network.block("cut", links)
    host_of = {running.node.node_id: running.address.host for running in cluster.nodes}
    with trio.fail_after(60):
        while any(
            m.liveness is not Liveness.DEAD
            for running in cluster.nodes
            for m in running.node.members()
            if (running.address.host, host_of.get(m.node_id)) in links
        ):
            await trio.sleep(0.5)


async def cut_everyone(cluster: Cluster) -> None:
    """Every node cut off from every other (see ``cut``)."""
    hosts = [running.address.host for running in cluster.nodes]
    await cut(cluster, [(a, b) for a in hosts for b in hosts if a < b])


async def test_a_cut_off_coordinator_does_not_fail_a_quorum_request(autojump_clock) -> None:
    """The cut-off node still answers the client, quickly and with `unavailable` (it sees
    one of three replicas); every QUORUM put, get and put_many still succeeds through the
    other two. The cut-off node is asked, and then tried last for ``DOWN_FOR`` seconds:
    by its latency alone it would look the best coordinator and draw most requests."""
    async with running_cluster(3) as cluster:
        addresses = [str(running.address) for running in cluster.nodes]
        async with connect(addresses, transport=cluster.client_transport(), timeout=3.0) as db:
            await db.put("warm", "up", consistency="all")
            lonely = cluster.nodes[0].address.host
            await cut(cluster, [(lonely, r.address.host) for r in cluster.nodes[1:]])
            before = refused(cluster.nodes[0])
            began = trio.current_time()
            for i in range(30):
                await db.put(f"cut-{i}", "v", consistency="quorum")
                got = await db.get(f"cut-{i}", consistency="quorum")
                assert got.values == [b"v"]
            result = await db.put_many(
                [(f"many-{i}", "v") for i in range(30)], consistency="quorum"
            )
            assert all(outcome.ok for outcome in result), [o.error for o in result]
            asked = refused(cluster.nodes[0]) - before
            windows = 1 + int((trio.current_time() - began) / DOWN_FOR)
        assert asked > 0, "the client never asked the cut-off node: the test proves nothing"
        assert asked <= windows, f"asked {asked} times in {windows} windows of {DOWN_FOR}s"


async def test_unavailable_everywhere_stays_definite_and_asks_only_two_nodes(
    autojump_clock,
) -> None:
    """Every node cut off from every other: each answers `unavailable`. The caller gets
    Unavailable (definite: nothing written) after two nodes, not a sweep of the cluster."""
    async with running_cluster(3) as cluster:
        addresses = [str(running.address) for running in cluster.nodes]
        async with connect(addresses, transport=cluster.client_transport(), timeout=3.0) as db:
            await db.put("warm", "up", consistency="all")
            await cut_everyone(cluster)
            counts = [refused(running) for running in cluster.nodes]
            try:
                await db.put("nowhere", "v", consistency="quorum")
            except Unavailable:
                pass
            else:
                raise AssertionError("a QUORUM put succeeded with every node cut off")
            asked = [
                refused(running) - count
                for running, count in zip(cluster.nodes, counts, strict=True)
            ]
        assert sum(asked) == 2, asked

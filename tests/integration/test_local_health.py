"""Poor local health (Lifeguard's score) is a warning, not a reason to stop serving."""

from __future__ import annotations

import trio

from p2pindex.sim.network import DatagramFaults
from p2pindex.types import NodeState
from p2pindex.wire.messages import GetReply, GetRequest, PutReply, PutRequest
from tests.support.cluster import running_cluster


async def test_a_node_whose_probes_fail_warns_and_keeps_serving(autojump_clock) -> None:
    """Datagrams on every link lose 60%: each node's probes keep failing and its score
    climbs past POOR_HEALTH. Each stays ACTIVE, says why in its status warnings, and
    QUORUM writes and reads through it succeed (its streams are whole); once the loss ends
    the score falls and the warning goes."""
    async with running_cluster(3) as cluster:
        network = cluster.network
        first = cluster.nodes[0]
        network.set_datagram_faults("loss", DatagramFaults(loss=0.6))
        with trio.fail_after(120):
            while first.node.poor_health is None:
                await trio.sleep(1)
        assert first.node.state is NodeState.ACTIVE
        warnings = first.node.monitor.status()["warnings"]
        assert any("local health is poor" in warning for warning in warnings), warnings
        for i in range(20):
            key = b"lossy-%d" % i
            put = await cluster.request(first, PutRequest(key, b"v", None, "quorum", 2000))
            assert isinstance(put, PutReply), put
            got = await cluster.request(first, GetRequest(key, "quorum", 2000))
            assert isinstance(got, GetReply) and got.values == [b"v"], got
        network.clear("loss")
        with trio.fail_after(120):
            while any(running.node.poor_health is not None for running in cluster.nodes):
                await trio.sleep(1)
        assert not first.node.monitor.status()["warnings"]

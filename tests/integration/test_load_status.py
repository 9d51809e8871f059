"""`status` carries the load signals an autoscaler acts on."""

from __future__ import annotations

from p2pindex.wire.messages import PutReply, PutRequest, StatusReply, StatusRequest
from tests.support.cluster import running_cluster


async def test_status_shows_requests_latency_cpu_storage_and_pending_hints():
    async with running_cluster(3) as cluster:
        node = cluster.nodes[0]
        for i in range(50):
            reply = await cluster.request(
                node, PutRequest(b"l%d" % i, b"v" * 100, None, "all", 5000)
            )
            assert isinstance(reply, PutReply)
        status = await cluster.request(node, StatusRequest())
        assert isinstance(status, StatusReply)
        load = status.status["load"]
        assert load["requests"] == 50 and load["requests_per_s"] > 0
        assert 0 < load["p50_ms"] <= load["p99_ms"] < 5000
        assert load["cpu_percent"] >= 0
        assert load["keys"] == 50 and load["storage_bytes"] >= 50 * 100
        assert load["pending_hints"] == 0

"""Drain: a leaving node stops coordinating, hands its ranges over with progress and an ETA,
then leaves; a leave that would leave fewer than N nodes is refused with the reason."""

from __future__ import annotations

import trio

from p2pindex.node.handoff import HandoffProgress
from p2pindex.wire.messages import (
    ErrorReply,
    GetReply,
    GetRequest,
    LeaveRequest,
    OkReply,
    PutReply,
    PutRequest,
    StatusReply,
    StatusRequest,
)
from tests.support.cluster import running_cluster


def put(key: bytes, consistency: str = "all") -> PutRequest:
    return PutRequest(key, b"v", None, consistency, 5000)


async def test_a_draining_node_relays_requests_instead_of_coordinating_them():
    async with running_cluster(3) as cluster:
        drainer = cluster.nodes[0]
        drainer.node.leaving = True  # as a drain sets it, without the exit that follows
        before = drainer.node.stats.get("requests.forwarded")
        for i in range(10):
            assert isinstance(await cluster.request(drainer, put(b"d%d" % i)), PutReply)
            got = await cluster.request(drainer, GetRequest(b"d%d" % i, "all", 5000))
            assert isinstance(got, GetReply) and got.values == [b"v"]
        assert drainer.node.stats.get("requests.forwarded") - before == 20
        # It is still a replica: the writes the others coordinated reached it.
        assert all(drainer.storage.get(b"d%d" % i) is not None for i in range(10))


async def test_a_drain_hands_every_key_over_then_leaves():
    async with running_cluster(4) as cluster:
        keys = [b"drain-%d" % i for i in range(300)]
        for key in keys:
            assert isinstance(await cluster.request(cluster.nodes[0], put(key)), PutReply)
        drainer, stayers = cluster.nodes[3], cluster.nodes[:3]
        reply = await cluster.request(drainer, LeaveRequest())
        assert isinstance(reply, OkReply) and "leaving" in reply.detail
        again = await cluster.request(drainer, LeaveRequest())
        assert isinstance(again, OkReply) and "already leaving" in again.detail
        with trio.fail_after(20):
            while any(drainer.node.node_id in n.node.ring.nodes for n in stayers):
                await trio.sleep(0.05)
        progress = drainer.node.handoff.progress.doc()
        assert progress["direction"] == "out" and progress["done"]
        assert progress["percent"] == 100.0 and progress["eta_s"] == 0.0
        for key in keys:
            assert all(n.storage.get(key) is not None for n in stayers), key


async def test_a_leave_that_would_leave_fewer_than_n_nodes_is_refused_and_counted():
    async with running_cluster(3) as cluster:
        node = cluster.nodes[1]
        reply = await cluster.request(node, LeaveRequest())
        assert isinstance(reply, ErrorReply)
        assert "leave refused" in reply.message and "fewer than N=3" in reply.message
        assert node.node.stats.get("rejected.leave") == 1
        assert not node.node.leaving
        status = await cluster.request(node, StatusRequest())
        assert isinstance(status, StatusReply) and status.status["leaving"] is False
        assert all(node.node.node_id in n.node.ring.nodes for n in cluster.nodes)
        assert isinstance(await cluster.request(node, put(b"still-here")), PutReply)


def test_the_eta_follows_the_pace_so_far():
    progress = HandoffProgress(direction="out", ranges_total=100, started=10.0)
    assert progress.eta(5.0) is None  # nothing done yet: no pace to go by
    progress.ranges_done = 25
    assert progress.eta(5.0) == 15.0
    progress.clock = lambda: 15.0
    doc = progress.doc()
    assert doc["percent"] == 25.0 and doc["eta_s"] == 15.0
    progress.finished = 20.0
    assert progress.doc()["eta_s"] == 0.0

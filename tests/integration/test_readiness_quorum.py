"""Readiness follows what the node can serve: a node cut off from its peers is not ready.

Found by a user: an isolated node (its two peers SIGSTOPped) answered /readyz 200 while every
default (QUORUM) request failed with 503, so a load balancer kept sending it all traffic.
"""

from __future__ import annotations

import trio
from prometheus_client.parser import text_string_to_metric_families

from p2pindex.http.api import readiness
from p2pindex.http.metrics import metrics_registry, render
from p2pindex.node.node import Node
from p2pindex.wire.messages import ErrorReply, PutRequest
from tests.support.cluster import running_cluster

CUT_OFF = "only 1 of the ring's 3 members is reachable; quorum requests need 2"


def ready_gauge(node: Node) -> float:
    """``p2pindex_ready`` as /metrics shows it (the same rule as /readyz)."""
    text = render(metrics_registry(node)).decode()
    for family in text_string_to_metric_families(text):
        if family.name == "p2pindex_ready":
            return family.samples[0].value
    raise AssertionError("no p2pindex_ready in /metrics")


async def test_a_node_that_reaches_too_few_members_for_quorum_is_not_ready(autojump_clock):
    async with running_cluster(3) as cluster:
        lone, paused = cluster.nodes[0], cluster.nodes[1:]
        cluster.network.pause(paused[0].address.host)
        await cluster.wait_dead(paused[0].node.node_id, 60, among=[lone, paused[1]])
        assert readiness(lone.node) == []  # 2 of 3 still make a quorum
        cluster.network.pause(paused[1].address.host)
        await cluster.wait_dead(paused[1].node.node_id, 60, among=[lone])
        refused = await cluster.request(lone, PutRequest(b"k", b"v", None, "quorum", 2000))
        assert isinstance(refused, ErrorReply) and refused.code == "unavailable"
        assert readiness(lone.node) == [CUT_OFF]
        assert ready_gauge(lone.node) == 0
        for victim in paused:
            cluster.network.resume(victim.address.host)
        with trio.fail_after(60):
            while readiness(lone.node):
                await trio.sleep(0.5)
        assert ready_gauge(lone.node) == 1


async def test_a_cluster_smaller_than_n_needs_a_quorum_of_its_own_members(autojump_clock):
    """A lone node of N=3 serves ONE: reaching only itself is all a ring of one can do, so
    it gives only the reason it has (fewer members than N). One of two, though, is cut off:
    a ring of two serves QUORUM (2 of N=3) only with both."""
    async with running_cluster(1, n_replicas=3) as cluster:
        reasons = readiness(cluster.nodes[0].node)
        assert not any("reachable" in reason for reason in reasons), reasons
        assert any("fewer than N=3" in reason for reason in reasons), reasons
    async with running_cluster(2, n_replicas=3) as cluster:
        cluster.network.pause(cluster.nodes[1].address.host)
        await cluster.wait_dead(cluster.nodes[1].node.node_id, 60, among=cluster.nodes[:1])
        reasons = readiness(cluster.nodes[0].node)
        assert "only 1 of the ring's 2 members is reachable; quorum requests need 2" in reasons

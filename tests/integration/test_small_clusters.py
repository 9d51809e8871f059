"""Clusters with fewer members than N serve what they can, and removal never stops them."""

from __future__ import annotations

import logging

import pytest
import trio

from p2pindex.core import versions
from p2pindex.node import admin
from p2pindex.node.eventlog import EventLog
from p2pindex.wire.messages import (
    AdmitRequest,
    ErrorReply,
    GetReply,
    GetRequest,
    Hello,
    OkReply,
    PutReply,
    PutRequest,
    RemoveRequest,
    StatusReply,
    StatusRequest,
)
from tests.support.cluster import Cluster, RunningNode, running_cluster


def put(key: bytes, value: bytes, consistency: str = "quorum") -> PutRequest:
    return PutRequest(key, value, None, consistency, 2000)


def get(key: bytes, consistency: str = "quorum") -> GetRequest:
    return GetRequest(key, consistency, 2000)


async def status(cluster: Cluster, running: RunningNode) -> dict:
    reply = await cluster.request(running, StatusRequest())
    assert isinstance(reply, StatusReply)
    return reply.status


async def test_a_single_node_of_n3_serves_one_and_refuses_quorum_as_unavailable():
    async with running_cluster(1, n_replicas=3) as cluster:
        only = cluster.nodes[0]
        assert isinstance(await cluster.request(only, put(b"k", b"v", "one")), PutReply)
        got = await cluster.request(only, get(b"k", "one"))
        assert isinstance(got, GetReply) and got.values == [b"v"]
        refused = await cluster.request(only, put(b"k", b"w", "quorum"))
        assert isinstance(refused, ErrorReply) and refused.code == "unavailable"
        assert (refused.required, refused.alive) == (2, 1)
        assert "fewer than N=3" in refused.message
        doc = await status(cluster, only)
        assert any("N=3" in warning and "1 member" in warning for warning in doc["warnings"])


async def test_two_nodes_of_n3_serve_quorum_and_each_holds_every_key():
    async with running_cluster(2, n_replicas=3) as cluster:
        keys = [b"small-%d" % i for i in range(40)]
        for key in keys:
            assert isinstance(await cluster.request(cluster.nodes[0], put(key, b"v")), PutReply)
        for running in cluster.nodes:
            for key in keys:
                assert running.storage.get(key) is not None
        got = await cluster.request(cluster.nodes[1], get(keys[0]))
        assert isinstance(got, GetReply) and got.values == [b"v"]
        refused = await cluster.request(cluster.nodes[1], put(b"k", b"v", "all"))
        assert isinstance(refused, ErrorReply) and refused.code == "unavailable"
        assert (refused.required, refused.alive) == (3, 2)
        doc = await status(cluster, cluster.nodes[0])
        assert doc["warnings"] and doc["ring_size"] == 2


async def test_a_joining_node_brings_a_lone_nodes_keys_up_to_more_copies():
    async with running_cluster(1, n_replicas=3) as cluster:
        keys = [b"grow-%d" % i for i in range(60)]
        for key in keys:
            reply = await cluster.request(cluster.nodes[0], put(key, b"v", "one"))
            assert isinstance(reply, PutReply)
        newcomer = await cluster.start_node()
        await cluster.wait_converged()
        assert newcomer.node.handoff.progress.finished is not None
        for key in keys:
            record = newcomer.storage.get(key)
            assert record is not None and versions.decode_object(record).values == [b"v"]
        doc = await status(cluster, newcomer)
        assert doc["warnings"], "two members are still fewer than N=3"


async def test_removing_a_dead_member_of_three_keeps_quorum_serving():
    async with running_cluster(3, n_replicas=3) as cluster:
        victim = cluster.nodes[2]
        live = cluster.nodes[:2]
        cluster.crash(victim)
        await cluster.wait_dead(victim.node.node_id, 20)
        before = await status(cluster, live[0])
        dead = next(m for m in before["members"] if m["node_id"] == victim.node.node_id)
        assert dead["liveness"] == "dead" and dead["state_last_known"]
        assert not any(m["state_last_known"] for m in before["members"] if m is not dead)
        assert before["version"] and before["disk"] == {} and before["removed_members"] == 0
        reply = await cluster.request(live[0], RemoveRequest(victim.node.node_id))
        assert isinstance(reply, OkReply), reply
        for n in range(20):
            key = b"after-remove-%d" % n
            assert isinstance(await cluster.request(live[n % 2], put(key, b"v")), PutReply)
            got = await cluster.request(live[(n + 1) % 2], get(key))
            assert isinstance(got, GetReply) and got.values == [b"v"]
        doc = await status(cluster, live[0])
        assert victim.node.node_id not in {m["node_id"] for m in doc["members"]}
        assert doc["removed_members"] == 1


async def test_a_removed_member_is_refused_with_how_to_admit_it_and_admit_lets_it_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    # A fresh rate-limited log: the module's budget is shared by every test of the process.
    logger = logging.getLogger("p2pindex.node.node")
    monkeypatch.setattr(admin, "events", EventLog(logger, trio.current_time))
    caplog.set_level(logging.ERROR, logger=logger.name)
    async with running_cluster(3, n_replicas=3) as cluster:
        victim = cluster.nodes[2]
        victim_id = victim.node.node_id
        live = cluster.nodes[:2]
        cluster.crash(victim)
        await cluster.wait_dead(victim_id, 20)
        assert isinstance(await cluster.request(live[0], RemoveRequest(victim_id)), OkReply)
        hello = Hello(victim_id, str(victim.address), live[0].node.config.cluster)
        refused = await cluster.request(live[1], hello)
        assert isinstance(refused, ErrorReply) and refused.code == "member_removed"
        assert f"p2pindex admit {victim_id}" in refused.message
        cluster.nodes.remove(victim)
        with trio.fail_after(5):  # refused by its seeds, it stops rather than wait for good
            back = await cluster.start_node(storage=victim.storage, identity=victim.identity)
            await back.node.stopped.wait()
        assert back.node.view.removed_notice and back.node.stats.get("membership.removed_self")
        stopped = [r.getMessage() for r in caplog.records if "it stops now" in r.getMessage()]
        assert stopped and "refuses its connections" in stopped[0], stopped
        cluster.crash_out(back)
        assert all(victim_id not in n.node.ring.nodes for n in live), "restarting is no way back"
        assert not any(n.node.usable(victim_id) for n in live), "no hints or repairs go to it"
        unknown = await cluster.request(live[0], AdmitRequest("0123456789abcdef"))
        assert isinstance(unknown, ErrorReply) and unknown.code == "invalid_request"
        admitted = await cluster.request(live[0], AdmitRequest(victim_id))
        assert isinstance(admitted, OkReply) and "2 of 2" in admitted.detail, admitted
        assert isinstance(await cluster.request(live[1], hello), OkReply)
        back = await cluster.start_node(storage=victim.storage, identity=victim.identity)
        with trio.fail_after(20):
            while not all(victim_id in n.node.ring.nodes for n in [*live, back]):
                await trio.sleep(0.1)

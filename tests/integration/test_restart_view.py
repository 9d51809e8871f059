"""A restarted node coordinates nothing until a live member confirmed the membership.

Seed 1318: a node crashed soon after joining, having saved only three members of nine; it
restarted, took itself and one other member as the replicas of a key on that ring,
acknowledged a write at ONE, and the key's real replicas never received it.
"""

from __future__ import annotations

import json

import trio

from p2pindex.node.restart_meta import RING_MEMBERS_META
from p2pindex.wire.messages import ErrorReply, GetReply, GetRequest, PutReply, PutRequest
from tests.support.cluster import running_cluster


async def test_a_restarted_node_refuses_requests_until_a_member_answers(autojump_clock):
    async with running_cluster(5) as cluster:
        victim = cluster.nodes[4]
        others = [n for n in cluster.nodes if n is not victim]
        cluster.crash(victim)
        # As if it crashed moments after joining: it had saved one member of four.
        known = others[0]
        saved = [[known.node.node_id, str(known.address), 1]]
        await victim.storage.set_meta(RING_MEMBERS_META, json.dumps(saved).encode())
        host = victim.address.host
        cut = [(host, n.address.host) for n in others] + [(n.address.host, host) for n in others]
        cluster.network.block("cut-off", cut)
        cluster.nodes.remove(victim)
        back = await cluster.start_node(
            storage=victim.storage,
            identity=victim.identity,
            seeds=tuple(n.address for n in others[:2]),
            listen=victim.address,
        )
        assert not back.node.membership_confirmed
        assert len(back.node.ring.nodes) == 2
        keys = [b"restart-%d" % i for i in range(20)]
        for key in keys:
            reply = await cluster.request(back, PutRequest(key, b"v", None, "one", 2000))
            assert isinstance(reply, ErrorReply) and reply.code == "not_ready", reply
            got = await cluster.request(back, GetRequest(key, "one", 2000))
            assert isinstance(got, ErrorReply) and got.code == "not_ready", got
        cluster.network.clear("cut-off")
        with trio.fail_after(30):
            while not back.node.membership_confirmed:
                await trio.sleep(0.05)
        assert len(back.node.ring.nodes) == 5  # the whole ring, before it serves anything
        for key in keys:
            reply = await cluster.request(back, PutRequest(key, b"v", None, "one", 2000))
            assert isinstance(reply, PutReply), reply
        for key in keys:
            got = await cluster.request(others[0], GetRequest(key, "all", 5000))
            assert isinstance(got, GetReply) and got.values == [b"v"], (key, got)

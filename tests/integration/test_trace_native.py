"""Tracing a request through the native client protocol, on the simulated network.

The client asks with ``trace=True``; the node that coordinates answers with its steps. The
simulated clock makes "who answered when" exact: a replica slowed by 100 ms answers 100 ms
after the others.
"""

from __future__ import annotations

import pytest
import trio

from p2pindex.client import connect
from p2pindex.errors import IndeterminateError, Unavailable
from p2pindex.sim.network import Delay, DelayKind
from p2pindex.types import Liveness
from p2pindex.wire.messages import GetReply, GetRequest, PutReply, PutRequest
from tests.support.cluster import Cluster, running_cluster


def client_of(cluster: Cluster, *nodes):
    return connect(
        [str(n.address) for n in nodes or cluster.nodes],
        transport=cluster.client_transport(),
        timeout=3.0,
    )


def steps_named(trace, name):
    return [step for step in trace.steps if step.step == name]


async def test_a_traced_write_shows_every_replica_asked_and_when_each_answered(autojump_clock):
    async with running_cluster(3) as cluster:
        ids = {running.node.node_id for running in cluster.nodes}
        slow = cluster.nodes[2]
        async with client_of(cluster, cluster.nodes[0]) as db:
            await db.put("warm", "up", consistency="all")  # every connection is open
            # 50 ms more each way: the slowed replica's answer comes 100 ms later
            cluster.network.set_slow(
                slow.address.host, Delay(DelayKind.CONSTANT, minimum=0.05, mean=0.05)
            )
            result = await db.put("k", "v", consistency="all", trace=True)
        trace = result.trace
        assert trace is not None and trace.request_id
        names = [step.step for step in trace.steps]
        assert names[0] == "targets"
        targets = trace.steps[0].details
        assert {t["node"] for t in targets["nodes"]} == ids
        assert targets["required"] == 3
        assert all(t["hint_for"] is None for t in targets["nodes"])
        committed = steps_named(trace, "committed_locally")
        assert len(committed) == 1
        coordinator = committed[0].details["node"]
        answered = {s.details["node"]: s for s in steps_named(trace, "replica_answered")}
        assert set(answered) == ids - {coordinator}
        assert all(s.details["reply"] == "ReplicaAck" for s in answered.values())
        decided = trace.steps[-1]
        assert decided.step == "decided"
        assert decided.details == {"outcome": "succeeded", "acks": 3}
        # the slowed replica (unless it coordinated) shows its 100 ms, after the other one
        # (whose own time depends on what else its link carries then, such as the
        # anti-entropy rounds a joiner now runs)
        if slow.node.node_id != coordinator:
            (fast,) = [s for node, s in answered.items() if node != slow.node.node_id]
            assert answered[slow.node.node_id].at_ms >= 100
            assert answered[slow.node.node_id].at_ms > fast.at_ms
        times = [step.at_ms for step in trace.steps]
        assert times == sorted(times)
        assert sum(step.took_ms for step in trace.steps) == pytest.approx(times[-1], abs=0.01)


async def test_a_traced_write_names_the_fallback_standing_in_for_a_dead_replica(
    autojump_clock,
):
    async with running_cluster(4) as cluster:
        crashed = cluster.nodes[3]
        dead_id = crashed.node.node_id
        async with client_of(cluster, *cluster.nodes[:3]) as db:
            # a key the crashed node holds, so a fallback has to stand in for it
            key = next(f"k{i}" for i in range(200) if dead_id in db.preference_list(f"k{i}"))
            cluster.crash(crashed)
            with trio.fail_after(60):
                while not all(
                    m.liveness is Liveness.DEAD
                    for running in cluster.nodes[:3]
                    for m in running.node.members()
                    if m.node_id == dead_id
                ):
                    await trio.sleep(0.5)
            written = await db.put(key, "v", consistency="all", trace=True)
        targets = written.trace.steps[0].details["nodes"]
        assert dead_id not in {t["node"] for t in targets}
        fallbacks = [t for t in targets if t["hint_for"] is not None]
        assert [t["hint_for"] for t in fallbacks] == [dead_id]
        assert fallbacks[0]["node"] not in db.preference_list(key)
        assert written.trace.steps[-1].details["outcome"] == "succeeded"


async def test_a_stale_replica_is_named_in_the_read_repair_of_a_traced_read(autojump_clock):
    async with running_cluster(3) as cluster:
        victim = cluster.nodes[2]
        first = await cluster.request(cluster.nodes[0], PutRequest(b"k", b"old", None, "all", 0))
        assert isinstance(first, PutReply)
        cluster.crash(victim)
        newer = PutRequest(b"k", b"new", first.context, "quorum", 0)
        assert isinstance(await cluster.request(cluster.nodes[0], newer), PutReply)
        restarted = await cluster.start_node(
            storage=victim.storage, identity=victim.identity, seeds=(cluster.nodes[0].address,)
        )
        cluster.nodes.remove(victim)
        await cluster.wait_converged(timeout=15)
        async with client_of(cluster, cluster.nodes[0]) as db:
            result = await db.get("k", consistency="all", trace=True)
            assert result.values == [b"new"]
            decided = result.trace.steps[-1]
            assert decided.step == "decided"
            assert decided.details["read_repair_to"] == [restarted.node.node_id]
            # the repair landed: the next traced read finds nothing to repair
            await trio.sleep(1)
            again = await db.get("k", consistency="all", trace=True)
            assert again.trace.steps[-1].details["read_repair_to"] == []


async def test_a_failed_traced_write_carries_its_steps_in_the_error(autojump_clock):
    async with running_cluster(3) as cluster:
        coordinator = cluster.nodes[0]
        cut = [(coordinator.address.host, n.address.host) for n in cluster.nodes[1:]]
        async with client_of(cluster, coordinator) as db:
            await db.put("warm", "up", consistency="all")  # connections to both peers open
            cluster.network.block("cut", cut)
            with pytest.raises(IndeterminateError) as caught:
                await db.put("k", "v", consistency="all", timeout=1.0, trace=True)
        trace = caught.value.trace
        assert trace is not None
        names = [step.step for step in trace.steps]
        assert names[0] == "targets"
        assert trace.steps[-1].step == "decided"
        # Cut off, the replicas never answered: whether a replica call's timeout or the
        # round's deadline (the same instant here) ends the round first, the trace names
        # every cut-off replica, as failed or as not answered, rather than leave one out.
        decided = trace.steps[-1].details
        assert decided["outcome"] in ("failed", "timed_out")
        failed = {step.details["node"] for step in steps_named(trace, "replica_failed")}
        cut_off = {n.node.node_id for n in cluster.nodes[1:]}
        assert failed | set(decided.get("unanswered", [])) == cut_off, trace.steps


async def test_a_traced_delete_without_a_context_shows_its_read_then_its_write(autojump_clock):
    async with running_cluster(3) as cluster, client_of(cluster, cluster.nodes[0]) as db:
        await db.put("k", "v", consistency="all")
        deleted = await db.delete("k", consistency="all", trace=True)
        names = [step.step for step in deleted.trace.steps]
        first = names.index("read_first")
        rest = names[first + 1 :]
        assert rest[0] == "targets" and rest.count("decided") == 2, names
        assert rest.index("decided") < rest.index("committed_locally"), names  # read, then write


async def test_an_untraced_request_gets_no_trace_and_the_same_answer(autojump_clock):
    async with running_cluster(3) as cluster:
        async with client_of(cluster) as db:
            plain = await db.put("k", "v", consistency="all")
            got = await db.get("k")
        assert plain.trace is None and got.trace is None
        reply = await cluster.request(cluster.nodes[0], GetRequest(b"k", "all", 0))
        assert isinstance(reply, GetReply) and reply.trace is None


async def test_a_traced_request_relayed_to_a_replica_carries_the_relays_steps(autojump_clock):
    async with running_cluster(4) as cluster:
        async with client_of(cluster) as db:
            key = "relayed"
            owners = set(db.preference_list(key))
        outsider = next(n for n in cluster.nodes if n.node.node_id not in owners)
        reply = await cluster.request(outsider, GetRequest(key.encode(), "all", 0, trace=True))
        assert isinstance(reply, GetReply) and reply.trace is not None
        steps = reply.trace["steps"]
        names = [step["step"] for step in steps]
        assert names[:2] == ["targets", "relayed"]
        relay = next(step for step in steps if step["step"] == "relay_answered")
        assert relay["node"] in owners
        inner = [step["step"] for step in relay["steps"]]
        assert inner[0] == "targets" and inner[-1] == "decided"
        answered = {s["node"] for s in relay["steps"] if s["step"] == "replica_answered"}
        assert answered == owners - {relay["node"]}


async def test_a_traced_request_refused_before_any_replica_was_asked_says_why(autojump_clock):
    """Found by a helper: `--trace` on a request refused as unavailable printed the
    header and no step at all (the refusal came before the targets step)."""
    async with running_cluster(3) as cluster:
        async with client_of(cluster, cluster.nodes[0]) as db:
            await db.put("k", "v", consistency="all")
            cluster.crash(cluster.nodes[2])
            await cluster.wait_dead(cluster.nodes[2].node.node_id)
            with pytest.raises(Unavailable) as refused:
                await db.put("k", "w", consistency="all", trace=True, overwrite=True)
        trace = refused.value.trace
        assert trace is not None
        steps = steps_named(trace, "unavailable")
        assert steps and steps[0].details["required"] == 3, trace.steps
        assert "reachable" in steps[0].details["reason"]

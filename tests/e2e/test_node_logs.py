"""A real node's log at the default level tells an operator what happened: a join, a kill -9,
the hints kept meanwhile, a handoff to a new member, a removal, a leave and a shutdown."""

from __future__ import annotations

import re
import shutil
import signal
from pathlib import Path

import pytest
import trio

from p2pindex.cli.local_cluster import LocalCluster
from p2pindex.config import Limits
from p2pindex.net.channel import open_channel
from p2pindex.net.secure.connector import SecureConnector
from p2pindex.security.credentials import ClientCredentials
from p2pindex.types import Address
from p2pindex.wire.messages import (
    Message,
    OkReply,
    PutReply,
    PutRequest,
    RemoveRequest,
    StatusReply,
    StatusRequest,
)

pytestmark = pytest.mark.e2e


async def call(cluster: LocalCluster, address: str, message: Message) -> Message:
    assert cluster.credentials is not None
    connector = SecureConnector(ClientCredentials.load(cluster.credentials))
    async with trio.open_nursery() as nursery:
        channel = await open_channel(nursery, connector, Address.parse(address), Limits())
        try:
            with trio.fail_after(10):
                return await channel.request(message)
        finally:
            await channel.aclose()


def log_of(cluster: LocalCluster, index: int, since: int = 0) -> str:
    return cluster.nodes[index].log_path.read_text(errors="replace")[since:]


async def wait_for_line(
    cluster: LocalCluster, index: int, pattern: str, timeout: float = 30.0, since: int = 0
) -> str:
    """The first line matching ``pattern`` in the node's log (after offset ``since``)."""
    with trio.fail_after(timeout):
        while True:
            found = re.search(pattern, log_of(cluster, index, since))
            if found:
                return found.group(0)
            await trio.sleep(0.2)


async def alive_members(cluster: LocalCluster, address: str) -> set[str]:
    reply = await call(cluster, address, StatusRequest())
    assert isinstance(reply, StatusReply)
    return {
        m["node_id"]
        for m in reply.status["members"]
        if m["liveness"] == "alive" and m["state"] == "active"
    }


async def test_the_log_tells_a_join_a_kill_hints_a_handoff_a_removal_and_a_shutdown(
    tmp_path: Path,
) -> None:
    with LocalCluster(4, tmp_path) as cluster:
        cluster.start()
        first = cluster.addresses[0]
        ids = {node.node_id for node in cluster.nodes}
        with trio.fail_after(30):
            while await alive_members(cluster, first) != ids:
                await trio.sleep(0.2)
        for i in range(400):
            reply = await call(
                cluster, first, PutRequest(b"log-%d" % i, b"v" * 100, None, "all", 5000)
            )
            assert isinstance(reply, PutReply), reply
        joined = await wait_for_line(cluster, 0, r"member \w+ at \S+ joined[^\n]*")
        assert "INFO" in log_of(cluster, 0)

        victim = cluster.nodes[3]
        old_id = victim.node_id
        cluster.kill(3)
        await wait_for_line(cluster, 0, rf"INFO [\w.]+: member {old_id} at \S+ is suspected")
        # A death the operator did not plan is a warning (a suspicion is routine).
        await wait_for_line(cluster, 0, rf"WARNING [\w.]+: member {old_id} at \S+ is dead")
        for i in range(200):
            await call(cluster, first, PutRequest(b"hint-%d" % i, b"v", None, "quorum", 5000))
        pattern = rf"kept \d+ hint\(s\) \(\d+ bytes\) for member {old_id}"
        assert any(re.search(pattern, log_of(cluster, i)) for i in range(3)), (
            "a node standing in for the dead one says it keeps hints"
        )
        hint_lines = sum(log_of(cluster, i).count("hint(s)") for i in range(3))
        assert hint_lines < 20, "hints are summed up, not logged one by one"

        # The dead node's machine comes back empty: a new member, which pulls its ranges.
        shutil.rmtree(victim.data_dir)
        since = len(log_of(cluster, 3))
        await trio.to_thread.run_sync(cluster.restart, 3)
        new_id = cluster.nodes[3].node_id
        assert new_id != old_id
        await wait_for_line(cluster, 3, r"handoff in started: pulling \d+ range\(s\)", since=since)
        finished = await wait_for_line(
            cluster, 3, r"handoff in finished: (\d+) key\(s\), (\d+) byte\(s\)", since=since
        )
        keys = int(re.search(r"finished: (\d+) key", finished).group(1))
        assert keys > 100, finished
        await wait_for_line(cluster, 3, r"node \w+ is now active", since=since)
        await wait_for_line(cluster, 0, rf"member {new_id} at \S+ joined")

        removed = await call(cluster, first, RemoveRequest(old_id))
        assert isinstance(removed, OkReply), removed
        await wait_for_line(cluster, 0, rf"member {old_id} at \S+ removed from the ring")

        cluster.kill(1, signal.SIGTERM)
        await wait_for_line(cluster, 1, r"is leaving: handing its keys over")
        await wait_for_line(cluster, 1, r"stopped \(clean shutdown\)")
        leaver = cluster.nodes[1].node_id
        await wait_for_line(cluster, 0, rf"member {leaver} at \S+ left the cluster")
        assert joined

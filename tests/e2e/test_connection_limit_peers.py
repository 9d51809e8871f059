"""Clients holding every connection a real node serves do not cut it off from its peers.

``max_connections`` caps client connections; a node that restarts while clients fill
another node's limit still connects to it, so writes at ALL (which need every replica)
succeed and the clients over the limit are the ones refused.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio

from p2pindex.cli.local_cluster import LocalCluster, wait_converged
from p2pindex.errors import PermissionDenied
from p2pindex.types import Address
from p2pindex.wire.codec import encode_frame
from p2pindex.wire.messages import PutReply, PutRequest, StatusRequest
from tests.e2e.test_node_process import admin, call

pytestmark = pytest.mark.e2e

CLIENT_LIMIT = 4


@pytest.fixture
def cluster(tmp_path: Path):
    with LocalCluster(3, tmp_path, extra_args=("--max-connections", str(CLIENT_LIMIT))) as cluster:
        cluster.start()
        wait_converged(cluster)
        yield cluster


async def admitted(cluster: LocalCluster, address: Address) -> trio.abc.Stream:
    """A session the node has admitted: it answered a request on it. The node counts a
    client's place free only once it has seen that client's connection close, so a place
    just given up may still be taken for a moment; a refused session is tried again."""
    with trio.fail_after(10):
        while True:
            try:
                stream = await admin(cluster).connect(address)
            except PermissionDenied:  # refused at the handshake
                await trio.sleep(0.2)
                continue
            try:
                await stream.send_all(encode_frame(StatusRequest(), 1))
                if await stream.receive_some():
                    return stream
            except trio.BrokenResourceError:
                pass  # refused: closed with the request unread
            await trio.aclose_forcefully(stream)
            await trio.sleep(0.2)


async def test_a_node_reaches_a_peer_whose_client_limit_is_full(cluster) -> None:
    full = cluster.nodes[0]
    held: list[trio.abc.Stream] = []
    try:
        for _ in range(CLIENT_LIMIT - 1):  # with the status call below: every client place
            held.append(await admitted(cluster, full.address))
        # The second node restarts: its connections to the first are all new.
        cluster.kill(1, signal.SIGKILL)
        cluster.restart(1)
        await trio.to_thread.run_sync(wait_converged, cluster)
        with trio.fail_after(30):
            while True:  # the restarted node may still be receiving its ranges
                reply = await call(
                    cluster, cluster.addresses[1], PutRequest(b"k", b"v", None, "all", 5000)
                )
                if isinstance(reply, PutReply):
                    break
                await trio.sleep(0.5)
        status = await call(cluster, str(full.address), StatusRequest())
        counts = status.status["statistics"]  # type: ignore[attr-defined]
        assert counts["connections.open"] > CLIENT_LIMIT  # the peers' connections came in
        # Clients are still held to their limit: with every place taken (the last one
        # once the status call's connection is seen closed), the next client is refused,
        # and told why, at its handshake.
        held.append(await admitted(cluster, full.address))
        with pytest.raises(PermissionDenied, match="serves 4 client connections, its limit"):
            await admin(cluster).connect(full.address)
    finally:
        for stream in held:
            await trio.aclose_forcefully(stream)

"""Idle sockets from a stranger cannot lock a real node process out of reach.

Hundreds of TCP connections opened to the node's port and to its HTTP port and left silent
(no handshake, no request) used to hold a descriptor each until their timeouts: with the
common open-files limit they exhausted it (``accept`` failed, clients and peers could not
connect), and on the HTTP port they filled ``max_connections`` so every new client was
refused. Now the connection waiting longest gives way to a new one, counted, and a client
with something to say is served.
"""

from __future__ import annotations

import resource
import socket
import urllib.request
from pathlib import Path

import pytest
import trio

from p2pindex.cli.local_cluster import LocalCluster
from p2pindex.config import Limits
from p2pindex.net.channel import open_channel
from p2pindex.wire.messages import PutReply, PutRequest, StatusRequest
from tests.e2e.test_node_process import admin

pytestmark = pytest.mark.e2e

MAX_HANDSHAKES = 32
HTTP_MAX_CONNECTIONS = 64
NODE_FILES = 200
"""The node's open-files limit in this test: room for its own files and both connection
limits above, not for the flood."""
FLOOD = 300
"""Silent sockets opened to each port: more than the node has descriptors for."""


@pytest.fixture
def node(tmp_path: Path):
    config = tmp_path / "node.toml"
    config.write_text(
        f"[admission]\nmax_handshakes = {MAX_HANDSHAKES}\n\n"
        f"[http]\nmax_connections = {HTTP_MAX_CONNECTIONS}\n"
    )
    with LocalCluster(1, tmp_path, http=True, extra_args=("--config", str(config))) as cluster:
        cluster.start()
        yield cluster


def open_silent(port: int, count: int) -> list[socket.socket]:
    """``count`` connections to ``port`` on loopback that never send a byte."""
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        sockets.append(sock)
    return sockets


def livez(url: str) -> int:
    with urllib.request.urlopen(f"{url}/livez", timeout=5) as answer:
        return answer.status


def metrics(dashboard_url: str) -> str:
    """The node's /metrics, with the read token ``dashboard_url`` carries."""
    base, _, token = dashboard_url.partition("/#token=")
    request = urllib.request.Request(
        f"{base}/metrics", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return answer.read().decode()


async def test_silent_connections_give_way_to_clients_on_both_ports(node) -> None:
    target = node.nodes[0]
    assert target.pid is not None and target.http_url
    resource.prlimit(target.pid, resource.RLIMIT_NOFILE, (NODE_FILES, NODE_FILES))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 3 * FLOOD:
        pytest.skip(f"this test process may open only {soft} files")
    flood = open_silent(target.address.port, FLOOD) + open_silent(target.http_port, FLOOD)
    try:
        await trio.sleep(1.0)  # the node accepts what it can of the flood
        async with trio.open_nursery() as nursery:
            with trio.fail_after(15):
                channel = await open_channel(nursery, admin(node), target.address, Limits())
                for i in range(5):
                    put = PutRequest(f"served-{i}".encode(), b"v", None, "one", 5000)
                    assert isinstance(await channel.request(put), PutReply)
                for _ in range(5):
                    assert await trio.to_thread.run_sync(livez, target.http_url) == 200
                status = await channel.request(StatusRequest())
            await channel.aclose()
    finally:
        for sock in flood:
            sock.close()
    counts = status.status["statistics"]  # type: ignore[attr-defined]
    assert counts.get("security.handshake.evicted", 0) >= FLOOD - MAX_HANDSHAKES
    assert counts.get("http.evicted", 0) >= FLOOD - HTTP_MAX_CONNECTIONS
    assert counts.get("http.refused.too_many_connections", 0) == 0
    # Operators see both in Prometheus too.
    exposition = await trio.to_thread.run_sync(metrics, node.dashboard_url(target))
    evicted = {
        line.split()[0]: float(line.split()[1])
        for line in exposition.splitlines()
        if line.startswith(("p2pindex_http_evicted_total", "p2pindex_security_events_total"))
        and "evicted" in line
    }
    assert evicted["p2pindex_http_evicted_total"] >= FLOOD - HTTP_MAX_CONNECTIONS
    assert evicted['p2pindex_security_events_total{event="handshake.evicted"}'] > 0

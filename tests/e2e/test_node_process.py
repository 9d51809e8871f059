"""Real node processes on loopback: crashes, restarts, hostile bytes inside an authenticated
session, and a node that refuses to start without its certificate."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import cbor2
import pytest
import trio

from p2pindex.cli.local_cluster import LocalCluster, free_ports, wait_converged
from p2pindex.config import Limits
from p2pindex.net.channel import open_channel
from p2pindex.net.secure.connector import SecureConnector
from p2pindex.security.credentials import CREDENTIALS_ENV, ClientCredentials
from p2pindex.types import Address
from p2pindex.wire.codec import encode_frame
from p2pindex.wire.messages import (
    PROTOCOL_VERSION,
    ErrorReply,
    GetReply,
    GetRequest,
    Message,
    PutReply,
    PutRequest,
    StatusReply,
    StatusRequest,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def cluster(tmp_path: Path):
    with LocalCluster(3, tmp_path) as cluster:
        cluster.start()
        yield cluster


def admin(cluster: LocalCluster) -> SecureConnector:
    """Opens sessions with the cluster's admin credentials (the nodes refuse plain TCP)."""
    assert cluster.credentials is not None
    return SecureConnector(ClientCredentials.load(cluster.credentials))


async def call(cluster: LocalCluster, address: str, message: Message) -> Message:
    async with trio.open_nursery() as nursery:
        channel = await open_channel(nursery, admin(cluster), Address.parse(address), Limits())
        try:
            with trio.fail_after(10):
                return await channel.request(message)
        finally:
            await channel.aclose()


async def wait_members(
    cluster: LocalCluster, address: str, count: int, liveness: str = "alive"
) -> None:
    with trio.fail_after(20):
        while True:
            reply = await call(cluster, address, StatusRequest())
            members = reply.status["members"]
            if (
                sum(1 for m in members if m["liveness"] == liveness and m["state"] == "active")
                >= count
            ):
                return
            await trio.sleep(0.1)


async def test_kill_9_quorum_works_all_fails_and_data_survives_restart(cluster):
    n0, n1, n2 = (str(node.address) for node in cluster.nodes)
    victim_id = cluster.nodes[2].node_id
    await wait_members(cluster, n0, 3)
    for i in range(20):
        reply = await call(cluster, n0, PutRequest(f"k{i}".encode(), b"v", None, "all", 5000))
        assert isinstance(reply, PutReply), reply
    cluster.kill(2)
    reply = await call(cluster, n1, PutRequest(b"after", b"v", None, "quorum", 5000))
    assert isinstance(reply, PutReply), reply
    got = await call(cluster, n0, GetRequest(b"after", "quorum", 5000))
    assert got.values == [b"v"]
    with trio.fail_after(20):
        while True:
            reply = await call(cluster, n0, PutRequest(b"all", b"v", None, "all", 3000))
            if isinstance(reply, ErrorReply) and reply.code == "unavailable":
                break
            await trio.sleep(0.2)
    assert (reply.required, reply.alive) == (3, 2)

    await trio.to_thread.run_sync(cluster.restart, 2)
    assert cluster.nodes[2].node_id == victim_id
    for i in range(20):
        got = await call(cluster, n2, GetRequest(f"k{i}".encode(), "one", 5000))
        assert isinstance(got, GetReply) and got.values == [b"v"], (i, got)


async def raw_exchange(
    cluster: LocalCluster, address: str, payload: bytes, *, read: bool = True
) -> bytes:
    """Send ``payload`` as the plaintext of an authenticated session and collect the reply
    (until one whole frame arrived, the node closed the session, or 5 s passed)."""
    stream = await admin(cluster).connect(Address.parse(address))
    data = b""
    try:
        await stream.send_all(payload)
        with trio.move_on_after(5 if read else 0.2):
            while not (read and _complete(data)):
                chunk = await stream.receive_some()
                if not chunk:
                    break
                data += chunk
    except trio.BrokenResourceError:
        pass
    finally:
        await trio.aclose_forcefully(stream)
    return data


def _complete(data: bytes) -> bool:
    return len(data) >= 4 and len(data) >= 4 + struct.unpack(">I", data[:4])[0]


def decode_reply(data: bytes) -> tuple[int, dict]:
    assert len(data) >= 4, "no reply frame"
    length = struct.unpack(">I", data[:4])[0]
    version, type_code, request_id, fields = cbor2.loads(data[4 : 4 + length])
    assert version == PROTOCOL_VERSION
    assert type_code == ErrorReply.TYPE
    return request_id, fields


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


BAD_REQUESTS = {
    "unknown type": frame(cbor2.dumps([PROTOCOL_VERSION, 999, 7, {}])),
    "wrong field type": frame(
        cbor2.dumps(
            [
                PROTOCOL_VERSION,
                PutRequest.TYPE,
                7,
                {
                    "key": "text-not-bytes",
                    "value": b"v",
                    "context": None,
                    "consistency": "quorum",
                    "timeout_ms": 1000,
                },
            ]
        )
    ),
    "missing field": frame(
        cbor2.dumps([PROTOCOL_VERSION, PutRequest.TYPE, 7, {"key": b"bad-k", "value": b"v"}])
    ),
    "key over limit": encode_frame(PutRequest(b"k" * 2000, b"v", None, "quorum", 1000), 7),
    "value over limit": encode_frame(
        PutRequest(b"bad-k", b"v" * (1024 * 1024 + 1), None, "quorum", 1000), 7
    ),
}

BROKEN_FRAMING = {
    "garbage": b"\x00\x00\x00\x05hello",
    "invalid cbor": frame(b"\xff\xfe\xfd"),
    "oversized length": struct.pack(">I", 64 * 1024 * 1024) + b"x" * 100,
    "not an envelope": frame(cbor2.dumps({"hello": 1})),
}


async def test_bad_requests_get_errors_write_nothing_and_are_counted(cluster):
    n0 = str(cluster.nodes[0].address)
    await wait_members(cluster, n0, 3)
    for name, payload in BAD_REQUESTS.items():
        data = await raw_exchange(cluster, n0, payload)
        request_id, fields = decode_reply(data)
        assert request_id == 7, name
        assert fields["code"] == "invalid_request", (name, fields)
    for name, payload in BROKEN_FRAMING.items():
        data = await raw_exchange(cluster, n0, payload)
        if data:
            _, fields = decode_reply(data)
            assert fields["code"] in ("protocol_error", "too_large"), (name, fields)
    truncated = encode_frame(PutRequest(b"bad-k", b"v", None, "quorum", 1000), 7)[:-3]
    await raw_exchange(cluster, n0, truncated, read=False)

    got = await call(cluster, n0, GetRequest(b"bad-k", "all", 5000))
    assert isinstance(got, GetReply) and got.values == []
    status = await call(cluster, n0, StatusRequest())
    assert isinstance(status, StatusReply)
    rejected = status.status["statistics"].get("rejected.bad_input", 0)
    assert rejected >= len(BAD_REQUESTS) + len(BROKEN_FRAMING) + 1
    reply = await call(cluster, n0, PutRequest(b"good", b"v", None, "quorum", 5000))
    assert isinstance(reply, PutReply)


def test_serve_without_a_certificate_refuses_to_start_and_says_what_to_run(
    tmp_path: Path,
) -> None:
    (port,) = free_ports(1)
    data_dir = tmp_path / "node"
    env = {k: v for k, v in os.environ.items() if k != CREDENTIALS_ENV}
    command = ["serve", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}"]
    result = subprocess.run(
        [sys.executable, "-m", "p2pindex", *command],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""  # never printed its ready line
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: security is on")
    assert f"p2pindex cluster certify --authority AUTHORITY --data-dir {data_dir}" in result.stderr
    assert "--insecure" in result.stderr
    assert not (data_dir / "data.sqlite3").exists()


async def test_a_seed_that_lost_its_disk_rejoins_with_its_usual_command_line(cluster):
    """Every node has the same seed list (its own address included); node 1, whose address
    the old README gave the others as their only seed, loses its disk and is started again
    with the same command: it joins the running cluster and serves its data, instead of
    forming a cluster of its own."""
    n0, n1, _ = (str(node.address) for node in cluster.nodes)
    old_id = cluster.nodes[0].node_id
    await wait_members(cluster, n1, 3)
    for i in range(20):
        reply = await call(cluster, n1, PutRequest(f"k{i}".encode(), b"v", None, "all", 5000))
        assert isinstance(reply, PutReply), reply
    cluster.kill(0)
    shutil.rmtree(cluster.nodes[0].data_dir)
    await trio.to_thread.run_sync(cluster.restart, 0)
    assert cluster.nodes[0].node_id != old_id
    await wait_members(cluster, n0, 3)
    status = (await call(cluster, n0, StatusRequest())).status
    assert {m["node_id"] for m in status["members"]} >= {n.node_id for n in cluster.nodes}
    for i in range(20):
        got = await call(cluster, n0, GetRequest(f"k{i}".encode(), "quorum", 5000))
        assert isinstance(got, GetReply) and got.values == [b"v"], (i, got)


def test_a_drained_node_hands_over_and_its_process_exits(tmp_path: Path) -> None:
    with LocalCluster(4, tmp_path, n_replicas=3) as four:
        four.start()
        wait_converged(four)
        env = four.client_environment()
        leaver = four.nodes[3]
        done = subprocess.run(
            [sys.executable, "-m", "p2pindex", "drain", "--node", str(leaver.address)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.splitlines()[-1].startswith(f"ok: node {leaver.node_id}")
        assert leaver.process is not None
        assert leaver.process.wait(timeout=20) == 0
        refused = subprocess.run(
            [sys.executable, "-m", "p2pindex", "drain", "--node", str(four.nodes[0].address)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert refused.returncode != 0
        assert "fewer than N=3" in refused.stderr

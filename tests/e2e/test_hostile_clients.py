"""A hostile or careless client against real node processes: a reader that never reads, a
forged causal context, values piling up as siblings, a world-readable node key. Each gets a
definite error or a closed connection, nothing is written, everyone else is served, and a
counter records it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from p2pindex.cli.local_cluster import LocalCluster
from p2pindex.config import MIB, Limits
from p2pindex.core.versions import MAX_COUNTER, VersionVector, encode_context
from p2pindex.errors import PermissionDenied
from p2pindex.net.channel import open_channel
from p2pindex.net.secure.connector import SecureConnector
from p2pindex.security.authority import Authority
from p2pindex.security.certs import Role
from p2pindex.security.credentials import CREDENTIALS_ENV
from p2pindex.types import Address
from p2pindex.wire.codec import encode_frame
from p2pindex.wire.messages import (
    ErrorReply,
    GetReply,
    GetRequest,
    PutReply,
    PutRequest,
    StatusRequest,
)
from tests.e2e.test_node_process import admin, call, wait_members

pytestmark = pytest.mark.e2e


@pytest.fixture
def cluster(tmp_path: Path):
    with LocalCluster(3, tmp_path) as cluster:
        cluster.start()
        yield cluster


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def statistics(cluster: LocalCluster, address: str) -> dict[str, int]:
    reply = await call(cluster, address, StatusRequest())
    return reply.status["statistics"]  # type: ignore[attr-defined, no-any-return]


async def test_a_client_that_never_reads_slows_only_itself(cluster):
    n0 = str(cluster.nodes[0].address)
    await wait_members(cluster, n0, 3)
    reply = await call(cluster, n0, PutRequest(b"big", b"v" * MIB, None, "all", 10_000))
    assert isinstance(reply, PutReply)
    pid = cluster.nodes[0].pid
    assert pid is not None
    before = rss_kib(pid)
    # 400 gets of a 1 MB value (400 MB of replies) sent at once and never read.
    requests = b"".join(encode_frame(GetRequest(b"big", "one", 30_000), i + 1) for i in range(400))
    stream = await admin(cluster).connect(Address.parse(n0))
    try:
        with trio.move_on_after(10):
            await stream.send_all(requests)
        await trio.sleep(2)
        with trio.fail_after(10):  # another client is served meanwhile
            other = await call(cluster, n0, PutRequest(b"other", b"v", None, "quorum", 5000))
        assert isinstance(other, PutReply)
        grown_mib = (rss_kib(pid) - before) / 1024
        assert grown_mib < 100, f"node grew by {grown_mib:.0f} MiB"
        assert (await statistics(cluster, n0)).get("channel.paused", 0) >= 1
    finally:
        await trio.aclose_forcefully(stream)


async def test_a_forged_context_is_refused_and_the_key_stays_writable(cluster):
    n0 = str(cluster.nodes[0].address)
    await wait_members(cluster, n0, 3)
    first = await call(cluster, n0, PutRequest(b"wedge", b"v1", None, "all", 5000))
    assert isinstance(first, PutReply)
    forged = encode_context(VersionVector({"someone": MAX_COUNTER}))
    for address in cluster.addresses:
        refused = await call(cluster, address, PutRequest(b"wedge", b"x", forged, "all", 5000))
        assert isinstance(refused, ErrorReply) and refused.code == "invalid_request", refused
        assert "no replica has made" in refused.message
    got = await call(cluster, n0, GetRequest(b"wedge", "all", 5000))
    assert isinstance(got, GetReply) and got.values == [b"v1"]
    again = await call(cluster, n0, PutRequest(b"wedge", b"v2", got.context, "all", 5000))
    assert isinstance(again, PutReply)
    assert (await statistics(cluster, n0)).get("rejected.forged_context", 0) >= 1
    log = "".join(node.log_path.read_text() for node in cluster.nodes)
    assert "Traceback" not in log and "internal_error" not in log


async def test_values_piling_up_on_one_key_are_refused_whole_and_replicas_agree(cluster):
    n0 = str(cluster.nodes[0].address)
    await wait_members(cluster, n0, 3)
    outcomes = []
    async with trio.open_nursery() as nursery:
        channel = await open_channel(nursery, admin(cluster), Address.parse(n0), Limits())
        for i in range(8):
            value = bytes([i]) * 1_000_000
            reply = await channel.request(PutRequest(b"pile", value, None, "all", 10_000))
            outcomes.append(reply.code if isinstance(reply, ErrorReply) else "stored")
            other = await channel.request(PutRequest(b"tenant", b"v", None, "all", 5000))
            assert isinstance(other, PutReply)  # no other key's writes fail
        await channel.aclose()
    assert outcomes[:4] == ["stored"] * 4
    assert set(outcomes[4:]) == {"record_too_large"}
    answers = []
    for address in cluster.addresses:
        got = await call(cluster, address, GetRequest(b"pile", "one", 5000))
        assert isinstance(got, GetReply)
        answers.append((sorted(got.values), got.context))
    assert all(answer == answers[0] for answer in answers)
    assert len(answers[0][0]) == 4


def test_data_files_are_private_and_a_readable_node_key_stops_serve(cluster) -> None:
    node = cluster.nodes[0]
    assert stat.S_IMODE(node.data_dir.stat().st_mode) == 0o700
    for name in ("data.sqlite3", "data.sqlite3-wal", "node.key"):
        assert stat.S_IMODE((node.data_dir / name).stat().st_mode) & 0o077 == 0, name
    cluster.stop()
    key = node.data_dir / "node.key"
    key.chmod(0o644)
    env = {k: v for k, v in os.environ.items() if k != CREDENTIALS_ENV}
    command = ["serve", "--data-dir", str(node.data_dir), "--listen", str(node.address)]
    result = subprocess.run(
        [sys.executable, "-m", "p2pindex", *command],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"run chmod 600 {key}" in result.stderr


@pytest.fixture
def limited(tmp_path: Path):
    args = ("--client-rate", "20", "--client-burst", "50", "--max-client-connections", "3")
    with LocalCluster(1, tmp_path, extra_args=args) as cluster:
        cluster.start()
        yield cluster


async def test_a_client_over_its_rate_or_connection_limit_is_refused_and_counted(limited):
    n0 = str(limited.nodes[0].address)
    address = Address.parse(n0)
    connector = admin(limited)
    async with trio.open_nursery() as nursery:
        channel = await open_channel(nursery, connector, address, Limits())
        replies = []
        async with trio.open_nursery() as burst:
            for i in range(200):

                async def one(i: int = i) -> None:
                    key = f"rate-{i}".encode()
                    replies.append(await channel.request(PutRequest(key, b"v", None, "one", 5000)))

                burst.start_soon(one)
        codes = [r.code if isinstance(r, ErrorReply) else "ok" for r in replies]
        assert 40 <= codes.count("ok") < 200 and set(codes) == {"ok", "overloaded"}
        refusal = next(r for r in replies if isinstance(r, ErrorReply))
        assert "rate of 20 requests a second" in refusal.message
        # Two more connections of the same key are allowed. Five opened at once get two
        # sessions, and the other three are refused at their handshake, told why: each
        # handshake the node admits holds its place, so none is closed after it instead
        # (which a client with a write in flight could only report as indeterminate).
        others = []
        refusals = []

        async def connect() -> None:
            try:
                others.append(await connector.connect(address))
            except PermissionDenied as exc:
                refusals.append(str(exc))

        async with trio.open_nursery() as handshakes:
            for _ in range(5):
                handshakes.start_soon(connect)
        assert len(others) == 2 and len(refusals) == 3
        assert all("3 connections open, its limit" in refusal for refusal in refusals)
        await trio.sleep(3)  # the bucket refills (a request refused for the rate is answered)
        with trio.fail_after(5):
            for stream in others:
                await stream.send_all(encode_frame(StatusRequest(), 1))
                assert await stream.receive_some()
        status = await channel.request(StatusRequest())
        counts = status.status["statistics"]  # type: ignore[attr-defined]
        assert counts["overloaded.client_rate"] == codes.count("overloaded")
        assert counts["rejected.client_connections"] == 3
        for stream in others:
            await trio.aclose_forcefully(stream)
        await channel.aclose()


async def test_a_client_key_that_keeps_breaking_sessions_is_refused_at_the_handshake(cluster):
    """Each session the node closes for an unreadable frame costs it a whole handshake to
    replace; after five (the default allowance) the key's new handshakes are refused before
    the node spends its own cryptography. Its open sessions and every other key are served."""
    n0 = cluster.nodes[0]
    address = n0.address
    assert cluster.authority_dir is not None
    mallory = SecureConnector(
        Authority.load_or_init(cluster.authority_dir).credentials(Role.WRITE, prefix=b"m/")
    )
    async with trio.open_nursery() as nursery:
        kept = await open_channel(nursery, mallory, address, Limits())
        for _ in range(5):
            stream = await mallory.connect(address)
            await stream.send_all(b"\x00\x00\x00\x05\xff\xfe\xfd\x1b\x00")  # not CBOR
            with trio.fail_after(5):
                while await stream.receive_some():  # the error reply, then the close
                    pass
            await trio.aclose_forcefully(stream)
        with pytest.raises(PermissionDenied, match=r"could not read.*refused for \d+ s more"):
            await mallory.connect(address)
        reply = await kept.request(PutRequest(b"m/still", b"v", None, "one", 5000))
        assert isinstance(reply, PutReply)  # the session opened before is still served
        await kept.aclose()
    counts = await statistics(cluster, str(address))  # the admin key connects as ever
    assert counts["security.handshake.refused.broken_sessions"] == 1
    assert counts["rejected.bad_input"] >= 5
    assert "new connections are refused for 30 s" in n0.log_path.read_text()

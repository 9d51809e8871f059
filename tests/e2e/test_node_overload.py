"""The node-wide budget on a real node process: clients that pipeline gets of a large value
without reading fill it; from then on their requests are answered ``overloaded`` (definite:
nothing written), while a client that waits for each answer is still served, the refusals
are counted in ``status`` and the node's memory stays bounded."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from p2pindex.cli.local_cluster import LocalCluster
from p2pindex.config import MIB, Limits
from p2pindex.net.channel import open_channel
from p2pindex.types import Address
from p2pindex.wire.codec import FrameDecoder, encode_frame
from p2pindex.wire.messages import (
    ErrorReply,
    GetReply,
    GetRequest,
    Message,
    PutReply,
    PutRequest,
    StatusRequest,
)
from tests.e2e.test_hostile_clients import rss_kib
from tests.e2e.test_node_process import admin, call

pytestmark = pytest.mark.e2e

BUDGET = 24 * MIB
"""The node's ``limits.node_in_flight``: a few hogging connections of 4 MiB each fill it."""
VALUE = b"v" * 1_000_000
MAX_HOGS = 24
"""Hogs opened at most before the budget must be full: each holds about ``reply_budget``
(4 MiB) in the node once the kernel's buffers are full, so 24 are twice what it takes."""


@pytest.fixture
def node(tmp_path: Path):
    config = tmp_path / "node.toml"
    config.write_text(f"[limits]\nnode_in_flight = {BUDGET}\n")
    with LocalCluster(1, tmp_path, extra_args=("--config", str(config))) as cluster:
        cluster.start()
        yield cluster


def gets(count: int, first_id: int = 1) -> bytes:
    return b"".join(
        encode_frame(GetRequest(b"big", "one", 30_000), first_id + i) for i in range(count)
    )


async def greedy(cluster: LocalCluster, address: Address, count: int, key: bytes) -> list[Message]:
    """Send ``count`` gets of the large value and a put of ``key`` in one write (a client
    pipelining without waiting), then read every answer."""
    stream = await admin(cluster).connect(address)
    put = PutRequest(key, b"x", None, "one", 5000)
    try:
        await stream.send_all(gets(count) + encode_frame(put, count + 1))
        decoder = FrameDecoder(Limits())
        replies: dict[int, Message] = {}
        with trio.fail_after(10):
            while len(replies) < count + 1:
                data = await stream.receive_some()
                assert data, "the node closed the connection"
                for frame in decoder.feed(data):
                    assert frame.message is not None
                    replies[frame.request_id] = frame.message
        return [replies[i + 1] for i in range(count + 1)]
    finally:
        await trio.aclose_forcefully(stream)


async def test_past_the_node_budget_hogs_are_refused_overloaded_and_a_patient_client_is_served(
    node,
):
    address = node.nodes[0].address
    n0 = str(address)
    stored = await call(node, n0, PutRequest(b"big", VALUE, None, "one", 10_000))
    assert isinstance(stored, PutReply)
    pid = node.nodes[0].pid
    assert pid is not None
    before = rss_kib(pid)
    hogs: list[trio.abc.Stream] = []
    async with trio.open_nursery() as nursery:
        patient = await open_channel(nursery, admin(node), address, Limits())
        try:
            refusal = None
            with trio.fail_after(30):
                while refusal is None:
                    assert len(hogs) < MAX_HOGS, "the node never answered 'overloaded'"
                    hog = await admin(node).connect(address)
                    hogs.append(hog)
                    await hog.send_all(gets(64))  # 64 MB of replies, never read
                    await trio.sleep(0.3)
                    key = f"probe-{len(hogs)}".encode()
                    replies = await greedy(node, address, 3, key)
                    refused = [r for r in replies if isinstance(r, ErrorReply)]
                    if refused:
                        assert {r.code for r in refused} == {"overloaded"}, refused
                        refusal = refused[-1]  # the put, last of the pipelined requests
                        assert isinstance(replies[0], GetReply)  # it held nothing yet
                        assert replies[0].values == [VALUE]
            assert refusal.message == (
                "the node is holding as much request and reply data as it may; "
                "nothing was done, try again shortly"
            )
            # Meanwhile a client that waits for each answer is served, large values too.
            with trio.fail_after(10):
                for i in range(5):
                    got = await patient.request(GetRequest(b"big", "one", 5000))
                    assert isinstance(got, GetReply) and got.values == [VALUE]
                    mine = f"patient-{i}".encode()
                    put = await patient.request(PutRequest(mine, b"v", None, "one", 5000))
                    assert isinstance(put, PutReply), put
                status = await patient.request(StatusRequest())
            counts = status.status["statistics"]  # type: ignore[attr-defined]
            assert counts.get("overloaded.node", 0) >= 1
            assert counts.get("channel.paused", 0) >= 1
            grown_mib = (rss_kib(pid) - before) / 1024
            # Unbounded, the hogs' replies alone would be 64 MB each (over 100 MB for two).
            assert grown_mib < 4 * BUDGET / MIB, f"the node grew by {grown_mib:.0f} MiB"
            # The refused put wrote nothing.
            missing = await patient.request(GetRequest(key, "one", 5000))
            assert isinstance(missing, GetReply) and missing.values == []
        finally:
            for hog in hogs:
                await trio.aclose_forcefully(hog)
            await patient.aclose()
    # With the hogs gone the budget drains and pipelining clients are served again.
    with trio.fail_after(10):
        while True:
            replies = await greedy(node, address, 3, b"after")
            if not any(isinstance(r, ErrorReply) for r in replies):
                break
            await trio.sleep(0.2)
    assert isinstance(replies[-1], PutReply)

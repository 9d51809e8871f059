"""Floods of refused connections against a real node process cost it little: a client that
speaks without a handshake, and one that breaks its session with an undecodable frame and
reconnects, each get a clear error and a closed connection every time (the second, once
it has broken five sessions, at its handshake, before the node's cryptography), every
refusal is counted, the node's log gets a bounded number of lines about them, and a client
on another connection is served throughout."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import trio

from p2pindex.cli.local_cluster import LocalCluster
from p2pindex.config import Limits
from p2pindex.net.channel import open_channel
from p2pindex.net.secure.connector import SecureConnector
from p2pindex.net.secure.manager import LOG_BURST
from p2pindex.security.authority import Authority
from p2pindex.security.certs import Role
from p2pindex.security.errors import ConnectionRefused
from p2pindex.wire.codec import FrameDecoder, encode_frame
from p2pindex.wire.messages import (
    ErrorReply,
    GetReply,
    GetRequest,
    PutReply,
    PutRequest,
    StatusRequest,
)
from tests.e2e.test_node_process import admin

pytestmark = pytest.mark.e2e

FLOOD = 300


@pytest.fixture
def node(tmp_path: Path):
    with LocalCluster(1, tmp_path) as cluster:
        cluster.start()
        yield cluster


async def answers_then_close(stream: trio.abc.Stream) -> bytes:
    """Everything the node sends until it closes the connection (it must, within 5 s)."""
    received = b""
    with trio.fail_after(5):
        while chunk := await stream.receive_some():
            received += chunk
    await trio.aclose_forcefully(stream)
    return received


async def test_floods_of_refused_connections_are_answered_counted_and_logged_within_a_budget(
    node,
):
    address = node.nodes[0].address
    served = 0

    async def good_client(until: trio.Event) -> None:
        nonlocal served
        async with trio.open_nursery() as nursery:
            channel = await open_channel(nursery, admin(node), address, Limits())
            while not until.is_set():
                with trio.fail_after(5):
                    reply = await channel.request(
                        PutRequest(f"good-{served}".encode(), b"v", None, "one", 5000)
                    )
                assert isinstance(reply, PutReply), reply
                served += 1
                await trio.sleep(0.01)
            await channel.aclose()

    async def plain_client() -> None:
        """Speaks the protocol without a handshake: told why, then closed."""
        stream = await trio.open_tcp_stream(address.host, address.port)
        await stream.send_all(encode_frame(PutRequest(b"plain", b"x", None, "one", 1000), 1))
        (frame,) = FrameDecoder(Limits()).feed(await answers_then_close(stream))
        assert isinstance(frame.message, ErrorReply)
        assert frame.message.code == "permission_denied"
        assert "requires authenticated connections" in frame.message.message

    assert node.authority_dir is not None
    mallory = SecureConnector(Authority.load_or_init(node.authority_dir).credentials(Role.WRITE))
    broken = refused = 0

    async def breaking_client() -> None:
        """Opens a session, then sends a frame that is not CBOR: told why, then closed. Once
        its key has used up its allowance of broken sessions, refused at the handshake and
        told why."""
        nonlocal broken, refused
        try:
            stream = await mallory.connect(address)
        except ConnectionRefused as exc:
            assert "could not read" in str(exc)
            refused += 1
            return
        await stream.send_all(struct.pack(">I", 4) + b"\xff\xfe\xfd\x1b")
        (frame,) = FrameDecoder(Limits()).feed(await answers_then_close(stream))
        assert isinstance(frame.message, ErrorReply) and frame.message.code == "protocol_error"
        assert "not valid CBOR" in frame.message.message
        broken += 1

    done = trio.Event()
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(good_client, done)
        for _ in range(FLOOD):
            await plain_client()
            await breaking_client()
        await trio.sleep(1.1)  # the log budget refills: the next refusal's line is written
        await plain_client()
        done.set()
    assert served >= 10
    # Five broken sessions (the default allowance), one more each 30 s; the rest refused.
    assert 5 <= broken <= 6 + (trio.current_time() - started) / 30
    assert broken + refused == FLOOD
    async with trio.open_nursery() as nursery:
        channel = await open_channel(nursery, admin(node), address, Limits())
        status = await channel.request(StatusRequest())
        await channel.aclose()
    counts = status.status["statistics"]  # type: ignore[attr-defined]
    assert counts["security.handshake.failed.not_secure"] == FLOOD + 1
    assert counts["rejected.bad_input"] >= broken
    assert counts["security.handshake.refused.broken_sessions"] == refused
    log = node.nodes[0].log_path.read_text()
    refused_lines = [line for line in log.splitlines() if "handshake with" in line]
    assert LOG_BURST <= len(refused_lines) <= LOG_BURST + 10, len(refused_lines)
    assert "similar lines left out before this one" in refused_lines[-1]
    assert "Traceback" not in log
    async with trio.open_nursery() as nursery:  # nothing a refused client sent was written
        channel = await open_channel(nursery, admin(node), address, Limits())
        got = await channel.request(GetRequest(b"plain", "one", 5000))
        assert isinstance(got, GetReply) and got.values == []
        await channel.aclose()

"""What the real-process tests share: a 3-node local cluster every node of which sees the
others, and one request over a fresh connection."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trio

from p2pindex.cli.local_cluster import LocalCluster, wait_converged
from p2pindex.config import Limits
from p2pindex.net.base import Transport
from p2pindex.net.channel import open_channel
from p2pindex.types import Address
from p2pindex.wire.messages import Message


@contextmanager
def converged_cluster(directory: Path, *, insecure: bool = False) -> Iterator[LocalCluster]:
    """Three node processes, started, each seeing the others alive and ACTIVE (tests that
    read or write at ALL need every node first)."""
    with LocalCluster(3, directory, insecure=insecure) as cluster:
        cluster.start()
        wait_converged(cluster)
        yield cluster


async def request_once(
    transport: Transport, address: str, message: Message, timeout: float = 10.0
) -> Message:
    """Send ``message`` to ``address`` on a connection of its own and return the reply."""
    async with trio.open_nursery() as nursery:
        channel = await open_channel(nursery, transport, Address.parse(address), Limits())
        try:
            with trio.fail_after(timeout):
                return await channel.request(message)
        finally:
            await channel.aclose()

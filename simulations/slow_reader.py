"""A client that pipelines gets of a large value and never reads the replies, against a real
local node: how much the node's memory grows, and what it costs everyone else.

    python simulations/slow_reader.py [--gets 10000] [--value-mb 1] [--nodes 1]

Starts a secure local cluster (real `p2pindex serve` processes on loopback), stores one
value, measures another client's median round trip (a small put, then a get, one at a time)
while idle, then opens a session that sends ``--gets`` gets of the value in one go and never
reads, and measures the other client again while the node's resident memory is sampled.
The node stops reading a connection whose unsent replies pass its reply budget, so its
memory should grow by at most a few tens of MB and the other client should barely notice.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from p2pindex.cli.local_cluster import LocalCluster, wait_converged  # noqa: E402
from p2pindex.config import Limits  # noqa: E402
from p2pindex.net.channel import RpcChannel, open_channel  # noqa: E402
from p2pindex.net.secure.connector import SecureConnector  # noqa: E402
from p2pindex.security.credentials import ClientCredentials  # noqa: E402
from p2pindex.types import Address  # noqa: E402
from p2pindex.wire.codec import encode_frame  # noqa: E402
from p2pindex.wire.messages import (  # noqa: E402
    GetReply,
    GetRequest,
    PutReply,
    PutRequest,
    StatusReply,
    StatusRequest,
)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def round_trips(channel: RpcChannel, count: int) -> list[float]:
    """Latencies (ms) of ``count`` put-then-get pairs of small values, one at a time."""
    took = []
    for i in range(count):
        key = f"other-{i % 50}".encode()
        start = time.perf_counter()
        put = await channel.request(PutRequest(key, b"small", None, "quorum", 10_000))
        took.append((time.perf_counter() - start) * 1000)
        assert isinstance(put, PutReply), put
        start = time.perf_counter()
        got = await channel.request(GetRequest(key, "quorum", 10_000))
        took.append((time.perf_counter() - start) * 1000)
        assert isinstance(got, GetReply), got
    return took


async def measure(cluster: LocalCluster, gets: int, value_mb: float, samples: int) -> None:
    node = cluster.nodes[0]
    assert node.pid is not None and cluster.credentials is not None
    connector = SecureConnector(ClientCredentials.load(cluster.credentials))
    address = Address.parse(str(node.address))
    value = b"v" * int(value_mb * 1_000_000)
    async with trio.open_nursery() as nursery:
        other = await open_channel(nursery, connector, address, Limits(), name="other client")
        stored = await other.request(PutRequest(b"big", value, None, "all", 30_000))
        assert isinstance(stored, PutReply), stored
        await round_trips(other, 20)  # warm up
        idle = statistics.median(await round_trips(other, samples))
        await trio.sleep(1)
        before = rss_mib(node.pid)
        peak = before

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, rss_mib(node.pid))
                await trio.sleep(0.05)

        nursery.start_soon(sample)
        stream = await connector.connect(address)
        requests = b"".join(
            encode_frame(GetRequest(b"big", "one", 60_000), i + 1) for i in range(gets)
        )
        sent = trio.Event()

        async def send() -> None:
            await stream.send_all(requests)
            sent.set()

        nursery.start_soon(send)
        await trio.sleep(3)  # let the node take all it will
        loaded = statistics.median(await round_trips(other, samples))
        await trio.sleep(1)
        status = await other.request(StatusRequest())
        assert isinstance(status, StatusReply)
        stats = status.status["statistics"]
        after = rss_mib(node.pid)
        print(
            f"gets pipelined, never read   {gets:,} of a {value_mb:g} MB value "
            f"({len(requests) / 1e6:.2f} MB of requests; all sent: {sent.is_set()})"
        )
        print(
            f"node RSS                     {before:.1f} MiB before, peak {peak:.1f} MiB, "
            f"{after:.1f} MiB after"
        )
        print(f"node RSS growth              {peak - before:+.1f} MiB (must be <= 64)")
        print(
            f"other client p50             idle {idle:.2f} ms, meanwhile {loaded:.2f} ms "
            f"({loaded / idle:.2f}x; must be <= 2x)"
        )
        print(f"channel.paused               {stats.get('channel.paused', 0)}")
        print(f"gets served                  {stats.get('requests.get', 0)}")
        await trio.aclose_forcefully(stream)
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gets", type=int, default=10_000)
    parser.add_argument("--value-mb", type=float, default=1.0)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="p2pindex-slow-reader-") as root,
        LocalCluster(args.nodes, Path(root)) as cluster,
    ):
        cluster.start()
        wait_converged(cluster)
        trio.run(measure, cluster, args.gets, args.value_mb, args.samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())

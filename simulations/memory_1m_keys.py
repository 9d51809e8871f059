"""Resident memory of 3 nodes holding 1,000,000 keys each (N=3: every node has every key).

Writing a million keys through the cluster takes a long time on a 2-core box, so this
script bulk-loads each node's data directory through the same storage code the node uses
(``SqliteStorage.put_many`` of real version records, as the coordinator would write them),
then starts the three nodes on those directories, runs a read workload over the whole key
space through the client, and prints each node's resident set size (VmRSS) and its peak.

    python simulations/memory_1m_keys.py [--keys 1000000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import trio

import p2pindex
from p2pindex.cli.local_cluster import LocalCluster, wait_converged
from p2pindex.core import versions
from p2pindex.core.versions import VersionVector
from p2pindex.node.identity import NodeIdentity
from p2pindex.node.runtime import DATA_FILE
from p2pindex.storage.sqlite import SqliteStorage

BATCH = 20_000


async def bulk_load(data_dir: Path, keys: int) -> None:
    identity = NodeIdentity.load_or_create(data_dir)
    actor = f"{identity.node_id}.bulk"
    store = await SqliteStorage.open(data_dir / DATA_FILE)
    try:
        await store.set_meta("handoff.synced", b"1")
        for start in range(0, keys, BATCH):
            items = []
            for i in range(start, min(start + BATCH, keys)):
                obj = versions.update(None, VersionVector(), actor, b"%0100d" % i)
                items.append((b"user%010d" % i, versions.encode_object(obj)))
            await store.put_many(items)
    finally:
        await store.aclose()


def rss_kib(pid: int) -> tuple[int, int]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


async def read_everything(
    addresses: list[str], credentials: Path | None, keys: int, sample_every: int
) -> int:
    found = 0
    pending = iter(range(0, keys, sample_every))
    async with p2pindex.connect(addresses, timeout=10.0, credentials=credentials) as db:

        async def worker() -> None:
            nonlocal found
            for i in pending:
                result = await db.get(b"user%010d" % i)
                found += bool(result.values)

        async with trio.open_nursery() as nursery:
            for _ in range(64):
                nursery.start_soon(worker)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--sample-every", type=int, default=50, help="read every Nth key")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="p2pindex-mem-") as tmp:
        cluster = LocalCluster(3, Path(tmp), n_replicas=3)
        started = time.monotonic()
        for node in cluster.nodes:
            trio.run(bulk_load, node.data_dir, args.keys)
            print(
                f"loaded {args.keys:,} keys into {node.data_dir} "
                f"({time.monotonic() - started:.0f} s)",
                flush=True,
            )
        with cluster:
            cluster.start()
            wait_converged(cluster, timeout=120)
            found = trio.run(
                read_everything,
                cluster.addresses,
                cluster.credentials,
                args.keys,
                args.sample_every,
            )
            print(f"read {found:,} keys back through the cluster", flush=True)
            for node in cluster.nodes:
                assert node.pid is not None
                rss, peak = rss_kib(node.pid)
                print(f"node {node.node_id}: RSS {rss / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Many large values written without a context to one key, against real nodes: every write
is stored on all N replicas or refused definitely, replicas agree, other keys are unharmed.

    python simulations/sibling_pileup.py [--writes 100] [--value-mb 1]

Starts a local cluster (insecure, so the script can read each replica's stored record with
the node-to-node ReplicaRead), writes ``--writes`` distinct values of ``--value-mb`` MB to
one key at consistency ALL without a context (so each would become a sibling), with a small
write to another key after each, then reads the key's record from every node and checks:
the records are byte-identical, and the values they hold are exactly the writes that were
acknowledged (a refused write is stored nowhere).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from p2pindex.cli.local_cluster import LocalCluster, wait_converged  # noqa: E402
from p2pindex.config import Limits  # noqa: E402
from p2pindex.core.versions import decode_object  # noqa: E402
from p2pindex.net.channel import open_channel  # noqa: E402
from p2pindex.types import Address  # noqa: E402
from p2pindex.wire.messages import (  # noqa: E402
    ErrorReply,
    PutReply,
    PutRequest,
    ReplicaRead,
    ReplicaReadReply,
)


async def pile_up(cluster: LocalCluster, writes: int, value_bytes: int) -> int:
    outcomes: Counter[str] = Counter()
    stored: set[bytes] = set()
    other_failures = 0
    async with trio.open_nursery() as nursery:
        channels = [
            await open_channel(nursery, None, Address.parse(a), Limits()) for a in cluster.addresses
        ]
        for i in range(writes):
            value = i.to_bytes(4, "big") * (value_bytes // 4)
            channel = channels[i % len(channels)]
            reply = await channel.request(PutRequest(b"pile", value, None, "all", 30_000))
            if isinstance(reply, PutReply):
                outcomes["stored on all replicas"] += 1
                stored.add(value)
            else:
                assert isinstance(reply, ErrorReply)
                outcomes[f"refused: {reply.code}"] += 1
            other = await channel.request(PutRequest(f"t{i}".encode(), b"v", None, "all", 5000))
            other_failures += not isinstance(other, PutReply)
        await trio.sleep(1)
        records = []
        for channel in channels:
            reply = await channel.request(ReplicaRead(b"pile"))
            assert isinstance(reply, ReplicaReadReply) and reply.record is not None
            records.append(reply.record)
        for channel in channels:
            await channel.aclose()
    held = set(decode_object(records[0]).values)
    agree = all(record == records[0] for record in records)
    print(f"writes of {value_bytes / 1e6:g} MB to one key, no context   {writes}")
    for outcome, count in sorted(outcomes.items()):
        print(f"  {outcome:<40} {count}")
    print(f"other key's writes failed                   {other_failures}")
    print(f"replica records identical                   {agree} ({len(records[0]):,} bytes)")
    print(f"values held == writes acknowledged          {held == stored} ({len(held)} siblings)")
    ok = agree and held == stored and other_failures == 0 and sum(outcomes.values()) == writes
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=100)
    parser.add_argument("--value-mb", type=float, default=1.0)
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="p2pindex-pileup-") as root,
        LocalCluster(3, Path(root), insecure=True) as cluster,
    ):
        cluster.start()
        wait_converged(cluster)
        return trio.run(pile_up, cluster, args.writes, int(args.value_mb * 1_000_000))


if __name__ == "__main__":
    sys.exit(main())

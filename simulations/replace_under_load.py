"""Replace a dead node of a loaded 3-node cluster with a new machine, under steady writes.

Real processes on loopback, security on, N=3. Loads --keys keys at QUORUM into 3 nodes,
kills one with SIGKILL, waits until the others see it dead, then starts a 4th node with
`serve --replace DEAD_ID` while a writer keeps adding keys at --write-rate and a checker keeps
reading acknowledged keys at QUORUM. Reports how long the new node took to become ACTIVE
(the issue asks for 60 s at 300,000 keys and 200 writes/s) and reads every acknowledged key
back at QUORUM: any missing key is a lost write (exit 1).

    python simulations/replace_under_load.py [--keys 300000] [--write-rate 200]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import trio

import p2pindex
from p2pindex.cli.local_cluster import LocalCluster

sys.path.insert(0, str(Path(__file__).resolve().parent))
from join_under_load import (
    Tally,
    checker,
    load,
    report,
    run_on_cluster,
    steady_writer,
    verify,
    wait_active,
)


async def wait_dead(db: p2pindex.AsyncClient, address: str, node_id: str, timeout: float) -> None:
    with trio.fail_after(timeout):
        while True:
            members = await db.members(address)
            if any(m.node_id == node_id and m.liveness == "dead" for m in members):
                return
            await trio.sleep(0.5)


async def run(cluster: LocalCluster, args: argparse.Namespace) -> int:
    tally = Tally()
    first3 = cluster.addresses[:3]
    dead = cluster.nodes[2]
    async with p2pindex.connect(first3, timeout=10.0, credentials=cluster.credentials) as db:
        print(f"loading {args.keys:,} keys at QUORUM ...", flush=True)
        await load(db, args.keys, tally)
        print(f"loaded {len(tally.acked):,} (writes failed: {tally.writes_failed})", flush=True)
        held = (await db.status(str(dead.address))).document["keys"]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(steady_writer, db, args.write_rate, tally)
            nursery.start_soon(checker, db, tally, random.Random(args.seed))
            cluster.kill(2)
            print(f"killed node 3 ({dead.node_id}, {held:,} keys) with SIGKILL", flush=True)
            await wait_dead(db, str(cluster.nodes[0].address), dead.node_id, 60)
            cluster.extra_args = ("--replace", dead.node_id)
            started = time.monotonic()
            await trio.to_thread.run_sync(cluster.restart, 3)
            print(f"replacement started at {cluster.addresses[3]}", flush=True)
            status = await wait_active(db, cluster.addresses[3], args.timeout)
            took = time.monotonic() - started
            await trio.sleep(args.settle)
            nursery.cancel_scope.cancel()
    live = [cluster.addresses[i] for i in (0, 1, 3)]
    async with p2pindex.connect(live, timeout=10.0, credentials=cluster.credentials) as db:
        members = await db.members(live[0])
        print(f"verifying all {len(tally.acked):,} acknowledged keys at QUORUM ...", flush=True)
        missing = await verify(db, list(tally.acked))
    handoff = status["handoff"]
    print()
    print(f"replacement ACTIVE {took:.1f} s after it started (the dead node held {held:,} keys)")
    still = [m.node_id for m in members if m.node_id == dead.node_id]
    print(f"dead member still listed: {'yes' if still else 'no (removed in the same step)'}")
    return report(handoff, tally, missing, "the replacement")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=300_000)
    parser.add_argument("--write-rate", type=float, default=200.0, help="writes/s meanwhile")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds of load after ACTIVE")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    return run_on_cluster(4, "replace", run, args)


if __name__ == "__main__":
    sys.exit(main())

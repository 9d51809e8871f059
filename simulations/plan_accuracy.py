"""`p2pindex plan add 1` against what really moves when a 4th node joins 3 (real processes).

Loads --keys keys (values of random size around --value-size) into 3 nodes at ALL, runs
`p2pindex plan add 1` twice (with placeholder ids, and with the new node's real id read
from its data directory before it starts), starts the 4th node, waits until it is ACTIVE
and compares the handoff it reports (keys and bytes received) with both plans; then runs
`p2pindex plan remove` for the new node, drains it, and compares what it handed over.

    python simulations/plan_accuracy.py [--keys 20000] [--value-size 200]
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

import p2pindex
from p2pindex.cli.local_cluster import LocalCluster
from p2pindex.errors import P2PIndexError
from p2pindex.node.identity import NodeIdentity


async def load(db: p2pindex.AsyncClient, keys: int, size: int, seed: int) -> int:
    rng = random.Random(seed)
    values = [rng.randbytes(rng.randint(size // 2, size * 3 // 2)) for _ in range(keys)]
    pending = iter(range(keys))
    failed = 0

    async def worker() -> None:
        nonlocal failed
        for i in pending:
            try:
                await db.put(b"plan-%08d" % i, values[i], consistency="all")
            except P2PIndexError:
                failed += 1

    async with trio.open_nursery() as nursery:
        for _ in range(64):
            nursery.start_soon(worker)
    return failed


def plan(cluster: LocalCluster, *extra: str, action: tuple[str, ...] = ("add", "1")) -> dict:
    command = [sys.executable, "-m", "p2pindex", "plan", *action, "--format", "json"]
    command += ["--node", cluster.addresses[0], *extra]
    out = subprocess.run(
        command, check=True, capture_output=True, text=True, env=cluster.client_environment()
    )
    return json.loads(out.stdout)


async def wait_active(db: p2pindex.AsyncClient, address: str, timeout: float) -> dict:
    deadline = trio.current_time() + timeout
    while True:
        status = (await db.status(address)).document
        if status["state"] == "active" and (status["handoff"] or {}).get("done"):
            return status
        if trio.current_time() > deadline:
            raise TimeoutError("the new node did not become ACTIVE in time")
        await trio.sleep(0.5)


def off(real: int, planned: int) -> str:
    return f"{(planned - real) / real * 100:+.2f}%" if real else "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--value-size", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="p2pindex-plan-") as tmp:
        cluster = LocalCluster(4, Path(tmp), n_replicas=3, insecure=True)
        with cluster:
            for index in range(3):
                cluster.restart(index)
            new_id = NodeIdentity.load_or_create(cluster.nodes[3].data_dir).node_id

            async def run() -> int:
                async with p2pindex.connect(cluster.addresses[:3], timeout=10.0) as db:
                    print(f"loading {args.keys:,} keys at ALL ...", flush=True)
                    failed = await load(db, args.keys, args.value_size, args.seed)
                    print(f"loaded ({failed} failed)", flush=True)
                    guess = await trio.to_thread.run_sync(plan, cluster)
                    exact = await trio.to_thread.run_sync(plan, cluster, "--new-id", new_id)
                    started = time.monotonic()
                    await trio.to_thread.run_sync(cluster.restart, 3)
                    status = await wait_active(db, cluster.addresses[3], args.timeout)

                    def received() -> int:  # keys the stayers took in batches (the handoff)
                        return sum(st["statistics"].get("replica.batch_items", 0) for st in stayers)

                    stayers = [(await db.status(a)).document for a in cluster.addresses[:3]]
                    before = received()
                    removal = await trio.to_thread.run_sync(
                        functools.partial(plan, cluster, action=("remove", new_id))
                    )
                    await db.leave(cluster.addresses[3])
                    out: dict = {}
                    with trio.fail_after(args.timeout):
                        while True:
                            try:
                                out = (await db.status(cluster.addresses[3])).document[
                                    "handoff"
                                ] or out
                            except P2PIndexError:
                                break
                            await trio.sleep(0.2)
                    await trio.sleep(1.0)
                    stayers = [(await db.status(a)).document for a in cluster.addresses[:3]]
                    out["received"] = received() - before
                handoff = status["handoff"]
                print(f"4th node {new_id} ACTIVE after {time.monotonic() - started:.1f} s")
                print(f"{'':28}{'keys':>10}{'bytes':>14}{'keys off':>10}{'bytes off':>10}")
                print(
                    f"{'really moved (handoff in)':28}{handoff['keys']:>10,}{handoff['bytes']:>14,}"
                )
                for name, p in (("plan, placeholder id", guess), ("plan, real id", exact)):
                    print(
                        f"{name:28}{p['moved_keys']:>10,}{p['moved_bytes']:>14,}"
                        f"{off(handoff['keys'], p['moved_keys']):>10}"
                        f"{off(handoff['bytes'], p['moved_bytes']):>10}"
                    )
                print(f"ideal (fair share) bytes: {exact['ideal_bytes']:,}")
                print(f"{'drained (stayers received)':28}{out['received']:>10,}{'-':>14}")
                print(
                    f"{'plan remove':28}{removal['moved_keys']:>10,}{removal['moved_bytes']:>14,}"
                    f"{off(out['received'], removal['moved_keys']):>10}"
                )
                worst = max(
                    abs(p[f] - handoff[h]) / handoff[h]
                    for p in (guess, exact)
                    for f, h in (("moved_keys", "keys"), ("moved_bytes", "bytes"))
                )
                worst = max(worst, abs(removal["moved_keys"] - out["received"]) / out["received"])
                return 0 if worst <= 0.05 else 1

            return trio.run(run)


if __name__ == "__main__":
    sys.exit(main())

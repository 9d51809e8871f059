"""A 4th node joins a 3-node cluster holding 100,000 keys while writes keep coming.

Real processes on loopback. Loads --keys keys at QUORUM into 3 nodes, then starts a steady
writer (new keys) and a checker that keeps reading already-acknowledged keys at QUORUM,
starts a 4th node, and waits until it is ACTIVE. Then every acknowledged key is read back
at QUORUM. Prints the handoff figures from the new node's status (keys, bytes, rate) and
the checker's counts: any acknowledged key that could not be read is a failure (exit 1).

    python simulations/join_under_load.py [--keys 100000] [--write-rate 300]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

import p2pindex
from p2pindex.cli.local_cluster import LocalCluster
from p2pindex.errors import DefiniteError, P2PIndexError

VALUE = b"x" * 100


class Tally:
    def __init__(self) -> None:
        self.acked: list[bytes] = []
        self.writes_definite = 0
        """Writes refused: nothing was stored (a DefiniteError)."""
        self.writes_indeterminate = 0
        """Writes whose outcome is unknown (timed out, quorum not reached): not checked."""
        self.errors: Counter[str] = Counter()
        """Each failed write's error class and message, for the report."""
        self.reads_ok = 0
        self.reads_missing: list[bytes] = []
        self.reads_failed = 0

    def failed(self, error: P2PIndexError) -> None:
        if isinstance(error, DefiniteError):
            self.writes_definite += 1
        else:
            self.writes_indeterminate += 1
        self.errors[f"{type(error).__name__}: {error}"] += 1

    def print_errors(self) -> None:
        for error, count in self.errors.most_common():
            print(f"  {count} x {error}")

    @property
    def writes_failed(self) -> str:
        return f"{self.writes_definite} definite, {self.writes_indeterminate} indeterminate"


async def load(db: p2pindex.AsyncClient, keys: int, tally: Tally, concurrency: int = 256) -> None:
    queue = iter(range(keys))
    started = time.monotonic()

    async def worker() -> None:
        for i in queue:
            key = b"load-%08d" % i
            try:
                await db.put(key, VALUE)
            except P2PIndexError as exc:
                tally.failed(exc)
                continue
            tally.acked.append(key)
            if len(tally.acked) % 10_000 == 0:
                rate = len(tally.acked) / (time.monotonic() - started)
                print(f"  loaded {len(tally.acked):,} keys ({rate:,.0f}/s)", flush=True)

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)


async def steady_writer(db: p2pindex.AsyncClient, rate: float, tally: Tally) -> None:
    i = 0
    while True:
        key = b"live-%08d" % i
        i += 1
        try:
            await db.put(key, VALUE)
            tally.acked.append(key)
        except P2PIndexError as exc:
            tally.failed(exc)
        await trio.sleep(1.0 / rate)


async def checker(db: p2pindex.AsyncClient, tally: Tally, rng: random.Random) -> None:
    while True:
        key = rng.choice(tally.acked)
        try:
            result = await db.get(key)
        except P2PIndexError:
            tally.reads_failed += 1
        else:
            if result.values == [VALUE]:
                tally.reads_ok += 1
            else:
                tally.reads_missing.append(key)
        await trio.sleep(0)


async def wait_active(
    db: p2pindex.AsyncClient, address: str, timeout: float, quiet: bool = False
) -> dict:
    deadline = trio.current_time() + timeout
    while True:
        status = (await db.status(address)).document
        if status["state"] == "active" and status["handoff"]["done"]:
            return status
        handoff = status["handoff"]
        if not quiet:
            print(
                f"  joiner {status['state']}: {handoff['keys']:,} keys in, "
                f"{handoff['ranges_done']}/{handoff['ranges_total']} ranges",
                flush=True,
            )
        if trio.current_time() > deadline:
            raise TimeoutError("the new node did not become ACTIVE in time")
        await trio.sleep(1.0)


async def verify(db: p2pindex.AsyncClient, keys: list[bytes]) -> list[bytes]:
    missing: list[bytes] = []
    pending = iter(keys)

    async def worker() -> None:
        for key in pending:
            try:
                result = await db.get(key)
            except P2PIndexError:
                missing.append(key)
                continue
            if result.values != [VALUE]:
                missing.append(key)

    async with trio.open_nursery() as nursery:
        for _ in range(128):
            nursery.start_soon(worker)
    return missing


async def run(cluster: LocalCluster, args: argparse.Namespace) -> int:
    tally = Tally()
    first3 = cluster.addresses[:3]
    async with p2pindex.connect(first3, timeout=10.0, credentials=cluster.credentials) as db:
        print(f"loading {args.keys:,} keys at QUORUM ...", flush=True)
        await load(db, args.keys, tally)
        print(f"loaded {len(tally.acked):,} (writes failed: {tally.writes_failed})", flush=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(steady_writer, db, args.write_rate, tally)
            nursery.start_soon(checker, db, tally, random.Random(args.seed))
            joined_at = time.monotonic()
            await trio.to_thread.run_sync(cluster.restart, 3)
            print(f"4th node started at {cluster.addresses[3]}", flush=True)
            status = await wait_active(db, cluster.addresses[3], args.timeout)
            took = time.monotonic() - joined_at
            nursery.cancel_scope.cancel()
    handoff = status["handoff"]
    async with p2pindex.connect(
        cluster.addresses, timeout=10.0, credentials=cluster.credentials
    ) as db:
        print(f"verifying all {len(tally.acked):,} acknowledged keys at QUORUM ...", flush=True)
        missing = await verify(db, list(tally.acked))
    print()
    print(f"new node ACTIVE {took:.1f} s after it started")
    return report(handoff, tally, missing, "the join")


def report(handoff: dict, tally: Tally, missing: list[bytes], what: str) -> int:
    """Print the new node's handoff and the checks made during and after ``what``; the exit
    status (1 when an acknowledged key was missing)."""
    print(
        f"handoff: {handoff['keys']:,} keys, {handoff['bytes']:,} bytes in "
        f"{handoff['elapsed_s']:.1f} s = {handoff['keys_per_s']:,.0f} keys/s, "
        f"{handoff['bytes_per_s'] / 1e6:.2f} MB/s"
    )
    print(
        f"during {what}: {tally.reads_ok:,} checked reads ok, "
        f"{len(tally.reads_missing)} acknowledged keys missing, {tally.reads_failed} reads failed,"
        f" writes failed: {tally.writes_failed}"
    )
    print(f"after {what}: {len(missing)} of {len(tally.acked):,} acknowledged keys unreadable")
    tally.print_errors()
    return 0 if not missing and not tally.reads_missing else 1


def run_on_cluster(
    size: int,
    name: str,
    run: Callable[[LocalCluster, argparse.Namespace], Awaitable[int]],
    args: argparse.Namespace,
) -> int:
    """Start the first 3 nodes of a ``size``-node local cluster (N=3) in a temporary
    directory, run ``run`` on it, and stop every node at the end."""
    with tempfile.TemporaryDirectory(prefix=f"p2pindex-{name}-") as tmp:
        cluster = LocalCluster(size, Path(tmp), n_replicas=3)
        with cluster:
            for index in range(3):
                cluster.restart(index)
            return trio.run(_when_active, cluster, run, args)


async def _when_active(
    cluster: LocalCluster,
    run: Callable[[LocalCluster, argparse.Namespace], Awaitable[int]],
    args: argparse.Namespace,
) -> int:
    """Run ``run`` once the three first nodes are ACTIVE: until then a node that has just
    joined is still SYNCING and refuses reads, which the measurement would count as failed
    reads of the join, replacement or resize it measures."""
    first3 = cluster.addresses[:3]
    async with p2pindex.connect(first3, timeout=10.0, credentials=cluster.credentials) as db:
        for address in first3:
            await wait_active(db, address, args.timeout, quiet=True)
    return await run(cluster, args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--write-rate", type=float, default=300.0, help="writes/s during the join")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    return run_on_cluster(4, "join", run, args)


if __name__ == "__main__":
    sys.exit(main())

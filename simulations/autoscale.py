"""Grow a live cluster from 3 to 6 nodes and shrink it back to 3 under steady writes.

Real processes on loopback. The documented procedure an autoscaler follows:

* grow: start a node with the cluster's usual command line (the same --seed list as every
  other node); it joins SYNCING, pulls its ranges, and is ACTIVE when `status` says so
  (state active, handoff done). Add the next node only then.
* shrink: `p2pindex drain --node HOST:PORT` (here: the LeaveRequest it sends, then polling
  `status` until the node is gone). The node stops coordinating, hands its ranges over,
  leaves; a drain that would leave fewer than N nodes is refused.
* signals: every node's `status` has a `load` section (requests/s, p50/p99 latency, CPU,
  storage bytes, keys, pending hints) to decide when.

Before each step the script computes the plan (p2pindex.core.planning, as `p2pindex plan`
does) and afterwards compares the bytes that really moved with it and with the least any
placement could move (the plan's ideal, scaled by how much the data grew during the step).
At the end every acknowledged write is read back at QUORUM.
Exit status 1 if any acknowledged write is lost or any write failed definitely.

    python simulations/autoscale.py [--keys 5000] [--write-rate 200]
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import signal
import sys
import time
from pathlib import Path

import trio

import p2pindex
from p2pindex.cli.local_cluster import LocalCluster
from p2pindex.cli.plan import gather_loads
from p2pindex.core.planning import Plan, plan_add, plan_remove
from p2pindex.errors import P2PIndexError
from p2pindex.node.identity import NodeIdentity

sys.path.insert(0, str(Path(__file__).resolve().parent))
from join_under_load import Tally, run_on_cluster

VALUE = b"y" * 200


async def preload(db: p2pindex.AsyncClient, keys: int, tally: Tally) -> None:
    pending = iter(range(keys))

    async def worker() -> None:
        for i in pending:
            key = b"pre-%08d" % i
            try:
                await db.put(key, VALUE)
                tally.acked.append(key)
            except P2PIndexError as exc:
                tally.failed(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(64):
            nursery.start_soon(worker)


async def steady_writer(db: p2pindex.AsyncClient, rate: float, tally: Tally) -> None:
    """Open loop: a write every 1/rate seconds, each in its own task, bounded in flight."""
    limit = trio.CapacityLimiter(256)
    index = 0

    async def one(key: bytes) -> None:
        async with limit:
            try:
                await db.put(key, VALUE)
                tally.acked.append(key)
            except P2PIndexError as exc:
                tally.failed(exc)

    async with trio.open_nursery() as nursery:
        next_at = trio.current_time()
        while True:
            nursery.start_soon(one, b"live-%08d" % index)
            index += 1
            next_at += 1.0 / rate
            await trio.sleep_until(next_at)


async def current_plan(db: p2pindex.AsyncClient, node: str, change: str, who: str) -> Plan:
    reply = await db.ring_view(node)
    docs = [dataclasses.asdict(m) for m in reply.members]
    ring = [str(m["node_id"]) for m in docs if m.get("in_ring", True)]
    loads = await gather_loads(db, docs)
    if change == "add":
        return plan_add(ring, reply.n_replicas, loads, 1, new_ids=[who], vnodes=reply.vnodes)
    return plan_remove(ring, reply.n_replicas, loads, who, vnodes=reply.vnodes)


async def wait_active(db: p2pindex.AsyncClient, address: str, timeout: float) -> dict:
    with trio.fail_after(timeout):
        while True:
            try:
                status = (await db.status(address)).document
            except P2PIndexError:
                await trio.sleep(0.5)
                continue
            if status["state"] == "active" and (status["handoff"] or {}).get("done"):
                return status
            await trio.sleep(0.5)


async def drain(db: p2pindex.AsyncClient, address: str, timeout: float) -> dict:
    """What `p2pindex drain` does; returns the last handoff progress the node reported."""
    await db.leave(address)
    last: dict = {}
    with trio.fail_after(timeout):
        while True:
            try:
                status = (await db.status(address)).document
            except P2PIndexError:
                return last
            last = status.get("handoff") or last
            await trio.sleep(0.2)


FINISHED = re.compile(
    r"handoff out finished: (\d+) key\(s\), (\d+) byte\(s\) in [\d.]+s"
    r"(?: \((\d+) key\(s\) written during the push sent again\))?"
)


def pushed(log_path: Path, polled: dict) -> tuple[int, int, int | None]:
    """(keys, bytes, keys sent again) a leaving node pushed over both passes, from its own
    log line (written once the second pass is done). ``status`` polled every 0.2 s can
    miss the end of a push that lasts a second, so it is only the fallback."""
    found = FINISHED.findall(log_path.read_text(errors="replace"))
    if not found:
        return polled.get("keys", 0), polled.get("bytes", 0), polled.get("second_pass_keys")
    keys, size, again = found[-1]
    return int(keys), int(size), int(again) if again else None


async def verify(db: p2pindex.AsyncClient, keys: list[bytes]) -> int:
    missing = 0
    pending = iter(keys)

    async def worker() -> None:
        nonlocal missing
        for key in pending:
            try:
                result = await db.get(key)
            except P2PIndexError:
                missing += 1
                continue
            if result.values != [VALUE]:
                missing += 1

    async with trio.open_nursery() as nursery:
        for _ in range(64):
            nursery.start_soon(worker)
    return missing


def row(step: str, took: float, moved: int, plan: Plan, growth: float) -> str:
    """One step's figures. The plan is made before the step from the data held then; the
    writes that keep arriving meanwhile land in the moving ranges too and move with them,
    so the least any placement could move is the plan's ideal scaled by the data's growth
    during the step (keys are hashed over the ring and all of one size)."""
    ideal = round(plan.ideal_bytes * growth)
    ratio = moved / ideal if ideal else 0.0
    unscaled = moved / plan.ideal_bytes if plan.ideal_bytes else 0.0
    off = (plan.moved_bytes - moved) / moved * 100 if moved else 0.0
    return (
        f"{step:24}{took:7.1f} s{moved:>13,}{plan.moved_bytes:>13,}{off:>+8.1f}%"
        f"{ideal:>13,}{ratio:>7.2f}x{unscaled:>9.2f}x"
    )


async def run(cluster: LocalCluster, args: argparse.Namespace) -> int:
    tally = Tally()
    addresses = cluster.addresses
    rows: list[str] = []
    loads: list[str] = []
    async with p2pindex.connect(addresses, timeout=10.0, credentials=cluster.credentials) as db:
        print(f"preloading {args.keys:,} keys ...", flush=True)
        await preload(db, args.keys, tally)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(steady_writer, db, args.write_rate, tally)
            await trio.sleep(2.0)
            for index in (3, 4, 5):
                node = cluster.nodes[index]
                new_id = NodeIdentity.load_or_create(node.data_dir).node_id
                plan = await current_plan(db, addresses[0], "add", new_id)
                held = len(tally.acked)
                started = time.monotonic()
                await trio.to_thread.run_sync(cluster.restart, index)
                status = await wait_active(db, addresses[index], args.timeout)
                took = time.monotonic() - started
                rows.append(
                    row(
                        f"grow to {index + 1} (+{new_id[:8]})",
                        took,
                        status["handoff"]["bytes"],
                        plan,
                        len(tally.acked) / held,
                    )
                )
                print(rows[-1], flush=True)
            await trio.sleep(3.0)
            for address in addresses[:6]:
                load = (await db.status(address)).document["load"]
                loads.append(
                    f"  {address}: {load['requests_per_s']:.0f} req/s, p99 {load['p99_ms']} ms, "
                    f"cpu {load['cpu_percent']:.0f}%, {load['keys']:,} keys, "
                    f"{load['storage_bytes']:,} bytes, {load['pending_hints']} hints pending"
                )
            for index in (5, 4, 3):
                node = cluster.nodes[index]
                plan = await current_plan(db, addresses[0], "remove", node.node_id)
                held = len(tally.acked)
                started = time.monotonic()
                handoff = await drain(db, addresses[index], args.timeout)
                took = time.monotonic() - started
                keys, size, again = pushed(node.log_path, handoff)
                rows.append(
                    row(
                        f"shrink to {index} (-{node.node_id[:8]})",
                        took,
                        size,
                        plan,
                        len(tally.acked) / held,
                    )
                )
                print(rows[-1], flush=True)
                print(
                    f"  pushed {keys:,} keys, of them {again} again in the second pass "
                    "(written during the first)",
                    flush=True,
                )
                cluster.kill(index, signal.SIGKILL)  # it left already; end the idle process
            await trio.sleep(3.0)
            nursery.cancel_scope.cancel()
    async with p2pindex.connect(addresses[:3], timeout=10.0, credentials=cluster.credentials) as db:
        print(f"verifying {len(tally.acked):,} acknowledged writes at QUORUM ...", flush=True)
        missing = await verify(db, list(tally.acked))
    print()
    header = ("step", "took", "moved B", "plan B", "plan off", "least B", "vs least", "unscaled")
    widths = (24, 9, 13, 13, 9, 13, 8, 9)
    print(
        "".join(
            f"{h:{'<' if i == 0 else '>'}{w}}"
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    )
    print("\n".join(rows))
    print("load signals at 6 nodes (status.load):")
    print("\n".join(loads))
    print(
        f"writes: {len(tally.acked):,} acknowledged, {missing} lost, "
        f"{tally.writes_definite} failed definitely, {tally.writes_indeterminate} indeterminate"
    )
    tally.print_errors()
    return 0 if missing == 0 and tally.writes_definite == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=5_000)
    parser.add_argument("--write-rate", type=float, default=200.0, help="steady writes/s")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    return run_on_cluster(6, "autoscale", run, args)


if __name__ == "__main__":
    sys.exit(main())

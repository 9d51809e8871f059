"""`p2pindex bench --index-workload ...`: what indexes cost and how fast queries and scans are.

Phases, on the cluster ``bench`` starts (or names):

* **write**: ``--records`` objects written twice over, once plainly and once with two index
  terms each (``grp`` = record mod groups, ``num`` = record), in alternating rounds so a
  busy machine hurts both alike; the ratio is the cost of maintaining two terms.
* **query**: pages of 100 answers, exact (``grp`` = g, 100+ objects per group) and range
  (``num`` from n to n+99), at ``one`` and ``quorum``: p50/p99/max latency per page.
* **scan**: every key listed by pages of 1000 at ``one``: keys per second.

``read`` is query and scan after loading only the indexed objects (half the load time).

Then the node processes' largest resident set. One client process with ``--concurrency``
requests in flight loads; queries run one at a time (latency, not throughput).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from typing import Any

import trio

from p2pindex.client import AsyncClient

PAGE = 100
SCAN_PAGE = 1000
ROUNDS = 4


def groups_for(records: int) -> int:
    return max(1, records // (2 * PAGE))


async def _load(db: AsyncClient, keys: range, prefix: str, indexed: bool, width: int) -> int:
    groups = groups_for(len(keys) * ROUNDS)
    value = b"x" * 100
    done = 0
    position = iter(keys)

    async def worker() -> None:
        nonlocal done
        for record in position:
            index = {"grp": [record % groups], "num": [record]} if indexed else None
            await db.put(f"{prefix}{record:08d}", value, consistency="quorum", index=index)
            done += 1

    async with trio.open_nursery() as nursery:
        for _ in range(width):
            nursery.start_soon(worker)
    return done


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000, 2)

    return {"p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": round(ordered[-1] * 1000, 2)}


async def run_phases(db: AsyncClient, args: argparse.Namespace, phases: set[str]) -> dict:
    report: dict[str, Any] = {"records": args.records}
    records = args.records
    if "write" in phases or "query" in phases or "scan" in phases:
        per_round = max(1, records // ROUNDS)
        took = {"plain": 0.0, "indexed": 0.0}
        for number in range(ROUNDS):
            keys = range(number * per_round, (number + 1) * per_round)
            order = ("plain", "indexed") if number % 2 == 0 else ("indexed", "plain")
            for kind in order:
                if kind == "plain" and "write" not in phases:
                    continue
                started = time.perf_counter()
                prefix = "plain:" if kind == "plain" else "obj:"
                await _load(db, keys, prefix, kind == "indexed", args.concurrency)
                took[kind] += time.perf_counter() - started
        total = per_round * ROUNDS
        report["write"] = {
            "objects": total,
            "indexed_writes_per_s": round(total / took["indexed"], 1),
        }
        if "write" in phases:
            plain = total / took["plain"]
            report["write"]["plain_writes_per_s"] = round(plain, 1)
            report["write"]["indexed_over_plain"] = round(total / took["indexed"] / plain, 3)
        records = total
    rng = random.Random(args.seed)
    if "query" in phases:
        groups = groups_for(records)
        queries = max(50, min(500, records // 100))
        for level in ("one", "quorum"):
            exact: list[float] = []
            ranged: list[float] = []
            for _ in range(queries):
                group = rng.randrange(groups)
                started = time.perf_counter()
                page = await db.query("grp", group, limit=PAGE, consistency=level)
                exact.append(time.perf_counter() - started)
                assert len(page.rows) == PAGE or page.continuation is None
                low = rng.randrange(max(1, records - PAGE))
                started = time.perf_counter()
                page = await db.query("num", low, low + PAGE - 1, limit=PAGE, consistency=level)
                ranged.append(time.perf_counter() - started)
            report[f"query_{level}"] = {
                "pages": queries,
                "exact": _percentiles(exact),
                "range": _percentiles(ranged),
            }
    if "scan" in phases:
        started = time.perf_counter()
        listed = 0
        token = None
        while True:
            page = await db.keys("obj:", limit=SCAN_PAGE, continuation=token, consistency="one")
            listed += len(page.rows)
            token = page.continuation
            if token is None:
                break
        seconds = time.perf_counter() - started
        report["scan"] = {"keys": listed, "seconds": round(seconds, 2)}
        report["scan"]["keys_per_s"] = round(listed / seconds, 1)
    return report


def run_index_bench(
    args: argparse.Namespace, addresses: list[str], node_pids: list[int], where: str
) -> int:
    from p2pindex.cli.bench import _largest_resident_bytes

    phases = {
        "all": {"write", "query", "scan"},
        "read": {"query", "scan"},
    }.get(args.index_workload, {args.index_workload})

    async def main() -> dict:
        async with AsyncClient(addresses, timeout=args.timeout) as db:
            return await run_phases(db, args, phases)

    report = trio.run(main)
    report["cluster"] = where
    resident = _largest_resident_bytes(node_pids) if node_pids else None
    if resident is not None:
        report["largest_node_rss_mb"] = round(resident / 2**20, 1)
    if args.format == "json":
        print(json.dumps(report, indent=2))
    else:
        for name, value in report.items():
            print(f"[{name}] {json.dumps(value)}")
    return 0

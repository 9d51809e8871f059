"""`p2pindex bench`: YCSB-style throughput and latency figures for a cluster.

The parent process starts (or names) the cluster, spawns the load-generating worker
processes (so the generator is not held to one core), runs the phases in lock step, prints
live progress on stderr and the merged result on stdout, as YCSB lines or JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from p2pindex.cli.bench_index import run_index_bench
from p2pindex.cli.bench_stats import PhaseResult, ycsb_lines
from p2pindex.cli.bench_worker import WorkerSpec, worker_main
from p2pindex.cli.bench_workload import WORKLOADS, Workload
from p2pindex.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    add_format_option,
    consistency_arg,
    node_list_arg,
    positive_int_arg,
    seconds_arg,
)
from p2pindex.cli.local_cluster import (
    LocalCluster,
    credentials_in_environment,
    stop_signals_interrupt,
    wait_converged,
)
from p2pindex.errors import P2PIndexError
from p2pindex.types import consistency_to_wire

READY_TIMEOUT = 60.0


class BenchError(P2PIndexError):
    code = "bench_failed"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure throughput and latency with YCSB-style workloads",
        description=(
            "Run a YCSB-style workload (scrambled zipfian keys, theta 0.99) against a local "
            "cluster it starts (--nodes) or an existing one (--node), and report throughput "
            "and p50/p95/p99/max latency per operation. Updates carry the last context seen "
            "for the key, so they replace values rather than pile up siblings."
        ),
    )
    mix = parser.add_mutually_exclusive_group()
    mix.add_argument(
        "--workload",
        choices=["a", "b", "c"],
        default="a",
        type=str.lower,
        help="A: 50%% read/50%% update (default), B: 95/5, C: read only",
    )
    mix.add_argument("--write-only", action="store_true", help="100%% updates (write throughput)")
    parser.add_argument(
        "--records",
        type=positive_int_arg,
        default=10_000,
        help="keys in the data set (default 10000)",
    )
    parser.add_argument(
        "--value-size", type=positive_int_arg, default=100, help="bytes per value (default 100)"
    )
    parser.add_argument(
        "--concurrency",
        type=positive_int_arg,
        default=64,
        help="requests in flight over all worker processes (default 64)",
    )
    parser.add_argument(
        "--duration",
        type=seconds_arg,
        default=10.0,
        metavar="S",
        help="seconds of the run phase (default 10)",
    )
    parser.add_argument(
        "--consistency",
        type=consistency_arg,
        default="quorum",
        metavar="LEVEL",
        help="one, quorum (default), all, or a number of replicas",
    )
    parser.add_argument(
        "--timeout",
        type=seconds_arg,
        default=5.0,
        metavar="S",
        help="per-request timeout (default 5)",
    )
    parser.add_argument(
        "--load", action="store_true", help="insert every record first (YCSB's load phase)"
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--nodes",
        type=positive_int_arg,
        default=3,
        metavar="K",
        help="start a local cluster of K node processes in a temporary directory (default 3)",
    )
    where.add_argument(
        "--node",
        action="extend",
        type=node_list_arg,
        metavar="HOST:PORT",
        help="use the existing cluster at this address instead (repeatable or comma-separated)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="run the local nodes without security (the baseline its cost is measured "
        "against); by default they run secure, with an authority made for the run",
    )
    parser.add_argument(
        "--fsync",
        action="store_true",
        help="start the local nodes with --fsync: every commit reaches the disk before a "
        "write is acknowledged (the like-for-like comparison with etcd, which syncs its log)",
    )
    parser.add_argument(
        "--processes",
        type=positive_int_arg,
        default=1,
        metavar="P",
        help="client worker processes sharing the load (default 1)",
    )
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="one client, one request at a time (single-client latency)",
    )
    parser.add_argument(
        "--batch",
        type=positive_int_arg,
        default=1,
        metavar="K",
        help="keys per call: each request in flight is a put_many or get_many of K keys "
        "(default 1: single requests); figures then count keys, each timed by its call",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the key and value choices")
    parser.add_argument(
        "--index-workload",
        choices=["write", "query", "scan", "read", "all"],
        help="instead of YCSB: the index benchmark (p2pindex.cli.bench_index); --records "
        "objects with two terms each",
    )
    add_format_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    workload = WORKLOADS["write-only"] if args.write_only else WORKLOADS[args.workload]
    processes, concurrency = (1, 1) if args.sequential else (args.processes, args.concurrency)
    if concurrency < processes:
        raise ValueError("--concurrency must be at least --processes (each worker needs a loop)")
    if args.insecure and args.node:
        raise ValueError("--insecure is for the local cluster bench starts, not with --node")
    if args.fsync and args.node:
        raise ValueError("--fsync is for the local cluster bench starts, not with --node")
    with contextlib.ExitStack() as stack:
        stack.enter_context(stop_signals_interrupt())
        node_pids: list[int] = []
        if args.node:
            addresses = [str(address) for address in args.node]
            where = "cluster at " + ", ".join(addresses)
        else:
            root = Path(tempfile.mkdtemp(prefix="p2pindex-bench-"))
            stack.callback(shutil.rmtree, root, ignore_errors=True)
            cluster = stack.enter_context(
                LocalCluster(
                    args.nodes,
                    root,
                    insecure=args.insecure,
                    extra_args=("--fsync",) if args.fsync else (),
                )
            )
            # Workers are spawned processes: they inherit the cluster's credentials this way.
            stack.enter_context(credentials_in_environment(cluster.credentials))
            _note(f"starting {args.nodes} local node(s) ...")
            cluster.start()
            wait_converged(cluster)
            addresses = cluster.addresses
            node_pids = [node.pid for node in cluster.nodes if node.pid is not None]
            security = "off (--insecure)" if args.insecure else "on"
            durability = ", fsync on every commit" if args.fsync else ""
            where = (
                f"{args.nodes} local nodes (N={cluster.n_replicas}, security {security}"
                f"{durability})"
            )
            if not args.load and workload.read_proportion > 0:
                _note("the new cluster is empty, so reads will miss; add --load to fill it first")
        if args.index_workload:
            return run_index_bench(args, addresses, node_pids, where)
        specs = _specs(args, workload, addresses, processes, concurrency)
        load, result = _drive(specs, args.load, node_pids)
    config = {
        "workload": workload.name,
        "read_proportion": workload.read_proportion,
        "update_proportion": round(1 - workload.read_proportion, 4),
        "request_distribution": "scrambled zipfian (theta 0.99)",
        "records": args.records,
        "value_size": args.value_size,
        "consistency": str(consistency_to_wire(args.consistency)),
        "cluster": where,
        "processes": processes,
        "concurrency": concurrency,
        "duration_s": args.duration,
        "sequential": args.sequential,
        "batch": args.batch,
    }
    if args.format == "json":
        document = {
            "config": config,
            "load": load.summary() if load else None,
            "run": result.summary(),
        }
        print(json.dumps(document, indent=2))
    else:
        print(_text_report(config, workload, load, result))
    if result.operations and result.errors == result.operations:
        print("error: every operation failed (see the Return= lines)", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _specs(
    args: argparse.Namespace,
    workload: Workload,
    addresses: list[str],
    processes: int,
    concurrency: int,
) -> list[WorkerSpec]:
    specs = []
    first = 0
    for index in range(processes):
        tasks = concurrency // processes + (1 if index < concurrency % processes else 0)
        specs.append(
            WorkerSpec(
                index=index,
                addresses=tuple(addresses),
                read_proportion=workload.read_proportion,
                records=args.records,
                value_size=args.value_size,
                concurrency=tasks,
                first_task=first,
                total_tasks=concurrency,
                duration=args.duration,
                consistency=str(consistency_to_wire(args.consistency)),
                timeout=args.timeout,
                seed=args.seed * 1000 + index,
                load=args.load,
                batch=args.batch,
            )
        )
        first += tasks
    return specs


def _note(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def _drive(
    specs: list[WorkerSpec], load: bool, node_pids: list[int]
) -> tuple[PhaseResult | None, PhaseResult]:
    """Run the worker processes through their phases; stop them by pid whatever happens.

    The node processes' CPU time is read around each phase: CPU per operation stays
    meaningful on a shared machine, where throughput is not.
    """
    context = multiprocessing.get_context("spawn")
    workers: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
    try:
        for spec in specs:
            parent, child = context.Pipe()
            process: multiprocessing.process.BaseProcess = context.Process(
                target=worker_main, args=(spec, child), name=f"p2pindex-bench-{spec.index}"
            )
            process.start()
            child.close()
            workers.append((process, parent))
        _collect(workers, "ready")
        load_result = None
        if load:
            _note(f"load phase: inserting {specs[0].records} records ...")
            load_result = _measured(workers, "load", node_pids)
        _note(f"run phase: {specs[0].duration:g}s ...")
        return load_result, _measured(workers, "run", node_pids)
    finally:
        for process, conn in workers:
            conn.close()
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join(timeout=2)
            if process.is_alive():
                process.kill()
                process.join()


def _measured(
    workers: list[tuple[Any, Connection]], phase: str, node_pids: list[int]
) -> PhaseResult:
    before = cpu_seconds(node_pids)
    result = _collect(workers, phase)
    after = cpu_seconds(node_pids)
    if before is not None and after is not None:
        result.node_cpu = after - before
    result.node_rss = _largest_resident_bytes(node_pids)
    return result


def _largest_resident_bytes(pids: list[int]) -> int | None:
    """The largest resident set (VmRSS) among ``pids`` now (Linux /proc); None if unreadable."""
    largest = None
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return None
        sizes = [line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")]
        if not sizes:
            return None
        largest = max(largest or 0, int(sizes[0]) * 1024)
    return largest


def cpu_seconds(pids: list[int]) -> float | None:
    """User plus system CPU seconds of ``pids`` together (Linux /proc); None if unreadable."""
    if not pids:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def _collect(workers: list[tuple[Any, Connection]], phase: str) -> PhaseResult:
    """Start ``phase`` on every worker (except for "ready") and gather their results."""
    conns = {conn: index for index, (_, conn) in enumerate(workers)}
    if phase != "ready":
        for pipe in conns:
            pipe.send("go")
    pending = set(conns)
    latest = [0] * len(workers)
    merged = PhaseResult()
    started = last_print = time.monotonic()
    last_total = 0
    while pending:
        for conn in wait(list(pending), timeout=0.2):
            assert isinstance(conn, Connection)
            index = conns[conn]
            try:
                message = conn.recv()
            except EOFError:
                raise BenchError(f"worker {index} exited unexpectedly") from None
            kind = message[0]
            if kind == "error":
                raise BenchError(f"worker {index}: {message[2]}")
            if kind == "progress":
                latest[index] = message[2]
            elif kind in ("ready", "result"):
                pending.discard(conn)
                if kind == "result":
                    result = PhaseResult.from_dict(message[2])
                    latest[index] = result.operations
                    merged.merge(result)
        now = time.monotonic()
        if phase == "ready" and now - started > READY_TIMEOUT:
            raise BenchError(f"workers were not ready after {READY_TIMEOUT:g}s")
        if phase != "ready" and now - last_print >= 1.0:
            total = sum(latest)
            rate = (total - last_total) / (now - last_print)
            _note(f"{phase} {now - started:5.1f}s  {rate:10,.0f} ops/s  (total {total:,})")
            last_print, last_total = now, total
    return merged


def _text_report(
    config: dict[str, Any], workload: Workload, load: PhaseResult | None, result: PhaseResult
) -> str:
    mode = (
        "sequential: one request at a time"
        if config["sequential"]
        else f"{config['processes']} process(es), {config['concurrency']} requests in flight"
    )
    if config["batch"] > 1:
        mode += f", {config['batch']} keys per request (operations are keys)"
    lines = [
        f"# p2pindex bench: {workload.describe()}, {config['records']} records, "
        f"{config['value_size']}-byte values, consistency {config['consistency']}",
        f"# {config['cluster']}; client: {mode}; keys: {config['request_distribution']}",
    ]
    if load is not None:
        lines += ycsb_lines("load", load)
    lines += ycsb_lines("run", result)
    return "\n".join(lines)

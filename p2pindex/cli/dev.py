"""`p2pindex dev`: a local cluster of real node processes to play with, until Ctrl-C."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from p2pindex.cli.common import DEFAULT_NODE, EXIT_OK, positive_int_arg
from p2pindex.cli.local_cluster import LocalCluster, stop_signals_interrupt, wait_converged
from p2pindex.security.credentials import CREDENTIALS_ENV
from p2pindex.types import Address

DEFAULT_BASE_PORT = Address.parse(DEFAULT_NODE).port


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dev",
        help="run a local cluster of real nodes until Ctrl-C",
        description=(
            "Start NODES node processes on 127.0.0.1 (ports BASE_PORT, BASE_PORT+1, ...), "
            "secure: a cluster authority in the data directory certifies every node and "
            "issues an admin credentials file for clients. Wait until the nodes see each "
            "other, print how to use them, and stop exactly those processes on Ctrl-C."
        ),
    )
    parser.add_argument(
        "--nodes", type=positive_int_arg, default=3, help="how many nodes to start (default 3)"
    )
    parser.add_argument(
        "--base-port",
        type=positive_int_arg,
        default=DEFAULT_BASE_PORT,
        help=f"port of the first node; the others follow (default {DEFAULT_BASE_PORT})",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="keep node data and logs here (default: a temporary directory removed on exit)",
    )
    parser.add_argument(
        "--n-replicas",
        type=positive_int_arg,
        help="replicas per key, N (default: 3, or the node count if smaller)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    temporary = args.data_dir is None
    root = Path(tempfile.mkdtemp(prefix="p2pindex-dev-")) if temporary else args.data_dir
    try:
        with stop_signals_interrupt():
            cluster = LocalCluster(
                args.nodes,
                root,
                base_port=args.base_port,
                n_replicas=args.n_replicas,
                http=True,
            )
            with cluster:
                print(f"starting {args.nodes} node(s) on 127.0.0.1, data in {root} ...", flush=True)
                cluster.start()
                wait_converged(cluster)
                _describe(cluster)
                try:
                    _watch(cluster)
                except KeyboardInterrupt:
                    print("\nstopping the nodes ...", flush=True)
            print("stopped every node", flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted; stopped every node", flush=True)
    finally:
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
    return EXIT_OK


def _describe(cluster: LocalCluster) -> None:
    for node in cluster.nodes:
        print(
            f"  node {node.index + 1}  {node.address}  id {node.node_id}  pid {node.pid}  "
            f"log {node.log_path}"
        )
        if node.http_url:
            print(f"          HTTP API {node.http_url}, dashboard {cluster.dashboard_url(node)}")
    first = cluster.addresses[0]
    node_option = "" if first == DEFAULT_NODE else f" --node {first}"
    print(
        f"\ncluster ready: {len(cluster.nodes)} node(s), N={cluster.n_replicas}, security on\n"
        f"  admin credentials: {cluster.credentials}\n"
        f"  cluster authority: {cluster.authority_dir} (`p2pindex token issue` makes more)\n"
        "try:\n"
        f"  export {CREDENTIALS_ENV}={cluster.credentials}\n"
        f"  p2pindex put hello world{node_option}\n"
        f"  p2pindex get hello{node_option}\n"
        f"  p2pindex status{node_option}\n"
        "press Ctrl-C to stop",
        flush=True,
    )


def _watch(cluster: LocalCluster) -> None:
    """Report nodes that exit on their own; the rest keep running until Ctrl-C."""
    reported: set[int] = set()
    while True:
        for node in cluster.nodes:
            if node.index in reported or node.running or node.process is None:
                continue
            reported.add(node.index)
            print(
                f"node {node.index + 1} ({node.address}) exited with code "
                f"{node.process.returncode}; see {node.log_path}",
                file=sys.stderr,
                flush=True,
            )
        time.sleep(0.5)

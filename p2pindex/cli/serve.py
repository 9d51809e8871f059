"""`p2pindex serve`: run one node of a cluster in the foreground."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import trio

from p2pindex.cli.common import address_arg, collect_garbage_rarely
from p2pindex.config import Limits, NodeConfig

DEFAULT_LISTEN = "127.0.0.1:7400"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run a node",
        description=(
            "Run a p2pindex node until SIGINT or SIGTERM (which make it leave the cluster "
            "gracefully). Prints 'ready node_id=<id> address=<host:port>' once it serves. "
            "Security is on: the node needs a certificate and the cluster's trust file in its "
            "data directory (`p2pindex cluster certify --data-dir DIR` writes both) or named "
            "by --cert and --trust; only --insecure runs it without."
        ),
    )
    parser.add_argument(
        "--data-dir",
        required=True,
        type=Path,
        help="directory for the node's key and data (created if missing)",
    )
    parser.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        type=address_arg,
        help=f"HOST:PORT for TCP and UDP (default {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--advertise",
        type=address_arg,
        help="HOST:PORT other nodes should use to reach this one (default: --listen)",
    )
    parser.add_argument(
        "--seed",
        action="append",
        default=[],
        type=address_arg,
        metavar="HOST:PORT",
        help="an existing member to join through (repeatable)",
    )
    parser.add_argument(
        "--cluster",
        default="p2pindex",
        help="cluster name; nodes of other clusters are refused (default p2pindex)",
    )
    parser.add_argument(
        "--n-replicas",
        type=int,
        default=3,
        help="replicas kept of every key, N (default 3); the same on every node",
    )
    parser.add_argument(
        "--fsync",
        action="store_true",
        help="fsync every commit so acknowledged writes survive power loss",
    )
    parser.add_argument(
        "--max-value",
        type=int,
        default=Limits().max_value,
        help="largest value accepted, in bytes (default 1 MiB)",
    )
    parser.add_argument(
        "--remove-dead-after",
        type=float,
        metavar="SECONDS",
        help="take a member out of the ring after it has been dead this long "
        "(default: never; use `p2pindex remove`)",
    )
    parser.add_argument(
        "--replace",
        metavar="NODE_ID",
        help="stand in for this dead member: it is removed from the ring as this new node "
        "joins (refused for a live, unknown or already replaced member)",
    )
    parser.add_argument(
        "--trust",
        type=Path,
        metavar="FILE_OR_DIR",
        help="trust file, or a directory holding cluster.trust (default DATA_DIR/cluster.trust)",
    )
    parser.add_argument(
        "--cert",
        type=Path,
        metavar="FILE",
        help="this node's certificate (default DATA_DIR/node.cert; see `p2pindex cluster`)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="run without authentication or encryption (anyone can join, read and write): "
        "for tests and benchmarks only",
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    max_frame = max(Limits().max_frame, args.max_value + 64 * 1024)
    config = NodeConfig(
        data_dir=args.data_dir,
        listen=args.listen,
        advertise=args.advertise,
        seeds=tuple(args.seed),
        cluster=args.cluster,
        n_replicas=args.n_replicas,
        fsync=args.fsync,
        remove_dead_after=args.remove_dead_after,
        replace=args.replace,
        insecure=args.insecure,
        trust_file=args.trust,
        certificate_file=args.cert,
        limits=Limits(max_value=args.max_value, max_frame=max_frame),
    )

    from p2pindex.node.runtime import serve_node  # here: other commands need not load a node

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            node, address = await nursery.start(serve_node, config)
            collect_garbage_rarely()
            print(f"ready node_id={node.node_id} address={address}", flush=True)

    trio.run(main)
    return 0

"""`p2pindex serve`: run one node of a cluster in the foreground."""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from pathlib import Path

import trio

from p2pindex.cli.common import DEFAULT_NODE, address_arg, collect_garbage_rarely, single_error
from p2pindex.config import AdmissionLimits, Limits, NodeConfig
from p2pindex.errors import ConfigError

DEFAULT_LISTEN = DEFAULT_NODE


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
        "--max-connections",
        type=int,
        default=AdmissionLimits().max_connections,
        help="open connections served at once (default %(default)s)",
    )
    parser.add_argument(
        "--max-client-connections",
        type=int,
        default=AdmissionLimits().max_client_connections,
        help="open connections of one client key (default %(default)s)",
    )
    parser.add_argument(
        "--client-rate",
        type=float,
        metavar="PER_SECOND",
        help="requests a second one client key may send on average; over it requests are "
        "answered 'overloaded' (default: no limit)",
    )
    parser.add_argument(
        "--client-burst",
        type=int,
        default=AdmissionLimits().client_burst,
        help="requests a client key may send at once above its rate (default %(default)s)",
    )
    parser.add_argument(
        "--remove-dead-after",
        type=float,
        metavar="SECONDS",
        help="take a member out of the ring after it has been dead this long "
        "(default: never; use `p2pindex remove`)",
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
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity; info (the default) logs one rate-limited line per membership, "
        "state, handoff, hint, repair and storage event",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    max_frame = max(Limits().max_frame, 4 * (args.max_value + 64 * 1024))
    config = NodeConfig(
        data_dir=args.data_dir,
        listen=args.listen,
        advertise=args.advertise,
        seeds=tuple(args.seed),
        cluster=args.cluster,
        n_replicas=args.n_replicas,
        fsync=args.fsync,
        remove_dead_after=args.remove_dead_after,
        insecure=args.insecure,
        trust_file=args.trust,
        certificate_file=args.cert,
        limits=Limits(max_value=args.max_value, max_frame=max_frame),
        admission=AdmissionLimits(
            max_connections=args.max_connections,
            max_client_connections=args.max_client_connections,
            client_rate=args.client_rate,
            client_burst=args.client_burst,
        ),
    )

    from p2pindex.node.runtime import serve_node  # here: other commands need not load a node

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            node, address = await nursery.start(serve_node, config)
            collect_garbage_rarely()
            print(f"ready node_id={node.node_id} address={address}", flush=True)

    try:
        trio.run(main)
    except (OSError, BaseExceptionGroup) as exc:
        error = exc if isinstance(exc, OSError) else single_error(exc)
        if isinstance(error, OSError) and error.errno in LISTEN_PROBLEMS:
            raise ConfigError(
                f"cannot listen on {args.listen}: {LISTEN_PROBLEMS[error.errno]}"
            ) from None
        raise
    return 0


LISTEN_PROBLEMS = {
    errno.EADDRINUSE: "the address is already in use (is another node running there?); "
    "stop it or pick another --listen",
    errno.EADDRNOTAVAIL: "no network interface of this machine has that address",
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
}
"""Why binding the node's port failed, in words that say what to do."""

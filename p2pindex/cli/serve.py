"""`p2pindex serve`: run one node of a cluster in the foreground."""

from __future__ import annotations

import argparse
import errno
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from p2pindex.cli.common import (
    DEFAULT_NODE,
    EXIT_ERROR,
    address_arg,
    collect_garbage_rarely,
    single_error,
)
from p2pindex.cli.open_files import open_files_needed, raise_open_files_limit
from p2pindex.config import NodeConfig
from p2pindex.config_file import effective, node_config, read_file
from p2pindex.errors import ConfigError
from p2pindex.logs import configure_logging

if TYPE_CHECKING:
    from p2pindex.node.node import Node

DEFAULT_LISTEN = DEFAULT_NODE


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run a node",
        description=(
            "Run a p2pindex node until SIGINT or SIGTERM (which make it leave the cluster "
            "gracefully) or until a `p2pindex leave` completes. Prints 'ready node_id=<id> "
            "address=<host:port>' once it serves. Settings come from --config FILE (TOML; "
            "`p2pindex config show` lists every one), then from these flags, which win. "
            "Security is on: the node needs a certificate and the cluster's trust file in its "
            "data directory (`p2pindex cluster certify --data-dir DIR` writes both) or named "
            "by --cert and --trust; only --insecure runs it without."
        ),
    )
    add_node_options(parser)
    parser.set_defaults(func=run)


def add_node_options(parser: argparse.ArgumentParser) -> None:
    """The flags of `serve` (also accepted by `config show`); None means "not given"."""
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML file with the node's settings"
    )
    parser.add_argument(
        "--data-dir", type=Path, help="directory for the node's key and data (created if missing)"
    )
    parser.add_argument(
        "--listen", type=address_arg, help=f"HOST:PORT for TCP and UDP (default {DEFAULT_LISTEN})"
    )
    parser.add_argument(
        "--advertise",
        type=address_arg,
        help="HOST:PORT other nodes should use to reach this one (default: --listen)",
    )
    parser.add_argument(
        "--seed",
        action="append",
        type=address_arg,
        metavar="HOST:PORT",
        help="an existing member to join through (repeatable; replaces the file's seeds)",
    )
    parser.add_argument(
        "--cluster", help="cluster name; nodes of other clusters are refused (default p2pindex)"
    )
    parser.add_argument(
        "--n-replicas",
        type=int,
        help="replicas kept of every key, N (default 3); the same on every node",
    )
    parser.add_argument(
        "--fsync",
        action="store_true",
        default=None,
        help="fsync every commit so acknowledged writes survive power loss",
    )
    parser.add_argument(
        "--max-value", type=int, help="largest value accepted, in bytes (default 1 MiB)"
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        help="open client connections served at once; the cluster's own nodes are never "
        "refused (default 4096)",
    )
    parser.add_argument(
        "--max-client-connections",
        type=int,
        help="open connections of one client key (default 256)",
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
        help="requests a client key may send at once above its rate (default 1000)",
    )
    parser.add_argument(
        "--max-handshakes",
        type=int,
        help="connections in their handshake at once; one more closes the one that has "
        "waited longest (default 256)",
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
        default=None,
        help="run without authentication or encryption (anyone can join, read and write): "
        "for tests and benchmarks only",
    )
    parser.add_argument(
        "--http",
        type=address_arg,
        metavar="HOST:PORT",
        help="also serve the HTTP API, health checks, /metrics and the dashboard here",
    )
    parser.add_argument(
        "--http-cert", type=Path, metavar="FILE", help="TLS certificate (PEM) for the HTTP listener"
    )
    parser.add_argument(
        "--http-key", type=Path, metavar="FILE", help="private key (PEM) of --http-cert"
    )
    parser.add_argument(
        "--http-insecure",
        action="store_true",
        default=None,
        help="allow plain HTTP on a non-loopback address (tokens would cross in the clear)",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity; info (the default) logs one rate-limited line per membership, "
        "state, handoff, hint, repair and storage event",
    )
    parser.add_argument(
        "--log-format", choices=["text", "json"], help="log lines as text or one JSON object"
    )


FLAG_SETTINGS = {
    "data_dir": "data_dir",
    "listen": "listen",
    "advertise": "advertise",
    "seed": "seeds",
    "cluster": "cluster",
    "n_replicas": "n_replicas",
    "fsync": "fsync",
    "max_value": "limits.max_value",
    "max_connections": "admission.max_connections",
    "max_client_connections": "admission.max_client_connections",
    "client_rate": "admission.client_rate",
    "client_burst": "admission.client_burst",
    "max_handshakes": "admission.max_handshakes",
    "remove_dead_after": "remove_dead_after",
    "replace": "replace",
    "trust": "trust_file",
    "cert": "certificate_file",
    "insecure": "insecure",
    "http": "http.listen",
    "http_cert": "http.tls_cert",
    "http_key": "http.tls_key",
    "http_insecure": "http.insecure",
    "log_level": "log_level",
    "log_format": "log_format",
}
"""Each flag and the setting it overrides."""


def settings_from(args: argparse.Namespace) -> tuple[dict[str, object], dict[str, str]]:
    """The effective settings and where each came from (default, the file, a flag)."""
    file_values = read_file(args.config) if args.config is not None else {}
    overrides = {setting: getattr(args, flag) for flag, setting in FLAG_SETTINGS.items()}
    values = effective(file_values, overrides)
    sources = {name: "default" for name in values}
    sources.update({name: str(args.config) for name in file_values})
    sources.update({name: "flag" for name, value in overrides.items() if value is not None})
    return values, sources


def run(args: argparse.Namespace) -> int:
    values, sources = settings_from(args)
    config = node_config(values, sources)  # every error raised here, before anything starts
    configure_logging(str(values["log_level"]), str(values["log_format"]))
    return serve(config)


def serve(config: NodeConfig) -> int:
    """Run the node (and its HTTP listener) until it leaves; the exit code of `serve`."""
    from p2pindex.node.runtime import serve_node  # here: other commands need not load a node

    log = logging.getLogger("p2pindex.serve")
    before, limit, short = raise_open_files_limit(open_files_needed(config))
    if short is not None:
        log.warning("%s", short)
    elif limit != before:
        log.info("open-files limit raised from %d to %d for the connection limits", before, limit)

    removed: list[str] = []

    async def main() -> None:
        left = False
        http = await _bind_http(config)  # a busy HTTP port stops the start before any join
        http_url = ""
        http_up = trio.Event()
        async with trio.open_nursery() as nursery:

            async def serve_http_once_running(node: Node) -> None:
                # Health and status answer during the join wait, which can last 10 s.
                nonlocal http_url
                if http is not None and config.http is not None:
                    from p2pindex.http.listener import serve_http

                    await node.running.wait()
                    http_url = await nursery.start(serve_http, node, config.http, http)
                http_up.set()

            def created(node: Node) -> None:
                nursery.start_soon(serve_http_once_running, node)

            async def node_then_stop(task_status: trio.TaskStatus[object]) -> None:
                nonlocal left
                left = await serve_node(config, task_status=task_status, created=created)
                nursery.cancel_scope.cancel()  # the node stopped: close the HTTP listener too

            node, address = await nursery.start(node_then_stop)
            await http_up.wait()
            ready = f"ready node_id={node.node_id} address={address}"
            ready += f" http={http_url}" if http_url else ""
            collect_garbage_rarely()
            if not node.view.removed_notice:  # a removed node stops instead (below)
                print(ready, flush=True)  # stdout, for supervisors; the log says it too
                fields = {"node_id": node.node_id, "address": str(address)}
                fields["http"] = http_url or None
                log.info("node %s ready at %s", node.node_id, address, extra={"fields": fields})
        if node.view.removed_notice:
            removed.append(node.node_id)
            log.error("node %s stopped: it was removed from the cluster", node.node_id)
        elif left:
            log.warning("node %s left the cluster and stopped", node.node_id)
        else:
            log.warning(
                "node %s stopped without leaving: still a member, down until it starts again",
                node.node_id,
            )

    try:
        trio.run(main)
    except (OSError, BaseExceptionGroup) as exc:
        error = exc if isinstance(exc, OSError) else single_error(exc)
        if isinstance(error, OSError) and error.errno in LISTEN_PROBLEMS:
            raise ConfigError(
                f"cannot listen on {config.listen}: {LISTEN_PROBLEMS[error.errno]}"
            ) from None
        raise
    return EXIT_ERROR if removed else 0


async def _bind_http(config: NodeConfig) -> list[trio.SocketListener] | None:
    """The HTTP port, bound (and its TLS files read) before the node starts."""
    if config.http is None:
        return None
    from p2pindex.http.listener import bind_http, tls_context

    tls_context(config.http)  # a bad certificate is a ConfigError now, not after the join
    return await bind_http(config.http)


LISTEN_PROBLEMS = {
    errno.EADDRINUSE: "the address is already in use (is another node running there?); "
    "stop it or pick another --listen",
    errno.EADDRNOTAVAIL: "no network interface of this machine has that address",
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
}
"""Why binding the node's port failed, in words that say what to do."""

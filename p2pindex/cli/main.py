"""The `p2pindex` command: one binary, verb-first subcommands, one module per command group."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from p2pindex.cli import admin, bench, completion, demo, dev, drain, kv, plan
from p2pindex.cli import query as query_cli
from p2pindex.cli.common import EXIT_ERROR, Parser, UsageError, report, single_error
from p2pindex.errors import P2PIndexError
from p2pindex.version import __version__

OPTIONAL_COMMANDS = (
    "p2pindex.cli.serve",
    "p2pindex.cli.config",
    "p2pindex.cli.simulate",
    "p2pindex.cli.security",
)
"""Command modules owned elsewhere; the tool works (with fewer commands) without them."""

EPILOG = """\
examples:
  p2pindex dev --nodes 3                 start a local 3-node cluster (Ctrl-C stops it)
  p2pindex put user:1 alice              store a value (nodes from --node or $P2PINDEX_NODE)
  p2pindex get user:1 --consistency all  read it back from every replica
  p2pindex status                        members, ownership and statistics
  p2pindex demo                          a narrated tour: quorums, a crash, siblings
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="p2pindex",
        description="A peer-to-peer, leaderless, Dynamo-style replicated key-value index.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"p2pindex {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in OPTIONAL_COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(subparsers)
    for module in (kv, query_cli, admin, plan, drain, dev, demo, bench, completion):
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`p2pindex ... | head`): not worth an error line. Point
        # stdout at /dev/null so flushing it at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except (P2PIndexError, UsageError, ValueError, OSError) as exc:
        return report(exc)
    except BaseExceptionGroup as group:
        error = single_error(group)
        if isinstance(error, P2PIndexError | UsageError | ValueError | OSError):
            return report(error)
        if isinstance(error, KeyboardInterrupt):
            print("interrupted", file=sys.stderr)
            return 130
        raise

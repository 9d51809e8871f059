"""The `p2pindex` command: one binary, verb-first subcommands, one module per command group."""

from __future__ import annotations

import argparse
import importlib
import os
import re
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


_DASH_VALUE = re.compile(r"-[0-9.]")


def _value_options(parser: argparse.ArgumentParser) -> set[str]:
    """The long options (of every subcommand) that take exactly one value and are a flag
    in none: those after which a value that starts with '-' is meant as their value."""
    takes: set[str] = set()
    flags: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                takes |= _value_options(sub)
        elif action.nargs is None:
            takes.update(o for o in action.option_strings if o.startswith("--"))
        else:
            flags.update(action.option_strings)
    return takes - flags


def attach_dash_values(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """``--expires -5d`` as ``--expires=-5d``: argparse takes a word like ``-5d`` for an
    unknown option and says only "expected one argument"; attached, the value reaches its
    checker, whose message says what is wrong with it (a lifetime must be positive)."""
    options = _value_options(parser)
    joined: list[str] = []
    words = iter(argv)
    for word in words:
        if word == "--":
            joined += [word, *words]
            break
        if joined and joined[-1] in options and _DASH_VALUE.match(word):
            joined[-1] = f"{joined[-1]}={word}"
        else:
            joined.append(word)
    return joined


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    words = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(attach_dash_values(parser, words))
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

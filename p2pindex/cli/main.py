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


_NEGATIVE_NUMBER = re.compile(r"-[0-9]+|-[0-9]*\.[0-9]+")
"""What argparse itself takes for a value rather than an option (its negative numbers)."""


def attach_dash_terms(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """``query tag -abc`` as ``query tag text:-abc``: argparse takes a word like ``-abc``
    for an unknown option wherever it stands, but where a term is due (TERM, the two words
    after ``--range``) it can only be the text term, which ``text:`` spells unambiguously.

    Only a single-dash word is rewritten: one with two dashes is more likely a mistyped
    option, and stays one (``text:--x`` or ``-- --x`` gives such a term). Words after
    ``--`` are left to argparse, which takes them as positionals already.

    The options are also put before the positionals (``query tag --limit 5 6`` as ``query
    --limit 5 tag 6``): argparse fills an optional TERM when it meets the first option, so
    a TERM written after one was "unrecognized"."""
    words = list(argv)
    command = next((i for i, word in enumerate(words) if not word.startswith("-")), None)
    sub = None if command is None else _subcommand(parser, words[command])
    if command is None or sub is None:
        return words
    positionals = [action for action in sub._actions if not action.option_strings]
    if not any(action.type is query_cli.term_arg for action in sub._actions):
        return words
    slot = 0
    position = command + 1
    given: list[str] = []
    options: list[str] = []
    while position < len(words):
        word = words[position]
        if word == "--":
            break
        option = _option_of(sub, word)
        if option is not None:
            takes = 0 if "=" in word else _words_taken(option)
            values = words[position + 1 : position + 1 + takes]
            options += [word, *(_term_word(option, value) for value in values)]
            position += 1 + takes
            continue
        if _is_dash_word(word) and (
            slot >= len(positionals) or _term_word(positionals[slot], word) == word
        ):
            options.append(word)  # an unknown option, as argparse will say
            position += 1
            continue
        if slot < len(positionals):
            word = _term_word(positionals[slot], word)
            slot += 1
        given.append(word)
        position += 1
    return [*words[: command + 1], *options, *given, *words[position:]]


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(name)
    return None


def _option_of(parser: argparse.ArgumentParser, word: str) -> argparse.Action | None:
    """The option ``word`` names (``--name``, ``--name=value``, a unique abbreviation)."""
    if not word.startswith("-") or _NEGATIVE_NUMBER.fullmatch(word):
        return None
    actions = parser._option_string_actions
    name = word.partition("=")[0] if word.startswith("--") else word
    if name in actions:
        return actions[name]
    if not name.startswith("--"):
        return None
    matches = {actions[o] for o in actions if o.startswith(name) and o.startswith("--")}
    return matches.pop() if len(matches) == 1 else None


def _words_taken(action: argparse.Action) -> int:
    if action.nargs is None:
        return 1
    return action.nargs if isinstance(action.nargs, int) else 0


def _is_dash_word(word: str) -> bool:
    return len(word) > 1 and word.startswith("-") and not _NEGATIVE_NUMBER.fullmatch(word)


def _term_word(action: argparse.Action, word: str) -> str:
    if action.type is query_cli.term_arg and _is_dash_word(word) and not word.startswith("--"):
        return "text:" + word
    return word


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    words = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(attach_dash_terms(parser, attach_dash_values(parser, words)))
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
        return report(exc, read=getattr(args, "reads_only", False))
    except BaseExceptionGroup as group:
        error = single_error(group)
        if isinstance(error, P2PIndexError | UsageError | ValueError | OSError):
            return report(error, read=getattr(args, "reads_only", False))
        if isinstance(error, KeyboardInterrupt):
            print("interrupted", file=sys.stderr)
            return 130
        raise

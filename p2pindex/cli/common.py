"""What every client command shares: options, exit codes and the one-line error report.

A command line tool is judged by its failures: each one here ends as a single
``error: ...`` line on stderr and an exit code a script can branch on, never a traceback.
"""

from __future__ import annotations

import argparse
import base64
import difflib
import gc
import json
import os
import sys
from collections.abc import Awaitable, Callable, Mapping

import trio

from p2pindex.client import AsyncClient, connect
from p2pindex.client.async_client import CONNECT_TIMEOUT, HANDSHAKE_TIMEOUT
from p2pindex.errors import (
    ConfigError,
    IndeterminateError,
    NoNodeReachable,
    NotReady,
    P2PIndexError,
    Unavailable,
)
from p2pindex.types import Address, Consistency, parse_consistency

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_UNAVAILABLE = 4
EXIT_INDETERMINATE = 5
"""A timeout or broken connection: the operation may or may not have taken effect."""

NODE_ENV = "P2PINDEX_NODE"
DEFAULT_PORT = 7400
DEFAULT_NODE = f"127.0.0.1:{DEFAULT_PORT}"
"""Where `serve` listens and `dev` puts its first node by default, so every command works
with the others (and with the README's examples) without options."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, like every other error, and whose
    "unrecognized arguments" error names the command and the option that was probably meant."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"error: {message} (see '{self.prog} --help')\n")

    def parse_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def,override]
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = _chosen_command(self, parsed) or self
            hint = _dash_hint(command, extras)
            command.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
        return parsed


TAKES_TEXT_TERMS = "takes_text_terms"
"""A default a command sets when its positionals are query terms, which ``text:`` can spell."""


def _chosen_command(
    parser: argparse.ArgumentParser, parsed: argparse.Namespace
) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(parsed, action.dest, None) or "")
            return chosen if isinstance(chosen, argparse.ArgumentParser) else None
    return None


def _dash_hint(command: argparse.ArgumentParser, extras: list[str]) -> str:
    """For a word argparse took for an unknown option: the option probably meant, or how to
    give the word as a value instead."""
    dashed = [word for word in extras if word.startswith("-")]
    if not dashed:
        return ""
    word = dashed[0]
    options = [option for action in command._actions for option in action.option_strings]
    close = _option_meant(word.split("=", 1)[0], options)
    if close:
        return f"; did you mean {close}?"
    if all(action.option_strings for action in command._actions):
        return ""
    hint = f"; if {word} is a value, not an option, give it after '--' (after every option)"
    if command.get_default(TAKES_TEXT_TERMS):
        hint += f", or a query term as text:{word}"
    return hint


def _option_meant(word: str, options: list[str]) -> str | None:
    """The long option ``word`` most likely misspells or shortens, if one is close enough."""
    stem = word.lstrip("-")
    longs = [option for option in options if option.startswith("--")]
    within = [option for option in longs if len(stem) >= 3 and stem in option]
    if len(within) == 1:
        return within[0]
    close = difflib.get_close_matches(word, longs, n=1, cutoff=0.75)
    return close[0] if close else None


def collect_garbage_rarely() -> None:
    """For a process that serves or generates load for its whole life (a node, a bench worker).

    The data path allocates many short-lived objects and few cycles, while such a process
    holds long-lived state (a node's ring, caches, certificates, sessions; a bench worker's
    hundreds of request loops): at the default thresholds the cyclic collector ran hundreds
    of times a second and kept rescanning that state (a measurable share of the CPU: README,
    Measuring). Freezing what start-up
    made and collecting the young generation less often keeps collection rare; memory stays
    bounded, since garbage cycles are still collected.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 50)


def address_arg(text: str) -> Address:
    try:
        address = Address.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if address.port == 0:
        raise argparse.ArgumentTypeError(f"bad address {text!r}: port 0 cannot be connected to")
    return address


def node_list_arg(text: str) -> list[Address]:
    """``--node HOST:PORT[,HOST:PORT...]``: the comma-separated list $P2PINDEX_NODE takes
    is valid here too (with ``action="extend"`` repeated options add up)."""
    parts = [part.strip() for part in text.split(",")]
    if not any(parts):
        raise argparse.ArgumentTypeError(f"{text!r} names no node; expected HOST:PORT")
    return [address_arg(part) for part in parts if part]


def argv_bytes(text: str, what: str) -> bytes:
    """A key or value from the command line as the bytes the user typed.

    The OS hands Python argv bytes that are not UTF-8 as lone surrogates
    (``surrogateescape``); encoding them back the same way gives the bytes typed, where a
    plain ``encode("utf-8")`` would fail with a codec error. UTF-8 text is unchanged."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise UsageError(f"{what} is not valid Unicode text") from None


def display_bytes(data: bytes) -> str:
    """Bytes from the command line or the cluster as text to print: UTF-8 as it is, any
    other byte as U+FFFD, so printing never fails on a codec error."""
    return data.decode("utf-8", "replace")


def encode_values(values: list[bytes]) -> tuple[str, list[str]]:
    """Values as JSON strings: UTF-8 text when they all are, otherwise base64 (the
    ``"encoding"`` of `get --format json` and of `put --many` lines)."""
    try:
        return "utf-8", [value.decode("utf-8") for value in values]
    except UnicodeDecodeError:
        return "base64", [base64.b64encode(value).decode("ascii") for value in values]


def text_or_base64(field: str, data: bytes) -> dict[str, str]:
    """``{field: text}`` for UTF-8 bytes, else ``{field_base64: ...}``, as the HTTP API
    answers keys and terms: two different byte strings never print the same."""
    try:
        return {field: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{field}_base64": base64.b64encode(data).decode("ascii")}


def consistency_arg(text: str) -> Consistency:
    try:
        return parse_consistency(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def positive_int_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


class UsageError(Exception):
    """A mistake in how the command was called (exit 2), found after argument parsing."""


def default_nodes() -> list[Address]:
    """The nodes named by $P2PINDEX_NODE (comma-separated HOST:PORT), else the default node.

    A bad value is a usage error (exit 2) that names the variable, like a bad ``--node``.
    """
    text = os.environ.get(NODE_ENV)
    if text is None or not text.strip():
        return [Address.parse(DEFAULT_NODE)]
    nodes: list[Address] = []
    for part in text.split(","):
        if not part.strip():
            continue
        try:
            nodes.append(address_arg(part.strip()))
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"${NODE_ENV}={text!r}: {exc}") from None
    if not nodes:
        raise UsageError(f"${NODE_ENV}={text!r} names no node; expected HOST:PORT[,HOST:PORT...]")
    return nodes


def add_node_option(parser: argparse.ArgumentParser, *, what: str = "a node to talk to") -> None:
    """``--node`` and the two waits that decide when the client moves to the next node."""
    parser.add_argument(
        "--node",
        action="extend",
        type=node_list_arg,
        metavar="HOST:PORT",
        help=f"{what} (repeatable or comma-separated, tried in order; default ${NODE_ENV} "
        f"or {DEFAULT_NODE})",
    )
    parser.add_argument(
        "--connect-timeout",
        type=seconds_arg,
        default=CONNECT_TIMEOUT,
        metavar="S",
        help=f"seconds to wait for a node to accept the connection before trying the next "
        f"(default {CONNECT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--handshake-timeout",
        type=seconds_arg,
        default=HANDSHAKE_TIMEOUT,
        metavar="S",
        help=f"seconds to wait for a node to complete the secure handshake before trying the "
        f"next (default {HANDSHAKE_TIMEOUT:g})",
    )


def add_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=["text", "json"],
        default="text",
        help="output for people (text, the default) or for scripts (json)",
    )


def emit(args: argparse.Namespace, text: str, document: Mapping[str, object]) -> None:
    """Print a command's result: ``text`` for people, or with ``--format json`` the same
    result as one JSON document (one line) for scripts."""
    if getattr(args, "format", "text") == "json":
        print(json.dumps(document, sort_keys=True, default=str))
    else:
        print(text)


def add_timeout_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=seconds_arg,
        default=5.0,
        metavar="S",
        help="seconds the cluster may take before the request fails (default 5)",
    )


def nodes_of(args: argparse.Namespace) -> list[Address]:
    return args.node or default_nodes()


def with_client(args: argparse.Namespace, body: Callable[[AsyncClient], Awaitable[int]]) -> int:
    """Connect to the nodes named by ``args``, run ``body`` and return its exit code."""

    async def run() -> int:
        async with connect(
            nodes_of(args),
            consistency=getattr(args, "consistency", "quorum"),
            timeout=getattr(args, "timeout", 5.0),
            connect_timeout=getattr(args, "connect_timeout", CONNECT_TIMEOUT),
            handshake_timeout=getattr(args, "handshake_timeout", HANDSHAKE_TIMEOUT),
        ) as db:
            return await body(db)

    return trio.run(run)


def exit_code_for(error: BaseException, *, read: bool = False) -> int:
    """The README's table: 1 error, 2 usage, 3 not found (set by `get`), 4 unavailable
    (definitely not done), 5 timeout or another indeterminate outcome. A command that only
    reads (``read``) changed nothing, however it failed: a timeout is a 4 for it."""
    if isinstance(error, UsageError):
        return EXIT_USAGE
    if isinstance(error, Unavailable | NoNodeReachable | NotReady):
        return EXIT_UNAVAILABLE
    if read and isinstance(error, IndeterminateError):
        return EXIT_UNAVAILABLE
    if isinstance(error, IndeterminateError):
        return EXIT_INDETERMINATE
    return EXIT_ERROR


def describe(error: BaseException, *, read: bool = False) -> str:
    """The text after ``error: ``: what kind of failure, then what happened."""
    if isinstance(error, P2PIndexError):
        kind = error.code.replace("_", " ")
        text = str(error)
        # A ConfigError's text names what is wrong (a setting and its file, a port in use,
        # an authority directory, a credentials file): "config error:" would mislabel all
        # but the first as configuration.
        self_explaining = isinstance(error, NoNodeReachable | ConfigError) or text.startswith(kind)
        message = text if self_explaining else f"{kind}: {text}"
        if isinstance(error, IndeterminateError):
            message += (
                " (a read: nothing was changed)"
                if read
                else " (the operation may or may not have taken effect)"
            )
        return message
    if isinstance(error, OSError) and error.strerror:
        where = f" ({error.filename})" if error.filename else ""
        return f"{error.strerror.lower()}{where}"
    return str(error) or type(error).__name__


def report(error: BaseException, *, read: bool = False) -> int:
    """Print ``error`` and return its exit status; ``read``: the command only reads."""
    message = describe(error, read=read)
    if isinstance(error, UsageError):
        message += " (see 'p2pindex --help')"
    print(f"error: {message}", file=sys.stderr)
    return exit_code_for(error, read=read)


def single_error(group: BaseExceptionGroup) -> BaseException | None:
    """The one error inside (possibly nested) groups, if there is exactly one."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    return leaves[0] if len(leaves) == 1 else None

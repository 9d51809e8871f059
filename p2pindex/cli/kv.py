"""`p2pindex put | get | delete`: one key-value operation against a running cluster.

Text output keeps stdout for data (a value can be piped into a file unchanged) and puts
metadata such as the causal context on stderr; ``--format json`` puts everything in one
document on stdout for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable

from p2pindex.cli.common import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    add_format_option,
    add_node_option,
    add_timeout_option,
    argv_bytes,
    consistency_arg,
    describe,
    display_bytes,
    encode_values,
    with_client,
)
from p2pindex.cli.kv_many import run_get_many, run_put_many
from p2pindex.cli.query import index_arg, index_terms
from p2pindex.cli.trace_view import trace_lines
from p2pindex.client import AsyncClient, Context, Trace
from p2pindex.client.results import PutResult
from p2pindex.errors import InvalidRequest, P2PIndexError
from p2pindex.types import ConsistencyLevel

CONSISTENCY_HELP = "replicas that must answer: one, quorum (default), all, or a number up to N"


def context_arg(text: str) -> Context:
    try:
        return Context.from_str(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common(parser: argparse.ArgumentParser) -> None:
    add_node_option(parser)
    parser.add_argument(
        "--consistency",
        type=consistency_arg,
        default=ConsistencyLevel.QUORUM,
        metavar="LEVEL",
        help=CONSISTENCY_HELP,
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="count only the key's own replicas, never fallback nodes (no sloppy quorum)",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="show the coordinator's steps after the result: replicas asked, who answered"
        " when, fallbacks and hints, read repair (on stderr; in the document with --format"
        " json)",
    )
    add_timeout_option(parser)
    add_format_option(parser)


def register(subparsers: argparse._SubParsersAction) -> None:
    put = subparsers.add_parser(
        "put",
        help="store a value under a key",
        description=(
            "Store VALUE under KEY. Without --context the value becomes a sibling of whatever "
            "the key holds (the line printed says how many values the key now has); pass the "
            "context printed by get (or a previous put) to replace what that saw, or "
            "--overwrite to replace what the cluster holds now."
        ),
    )
    put.add_argument("key", metavar="KEY", nargs="?", help="the key (text, stored as UTF-8)")
    put.add_argument(
        "value",
        metavar="VALUE",
        nargs="?",
        help="the value as text, or - to read bytes from stdin",
    )
    put.add_argument(
        "--many",
        metavar="FILE",
        help="store many keys in batches instead of KEY VALUE: FILE (- for stdin) holds one"
        ' JSON object a line, {"key": ..., "value": ..., "context": ...} ("encoding":'
        ' "base64" for bytes); one outcome is printed a line, and the exit status is'
        " non-zero if any key failed",
    )
    put.add_argument(
        "--context", type=context_arg, help="causal context from a previous get or put"
    )
    put.add_argument(
        "--overwrite",
        action="store_true",
        help="replace what the cluster holds now: read the key first and supersede what was read",
    )
    put.add_argument(
        "--index",
        type=index_arg,
        action="append",
        metavar="NAME=TERM",
        help="file this version under TERM in index NAME (repeatable; 420 is an integer,"
        " other terms are text, text:420 forces text)",
    )
    _common(put)
    put.set_defaults(func=run_put)

    get = subparsers.add_parser(
        "get",
        help="read a key",
        description=(
            "Print the value of KEY (every sibling if there are several) and its context. "
            "Exits 3 when the key does not exist."
        ),
    )
    get.add_argument("key", metavar="KEY", nargs="?", help="the key (text, stored as UTF-8)")
    get.add_argument(
        "--many",
        metavar="FILE",
        help="read many keys in batches instead of KEY: FILE (- for stdin) holds one key a"
        " line; prints KEY<TAB>VALUE lines (one per value; --format json: one document a key)",
    )
    _common(get)
    get.set_defaults(func=run_get, reads_only=True)

    delete = subparsers.add_parser(
        "delete",
        help="delete a key",
        description=(
            "Delete KEY by writing a tombstone. Without --context the node reads KEY at the "
            "given consistency first and deletes what it read; pass --context from a get to "
            "delete exactly the values that get saw."
        ),
    )
    delete.add_argument("key", metavar="KEY", help="the key (text, stored as UTF-8)")
    delete.add_argument("--context", type=context_arg, help="causal context from a previous get")
    _common(delete)
    delete.set_defaults(func=run_delete)


def _options(args: argparse.Namespace) -> dict:
    return {
        "consistency": args.consistency,
        "timeout": args.timeout,
        "strict": args.strict,
        "trace": args.trace,
    }


def _emit_json(document: dict, trace: Trace | None = None) -> None:
    if trace is not None:
        document["trace"] = trace.as_document()
    print(json.dumps(document, ensure_ascii=False))


def _print_trace(trace: Trace | None) -> None:
    """After the normal output, on stderr: stdout holds only the value a get printed."""
    if trace is not None:
        print("\n".join(trace_lines(trace)), file=sys.stderr)


def _traced(args: argparse.Namespace, body: Callable[[AsyncClient], Awaitable[int]]) -> int:
    """Run ``body``; when a traced request fails, show the steps that led to the failure
    before the error line (as text on stderr, or as ``{"error", "trace"}`` on stdout with
    --format json), then fail as usual."""
    if not args.trace:
        return with_client(args, body)

    async def traced_body(db: AsyncClient) -> int:
        try:
            return await body(db)
        except P2PIndexError as exc:
            if isinstance(exc.trace, Trace):
                if args.format == "json":
                    doc = {"key": display_bytes(argv_bytes(args.key, "KEY"))}
                    error = describe(exc, read=getattr(args, "reads_only", False))
                    _emit_json({**doc, "ok": False, "error": error}, exc.trace)
                else:
                    _print_trace(exc.trace)
            raise

    return with_client(args, traced_body)


def _one_or_many(
    args: argparse.Namespace, *, needs: tuple[str, ...], alone: tuple[str, ...]
) -> None:
    """Exit with a usage error unless the arguments name one key or ``--many``, as argparse
    would (KEY is optional to the parser only because ``--many`` replaces it)."""
    given = [name for name in needs if getattr(args, name) is not None]
    missing = [name.upper() for name in needs if name not in given]
    if args.many is None and missing:
        problem = f"the following arguments are required: {', '.join(missing)} (or --many FILE)"
    elif args.many is not None and given:
        problem = f"--many reads its keys from FILE: give no {given[0].upper()}"
    elif args.many is not None and any(getattr(args, name, None) for name in alone):
        flags = " or ".join("--" + name for name in alone)
        problem = f"--many does not take {flags} (a line may carry its own context)"
    else:
        return
    print(f"error: {problem}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def run_put(args: argparse.Namespace) -> int:
    _one_or_many(args, needs=("key", "value"), alone=("context", "overwrite", "index", "trace"))
    if args.many is not None:
        return run_put_many(args)
    key = argv_bytes(args.key, "KEY")
    value = sys.stdin.buffer.read() if args.value == "-" else argv_bytes(args.value, "VALUE")

    async def body(db: AsyncClient) -> int:
        if args.overwrite and args.context is not None:
            raise InvalidRequest("put takes --context or --overwrite, not both")
        result = await db.put(
            key,
            value,
            context=args.context,
            overwrite=args.overwrite,
            index=index_terms(args.index),
            **_options(args),
        )
        if args.format == "json":
            _emit_json(
                {
                    "key": display_bytes(key),
                    "ok": True,
                    "context": str(result.context),
                    "warning": result.warning,
                    "siblings": result.siblings,
                    "overwrote": result.overwrote,
                    "unseen_may_remain": result.unseen_may_remain,
                },
                result.trace,
            )
        else:
            print(f"ok: stored {len(value)} bytes{_put_note(key, result)}")
            print(f"context: {result.context}", file=sys.stderr)
            if result.warning:
                print(f"warning: {result.warning}", file=sys.stderr)
            _print_trace(result.trace)
        return EXIT_OK

    return _traced(args, body)


def _put_note(key: bytes | str, result: PutResult) -> str:
    """What the ok line adds: siblings the put made, and what an overwrite could not see."""
    note = ""
    if result.siblings > 1:
        note = (
            f"; the key now has {result.siblings} concurrent values (siblings): resolve them "
            f"with `p2pindex put {_quote(key)} VALUE --overwrite`, or read them with "
            "`get` and put the merge with its --context"
        )
    if result.unseen_may_remain:
        note += (
            "; replicas that did not answer may still hold another value "
            "(overwrite with --consistency all to rule that out)"
        )
    return note


def run_get(args: argparse.Namespace) -> int:
    _one_or_many(args, needs=("key",), alone=("trace",))
    if args.many is not None:
        return run_get_many(args)

    key = argv_bytes(args.key, "KEY")

    async def body(db: AsyncClient) -> int:
        result = await db.get(key, **_options(args))
        if args.format == "json":
            encoding, values = encode_values(result.values)
            _emit_json(
                {
                    "key": display_bytes(key),
                    "found": result.found,
                    "encoding": encoding,
                    "values": values,
                    "context": str(result.context),
                },
                result.trace,
            )
            return EXIT_OK if result.found else EXIT_NOT_FOUND
        if not result.found:
            print(f"not found: {display_bytes(key)}", file=sys.stderr)
        elif len(result.values) == 1:
            _write_value(result.values[0])
            print(f"context: {result.context}", file=sys.stderr)
        else:
            for number, value in enumerate(result.values, 1):
                sys.stdout.buffer.write(f"sibling {number}: ".encode())
                _write_value(value, always_newline=True)
            print(
                f"warning: {len(result.values)} concurrent values (siblings); resolve them with\n"
                f"  p2pindex put {_quote(key)} MERGED_VALUE --context {result.context}",
                file=sys.stderr,
            )
        _print_trace(result.trace)
        return EXIT_OK if result.found else EXIT_NOT_FOUND

    return _traced(args, body)


def run_delete(args: argparse.Namespace) -> int:
    key = argv_bytes(args.key, "KEY")

    async def body(db: AsyncClient) -> int:
        result = await db.delete(key, context=args.context, **_options(args))
        if args.format == "json":
            _emit_json(
                {
                    "key": display_bytes(key),
                    "ok": True,
                    "context": str(result.context),
                    "read_first": result.read_first,
                    "unseen_may_remain": result.unseen_may_remain,
                },
                result.trace,
            )
        else:
            note = ""
            if result.unseen_may_remain:
                note = (
                    "; replicas that did not answer may still hold a value "
                    "(delete with --consistency all to rule that out)"
                )
            print(f"ok: deleted{note}")
            print(f"context: {result.context}", file=sys.stderr)
            _print_trace(result.trace)
        return EXIT_OK

    return _traced(args, body)


def _write_value(value: bytes, *, always_newline: bool = False) -> None:
    """Write the bytes as stored; a newline is added only for a terminal (or between siblings)."""
    sys.stdout.flush()
    out = sys.stdout.buffer
    out.write(value)
    if (always_newline or sys.stdout.isatty()) and not value.endswith(b"\n"):
        out.write(b"\n")
    out.flush()


def _quote(key: bytes | str) -> str:
    """The key as a shell word that gives back its bytes (``$'\\xff'`` for non-UTF-8)."""
    if isinstance(key, str):
        key = argv_bytes(key, "KEY")
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        escaped = "".join(
            chr(b) if 32 <= b < 127 and chr(b) not in "'\\" else f"\\x{b:02x}" for b in key
        )
        return "$'" + escaped + "'"
    safe = text and all(c.isalnum() or c in "-_.:/@" for c in text)
    return text if safe else "'" + text.replace("'", "'\\''") + "'"

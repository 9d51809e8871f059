"""`p2pindex keys` and `p2pindex query`: key listings and index queries, page by page.

A term on the command line is an integer when it is one (``420``, ``-3``) and text
otherwise; ``text:0042`` forces text and ``int:42`` forces an integer. Text output prints
one row per line (``TERM<TAB>KEY`` for a query) and the continuation and coverage on
stderr; ``--format json`` prints one document. A page that did not read the whole ring says
so on stderr and exits 4 (with ``--complete-only`` the query fails instead).
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from p2pindex.cli.common import (
    EXIT_OK,
    UsageError,
    add_format_option,
    add_node_option,
    add_timeout_option,
    consistency_arg,
    with_client,
)
from p2pindex.client import AsyncClient
from p2pindex.client.queries import DEFAULT_PAGE, MAX_PAGE, QueryPage
from p2pindex.types import ConsistencyLevel

EXIT_INCOMPLETE = 4
_INTEGER = re.compile(r"-?[0-9]+")


def term_arg(text: str) -> int | str:
    """A term as typed: see the module docstring."""
    if text.startswith("text:"):
        return text[5:]
    if text.startswith("int:"):
        text = text[4:]
        if not _INTEGER.fullmatch(text):
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer")
    return int(text) if _INTEGER.fullmatch(text) else text


def index_arg(text: str) -> tuple[str, int | str]:
    """``NAME=TERM`` for ``put --index``."""
    name, sep, term = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=TERM, got {text!r}")
    return name, term_arg(term)


def index_terms(pairs: list[tuple[str, int | str]] | None) -> dict[str, list[int | str]] | None:
    if not pairs:
        return None
    grouped: dict[str, list[int | str]] = {}
    for name, term in pairs:
        grouped.setdefault(name, []).append(term)
    return grouped


def page_size(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 1 <= size <= MAX_PAGE:
        raise argparse.ArgumentTypeError(f"the page size must be 1..{MAX_PAGE}, not {size}")
    return size


def _common(parser: argparse.ArgumentParser) -> None:
    add_node_option(parser)
    parser.add_argument(
        "--consistency",
        type=consistency_arg,
        default=ConsistencyLevel.ONE,
        metavar="LEVEL",
        help="replicas read per ring arc: one (default), quorum, all, or a number up to N",
    )
    parser.add_argument(
        "--limit", type=page_size, default=DEFAULT_PAGE, help=f"rows per page (1..{MAX_PAGE})"
    )
    parser.add_argument("--continuation", help="continue after the page that printed this")
    parser.add_argument("--all", action="store_true", help="fetch every page, not just one")
    parser.add_argument("--values", action="store_true", help="print each key's values too")
    parser.add_argument(
        "--complete-only",
        action="store_true",
        help="fail (Unavailable) rather than answer without some part of the ring",
    )
    parser.add_argument(
        "--explain", action="store_true", help="print the coverage plan (which nodes, which arcs)"
    )
    add_timeout_option(parser)
    add_format_option(parser)


def register(subparsers: argparse._SubParsersAction) -> None:
    keys = subparsers.add_parser(
        "keys",
        help="list live keys in key order",
        description="List the live keys (optionally only those starting with --prefix).",
    )
    keys.add_argument("--prefix", default="", help="only keys starting with this text")
    _common(keys)
    keys.set_defaults(func=run_keys)

    query = subparsers.add_parser(
        "query",
        help="find keys by index term",
        description=(
            "Find the keys filed under TERM in INDEX (or under any term from LO to HI with "
            "--range), sorted by term then key. Terms: 420 is an integer, anything else is "
            "text; text:420 forces text."
        ),
    )
    query.add_argument("index", metavar="INDEX", help="the index name")
    query.add_argument(
        "term", metavar="TERM", nargs="?", type=term_arg, help="the exact term to look up"
    )
    query.add_argument(
        "--range",
        nargs=2,
        metavar=("LO", "HI"),
        type=term_arg,
        help="every term from LO to HI inclusive (both integers or both text)",
    )
    query.add_argument("--prefix", default="", help="only keys starting with this text")
    _common(query)
    query.set_defaults(func=run_query)


def run_keys(args: argparse.Namespace) -> int:
    async def fetch(db: AsyncClient, token: str | None) -> QueryPage:
        return await db.keys(args.prefix, continuation=token, **_options(args))

    return with_client(args, lambda db: _pages(args, db, fetch, listing=True))


def run_query(args: argparse.Namespace) -> int:
    if (args.term is None) == (args.range is None):
        # A mistake in the command line, found after parsing: exit 2 like argparse's own.
        raise UsageError("give either TERM or --range LO HI")
    low, high = (args.term, None) if args.range is None else args.range

    async def fetch(db: AsyncClient, token: str | None) -> QueryPage:
        return await db.query(
            args.index, low, high, prefix=args.prefix, continuation=token, **_options(args)
        )

    return with_client(args, lambda db: _pages(args, db, fetch, listing=False))


def _options(args: argparse.Namespace) -> dict:
    return {
        "limit": args.limit,
        "consistency": args.consistency,
        "timeout": args.timeout,
        "values": args.values,
        "complete_only": args.complete_only,
        "explain": args.explain,
    }


async def _pages(args: argparse.Namespace, db: AsyncClient, fetch, listing: bool) -> int:
    token = args.continuation
    complete = True
    rows: list[dict] = []
    last: QueryPage | None = None
    while True:
        page = await fetch(db, token)
        last = page
        complete = complete and page.complete
        for row in page.rows:
            rows.append(_row_doc(row, listing))
            if args.format != "json":
                _print_row(row, listing, args.values)
        token = page.continuation
        if args.explain and args.format != "json":
            print(json.dumps(page.coverage.get("plan", {}), indent=2), file=sys.stderr)
        if not page.complete and args.format != "json":
            print(
                f"warning: incomplete page: {page.uncovered_share:.1%} of the ring was not read",
                file=sys.stderr,
            )
        if token is None or not args.all:
            break
    if args.format == "json":
        doc = {
            "rows": rows,
            "continuation": token,
            "complete": complete,
            "coverage": None if last is None else last.coverage,
        }
        print(json.dumps(doc, ensure_ascii=False))
    elif token is not None:
        print(f"continuation: {token}", file=sys.stderr)
    return EXIT_OK if complete else EXIT_INCOMPLETE


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="backslashreplace")


def _row_doc(row, listing: bool) -> dict:
    doc: dict = {"key": _text(row.key)}
    if not listing:
        doc["term"] = row.term if isinstance(row.term, int) else _text(row.term)
    if row.values:
        doc["values"] = [_text(value) for value in row.values]
    return doc


def _print_row(row, listing: bool, values: bool) -> None:
    fields = [] if listing else [str(row.term) if isinstance(row.term, int) else _text(row.term)]
    fields.append(_text(row.key))
    if values:
        fields += [_text(value) for value in row.values]
    print("\t".join(fields))

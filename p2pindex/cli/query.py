"""`p2pindex keys` and `p2pindex query`: key listings and index queries, page by page.

A term on the command line is an integer when it is one (``420``, ``-3``) and text
otherwise; ``text:0042`` forces text and ``int:42`` forces an integer. An argument that is
not UTF-8 (the OS hands Python its bytes as lone surrogates) is those bytes: a byte-string
term, or a ``--prefix`` of those bytes, as KEY and VALUE are.

Text output prints one row per line (``TERM<TAB>KEY`` for a query) with keys, terms and
values as their bytes, and a text term that would read back as something else (``6``,
``int:6``, ``text:x``) written ``text:6`` as the command line takes it; the continuation
and coverage go to stderr. ``--format json`` prints one document: a key or term that is not
UTF-8 as ``key_base64`` / ``term_base64`` (as the HTTP API), a row's values with their
``encoding`` (as ``get --format json``). A page that did not read the whole ring says so on
stderr and exits 4 (with ``--complete-only`` the query fails instead).
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from p2pindex.cli.common import (
    EXIT_OK,
    TAKES_TEXT_TERMS,
    UsageError,
    add_format_option,
    add_node_option,
    add_timeout_option,
    argv_bytes,
    consistency_arg,
    encode_values,
    text_or_base64,
    with_client,
)
from p2pindex.client import AsyncClient
from p2pindex.client.queries import DEFAULT_PAGE, MAX_PAGE, QueryPage, QueryRow
from p2pindex.types import ConsistencyLevel, key_text

EXIT_INCOMPLETE = 4
_INTEGER = re.compile(r"-?[0-9]+")
_INTEGER_BYTES = re.compile(rb"-?[0-9]+")

Term = int | str | bytes


def _typed(text: str) -> bytes:
    """The bytes behind an argument (``surrogateescape``, as the OS handed them over)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no OS argument holds: only from Python callers
        return text.encode("utf-8", "surrogatepass")


def _shown(text: str) -> str:
    """An argument quoted for a message: the text, or its bytes in hex when not UTF-8."""
    return key_text(_typed(text))


def _text_term(text: str) -> str | bytes:
    """Text as typed, or its bytes when it is not UTF-8 (a byte-string term)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise argparse.ArgumentTypeError(
                f"the term {_shown(text)} is not valid UTF-8"
            ) from None
    return text


def term_arg(text: str) -> Term:
    """A term as typed: see the module docstring."""
    if text.startswith("text:"):
        return _text_term(text[5:])
    if text.startswith("int:"):
        text = text[4:]
        if not _INTEGER.fullmatch(text):
            raise argparse.ArgumentTypeError(f"{_shown(text)} is not an integer")
    return int(text) if _INTEGER.fullmatch(text) else _text_term(text)


def index_name_arg(text: str) -> str:
    """An index name: text, so an argument that is not UTF-8 is a usage error."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(
            f"the index name {_shown(text)} is not valid UTF-8 (index names are text)"
        ) from None
    return text


def index_arg(text: str) -> tuple[str, Term]:
    """``NAME=TERM`` for ``put --index``."""
    name, sep, term = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=TERM, got {_shown(text)}")
    return index_name_arg(name), term_arg(term)


def term_text(term: int | bytes) -> bytes:
    """A term as text output prints it: what ``term_arg`` reads back as the same term, so
    the integer 6 prints ``6`` and the text "6" ``text:6`` (as does text starting with
    ``text:`` or ``int:``); any other term is its bytes."""
    if isinstance(term, int):
        return str(term).encode()
    if _INTEGER_BYTES.fullmatch(term) or term.startswith((b"text:", b"int:")):
        return b"text:" + term
    return term


def index_terms(pairs: list[tuple[str, Term]] | None) -> dict[str, list[Term]] | None:
    if not pairs:
        return None
    grouped: dict[str, list[Term]] = {}
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
    keys.add_argument("--prefix", default="", help="only keys starting with these bytes")
    _common(keys)
    keys.set_defaults(func=run_keys, reads_only=True)

    query = subparsers.add_parser(
        "query",
        help="find keys by index term",
        description=(
            "Find the keys filed under TERM in INDEX (or under any term from LO to HI with "
            "--range), sorted by term then key. Terms: 420 is an integer, anything else is "
            "text; text:420 forces text (text starting with '-' as -x or text:--x)."
        ),
    )
    query.add_argument("index", metavar="INDEX", type=index_name_arg, help="the index name")
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
    query.add_argument("--prefix", default="", help="only keys starting with these bytes")
    _common(query)
    query.set_defaults(func=run_query, reads_only=True, **{TAKES_TEXT_TERMS: True})


def run_keys(args: argparse.Namespace) -> int:
    prefix = argv_bytes(args.prefix, "--prefix")

    async def fetch(db: AsyncClient, token: str | None) -> QueryPage:
        return await db.keys(prefix, continuation=token, **_options(args))

    return with_client(args, lambda db: _pages(args, db, fetch, listing=True))


def run_query(args: argparse.Namespace) -> int:
    if (args.term is None) == (args.range is None):
        # A mistake in the command line, found after parsing: exit 2 like argparse's own.
        raise UsageError("give either TERM or --range LO HI")
    low, high = (args.term, None) if args.range is None else args.range
    prefix = argv_bytes(args.prefix, "--prefix")

    async def fetch(db: AsyncClient, token: str | None) -> QueryPage:
        return await db.query(
            args.index, low, high, prefix=prefix, continuation=token, **_options(args)
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
        if args.format == "json":
            rows += [_row_doc(row, listing, args.values) for row in page.rows]
        else:
            # Bytes, not text: a key or value that is not UTF-8 prints as stored, as `get`
            # prints a value, instead of an escape that a key could also spell.
            sys.stdout.flush()
            sys.stdout.buffer.write(
                b"".join(_row_line(row, listing, args.values) for row in page.rows)
            )
            sys.stdout.buffer.flush()
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


def _row_doc(row: QueryRow, listing: bool, values: bool) -> dict:
    """A row for ``--format json``: nothing that is not UTF-8 is lost or mistaken for text."""
    doc: dict = text_or_base64("key", row.key)
    if isinstance(row.term, int):
        doc["term"] = row.term
    elif row.term is not None and not listing:
        doc.update(text_or_base64("term", row.term))
    if values:
        doc["encoding"], doc["values"] = encode_values(list(row.values))
    return doc


def _row_line(row: QueryRow, listing: bool, values: bool) -> bytes:
    """A row for text output: its fields' bytes, tab-separated (see ``term_text``)."""
    fields = [] if listing or row.term is None else [term_text(row.term)]
    fields.append(row.key)
    if values:
        fields += row.values
    return b"\t".join(fields) + b"\n"

"""Client side of index queries and key listings: building requests, reading pages.

A page (``QueryPage``) holds rows in (term, key) order, the values when asked for, whether
the whole ring was read (``complete``; when False, ``uncovered_share`` says how much was
not) and a continuation: pass it back to get the next page, which starts strictly after
this one's last row. A continuation is opaque text, bound to the node that issued it and
to its query; ``route_of`` tells the client which node that is.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from p2pindex.client.requests import ConsistencyArg, expect
from p2pindex.core import strict_cbor
from p2pindex.core import terms as index_terms
from p2pindex.core.terms import Term, TermLimits
from p2pindex.errors import ProtocolError
from p2pindex.wire.messages import Message, QueryReply

DEFAULT_PAGE = 100
MAX_PAGE = 1000
_CLIENT_LIMITS = TermLimits(max_terms=1 << 16, max_term_bytes=1 << 16, max_name_chars=1 << 16)
"""The client only puts terms in canonical form; the node checks them against its limits."""


class PageOptions(TypedDict, total=False):
    """What ``keys`` and ``query`` take besides what they ask for, keyword only."""

    limit: int
    """Most rows on the page (default ``DEFAULT_PAGE``, at most ``MAX_PAGE``)."""
    continuation: str | None
    """The previous page's ``continuation``, to get the page after it."""
    consistency: ConsistencyArg | None
    """How many replicas of each arc must answer (default: the client's)."""
    timeout: float | None
    """Seconds (default: the client's)."""
    values: bool
    """Return each row's live values too."""
    complete_only: bool
    """Raise ``Unavailable`` rather than return a page that could not read every arc."""
    explain: bool
    """Return the coverage plan in ``coverage``."""


def check_page_options(method: str, page: Mapping[str, object]) -> None:
    """TypeError naming the caller's method and its options for an option it does not take
    (the keyword arguments travel on as ``**page``, so Python would name ``_query``)."""
    unknown = sorted(set(page) - set(PageOptions.__annotations__))
    if unknown:
        raise TypeError(
            f"{method}() got an unexpected keyword argument {unknown[0]!r}; its page options "
            f"are {', '.join(PageOptions.__annotations__)}"
        )


@dataclass(frozen=True, slots=True)
class QueryRow:
    key: bytes
    term: Term | None
    """The matching term (None in a key listing)."""
    values: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class QueryPage:
    rows: tuple[QueryRow, ...]
    continuation: str | None
    """Text to pass as ``continuation=`` for the next page; None when nothing is left."""
    complete: bool
    uncovered_share: float
    coverage: dict[str, Any] = field(default_factory=dict)

    @property
    def keys(self) -> list[bytes]:
        return [row.key for row in self.rows]


def term_for_wire(term: object, what: str) -> bytes:
    """An int, text (UTF-8) or bytes term encoded for the wire; ValueError otherwise."""
    try:
        checked = index_terms.check_term("query", term, _CLIENT_LIMITS)
    except ValueError as exc:
        raise ValueError(f"the {what} term: {exc}") from None
    return index_terms.encode_term(checked)


def index_for_wire(index: object) -> bytes | None:
    """A put's ``index={"name": [terms]}`` encoded for the wire (None: no terms)."""
    if index is None:
        return None
    canonical = index_terms.normalize(index, _CLIENT_LIMITS)  # type: ignore[arg-type]
    return index_terms.encode(canonical) if canonical else None


def check_page_size(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be an integer in 1..{MAX_PAGE}, not {limit!r}")
    return limit


def continuation_from_text(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("the continuation is not one this cluster issued") from None


def route_of(continuation: bytes | None) -> str | None:
    """The node id that issued ``continuation`` (the node to send the next page to)."""
    if continuation is None:
        return None
    try:
        items = strict_cbor.loads(continuation)
    except (ValueError, TypeError, EOFError):
        return None
    if type(items) is list and len(items) > 1 and type(items[1]) is str:
        return items[1]
    return None


def page_from_reply(reply: Message, listing: bool) -> QueryPage:
    reply = expect(reply, QueryReply)
    values = reply.row_values
    if values and len(values) != len(reply.rows):
        raise ProtocolError("a query reply has values for some rows only")
    rows = []
    for position, (raw_term, key) in enumerate(reply.rows):
        term = None if listing else index_terms.decode_term(raw_term, "answered")
        rows.append(QueryRow(key, term, tuple(values[position]) if values else ()))
    token = reply.continuation
    coverage = dict(reply.coverage)
    return QueryPage(
        tuple(rows),
        None if token is None else base64.urlsafe_b64encode(token).rstrip(b"=").decode(),
        bool(coverage.get("complete", False)),
        float(coverage.get("uncovered_share", 1.0)),
        coverage,
    )

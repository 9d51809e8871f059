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
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from p2pindex.client.requests import ConsistencyArg, expect
from p2pindex.core import strict_cbor
from p2pindex.core import terms as index_terms
from p2pindex.core.terms import Term, TermLimits
from p2pindex.errors import InvalidArgumentType, InvalidRequest, ProtocolError
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


def term_for_wire(term: object, what: str, index: str = "") -> bytes:
    """A term of ``index`` (an int, text or bytes) encoded for the wire.

    Raises the client's own errors, named after the index the caller queried:
    ``InvalidArgumentType`` for a term of the wrong type (a float, a bool: ``True`` is an
    ``int`` to Python but never a term), ``InvalidRequest`` for one out of range.
    """
    checked = _checked_term(index, term, f"the {what} term")
    return index_terms.encode_term(checked)


def bounds_for_wire(index: str, term: object, high: object = None) -> tuple[bytes, bytes]:
    """The low and high terms a query of ``index`` sends (an exact query: ``term`` twice).

    Besides ``term_for_wire``'s errors, a range whose low end is above its high end is the
    client's ``InvalidRequest``, quoting the two terms as the caller gave them."""
    if high is None:
        exact = term_for_wire(term, "queried", index)
        return exact, exact
    low = _checked_term(index, term, "the low term")
    top = _checked_term(index, high, "the high term")
    if type(low) is type(top) and low > top:  # type: ignore[operator]
        raise InvalidRequest(
            f"index {index!r}: the range's low end {_as_given(term)} is above its high end "
            f"{_as_given(high)}"
        )
    return index_terms.encode_term(low), index_terms.encode_term(top)


def _as_given(term: object) -> str:
    """A term as the caller wrote it: ``5``, ``'b'``, ``b'\\xff'``."""
    if isinstance(term, int):
        return str(int(term))
    if isinstance(term, bytearray | memoryview):
        return repr(bytes(term))
    return repr(term)


def _checked_term(index: str, term: object, what: str) -> Term:
    """``term`` in canonical form (text as UTF-8, bytes-like as bytes), or the client's error
    naming ``index`` (left out when empty) and what the term was for."""
    where = f"{what} of index {index!r}" if index else what
    if isinstance(term, bool) or not isinstance(term, int | str | bytes | bytearray | memoryview):
        raise InvalidArgumentType(
            f"{where} must be an integer, text or bytes, not {type(term).__name__}"
        )
    plain: Term | str
    if isinstance(term, int):
        plain = int(term)  # an IntEnum member is its integer
    elif isinstance(term, str):
        plain = str(term)
    else:
        plain = bytes(term)
    try:
        return index_terms.check_term(index, plain, _CLIENT_LIMITS)
    except ValueError as exc:
        detail = str(exc).removeprefix(f"index {index!r}: ")
        raise InvalidRequest(f"{where}: {detail}") from None


def index_for_wire(index: object) -> bytes | None:
    """A put's ``index={"name": [terms]}`` encoded for the wire (None: no terms).

    The documented shape is a mapping of index name to a list (or other collection) of
    terms; a bare term is refused rather than guessed at, since text, bytes and mappings
    are iterable too and would be filed as the wrong terms (``bytearray(b"ab")`` as the
    integers 97 and 98). Wrong shapes and types raise ``InvalidArgumentType``, a term or
    name the client can tell is bad ``InvalidRequest``; both name the index.
    """
    if index is None:
        return None
    if not isinstance(index, Mapping):
        raise InvalidArgumentType(
            f"index must be a mapping of index name to a list of terms, such as "
            f"{{'total': [420]}}, not {type(index).__name__}"
        )
    pairs: dict[object, object] = {}
    for name, terms in index.items():
        checked_name = _checked_name(name)
        pairs[checked_name] = [
            _checked_term(checked_name, term, "a term") for term in _term_list(checked_name, terms)
        ]
    try:
        canonical = index_terms.normalize(pairs, _CLIENT_LIMITS)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    return index_terms.encode(canonical) if canonical else None


def _checked_name(name: object) -> str:
    """An index name as the node would take it, else the client's error (nothing sent)."""
    if not isinstance(name, str):
        raise InvalidArgumentType(f"an index name must be text, not {type(name).__name__}")
    try:
        return index_terms.check_name(str(name), _CLIENT_LIMITS)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def _term_list(name: str, terms: object) -> Collection[object]:
    """The terms given for index ``name``: a list, tuple or set, never a bare term."""
    if isinstance(terms, str | bytes | bytearray | memoryview | Mapping) or not isinstance(
        terms, Collection
    ):
        raise InvalidArgumentType(
            f"index {name!r} takes a list of terms, not one {type(terms).__name__}; "
            f"write {{{name!r}: [term]}} for a single term"
        )
    return terms


def check_page_size(limit: object) -> int:
    """The page size asked for: ``InvalidArgumentType`` if it is not an integer,
    ``InvalidRequest`` if it is outside 1..MAX_PAGE (nothing is sent either way)."""
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise InvalidArgumentType(
            f"limit must be an integer in 1..{MAX_PAGE}, not {type(limit).__name__}"
        )
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be an integer in 1..{MAX_PAGE}, not {limit!r}")
    return int(limit)


def check_index_name(index: object) -> str:
    """The index a query names: text (``InvalidArgumentType`` otherwise), not empty."""
    if not isinstance(index, str):
        raise InvalidArgumentType(f"index must be a non-empty name, not {type(index).__name__}")
    if not index:
        raise InvalidRequest("index must be a non-empty name, not ''")
    try:
        index_terms.check_utf8(index, "index name")
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    return index


def continuation_from_text(text: object) -> bytes | None:
    """The continuation a previous page gave, decoded; anything else is the client's error."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise InvalidArgumentType(
            f"continuation must be the text of a page's continuation, not {type(text).__name__}"
        )
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidRequest("the continuation is not one this cluster issued") from None


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

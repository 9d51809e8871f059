"""Key listings and index queries over HTTP: a query string read into the ``QueryRequest``
a binary client sends, and the ``QueryReply`` written back as JSON.

Nothing is checked here that the node checks itself (page size, bounds, low above high,
the continuation's MAC, the index name, the capability's prefix): those reach
``QueryService`` unchanged, so both protocols refuse the same inputs with the same words
and the same counters. This module only turns text into the request's fields, and counts
a parameter it cannot read (``rejected.bad_query``, as the node counts its own refusals).

Terms are text unless written ``int:420`` (or with ``type=int``); ``text:`` forces text,
so ``text:int:5`` is the text ``int:5``. A PUT's ``index=NAME:TERM`` parameters spell their
terms the same way, so a term is queried as it was written; unlike a query's, they are
checked here against the node's limits too (``written_terms``), so a PUT is refused before
its body is sent. Keys and prefixes are percent-decoded bytes. In the answer a key or term
that is UTF-8 is a JSON string (a number for an integer term), otherwise it goes base64
under ``key_base64`` / ``term_base64``; values are base64, as ``/v1/kv`` siblings are.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any
from urllib.parse import unquote_to_bytes

from p2pindex.config import TermLimits
from p2pindex.core import terms as index_terms
from p2pindex.errors import InvalidRequest
from p2pindex.types import consistency_to_wire, parse_consistency
from p2pindex.wire.messages import QueryReply, QueryRequest

DEFAULT_CONSISTENCY = "one"
"""As ``p2pindex keys``/``query``: one replica per arc unless asked for more."""
DEFAULT_LIMIT = 100
MAX_CONTINUATION_CHARS = 4096
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_INTEGER = re.compile(r"-?[0-9]{1,20}")
_TRUE = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_COMMON = {"prefix", "limit", "continuation", "consistency", "timeout_ms", "values"}
_COMMON |= {"complete_only", "explain"}
LISTING_NAMES = frozenset(_COMMON)
QUERY_NAMES = frozenset(_COMMON | {"term", "lo", "hi", "type", "terms"})


class BadQuery(InvalidRequest):
    """A query parameter this layer could not read (counted before it is answered)."""


def listing_request(query: str) -> QueryRequest:
    """``GET /v1/keys?...`` as the request ``AsyncClient.keys`` sends."""
    params = _params(query, LISTING_NAMES)
    return _request("", None, None, params)


def wants_terms(query: str) -> bool:
    """Whether a query's rows should carry their terms (``terms=true``)."""
    return _flag(_params(query, QUERY_NAMES), "terms")


def query_request(index: bytes, query: str) -> QueryRequest:
    """``GET /v1/query/{index}?...`` as the request ``AsyncClient.query`` sends."""
    params = _params(query, QUERY_NAMES)
    try:
        name = index.decode("utf-8")
    except UnicodeDecodeError:
        raise BadQuery("the index name is not UTF-8 text") from None
    if not name:
        raise BadQuery("the index name is empty: use /v1/query/{index}?term=...")
    as_int = _term_type(params.get("type"))
    exact = params.get("term")
    if exact is not None:
        if "lo" in params or "hi" in params:
            raise BadQuery("give either term= or lo= and hi=, not both")
        low = high = _term(name, exact, as_int, "term")
    elif "lo" in params and "hi" in params:
        low = _term(name, params["lo"], as_int, "lo")
        high = _term(name, params["hi"], as_int, "hi")
    else:
        raise BadQuery(f"query {name[:60]!r}: give term= (exact) or lo= and hi= (a range)")
    return _request(name, low, high, params)


def written_terms(written: list[str], limits: TermLimits) -> bytes | None:
    """A PUT's ``index=NAME:TERM`` parameters as the terms a native client's ``index=``
    sends (None: none), each term spelled as a query spells it, so ``index=total:int:420``
    is found by ``term=int:420``. The name ends at the first ``:``.

    Checked against the node's own ``limits`` with the node's words, so a bad name, term
    or count is refused before the body is read, never half-applied (the node checks the
    encoded terms again, as it checks every client's)."""
    grouped: dict[object, list[object]] = {}
    for value in written:
        name, colon, spelled = value.partition(":")
        if not colon:
            raise BadQuery(
                f"index={value[:60]!r}: expected NAME:TERM, such as index=email:a@b.example "
                "(text) or index=total:int:420 (an integer)"
            )
        term = _spelled_term(spelled, False, f"index {name[:60]!r}: the term")
        grouped.setdefault(name, []).append(term)
    try:
        canonical = index_terms.normalize(grouped, limits)
    except ValueError as exc:
        raise BadQuery(str(exc)) from None
    return index_terms.encode(canonical) if canonical else None


def reply_document(reply: QueryReply, *, terms: bool, values: bool) -> dict[str, Any]:
    """The JSON answer: ``keys`` (a key per row), or ``rows`` with the term and values
    asked for; the continuation and coverage as the binary reply carries them."""
    if reply.row_values and len(reply.row_values) != len(reply.rows):
        raise InvalidRequest("the query answer has values for some rows only")
    found: list[Any] = []
    for position, (raw_term, key) in enumerate(reply.rows):
        if not (terms or values):
            found.append(_key_entry(key))
            continue
        row: dict[str, Any] = _text_or_base64("key", key)
        if terms:
            term = index_terms.decode_term(raw_term, "answered")
            row.update({"term": term} if isinstance(term, int) else _text_or_base64("term", term))
        if values:
            answered = reply.row_values[position] if reply.row_values else []
            row["values"] = [base64.b64encode(value).decode() for value in answered]
        found.append(row)
    coverage = dict(reply.coverage)
    token = reply.continuation
    return {
        "rows" if terms or values else "keys": found,
        "continuation": None if token is None else encode_token(token),
        "complete": bool(coverage.get("complete", False)),
        "uncovered": float(coverage.get("uncovered_share", 1.0)),
        "coverage": coverage,
    }


def encode_token(token: bytes) -> str:
    return base64.urlsafe_b64encode(token).rstrip(b"=").decode()


# --- reading parameters ---------------------------------------------------------------------


def _params(query: str, known: frozenset[str]) -> dict[str, bytes]:
    """Each parameter once, percent-decoded to bytes (a prefix may be any bytes)."""
    if _BAD_PERCENT.search(query):
        raise BadQuery("the query string has a bad percent-encoding (% must start %XX)")
    params: dict[str, bytes] = {}
    for part in query.split("&"):
        if not part:
            continue
        raw_name, _, raw_value = part.partition("=")
        name = unquote_to_bytes(raw_name.replace("+", " ")).decode("utf-8", "replace")
        if name not in known:
            raise BadQuery(
                f"unknown query parameter {name[:40]!r}; known: {', '.join(sorted(known))}"
            )
        if name in params:
            raise BadQuery(f"query parameter {name!r} is given twice")
        params[name] = unquote_to_bytes(raw_value.replace("+", " "))
    return params


def _request(
    index: str, low: bytes | None, high: bytes | None, params: dict[str, bytes]
) -> QueryRequest:
    consistency = _text(params.get("consistency", DEFAULT_CONSISTENCY.encode()), "consistency")
    try:
        wire = consistency_to_wire(parse_consistency(consistency))
    except ValueError as exc:
        raise BadQuery(str(exc)) from None
    return QueryRequest(
        index,
        low,
        high,
        params.get("prefix", b""),
        _number(params.get("limit", str(DEFAULT_LIMIT).encode()), "limit", "a page size"),
        _continuation(params.get("continuation")),
        wire,
        _number(params.get("timeout_ms", b"0"), "timeout_ms", "a whole number of milliseconds"),
        _flag(params, "values"),
        _flag(params, "complete_only"),
        _flag(params, "explain"),
    )


def _text(value: bytes, name: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise BadQuery(f"{name} is not UTF-8 text") from None


def _flag(params: dict[str, bytes], name: str) -> bool:
    value = _text(params.get(name, b"false"), name)
    flag = _TRUE.get(value.lower())
    if flag is None:
        raise BadQuery(f"{name} must be true or false, not {value[:20]!r}")
    return flag


def _number(value: bytes, name: str, what: str) -> int:
    """A whole number; its range is the node's to check (a page size of 0 is its refusal)."""
    text = _text(value, name)
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise BadQuery(f"{name} must be {what}, not {text[:20]!r}")
    return int(text)


def _term_type(value: bytes | None) -> bool:
    kind = "text" if value is None else _text(value, "type")
    if kind not in ("text", "int"):
        raise BadQuery(f"type must be text or int, not {kind[:20]!r}")
    return kind == "int"


def _term(index: str, value: bytes, as_int: bool, name: str) -> bytes:
    """A term as written (see the module docstring), encoded as a binary client encodes it."""
    term = _spelled_term(_text(value, name), as_int, name)
    try:
        return index_terms.encode_term(index_terms.check_term(index, term, _LIMITS))
    except ValueError as exc:
        raise BadQuery(f"{name}=: {exc}") from None


def _spelled_term(text: str, as_int: bool, name: str) -> int | str:
    """The term ``text`` spells: text unless ``int:`` (or ``as_int``), ``text:`` forcing
    text. One reading for queries and writes, so a term is found as it was written."""
    if text.startswith("text:"):
        return text[5:]
    if text.startswith("int:") or as_int:
        digits = text[4:] if text.startswith("int:") else text
        if not _INTEGER.fullmatch(digits):
            raise BadQuery(f"{name} {digits[:40]!r} is not an integer")
        return int(digits)
    return text


def _continuation(value: bytes | None) -> bytes | None:
    if value is None:
        return None
    text = _text(value, "continuation")
    if len(text) > MAX_CONTINUATION_CHARS or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise BadQuery("the continuation is not one this cluster issued")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise BadQuery("the continuation is not one this cluster issued") from None


def _key_entry(key: bytes) -> str | dict[str, str]:
    """A key in a ``keys`` list: the text itself, or ``{"key_base64": ...}`` when not UTF-8."""
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return {"key_base64": base64.b64encode(key).decode()}


def _text_or_base64(field: str, data: bytes) -> dict[str, str]:
    try:
        return {field: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{field}_base64": base64.b64encode(data).decode()}


_LIMITS = TermLimits(max_terms=1 << 16, max_term_bytes=1 << 16, max_name_chars=1 << 16)
"""Only the canonical form is checked here; the node holds terms to its own limits."""

"""Index terms: what a write says it should be found under, checked and put in one order.

A term is an integer (signed 64-bit) or a byte string; text is UTF-8 bytes by the time it
gets here (the client encodes it), so ``"a@b.example"`` and ``b"a@b.example"`` are the same
term and a query for one finds the other. Integers and byte strings never compare equal and
never share a range: within one index every integer sorts before every byte string (SQLite's
own order of INTEGER and BLOB), and a range query's bounds must be of one kind.

Terms belong to a version: ``IndexTerms`` is a sorted tuple of distinct ``(index, term)``
pairs kept in each sibling (``p2pindex.core.versions``). Encoded it is one flat CBOR array
``[index_1, term_1, ..., index_m, term_m]`` in that order, so equal terms have equal bytes.

Pure: no I/O. Limits are arguments so nodes can configure them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from cbor2 import dumps

from p2pindex.config import TermLimits
from p2pindex.core import strict_cbor

Term = int | bytes
IndexTerms = tuple[tuple[str, Term], ...]

MIN_INT_TERM = -(1 << 63)
MAX_INT_TERM = (1 << 63) - 1
KEY_INDEX = "$key"
"""The built-in index of live keys (its terms are the keys); names starting with "$" are
reserved."""


DEFAULT_LIMITS = TermLimits()


def term_order(term: Term) -> tuple[int, Term]:
    """Sort key of a term within one index: integers first, then byte strings."""
    return (0, term) if type(term) is int else (1, term)


def pair_order(pair: tuple[str, Term]) -> tuple[str, int, Term]:
    name, term = pair
    return (name, 0, term) if type(term) is int else (name, 1, term)


def check_utf8(text: str, what: str) -> bytes:
    """``text`` as UTF-8, or ValueError naming ``what`` it is: a lone surrogate (what
    Python makes of bytes decoded with ``surrogateescape``) has no UTF-8 form."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{what} {text[:20]!r}{'...' if len(text) > 20 else ''} is not valid UTF-8"
            f" (a lone surrogate at position {exc.start})"
        ) from None


def check_name(name: object, limits: TermLimits = DEFAULT_LIMITS) -> str:
    """An index name, or ValueError saying what is wrong with it in the user's words."""
    if type(name) is not str:
        raise ValueError(f"an index name must be text, not {type(name).__name__}")
    if not name:
        raise ValueError("an index name must not be empty")
    if len(name) > limits.max_name_chars:
        raise ValueError(
            f"index name {name[:20]!r}... is {len(name)} characters long"
            f" (limit {limits.max_name_chars})"
        )
    if name.startswith("$"):
        raise ValueError(f"index name {name!r}: names starting with '$' are reserved")
    check_utf8(name, "index name")
    return name


def check_term(name: str, term: object, limits: TermLimits = DEFAULT_LIMITS) -> Term:
    """A term of index ``name`` in canonical form (text becomes UTF-8 bytes), or ValueError."""
    if type(term) is str:
        try:
            term = check_utf8(term, f"index {name!r}: the text")
        except ValueError as exc:
            raise ValueError(f"{exc}; pass bytes for a term that is not text") from None
    if type(term) is int:
        if not MIN_INT_TERM <= term <= MAX_INT_TERM:
            raise ValueError(f"index {name!r}: integer term {term} is outside signed 64-bit range")
        return term
    if type(term) is bytes:
        if len(term) > limits.max_term_bytes:
            raise ValueError(
                f"index {name!r}: a term of {len(term)} bytes is too long"
                f" (limit {limits.max_term_bytes})"
            )
        return term
    raise ValueError(
        f"index {name!r}: a term must be an integer, text or bytes, not {type(term).__name__}"
    )


def normalize(
    index: Mapping[object, object] | None, limits: TermLimits = DEFAULT_LIMITS
) -> IndexTerms:
    """The canonical terms of ``{name: [term, ...]}`` (a single term may stand alone)."""
    if index is None:
        return ()
    if not isinstance(index, Mapping):
        raise ValueError(f"index terms must be a map of name to terms, not {type(index).__name__}")
    pairs: set[tuple[str, Term]] = set()
    for name, terms in index.items():
        checked = check_name(name, limits)
        if isinstance(terms, str | bytes | int) or not isinstance(terms, Iterable):
            terms = [terms]
        for term in terms:  # type: ignore[union-attr]
            pairs.add((checked, check_term(checked, term, limits)))
            if len(pairs) > limits.max_terms:
                raise ValueError(f"a write may carry at most {limits.max_terms} index terms")
    return tuple(sorted(pairs, key=pair_order))


def encode(terms: IndexTerms) -> bytes:
    """Canonical bytes of canonical terms (the wire form of a put's terms)."""
    return dumps([item for pair in terms for item in pair])


def flat(terms: IndexTerms) -> list[object]:
    return [item for pair in terms for item in pair]


def from_flat(items: object, limits: TermLimits | None = None) -> IndexTerms:
    """Terms from their flat array; refuses anything not already canonical (sorted, distinct,
    well-typed), so a record or request decodes to exactly one set of terms."""
    if type(items) is not list or len(items) % 2:
        raise ValueError("index terms are not a flat array of name, term pairs")
    checks = limits or DEFAULT_LIMITS
    pairs: list[tuple[str, Term]] = []
    previous: tuple[str, int, Term] | None = None
    for position in range(0, len(items), 2):
        name, term = items[position], items[position + 1]
        if limits is not None:
            name = check_name(name, checks)
            term = check_term(name, term, checks)
        elif type(name) is not str or not name or type(term) not in (int, bytes):
            raise ValueError(f"index terms hold a bad entry {name!r}: {term!r}")
        elif type(term) is int and not MIN_INT_TERM <= term <= MAX_INT_TERM:
            raise ValueError(f"index {name!r}: integer term {term} is outside signed 64-bit range")
        order = pair_order((name, term))  # type: ignore[arg-type]
        if previous is not None and order <= previous:
            raise ValueError("index terms are repeated or out of order")
        previous = order
        pairs.append((name, term))  # type: ignore[arg-type]
    if limits is not None and len(pairs) > limits.max_terms:
        raise ValueError(f"a write may carry at most {limits.max_terms} index terms")
    return tuple(pairs)


def decode(data: bytes, limits: TermLimits = DEFAULT_LIMITS) -> IndexTerms:
    """Terms sent by a client, checked against ``limits``; ValueError names the problem."""
    try:
        items = strict_cbor.loads(data)
    except (ValueError, TypeError, EOFError) as exc:
        raise ValueError(f"index terms are not valid CBOR: {exc}") from None
    terms = from_flat(items, limits)
    if dumps(items) != data:
        raise ValueError("index terms are not canonically encoded")
    return terms


def encode_term(term: Term) -> bytes:
    return dumps(term)


def decode_term(data: bytes, what: str) -> Term:
    """One term of a query bound; ValueError in the user's words."""
    try:
        term = strict_cbor.loads(data)
    except (ValueError, TypeError, EOFError):
        raise ValueError(f"the {what} term is not valid") from None
    if type(term) is bytes:
        return term
    if type(term) is not int:
        raise ValueError(f"the {what} term must be an integer, text or bytes")
    if not MIN_INT_TERM <= term <= MAX_INT_TERM:
        raise ValueError(f"the {what} term {term} is outside signed 64-bit range")
    return term

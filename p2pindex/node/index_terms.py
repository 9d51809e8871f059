"""The index terms of a client's write, checked before anything is written.

Kept out of the coordinator so that module only gains one call: a put's terms arrive
encoded (``PutRequest.index``), are refused with one ``InvalidRequest`` naming the problem
(and counted) or become the canonical terms the new version carries. A delete has none.
"""

from __future__ import annotations

from p2pindex.core import terms
from p2pindex.core.terms import IndexTerms, TermLimits
from p2pindex.errors import InvalidRequest
from p2pindex.node.stats import StatisticsStore
from p2pindex.wire.messages import Message, PutRequest

_RECENT = 4096
_recent: dict[tuple[bytes, TermLimits], IndexTerms] = {}
"""Terms decoded lately: a client repeating a put sends the same terms again, and a decode is
the same answer for the same bytes and limits."""


def write_terms(request: Message, limits: TermLimits, stats: StatisticsStore) -> IndexTerms:
    if not isinstance(request, PutRequest) or request.index is None:
        return ()
    found = _recent.get((request.index, limits))
    if found is not None:
        return found
    try:
        found = terms.decode(request.index, limits)
    except ValueError as exc:
        stats.incr("rejected.bad_index_terms")
        raise InvalidRequest(f"put of key {_shown(request.key)}: {exc}") from None
    if len(_recent) >= _RECENT:
        _recent.clear()
    _recent[(request.index, limits)] = found
    return found


def _shown(key: bytes) -> str:
    try:
        return repr(key.decode())
    except UnicodeDecodeError:
        return key.hex()

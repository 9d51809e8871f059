"""Consistent-hash ring with virtual nodes: which nodes hold a key, in what order.

Every node builds the same ``Ring`` from the same member set with no coordinator, because a
node's virtual-node tokens depend on nothing but its own id. A key lives on the first ``n``
distinct nodes met walking clockwise from its token; the first is the key's PRIMARY.

How tokens are placed, and why 2048 of them
-------------------------------------------
Balance cannot come from coordination (that would make tokens depend on the other members and
break "a join moves keys only to the new node"), so it has to come from numbers. A node's share
of the ring is the sum of the gaps in front of its tokens; the other nodes' tokens, however
each node lays them out, add up to a near-Poisson stream, so each gap is close to exponential
and a node's share has a coefficient of variation of about ``1/sqrt(vnodes)`` whatever
identity-only layout is used. Stratified, low-discrepancy (Kronecker) and prime-lattice layouts
were measured too: none beat independent tokens, and layouts giving nodes unequal token counts
were far worse. Measured over 300 random id sets per size, the standard deviation of log(share)
is 0.97/sqrt(vnodes) at 64 nodes and 0.72/sqrt(vnodes) at 3. Keeping max/min primary ownership
within 1.25 needs log(1.25) = 0.223 to be many standard deviations of the spread of 64 nodes:
at 1024 vnodes it is 7.2 sd and about one random 64-node cluster in a thousand breaks the bound
(max/min reached 1.234 in 200 trials); at 2048 it is 10.4 sd (about one in a billion; median
max/min 1.106, worst of 300 trials 1.157). ``DEFAULT_VNODES`` is 2048.

131,072 tokens for 64 nodes would cost well over 100 ms to generate and sort in Python, so
tokens are *stratified*: the ring is cut into ``vnodes`` equal strata and a node's k-th token
is a pseudo-random point (MurmurHash3 of its id, seed k) inside stratum k. This is still a
function of the id alone and balances exactly like independent random tokens (measured), but
every stratum holds exactly one token per node, so the ring can be materialised lazily one
stratum at a time: building a ring is O(nodes), the first lookup in a stratum hashes each
member once, and any preference list lies within the key's stratum and the next one.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import mmh3

from p2pindex.types import NodeRole

RING_SIZE = 1 << 64
"""Tokens are unsigned 64-bit integers: positions on a ring of this many points."""

DEFAULT_VNODES = 2048
"""Virtual nodes (tokens) per node; see the module docstring for how it was chosen."""

MAX_VNODES = 1 << 20


class EmptyRingError(LookupError):
    """A lookup was made on a ring with no nodes: no key has an owner."""


def key_token(key: bytes) -> int:
    """The ring position of ``key``; storage indexes keys by this exact value."""
    return mmh3.hash64(key, signed=False)[0]


def _check_vnodes(vnodes: int) -> None:
    if isinstance(vnodes, bool) or not isinstance(vnodes, int):
        raise TypeError(f"vnodes must be an int, not {type(vnodes).__name__}")
    if not 1 <= vnodes <= MAX_VNODES:
        raise ValueError(f"vnodes {vnodes} is outside 1..{MAX_VNODES}")


def _check_node_id(node_id: str) -> None:
    if not isinstance(node_id, str):
        raise TypeError(f"node id must be a str, not {type(node_id).__name__}")
    if not node_id:
        raise ValueError("node id is empty")


def _stratum_start(stratum: int, vnodes: int) -> int:
    """First token of a stratum: ceil(stratum * RING_SIZE / vnodes), so that
    ``(token * vnodes) >> 64`` recovers the stratum of any token."""
    return -((-stratum << 64) // vnodes)


def _token(id_bytes: bytes, stratum: int, vnodes: int) -> int:
    start = _stratum_start(stratum, vnodes)
    width = _stratum_start(stratum + 1, vnodes) - start
    return start + ((mmh3.hash64(id_bytes, stratum, signed=False)[0] * width) >> 64)


def node_tokens(node_id: str, vnodes: int) -> list[int]:
    """The ascending ring tokens of ``node_id``: one per stratum, from the id alone."""
    _check_node_id(node_id)
    _check_vnodes(vnodes)
    id_bytes = node_id.encode()
    return [_token(id_bytes, stratum, vnodes) for stratum in range(vnodes)]


class Ring:
    """An immutable ring snapshot of a member set; membership changes build a new one.

    Lookups are memoised per ring position, so after warm-up a preference list costs one
    hash, one bisect in a stratum of ``len(nodes)`` tokens and two dict probes.
    """

    __slots__ = ("_ids", "_nodes", "_pref_cache", "_shares", "_sources", "_strata", "_vnodes")

    def __init__(
        self,
        nodes: Iterable[str] = (),
        vnodes: int = DEFAULT_VNODES,
        sources: Mapping[str, str] | None = None,
    ) -> None:
        """``sources`` names, for a node that took another's place (``serve --replace``),
        the id its tokens come from instead of its own: it holds exactly the ranges the
        node it replaced held, and nothing else moves. Entries for absent nodes are
        ignored."""
        _check_vnodes(vnodes)
        if isinstance(nodes, str):
            raise TypeError("nodes must be an iterable of node ids, not a single str")
        members = sorted(set(nodes))
        for node in members:
            _check_node_id(node)
        self._nodes = frozenset(members)
        self._vnodes = vnodes
        self._sources: dict[str, str] = {}
        for node, source in (sources or {}).items():
            if node in self._nodes and source != node:
                _check_node_id(source)
                self._sources[node] = source
        self._ids = [(node, self._sources.get(node, node).encode()) for node in members]
        self._strata: list[tuple[list[int], list[str]] | None] = [None] * vnodes
        # Per n: ring position (stratum * nodes + index) -> preference list.
        self._pref_cache: dict[int, dict[int, tuple[str, ...]]] = {}
        self._shares: dict[int, dict[str, float]] = {}

    @property
    def nodes(self) -> frozenset[str]:
        return self._nodes

    @property
    def vnodes(self) -> int:
        return self._vnodes

    def __len__(self) -> int:
        return len(self._nodes)

    @property
    def sources(self) -> dict[str, str]:
        """The nodes whose tokens come from another id (see ``__init__``), with that id."""
        return dict(self._sources)

    def token_source(self, node: str) -> str:
        """The id ``node``'s tokens are derived from: its own, unless it replaced a node."""
        return self._sources.get(node, node)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ring):
            return NotImplemented
        return (
            self._vnodes == other._vnodes
            and self._nodes == other._nodes
            and self._sources == other._sources
        )

    def __hash__(self) -> int:
        return hash((self._vnodes, self._nodes, frozenset(self._sources.items())))

    def __repr__(self) -> str:
        sources = f", sources={dict(sorted(self._sources.items()))!r}" if self._sources else ""
        return f"Ring({sorted(self._nodes)!r}, vnodes={self._vnodes}{sources})"

    def with_node(self, node: str, source: str | None = None) -> Ring:
        """This ring plus ``node``, its tokens derived from ``source`` (default: its id)."""
        _check_node_id(node)
        if node in self._nodes:
            raise ValueError(f"node {node!r} is already on the ring")
        sources = self._sources if source is None else {**self._sources, node: source}
        return Ring(self._nodes | {node}, self._vnodes, sources)

    def without_node(self, node: str) -> Ring:
        if node not in self._nodes:
            raise ValueError(f"node {node!r} is not on the ring")
        return Ring(self._nodes - {node}, self._vnodes, self._sources)

    # --- lookups -----------------------------------------------------------------------

    def preference_list(self, key: bytes, n: int) -> tuple[str, ...]:
        """The first ``n`` distinct nodes clockwise from the key (all nodes if fewer)."""
        return self._preference(mmh3.hash64(key, signed=False)[0], n)

    def preference_list_for_token(self, token: int, n: int) -> tuple[str, ...]:
        if isinstance(token, bool) or not isinstance(token, int):
            raise TypeError(f"token must be an int, not {type(token).__name__}")
        if not 0 <= token < RING_SIZE:
            raise ValueError(f"token {token} is outside 0..2**64-1")
        return self._preference(token, n)

    def roles(self, key: bytes, n: int) -> dict[str, NodeRole]:
        """The key's replicas in preference order: the first is PRIMARY, the rest REPLICA."""
        preference = self.preference_list(key, n)
        roles = dict.fromkeys(preference, NodeRole.REPLICA)
        roles[preference[0]] = NodeRole.PRIMARY
        return roles

    def walk(self, key: bytes) -> Iterator[str]:
        """Every node once, clockwise from the key: the preference list, then fallbacks."""
        self._require_nodes()
        stratum, index = self._position(key_token(key))
        seen: set[str] = set()
        total = len(self._nodes)
        for owner in self._owners_from(stratum, index):
            if owner not in seen:
                seen.add(owner)
                yield owner
                if len(seen) == total:
                    return

    def _preference(self, token: int, n: int) -> tuple[str, ...]:
        # The hot path: one dict probe for the cache of this n, one bisect, one dict probe.
        cache = self._pref_cache.get(n) if type(n) is int else None
        if cache is None:
            self._count(n)
            cache = self._pref_cache[n] = {}
        stratum, index = self._position(token)
        slot = stratum * len(self._ids) + index
        preference = cache.get(slot)
        if preference is None:
            preference = cache[slot] = self._first_distinct(stratum, index, min(n, len(self._ids)))
        return preference

    def _count(self, n: int) -> int:
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an int, not {type(n).__name__}")
        if n < 1:
            raise ValueError(f"n must be at least 1, not {n}")
        self._require_nodes()
        return min(n, len(self._ids))

    def _require_nodes(self) -> None:
        if not self._ids:
            raise EmptyRingError("the ring has no nodes, so no key has an owner")

    def _position(self, token: int) -> tuple[int, int]:
        """(stratum, index) of the first token at or after ``token``, wrapping at the end."""
        stratum = (token * self._vnodes) >> 64
        tokens = (self._strata[stratum] or self._load(stratum))[0]
        index = bisect_left(tokens, token)
        if index == len(tokens):
            stratum = stratum + 1 if stratum + 1 < self._vnodes else 0
            index = 0
        return stratum, index

    def _load(self, stratum: int) -> tuple[list[int], list[str]]:
        """Materialise one stratum: every member's token in it, ascending; equal tokens
        (astronomically rare) are ordered by node id so every node agrees."""
        vnodes = self._vnodes
        pairs = sorted((_token(id_bytes, stratum, vnodes), node) for node, id_bytes in self._ids)
        loaded = ([token for token, _ in pairs], [node for _, node in pairs])
        self._strata[stratum] = loaded
        return loaded

    def _owners_from(self, stratum: int, index: int) -> Iterator[str]:
        """Token owners clockwise from a position, once round the ring."""
        strata = self._strata
        order = itertools.chain(range(stratum, self._vnodes), range(stratum + 1))
        for position, current in enumerate(order):
            owners = (strata[current] or self._load(current))[1]
            if position == 0:
                yield from owners[index:]
            elif current == stratum:
                yield from owners[:index]
            else:
                yield from owners

    def _first_distinct(self, stratum: int, index: int, count: int) -> tuple[str, ...]:
        found: list[str] = []
        for owner in self._owners_from(stratum, index):
            if owner not in found:
                found.append(owner)
                if len(found) == count:
                    break
        return tuple(found)

    # --- whole-ring views (for status and ownership handoff; O(tokens), cached) -----------

    def _flat(self) -> tuple[list[int], list[str]]:
        tokens: list[int] = []
        owners: list[str] = []
        for stratum in range(self._vnodes):
            stratum_tokens, stratum_owners = self._strata[stratum] or self._load(stratum)
            tokens += stratum_tokens
            owners += stratum_owners
        return tokens, owners

    def _sweep(self, count: int) -> Iterator[tuple[int, int, int, tuple[str, ...]]]:
        """(start, end, length, preference list) of every arc (start, end] between
        consecutive tokens, from the last arc back to the first (the one that wraps).

        Walking backwards, the preference list at a token is its owner followed by the
        list at the next token without that owner, so each step costs O(count).
        """
        tokens, owners = self._flat()
        preference = self._first_distinct(0, 0, count)
        for position in range(len(tokens) - 1, -1, -1):
            owner = owners[position]
            if preference[0] != owner:
                rest = [node for node in preference if node != owner]
                preference = (owner, *rest[: count - 1])
            start, end = tokens[position - 1], tokens[position]
            yield start, end, end - start if position else end - start + RING_SIZE, preference

    def arcs(self, n: int) -> Iterator[tuple[int, int, int, tuple[str, ...]]]:
        """(start, end, length, preference list) of every arc (start, end] between
        consecutive tokens; every key of an arc has the arc's ``n``-long preference list."""
        return self._sweep(self._count(n))

    def ownership(self, n: int = 1) -> dict[str, float]:
        """Each node's fraction of the keyspace among the first ``n`` replicas, divided by
        min(n, nodes) so the fractions sum to 1."""
        count = self._count(n)
        shares = self._shares.get(count)
        if shares is None:
            totals = dict.fromkeys(sorted(self._nodes), 0)
            for _, _, length, preference in self._sweep(count):
                for node in preference:
                    totals[node] += length
            scale = RING_SIZE * count
            shares = self._shares[count] = {node: total / scale for node, total in totals.items()}
        return dict(shares)

    def arcs_in_order(self, n: int) -> list[tuple[int, int, tuple[str, ...]]]:
        """Every arc (start, end] between consecutive tokens with its ``n``-long preference
        list, in ring order (the first arc wraps past zero: its start is the last token).
        Coverage planning (``p2pindex.core.coverage``) walks these."""
        self._require_nodes()
        count = self._count(n)
        found = [(start, end, preference) for start, end, _, preference in self._sweep(count)]
        found.reverse()
        return found

    def ranges_for(self, node: str, n: int) -> list[tuple[int, int]]:
        """The ring arcs (start, end] of the keys whose ``n``-long preference list holds
        ``node``, sorted by start; an arc with start >= end wraps past zero, and [(0, 0)] is
        the whole ring (when every node holds every key).

        Arcs are never merged across a change of replicas: all keys of one arc are held by
        the same nodes, in this ring and in any ring with nodes removed, so ownership
        handoff can look up the old or new owners of a whole arc by its end token.
        Adjacent arcs are merged only when the same node owns both tokens (then the walk
        clockwise from either is the same).
        """
        count = self._count(n)
        if node not in self._nodes:
            raise ValueError(f"node {node!r} is not on the ring")
        if count == len(self._ids):
            return [(0, 0)]
        arcs: list[tuple[int, int]] = []
        above: str | None = None  # owner of the next arc clockwise, if that arc is included
        top: str | None = None  # owner of the last arc before zero, if included
        for step, (start, end, _, preference) in enumerate(self._sweep(count)):
            owner = preference[0]
            if node not in preference:
                above = None
                continue
            if step == 0:
                top = owner
            if above == owner:
                arcs[-1] = (start, arcs[-1][1])
            else:
                arcs.append((start, end))
            above = owner
        if len(arcs) > 1 and above is not None and above == top:
            lowest, highest = arcs.pop(), arcs.pop(0)
            arcs.append((highest[0], lowest[1]))
        # Equal tokens of two nodes leave an empty arc (t, t], which must not read as the
        # whole ring.
        return sorted(arc for arc in arcs if arc[0] != arc[1])


def gained_arcs(
    before: Ring, after: Ring, node: str, n: int
) -> list[tuple[int, int, tuple[str, ...]]]:
    """The arcs (start, end] whose keys ``node`` replicates in ``after`` but did not in
    ``before`` (``after`` is ``before`` with members removed), each with the nodes that
    replicated it in ``before`` and are still in ``after``: where its data is now.

    ``before``'s arcs are the finer cut (removing nodes only merges arcs), so each one has a
    single preference list in either ring. Adjacent gained arcs with the same sources are
    merged. A node that held every key before gains nothing.
    """
    if node not in after.nodes or not before.nodes:
        return []
    found: list[tuple[int, int, tuple[str, ...]]] = []
    for start, end, preference in before.arcs_in_order(n):
        if node in preference or start == end:
            continue
        if node not in after.preference_list_for_token(end, n):
            continue
        sources = tuple(sorted(other for other in preference if other in after.nodes))
        if found and found[-1][1] == start and found[-1][2] == sources:
            found[-1] = (found[-1][0], end, sources)
        else:
            found.append((start, end, sources))
    return found


# --- arcs ------------------------------------------------------------------------------

Arc = tuple[int, int]
"""A ring arc (start, end] of tokens; start == end is the whole ring."""

TOKEN_MAX = RING_SIZE - 1
"""Largest ring token; tokens are unsigned 64-bit integers."""


def check_token(name: str, value: object) -> int:
    """``value`` if it is a ring token (0..2**64-1); ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= TOKEN_MAX:
        raise ValueError(f"{name} must be a ring token in 0..2**64-1, not {value!r}")
    return value


def arc_length(arc: Arc) -> int:
    start, end = arc
    return (end - start) % RING_SIZE or RING_SIZE


def split_arc(arc: Arc, parts: int) -> list[Arc]:
    """Cut ``arc`` into ``parts`` consecutive arcs of (nearly) equal length, in ring order.

    The pieces cover the arc exactly once. An arc shorter than ``parts`` tokens is not
    split (a piece of zero length would read as the whole ring).
    """
    if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
        raise ValueError(f"parts must be a positive integer, not {parts!r}")
    start, end = arc
    check_token("start", start)
    check_token("end", end)
    length = arc_length(arc)
    if length < parts:
        return [arc]
    bounds = [(start + length * i // parts) % RING_SIZE for i in range(parts + 1)]
    return list(itertools.pairwise(bounds))


def arc_covers(outer: Arc, inner: Arc) -> bool:
    """Whether every token of ``inner`` lies in ``outer`` (both (start, end], start == end
    being the whole ring)."""
    start, end = outer
    if start == end:
        return True
    if inner[0] == inner[1]:
        return False
    first = (inner[0] - start) % RING_SIZE
    last = (inner[1] - start) % RING_SIZE
    return first < last <= (end - start) % RING_SIZE


def arc_holding(arcs: list[Arc], starts: list[int], token: int) -> int | None:
    """Index of the arc of ``arcs`` (disjoint, sorted by start, as ``Ring.ranges_for``
    gives them; ``starts`` their starts) that holds ``token``, or None."""
    below = bisect_left(starts, token) - 1
    for index in (below, len(arcs) - 1):  # the arc starting below, or the one that wraps
        if index < 0:
            continue
        start, end = arcs[index]
        if start < token <= end if start < end else (token > start or token <= end):
            return index
    return None


@dataclass(frozen=True, slots=True)
class ArcPiece:
    """One contiguous run of tokens ``lo..hi`` (inclusive) of a ring arc, in scan order.

    ``after`` is the ``(token, key)`` position a resumed scan continues strictly after; it only
    appears on the piece that contains it.
    """

    lo: int
    hi: int
    after: tuple[int, bytes] | None

    def contains(self, token: int, key: bytes) -> bool:
        return self.lo <= token <= self.hi and (self.after is None or (token, key) > self.after)


def arc_pieces(start: int, end: int, after: bytes | None) -> list[ArcPiece]:
    """Split the half-open ring arc (start, end] into ascending token runs, in ring order.

    The arc is walked clockwise from ``start``: when it wraps (start >= end) the run above
    ``start`` comes first, then the run from zero; start == end is the whole ring. A scan that
    resumes after key ``after`` skips every position up to ``(key_token(after), after)``; if that
    token is outside the arc the scan is already past the end and there is nothing left.
    """
    check_token("start", start)
    check_token("end", end)
    if start < end:
        runs = [(start + 1, end)]
    else:
        runs = [(start + 1, TOKEN_MAX)] if start < TOKEN_MAX else []
        runs.append((0, end))
    if after is None:
        return [ArcPiece(lo, hi, None) for lo, hi in runs]
    if not isinstance(after, bytes):
        raise TypeError(f"after must be bytes, not {type(after).__name__}")
    token = key_token(after)
    for index, (lo, hi) in enumerate(runs):
        if lo <= token <= hi:
            return [ArcPiece(lo, hi, (token, after))] + [
                ArcPiece(rest_lo, rest_hi, None) for rest_lo, rest_hi in runs[index + 1 :]
            ]
    return []

"""Dotted version vectors: causal versions of one key, as in Riak's dvvset.

A ``VersionedObject`` holds a clock (what this copy has seen) and siblings (the values of
writes no other write has superseded), each tagged with the dot (actor, counter) of the write
that made it. Actors are node ids, never client ids, so clocks stay as small as the set of
nodes that coordinated writes for the key. Dots are what keep siblings honest: a plain
version vector cannot tell "this value was overwritten" from "this value is concurrent" once
two writes interleave, and keeps stale values forever (Riak's sibling explosion); a dot names
exactly one write, so a value survives a merge only if the other side has it or has not seen
it yet.

A delete is a write whose value is None (a tombstone), so it supersedes and is superseded
like any other write.

Encoding is canonical CBOR of one flat array (cbor2 pays per nested container, so nesting
would multiply the cost of every record on the hot path)::

    record:  [1, k, actor_1, counter_1, ..., actor_k, counter_k,
                    index_1, counter_1, value_1, ..., index_m, counter_m, value_m]
    context: [1, actor_1, counter_1, ..., actor_k, counter_k]
             [3, key tag, actor_1, counter_1, ..., actor_k, counter_k]

where 1 is the format, actors ascend, each sibling names its actor by its index in the
clock, siblings ascend by dot and a value is a byte string or null (a tombstone). Decoding
accepts only this exact encoding, so equal objects always have equal bytes.

A record in which some sibling carries index terms (``p2pindex.core.terms``) is format 2:
each sibling is four items, ``index, counter, value, terms`` where terms is the flat array
of ``p2pindex.core.terms`` (empty for a sibling without terms, always empty for a
tombstone). A record without terms is always written as format 1, so unindexed data keeps
its bytes (and its speed) and older records still read.

A context given out for a key carries the key's tag (``key_tag``, 8 bytes of BLAKE2b), as
format 3. Counters are per actor across all keys, so another key's context, which is easy
to pass by mistake, usually names counters above everything this key has seen: written with
it, it would replace siblings the client never read. With the tag the coordinator refuses
it (``decode_context(data, key)``). Untagged contexts (format 1: older releases, and the
empty context of a key never written) still read.
"""

from __future__ import annotations

import hashlib
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from typing import NamedTuple, NoReturn

from cbor2 import dumps

from p2pindex.core import strict_cbor
from p2pindex.core import terms as _terms
from p2pindex.core.terms import IndexTerms

FORMAT = 1
FORMAT_WITH_TERMS = 2
FORMAT_KEYED_CONTEXT = 3
KEY_TAG_BYTES = 8
MAX_COUNTER = (1 << 64) - 1
SANE_COUNTER = (1 << 53) - 1
"""The highest counter a context from outside may name for an actor unless the replica
already holds that counter: no actor makes 2**53 writes (285 years at a million writes a
second to one key), every JSON client represents it exactly, and ``update`` always has room
to continue from it. A larger claim is a forged or corrupted context, which would otherwise
push the key's counters to the top of the range."""

_new = tuple.__new__
"""Builds Dot, Sibling and VersionedObject without re-checking what the caller guarantees."""


def _check_actor(actor: object) -> None:
    if type(actor) is not str:
        raise TypeError(f"actor must be a str, not {type(actor).__name__}")
    if not actor:
        raise ValueError("actor is empty")


def _check_counter(counter: object, minimum: int) -> None:
    if type(counter) is not int:
        raise TypeError(f"counter must be an int, not {type(counter).__name__}")
    if not minimum <= counter <= MAX_COUNTER:
        raise ValueError(f"counter {counter} is outside {minimum}..2**64-1")


def _check_value(value: object) -> None:
    if value is not None and type(value) is not bytes:
        raise TypeError(f"value must be bytes or None, not {type(value).__name__}")


class VersionVector(Mapping[str, int]):
    """An immutable map actor -> counter; a missing actor means 0.

    Entries are kept sorted by actor and zero counters are dropped, so equal vectors iterate,
    compare, hash and encode identically.
    """

    __slots__ = ("_counters",)

    def __init__(self, entries: Mapping[str, int] | Iterable[tuple[str, int]] = ()) -> None:
        pairs = entries.items() if isinstance(entries, Mapping) else entries
        counters: dict[str, int] = {}
        for actor, counter in pairs:
            _check_actor(actor)
            _check_counter(counter, 0)
            if actor in counters:
                raise ValueError(f"actor {actor!r} appears twice")
            if counter:
                counters[actor] = counter
        self._counters = dict(sorted(counters.items()))

    def __getitem__(self, actor: str) -> int:
        return self._counters[actor]

    def get(self, actor: str, default: int = 0) -> int:  # type: ignore[override]
        return self._counters.get(actor, default)

    def __contains__(self, actor: object) -> bool:
        return actor in self._counters

    def __iter__(self) -> Iterator[str]:
        return iter(self._counters)

    def __len__(self) -> int:
        return len(self._counters)

    def keys(self) -> KeysView[str]:
        return self._counters.keys()

    def items(self) -> ItemsView[str, int]:
        return self._counters.items()

    def values(self) -> ValuesView[int]:
        return self._counters.values()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VersionVector):
            return NotImplemented
        return self._counters == other._counters

    def __hash__(self) -> int:
        return hash(tuple(self._counters.items()))

    def __repr__(self) -> str:
        return f"VersionVector({self._counters!r})"


def _vector(counters: dict[str, int]) -> VersionVector:
    """Wrap a dict that is already canonical (sorted, no zeros) without copying it."""
    vector = object.__new__(VersionVector)
    vector._counters = counters
    return vector


class _DotFields(NamedTuple):
    actor: str
    counter: int


class Dot(_DotFields):
    """One write: the ``counter``-th write coordinated by ``actor``."""

    __slots__ = ()

    def __new__(cls, actor: str, counter: int) -> Dot:
        _check_actor(actor)
        _check_counter(counter, 1)
        return tuple.__new__(cls, (actor, counter))


class _SiblingFields(NamedTuple):
    dot: Dot
    value: bytes | None
    terms: IndexTerms = ()


class Sibling(_SiblingFields):
    """A surviving write, its value (None is a tombstone: the write was a delete) and the
    index terms it was written with (a tombstone has none)."""

    __slots__ = ()

    def __new__(cls, dot: Dot, value: bytes | None, terms: IndexTerms = ()) -> Sibling:
        if not isinstance(dot, Dot):
            raise TypeError(f"dot must be a Dot, not {type(dot).__name__}")
        _check_value(value)
        if terms:
            if value is None:
                raise ValueError("a tombstone carries no index terms")
            terms = _terms.from_flat(_terms.flat(terms))
        return tuple.__new__(cls, (dot, value, terms))


class _ObjectFields(NamedTuple):
    clock: VersionVector
    siblings: tuple[Sibling, ...]


class VersionedObject(_ObjectFields):
    """A key's versions: the clock of everything seen and the siblings still standing.

    Built by ``update``, ``merge`` and ``decode_object``; the constructor checks the
    invariants they keep (siblings ascend by dot, every dot is covered by the clock, at
    least one sibling) so that an object that exists can always be encoded.
    """

    __slots__ = ()

    def __new__(cls, clock: VersionVector, siblings: Iterable[Sibling]) -> VersionedObject:
        if not isinstance(clock, VersionVector):
            raise TypeError(f"clock must be a VersionVector, not {type(clock).__name__}")
        ordered = tuple(siblings)
        if not ordered:
            raise ValueError("a versioned object needs at least one sibling")
        previous: Dot | None = None
        for sibling in ordered:
            if not isinstance(sibling, Sibling):
                raise TypeError(f"siblings must be Sibling, not {type(sibling).__name__}")
            dot = sibling.dot
            if dot.counter > clock.get(dot.actor, 0):
                raise ValueError(f"dot {tuple(dot)} is not covered by the clock")
            if previous is not None and dot <= previous:
                problem = "appears twice" if dot == previous else "is out of order"
                raise ValueError(f"sibling dot {tuple(dot)} {problem}")
            previous = dot
        return tuple.__new__(cls, (clock, ordered))

    @property
    def values(self) -> list[bytes]:
        """Live values, one per concurrent write (tombstones left out)."""
        return [sibling[1] for sibling in self.siblings if sibling[1] is not None]

    @property
    def is_deleted(self) -> bool:
        """True when every surviving write is a delete."""
        return all(sibling[1] is None for sibling in self.siblings)

    @property
    def context(self) -> VersionVector:
        """What a client must send back to supersede every version it was shown."""
        return self.clock

    @property
    def sibling_count(self) -> int:
        return len(self.siblings)

    @property
    def index_terms(self) -> frozenset[tuple[str, _terms.Term]]:
        """What the object is found under: the union of its live siblings' terms."""
        return frozenset(pair for sibling in self.siblings for pair in sibling[2])


def descends(a: VersionVector, b: VersionVector) -> bool:
    """True when ``a`` has seen everything ``b`` has."""
    counters = a._counters
    return all(counters.get(actor, 0) >= counter for actor, counter in b._counters.items())


def _join(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    """Entry-wise maximum; returns a fresh dict (callers may add to it) in sorted order."""
    joined = dict(a)
    for actor, counter in b.items():
        if counter > joined.get(actor, 0):
            joined[actor] = counter
    if len(joined) != len(a):
        joined = dict(sorted(joined.items()))
    return joined


def join(a: VersionVector, b: VersionVector) -> VersionVector:
    """The least vector that descends from both."""
    return _vector(_join(a._counters, b._counters))


def update(
    current: VersionedObject | None,
    context: VersionVector,
    actor: str,
    value: bytes | None,
    terms: IndexTerms = (),
    *,
    floor: int = 0,
) -> VersionedObject:
    """The coordinator's write of ``value`` (None deletes) by ``actor``, a replica of the key.

    ``context`` is what the client had read: siblings it covers are superseded, the others
    were concurrent with this write and stay. The new dot's counter is one past the highest
    the actor appears with in the object or the context, so it can never collide with an
    earlier write by the same actor even if the local copy was behind the context.
    ``floor`` is the highest counter the actor has issued for any key: the new dot goes
    above it too, because a node can forget a key's history (a reaped tombstone whose
    marker expired, a stray copy it dropped) while other replicas still hold a version with
    the actor's earlier dots, and a dot below theirs would be taken for one they have.
    ``terms`` (canonical, from ``p2pindex.core.terms.normalize``) belong to the new write
    only: the superseded siblings' terms go with them, a delete carries none.
    """
    if type(context) is not VersionVector:
        raise TypeError(f"context must be a VersionVector, not {type(context).__name__}")
    if type(actor) is not str or not actor:
        _check_actor(actor)
    if value is not None and type(value) is not bytes:
        _check_value(value)
    seen = context._counters
    if current is None:
        clock = dict(seen)
        kept: list[Sibling] = []
    elif type(current) is VersionedObject:
        clock = _join(current[0]._counters, seen)
        kept = [sibling for sibling in current[1] if sibling[0][1] > seen.get(sibling[0][0], 0)]
    else:
        raise TypeError(f"current must be a VersionedObject or None, not {type(current).__name__}")
    counter = max(clock.get(actor, 0), floor) + 1
    while counter > MAX_COUNTER:
        # Only a record written before contexts were checked (``unseen_claim``) can hold a
        # counter at the top of the range: write as a fresh actor derived from this one, so
        # the key stays writable and the new dot still names a write no one else made.
        actor += "+"
        counter = clock.get(actor, 0) + 1
    is_new_actor = actor not in clock
    clock[actor] = counter
    if is_new_actor:
        clock = dict(sorted(clock.items()))
    if terms and value is None:
        raise ValueError("a delete carries no index terms")
    kept.append(_new(Sibling, (_new(Dot, (actor, counter)), value, terms)))
    kept.sort()
    return _new(VersionedObject, (_vector(clock), tuple(kept)))


class Write(NamedTuple):
    """One coordinator write as the version rules take it: ``value`` (None deletes) with
    its index ``terms``, by ``actor`` over the client's ``context``, its dot above ``floor``
    (see ``update``). One record, so a seam that alters a write (the simulator's planted
    rules) names what it changes instead of restating every argument."""

    context: VersionVector
    actor: str
    value: bytes | None
    terms: IndexTerms = ()
    floor: int = 0


def apply(current: VersionedObject | None, write: Write) -> VersionedObject:
    """``update`` of ``current`` by ``write``."""
    context, actor, value, terms, floor = write
    return update(current, context, actor, value, terms, floor=floor)


def unseen_claim(context: VersionVector, current: VersionedObject | None) -> tuple[str, int] | None:
    """The first (actor, counter) of a client's ``context`` that no replica can have issued:
    above ``SANE_COUNTER`` and above what the key's ``current`` version holds for that actor.
    None when the context is one a read could have returned."""
    held = current[0]._counters if current is not None else {}
    for actor, counter in context._counters.items():
        if counter > SANE_COUNTER and counter > held.get(actor, 0):
            return actor, counter
    return None


def _same_dot_winner(a: Sibling, b: Sibling) -> Sibling:
    """Two different values under one dot mean an actor reused a counter (a bug or lost
    state elsewhere). Pick one deterministically so replicas still converge."""
    return max(
        a,
        b,
        key=lambda sibling: (
            sibling[1] is not None,
            sibling[1] or b"",
            _terms.encode(sibling[2]),
        ),
    )


def merge(a: VersionedObject, b: VersionedObject) -> VersionedObject:
    """Combine two copies of a key (replica write, read repair, handoff).

    A sibling survives if the other copy also has it or has not seen its dot; a sibling the
    other copy has seen but no longer holds was superseded there. Commutative, associative
    and idempotent, so copies converge whatever order they meet in.
    """
    if type(a) is not VersionedObject or type(b) is not VersionedObject:
        raise TypeError("merge takes two VersionedObjects")
    if a == b:
        return a
    seen_by_a = a[0]._counters
    seen_by_b = b[0]._counters
    only_b = {sibling[0]: sibling for sibling in b[1]}
    kept: list[Sibling] = []
    for sibling in a[1]:
        dot = sibling[0]
        twin = only_b.pop(dot, None)
        if twin is not None:
            kept.append(sibling if twin == sibling else _same_dot_winner(sibling, twin))
        elif dot[1] > seen_by_b.get(dot[0], 0):
            kept.append(sibling)
    for dot, sibling in only_b.items():
        if dot[1] > seen_by_a.get(dot[0], 0):
            kept.append(sibling)
    kept.sort()
    return _new(VersionedObject, (_vector(_join(seen_by_a, seen_by_b)), tuple(kept)))


# --- encoding --------------------------------------------------------------------------------


def encode_object(obj: VersionedObject) -> bytes:
    if type(obj) is not VersionedObject:
        raise TypeError(f"expected a VersionedObject, not {type(obj).__name__}")
    counters = obj[0]._counters
    with_terms = any(sibling[2] for sibling in obj[1])
    items: list[object] = [FORMAT_WITH_TERMS if with_terms else FORMAT, len(counters)]
    for pair in counters.items():
        items += pair
    position = list(counters).index
    if with_terms:
        for (actor, counter), value, terms in obj[1]:
            items += (position(actor), counter, value, _terms.flat(terms))
    else:
        for (actor, counter), value, _ in obj[1]:
            items += (position(actor), counter, value)
    return dumps(items)


def key_tag(key: bytes) -> bytes:
    """What a context carries of the key it was given out for."""
    return hashlib.blake2b(key, digest_size=KEY_TAG_BYTES).digest()


def encode_context(vector: VersionVector, key: bytes | None = None) -> bytes:
    """A context to give a client; with ``key``, tagged as that key's (see the docstring)."""
    if type(vector) is not VersionVector:
        raise TypeError(f"expected a VersionVector, not {type(vector).__name__}")
    items: list[object] = [FORMAT] if key is None else [FORMAT_KEYED_CONTEXT, key_tag(key)]
    for pair in vector._counters.items():
        items += pair
    return dumps(items)


class ContextOfAnotherKey(ValueError):
    """A tagged context given back with a key other than the one it was given out for."""


def _load(data: bytes, what: str, formats: tuple[int, ...] = (FORMAT,)) -> list[object]:
    if type(data) is not bytes and not isinstance(data, (bytearray, memoryview)):
        raise TypeError(f"{what} must be bytes, not {type(data).__name__}")
    try:
        items = strict_cbor.loads_leading(data)
    except strict_cbor.MalformedCbor as exc:
        raise ValueError(f"{what} is not valid CBOR: {exc}") from None
    if type(items) is not list or not items:
        raise ValueError(f"{what} is not a non-empty CBOR array")
    if type(items[0]) is not int or items[0] not in formats:
        expected = " or ".join(map(str, formats))
        raise ValueError(f"{what} has unknown format {items[0]!r} (expected {expected})")
    return items


def _clock(actors: list[object], counters: list[object], what: str) -> dict[str, int]:
    """The clock of equally long ``actors`` and ``counters``; one combined test per entry
    on the way in (this runs for every record a replica receives), the precise reason only
    for a bad one. Callers slice both from one array by the same range, so the zips need
    no ``strict`` (a keyword call each)."""
    previous = ""
    for actor, counter in zip(actors, counters, strict=False):
        if (
            type(actor) is not str
            or actor <= previous
            or type(counter) is not int
            or not 0 < counter <= MAX_COUNTER
        ):
            _refuse_clock_entry(what, previous, actor, counter)
        previous = actor
    return dict(zip(actors, counters, strict=False))  # type: ignore[arg-type]


def _refuse_clock_entry(what: str, previous: str, actor: object, counter: object) -> NoReturn:
    if type(actor) is not str or not actor:
        raise ValueError(f"{what} has a clock actor that is not a non-empty string: {actor!r}")
    if actor <= previous:
        raise ValueError(f"{what} clock actors are repeated or out of order at {actor!r}")
    raise ValueError(f"{what} has a bad counter {counter!r} for actor {actor!r}")


def _check_canonical(items: list[object], data: bytes, what: str) -> None:
    if dumps(items) != data:
        raise ValueError(f"{what} is not canonically encoded (trailing or non-minimal bytes)")


def decode_object(data: bytes) -> VersionedObject:
    """Parse a record; raises ValueError naming the first problem in anything else."""
    items = _load(data, "record", (FORMAT, FORMAT_WITH_TERMS))
    if items[0] == FORMAT_WITH_TERMS:
        return _decode_with_terms(items, data)
    actors, limits, counters, first = _record_header(items, 3)
    siblings: list[Sibling] = []
    previous = (0, 0)
    for position in range(first, len(items), 3):
        index, counter, value = items[position : position + 3]
        index, counter = previous = _check_sibling(actors, limits, index, counter, value, previous)
        siblings.append(_new(Sibling, (_new(Dot, (actors[index], counter)), value, ())))
    _check_canonical(items, data, "record")
    return _new(VersionedObject, (_vector(counters), tuple(siblings)))


def _record_header(
    items: list[object], width: int
) -> tuple[list[object], list[object], dict[str, int], int]:
    """(actors, counters as stored, the clock, index of the first sibling) of a record whose
    siblings take ``width`` items each; ValueError when the sizes do not fit."""
    size = len(items)
    clock_size = items[1] if size > 1 else None
    if type(clock_size) is not int or clock_size < 1:
        raise ValueError(f"record has a bad clock size {clock_size!r}")
    first = 2 + 2 * clock_size
    if first >= size or (size - first) % width:
        raise ValueError(f"record has {size} items, which does not fit a clock of {clock_size}")
    actors, limits = items[2:first:2], items[3:first:2]
    return actors, limits, _clock(actors, limits, "record"), first


def _check_sibling(
    actors: list[object],
    limits: list[object],
    index: object,
    counter: object,
    value: object,
    previous: tuple[int, int],
) -> tuple[int, int]:
    """Refuse a sibling whose dot is outside the clock, out of order or repeated, or whose
    value is neither bytes nor None; its (index, counter) otherwise, for the next check."""
    if (
        type(index) is not int
        or not 0 <= index < len(actors)
        or type(counter) is not int
        or not 0 < counter <= limits[index]  # type: ignore[operator]
        or (value is not None and type(value) is not bytes)
        or index < previous[0]
        or (index == previous[0] and counter <= previous[1])
    ):
        _refuse_sibling(actors, limits, index, counter, value, *previous)
    return index, counter


def _decode_with_terms(items: list[object], data: bytes) -> VersionedObject:
    """Format 2 (see the module docstring), checked as strictly as format 1."""
    actors, limits, counters, first = _record_header(items, 4)
    siblings: list[Sibling] = []
    indexed = False
    previous = (0, 0)
    for position in range(first, len(items), 4):
        index, counter, value, flat_terms = items[position : position + 4]
        index, counter = previous = _check_sibling(actors, limits, index, counter, value, previous)
        try:
            terms = _terms.from_flat(flat_terms)
        except ValueError as exc:
            raise ValueError(f"record has bad index terms: {exc}") from None
        if terms and value is None:
            raise ValueError("record has a tombstone that carries index terms")
        indexed = indexed or bool(terms)
        siblings.append(_new(Sibling, (_new(Dot, (actors[index], counter)), value, terms)))
    if not indexed:
        raise ValueError("record is format 2 but carries no index terms")
    _check_canonical(items, data, "record")
    return _new(VersionedObject, (_vector(counters), tuple(siblings)))


def index_facts(data: bytes) -> tuple[bool, frozenset[tuple[str, _terms.Term]]]:
    """(live, terms) of a stored record: whether some sibling is not a tombstone, and the
    union of the siblings' index terms. What a storage backend derives its index rows from,
    in the transaction that stores the record, for every record it stores, so it reads the
    flat array without building the object; records reach storage already checked by the
    node, so the plain decoder reads them (``strict_cbor.loads_own``). A record that does
    not parse (storage tests keep opaque bytes) counts as live and unindexed."""
    try:
        items = strict_cbor.loads_own(data)
    except ValueError:
        return True, _NO_TERMS
    if type(items) is not list or len(items) < 2 or type(items[1]) is not int:
        return True, _NO_TERMS
    first = 2 + 2 * items[1]
    if items[0] == FORMAT:
        return any(value is not None for value in items[first + 2 :: 3]), _NO_TERMS
    if items[0] != FORMAT_WITH_TERMS:
        return True, _NO_TERMS
    live = any(value is not None for value in items[first + 2 :: 4])
    found: set[tuple[str, _terms.Term]] = set()
    for flat_terms in items[first + 3 :: 4]:
        if type(flat_terms) is list:
            for name, term in zip(flat_terms[::2], flat_terms[1::2], strict=False):
                if type(name) is str and type(term) in (int, bytes):
                    found.add((name, term))
    return live, frozenset(found)


_NO_TERMS: frozenset[tuple[str, _terms.Term]] = frozenset()


def _refuse_sibling(
    actors: list[object],
    limits: list[object],
    index: object,
    counter: object,
    value: object,
    previous_index: int,
    previous_counter: int,
) -> NoReturn:
    if type(index) is not int or not 0 <= index < len(actors):
        raise ValueError(f"record has a sibling with a bad actor index {index!r}")
    actor = actors[index]
    if type(counter) is not int or counter < 1:
        raise ValueError(f"record has a sibling of {actor!r} with a bad counter {counter!r}")
    if counter > limits[index]:  # type: ignore[operator]
        raise ValueError(f"record has dot ({actor!r}, {counter}) not covered by its clock")
    if value is not None and type(value) is not bytes:
        raise ValueError(f"record has a value of type {type(value).__name__}")
    duplicate = (index, counter) == (previous_index, previous_counter)
    problem = "a duplicate dot" if duplicate else "siblings out of order"
    raise ValueError(f"record has {problem} at ({actor!r}, {counter})")


def decode_context(data: bytes, key: bytes | None = None) -> VersionVector:
    """Parse a context; raises ValueError naming the first problem in anything else, and
    ``ContextOfAnotherKey`` when it is tagged for a key other than ``key`` (if given)."""
    items = _load(data, "context", (FORMAT, FORMAT_KEYED_CONTEXT))
    first = 1
    if items[0] == FORMAT_KEYED_CONTEXT:
        tag = items[1] if len(items) > 1 else None
        if type(tag) is not bytes or len(tag) != KEY_TAG_BYTES:
            raise ValueError("context has no valid key tag")
        first = 2
    if (len(items) - first) % 2:
        raise ValueError("context has an actor without a counter")
    counters = _clock(items[first::2], items[first + 1 :: 2], "context")
    _check_canonical(items, data, "context")
    if first == 2 and key is not None and items[1] != key_tag(key):
        raise ContextOfAnotherKey("the context was given out for another key")
    return _vector(counters)

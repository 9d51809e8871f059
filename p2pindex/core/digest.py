"""Digests for anti-entropy: which keys two replicas hold differently, found cheaply.

Two replicas compare a ring arc by exchanging one small digest per piece of it; only pieces
whose digests differ are looked at more closely (split again, like descending a Merkle
tree), and only at the bottom do they exchange one digest per key. Equal data gives equal
digests because records are canonical encodings (``core.versions``): equal versions have
equal bytes on every node.

A piece's digest is the XOR of its keys' 128-bit MurmurHash3 digests plus the key count.
XOR makes it independent of scan order and cheap to fold one key at a time; the hash is not
cryptographic, which is fine because replicas trust each other (a node that wanted to lie
could simply send a bad record).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import mmh3

from p2pindex.core.ring import RING_SIZE, Arc

DIGEST_SIZE = 16
EMPTY_DIGEST = bytes(DIGEST_SIZE)


def key_digest(key: bytes, record: bytes) -> bytes:
    """16 bytes naming one key's exact version (the key is length-prefixed, so no two
    different (key, record) pairs hash the same input)."""
    return mmh3.hash_bytes(len(key).to_bytes(4, "big") + key + record)


@dataclass(frozen=True, slots=True)
class PieceDigest:
    """Summary of the keys of one arc: XOR of their key digests, and how many there are."""

    digest: bytes
    count: int


def fold(digests: Iterable[bytes]) -> PieceDigest:
    """The piece digest of a set of key digests (order does not matter)."""
    acc = 0
    count = 0
    for digest in digests:
        acc ^= int.from_bytes(digest, "big")
        count += 1
    return PieceDigest(acc.to_bytes(DIGEST_SIZE, "big"), count)


def slice_width(total_keys: int, budget: int) -> int:
    """How wide an arc a round may compare so that it scans about ``budget`` keys.

    Keys are spread evenly over the ring by the hash, so a slice of width W holds about
    total * W / RING_SIZE of them. Returns RING_SIZE (the whole ring) when all fit.
    """
    if budget < 1:
        raise ValueError(f"budget must be positive, not {budget}")
    if total_keys <= budget:
        return RING_SIZE
    return max(1, RING_SIZE * budget // total_keys)


@dataclass(frozen=True, slots=True)
class KeyDiff:
    """What to move between two replicas of the same arcs."""

    pull: list[bytes]
    """Keys the other replica holds differently or alone: fetch and merge its record."""
    push: list[bytes]
    """Keys this replica holds alone: send its record (after a pull the merged ones follow)."""


def diff_keys(mine: Mapping[bytes, bytes], theirs: Mapping[bytes, bytes]) -> KeyDiff:
    """Compare per-key digests of the same arcs; both lists are sorted for determinism."""
    pull = sorted(key for key, digest in theirs.items() if mine.get(key) != digest)
    push = sorted(key for key in mine if key not in theirs)
    return KeyDiff(pull, push)


def differing(mine: list[PieceDigest], theirs: list[PieceDigest]) -> list[int]:
    """Indexes of the pieces whose digests differ."""
    if len(mine) != len(theirs):
        raise ValueError(f"compared {len(mine)} pieces with {len(theirs)}")
    return [i for i, (a, b) in enumerate(zip(mine, theirs, strict=True)) if a != b]


class SliceDigests:
    """The key digests of one arc, held in ring order so that the digest of any piece of
    the arc, or its keys, is read without scanning storage again.

    A round of anti-entropy compares the same slice at several depths and then key by
    key; scanning it once and answering every level from here made the local side of a
    round about three times cheaper.
    """

    __slots__ = ("_entries", "_tokens")

    def __init__(self, entries: Iterable[tuple[int, bytes, bytes]]) -> None:
        """``entries``: (ring token, key, key digest) for every key of the arc."""
        self._entries = sorted(entries)
        self._tokens = [token for token, _key, _digest in self._entries]

    def __len__(self) -> int:
        return len(self._entries)

    def _within(self, arc: Arc) -> list[tuple[int, bytes, bytes]]:
        start, end = arc
        entries, tokens = self._entries, self._tokens
        if start == end:
            return entries
        first, last = bisect_right(tokens, start), bisect_right(tokens, end)
        if start < end:
            return entries[first:last]
        return entries[first:] + entries[:last]

    def piece(self, arc: Arc) -> PieceDigest:
        """The digest of the keys in ``arc`` (start, end]; start == end is the whole ring."""
        return fold(digest for _token, _key, digest in self._within(arc))

    def keys(self, arcs: Iterable[Arc]) -> dict[bytes, bytes]:
        """key -> key digest for every key in any of ``arcs``."""
        return {key: digest for arc in arcs for _token, key, digest in self._within(arc)}

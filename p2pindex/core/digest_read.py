"""Digest reads: which replica of a read is asked for the value, which ones only for a
digest of their version, and when a digest means the value must be fetched after all.

Every read used to fetch the full record from every target. Replicas in sync hold the same
canonical record bytes (``core.versions``), so a 16-byte hash of (key, record) names a
replica's version exactly: the coordinator reads the value from one replica and asks the
others for their digest; a digest equal to the value's says that replica holds the very same
version and counts as its copy, any other answer (another version, no copy where the value
has one, a digest of the wrong size, an unreadable reply) is settled by fetching that
replica's full record. A replica's copy is therefore never guessed, so a read returns and
repairs exactly what it would if every record had been fetched.

At ONE a read touches one replica; the others are spares, asked one at a time, best first,
only when the replica asked fails or times out, so availability at ONE does not drop.

Pure: the coordinator moves the bytes; the order of the replicas (``order``) comes from the
caller's load-aware ranking (``core.replica_score``).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from p2pindex.core.digest import DIGEST_SIZE, key_digest


class Verdict(enum.Enum):
    AGREES = "agrees"
    """The replica holds the value's version: count the value as its copy."""
    FETCH = "fetch"
    """The replica holds something else (or said nothing usable): fetch its record."""


@dataclass(frozen=True, slots=True)
class ReadPlan:
    value: str
    """The replica asked for the full record (the coordinator itself when it is a target)."""
    digests: tuple[str, ...]
    """Replicas asked for a digest of their version, at the same time."""
    spares: tuple[str, ...]
    """Replicas not asked, in the order to fall back to them (a read at ONE only)."""


def plan_read(targets: Sequence[str], required: int, local: str, order: Sequence[str]) -> ReadPlan:
    """Who is asked what for a read needing ``required`` replies from ``targets``.

    The value comes from ``local`` when it is a target (no round trip), else from the first
    target in ``order`` (best first; targets it leaves out follow in target order). Below
    ONE's level every other target gets a digest request, as every target got a read
    before: the stragglers' answers still drive read repair.
    """
    if not targets:
        raise ValueError("a read needs at least one target")
    if len(set(targets)) != len(targets):
        raise ValueError(f"targets {list(targets)} name a node twice")
    if not 1 <= required <= len(targets):
        raise ValueError(f"required {required} is outside 1..{len(targets)} (the targets)")
    ranked = [node for node in dict.fromkeys(order) if node in targets]
    ranked += [node for node in targets if node not in ranked]
    value = local if local in targets else ranked[0]
    others = tuple(node for node in ranked if node != value)
    if required == 1:
        return ReadPlan(value, (), others)
    return ReadPlan(value, others, ())


def version_digest(key: bytes, record: bytes | None) -> bytes | None:
    """What a replica answers a digest request with: the digest of its record of ``key``,
    None when it holds none."""
    return None if record is None else key_digest(key, record)


def verdict(expected: bytes | None, digest: object) -> Verdict:
    """Whether a replica's ``digest`` shows it holds the value's version, whose own digest
    is ``expected`` (``version_digest`` of the record the value replica sent: computed
    once per read, not per reply). Only an exact match agrees: a digest of the wrong type
    or size, or of any other version, means fetch."""
    if digest is None:
        return Verdict.AGREES if expected is None else Verdict.FETCH
    if expected is None or not isinstance(digest, bytes) or len(digest) != DIGEST_SIZE:
        return Verdict.FETCH
    return Verdict.AGREES if digest == expected else Verdict.FETCH

"""Deliberate defects for proving the simulation harness (``NodeConfig.planted_bugs``).

Each function here is the *wrong* version of one rule the real code keeps; the replica
calls them only when the matching bug is planted, so production paths never see them.
The harness's tests plant one at a time and require the right checker to catch it.
"""

from __future__ import annotations

from p2pindex.core import versions
from p2pindex.core.versions import VersionedObject, VersionVector


def last_write_wins(obj: VersionedObject) -> VersionedObject:
    """Keep only the sibling with the highest dot: concurrent writes are silently dropped."""
    winner = max(obj.siblings, key=lambda s: (s.dot.counter, s.dot.actor))
    return VersionedObject(obj.clock, (winner,))


def update(
    current: VersionedObject | None,
    context: VersionVector,
    actor: str,
    value: bytes | None,
    bugs: frozenset[str],
) -> VersionedObject:
    if "no-dots" in bugs and current is not None and not versions.descends(context, current.clock):
        # Without dots a server cannot tell which siblings a partial context saw, so it
        # keeps them all: siblings pile up beyond the concurrent writers.
        context = VersionVector()
    updated = versions.update(current, context, actor, value)
    return last_write_wins(updated) if "lww" in bugs else updated


def merge(a: VersionedObject, b: VersionedObject, bugs: frozenset[str]) -> VersionedObject:
    merged = versions.merge(a, b)
    return last_write_wins(merged) if "lww" in bugs else merged

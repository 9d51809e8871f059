"""Which nodes a request goes to: the key's preference list, with sloppy-quorum fallbacks.

Pure: the caller says which nodes are usable (alive, reachable, taking writes); this module
only walks the ring. Keeping it apart from the coordinator lets the property tests in
tests/unit/test_placement.py pin down the documented rules:

* sloppy (default, Dynamo): every unusable primary is replaced by the next usable node
  clockwise beyond the preference list, which stores the write with a hint naming the
  primary it stands in for;
* strict (Riak's pr/pw): only usable primaries count, never a fallback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from p2pindex.core.ring import Ring


@dataclass(frozen=True, slots=True)
class Target:
    node: str
    hint_for: str | None = None
    """The primary this fallback stands in for, or None for a primary itself."""


def select_targets(
    ring: Ring, key: bytes, n: int, usable: Callable[[str], bool], *, strict: bool = False
) -> list[Target]:
    """Up to ``n`` targets for ``key``: usable primaries first, then fallbacks (sloppy)."""
    primaries = ring.preference_list(key, n)
    targets: list[Target] = []
    missing: list[str] = []
    for node in primaries:
        if usable(node):
            targets.append(_primary(node))
        else:
            missing.append(node)
    if strict or not missing:
        return targets
    taken = set(primaries)
    fallbacks = (node for node in ring.walk(key) if node not in taken and usable(node))
    for primary, fallback in zip(missing, fallbacks, strict=False):
        targets.append(Target(fallback, hint_for=primary))
    return targets


_MAX_SHARED_TARGETS = 65_536
_PRIMARY_TARGETS: dict[str, Target] = {}
"""One shared (immutable) Target per primary: every request names its targets, so they are
made once per node, not once per request."""


def _primary(node: str) -> Target:
    target = _PRIMARY_TARGETS.get(node)
    if target is None:
        if len(_PRIMARY_TARGETS) >= _MAX_SHARED_TARGETS:  # ids of long-gone members
            _PRIMARY_TARGETS.clear()
        target = _PRIMARY_TARGETS[node] = Target(node)
    return target

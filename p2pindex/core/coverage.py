"""Coverage plans: which replicas answer which ring arcs for a query over the whole keyspace.

A query that is not about one key (an index query, a key listing) must read every arc of the
ring. The rules, in Riak's terms plus what Riak lacked:

* an arc is asked only of its primary replicas (its preference list), never of fallbacks,
  which hold at most the hints of a few writes;
* only *readable* replicas count (alive, reachable and not SYNCING; a DEGRADED one counts, as
  its storage refuses writes, not reads): a SYNCING node is still receiving the arcs it
  joined for, so it is never a source for them (Riak's missing keys during handoff, fixed
  there by hand with ``participate_in_2i_coverage``);
* ``r`` replicas per arc: 1 for ``one``, R for ``quorum``; the node merges their answers by
  version (``p2pindex.node.query``);
* an arc with fewer than ``r`` readable replicas is *uncovered*: it is still asked of those
  it has (a best effort), but the plan says so, with the share of the ring involved, and the
  answer is never called complete.

Planning is a greedy set cover with randomised ties (injected ``rng``): the node holding the
most arcs that still need a replica is picked first. With N replicas on N nodes one node
covers the whole ring, so a ``one`` query is one sub-query without any arc filter.

Pure: the caller says which nodes are readable.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable
from dataclasses import dataclass

from p2pindex.core.ring import RING_SIZE, Ring, key_token

Run = tuple[int, int]
"""A ring arc (start, end]; start == end is the whole ring."""

WHOLE_RING: tuple[Run, ...] = ((0, 0),)


@dataclass(frozen=True, slots=True)
class CoveragePlan:
    r: int
    """Replicas asked per arc."""
    assignments: dict[str, tuple[Run, ...]]
    """node -> the arcs it answers for (merged runs, ascending from the wrap)."""
    uncovered: tuple[Run, ...]
    """Arcs with fewer than ``r`` readable replicas."""
    uncovered_share: float
    """Their share of the ring (0.0 when complete)."""
    excluded: tuple[str, ...]
    """Ring members that were not readable (dead, unreachable, degraded or syncing)."""
    fewest: int = 0
    """The fewest readable replicas any arc has."""

    @property
    def complete(self) -> bool:
        return not self.uncovered

    def describe(self) -> dict[str, object]:
        """A document for ``--explain``."""
        return {
            "replicas_per_arc": self.r,
            "complete": self.complete,
            "uncovered_share": round(self.uncovered_share, 6),
            "uncovered_arcs": len(self.uncovered),
            "excluded": list(self.excluded),
            "nodes": {
                node: {
                    "arcs": len(runs),
                    "share": round(share_of(runs), 6),
                }
                for node, runs in sorted(self.assignments.items())
            },
        }


def arc_length(start: int, end: int) -> int:
    return RING_SIZE if start == end else (end - start) % RING_SIZE


def share_of(runs: tuple[Run, ...]) -> float:
    return sum(arc_length(start, end) for start, end in runs) / RING_SIZE


def plan_coverage(
    ring: Ring,
    n: int,
    r: int,
    readable: Callable[[str], bool],
    rng: random.Random,
    prefer: str | None = None,
) -> CoveragePlan:
    """The plan for a query read from ``r`` replicas per arc (see the module docstring).

    ``prefer`` (the planning node itself) wins ties, so the arcs it holds are read locally
    instead of over the network."""
    if type(r) is not int or r < 1:
        raise ValueError(f"r must be a positive integer, not {r!r}")
    arcs = ring.arcs_in_order(n)
    usable = {node: readable(node) for node in ring.nodes}
    sources = [tuple(node for node in preference if usable[node]) for _, _, preference in arcs]
    need = [min(r, len(nodes)) for nodes in sources]
    chosen: list[list[str]] = [[] for _ in arcs]
    order = sorted(ring.nodes)
    rng.shuffle(order)  # ties go to a random node, so load spreads over queries
    if prefer in order:
        order.remove(prefer)
        order.insert(0, prefer)
    while True:
        counts = dict.fromkeys(order, 0)
        for position, nodes in enumerate(sources):
            if len(chosen[position]) < need[position]:
                for node in nodes:
                    if node not in chosen[position]:
                        counts[node] += 1
        best = max(order, key=lambda node: counts[node])
        if counts[best] == 0:
            break
        for position, nodes in enumerate(sources):
            if (
                len(chosen[position]) < need[position]
                and best in nodes
                and best not in chosen[position]
            ):
                chosen[position].append(best)
    per_node: dict[str, list[Run]] = {}
    uncovered: list[Run] = []
    for (start, end, _), nodes, picked in zip(arcs, sources, chosen, strict=True):
        if len(nodes) < r:
            uncovered.append((start, end))
        for node in picked:
            per_node.setdefault(node, []).append((start, end))
    merged_uncovered = merge_runs(uncovered)
    return CoveragePlan(
        r=r,
        assignments={node: merge_runs(runs) for node, runs in per_node.items()},
        uncovered=merged_uncovered,
        uncovered_share=share_of(merged_uncovered),
        excluded=tuple(sorted(node for node, ok in usable.items() if not ok)),
        fewest=min((len(nodes) for nodes in sources), default=0),
    )


def merge_runs(runs: list[Run]) -> tuple[Run, ...]:
    """Join arcs given in ring order where one ends at the next's start (also across the
    wrap); a single run that closes on itself is the whole ring."""
    merged: list[Run] = []
    for start, end in runs:
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    if len(merged) > 1 and merged[-1][1] == merged[0][0]:
        merged[0] = (merged.pop()[0], merged[0][1])
    if len(merged) == 1 and merged[0][0] == merged[0][1]:
        return WHOLE_RING
    return tuple(merged)


class ArcFilter:
    """Membership of a key's token in a set of runs; what a replica applies to its rows."""

    __slots__ = ("_highs", "_lows")

    def __init__(self, runs: tuple[Run, ...] | list[Run]) -> None:
        pieces = _token_intervals(runs)
        self._lows = [lo for lo, _ in pieces]
        self._highs = [hi for _, hi in pieces]

    def __call__(self, key: bytes) -> bool:
        token = key_token(key)
        position = bisect.bisect_right(self._lows, token) - 1
        return position >= 0 and token <= self._highs[position]

    def overlaps(self, runs: tuple[Run, ...] | list[Run]) -> bool:
        """Whether some token of ``runs`` is in this set (whose own runs are disjoint, as a
        ring's arcs are)."""
        for lo, hi in _token_intervals(runs):
            position = bisect.bisect_right(self._lows, hi) - 1
            if position >= 0 and self._highs[position] >= lo:
                return True
        return False


def _token_intervals(runs: tuple[Run, ...] | list[Run]) -> list[tuple[int, int]]:
    """Runs (start, end] as sorted closed token intervals, a wrapping run split in two."""
    pieces: list[tuple[int, int]] = []
    for start, end in runs:
        if start == end:
            pieces.append((0, RING_SIZE - 1))
        elif start < end:
            pieces.append((start + 1, end))
        else:
            if start < RING_SIZE - 1:
                pieces.append((start + 1, RING_SIZE - 1))
            pieces.append((0, end))
    pieces.sort()
    return pieces


def key_filter(runs: tuple[Run, ...] | list[Run]) -> Callable[[bytes], bool] | None:
    """None (no filtering) for the whole ring, else an ``ArcFilter``."""
    if any(start == end for start, end in runs):
        return None
    return ArcFilter(runs)

"""Capacity planning: what a membership change would move, computed from the ring alone.

Tokens come from node ids, so the ring after a change is known before the change happens,
and every arc's preference list before and after can be compared. Keys are spread over
the ring by a hash, so an arc holding a fraction ``f`` of the ring holds about ``f`` of the
keys and of the bytes: the data that moves is the sum, over arcs, of ``f`` times the number
of nodes that join the arc's preference list, times the cluster's distinct data. The
distinct data is estimated from what the nodes report holding and the share of the ring
each holds (a node holding a share ``s`` of the keyspace among ``c`` copies holds
``s * c`` of the distinct data), so a dead node that cannot report does not spoil it, and
extra copies not dropped yet do not inflate it (``distinct_data``).

Nodes that do not exist yet have no id: a plan for "add 2" uses placeholder ids, whose
tokens are as random as a real node's, so the moved amount is right to within the ring's
balance (a node's share varies by about 1/sqrt(vnodes), 2% at 2,048 vnodes); naming the
real ids (the key a new data directory already holds) makes the plan exact for the ring.

Pure: no I/O and no clock, so the CLI, tests and scripts all compute the same plan.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from p2pindex.core.ring import DEFAULT_VNODES, RING_SIZE, Ring

MAX_ADD = 64
"""Most nodes one plan may add: a bigger step is a new cluster, not a plan."""
PLACEHOLDER_PREFIX = "new-"


class PlanRefused(ValueError):
    """The change asked for cannot be planned (or made) without losing or breaking data."""


@dataclass(frozen=True, slots=True)
class NodeLoad:
    """What one node reports holding (from its status)."""

    node_id: str
    keys: int
    bytes: int


@dataclass(frozen=True, slots=True)
class NodePlan:
    node_id: str
    share_before: float
    """Fraction of all stored copies this node holds now (the shares sum to 1)."""
    share_after: float
    keys_after: int
    bytes_after: int
    keys_in: int
    bytes_in: int
    keys_out: int
    """Copies this node would no longer be a replica of (handed over, then droppable)."""
    bytes_out: int
    joining: bool = False
    leaving: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    change: str
    n_replicas: int
    nodes: tuple[NodePlan, ...]
    distinct_keys: int
    distinct_bytes: int
    moved_keys: int
    moved_bytes: int
    moved_fraction: float
    """Copies that move, as a fraction of all copies stored after the change."""
    ideal_bytes: int
    """The least any placement could move for this change (the newcomers' fair share, or
    the leaver's data); ``moved_bytes / ideal_bytes`` says how close the ring comes."""

    def doc(self) -> dict[str, object]:
        return {
            "change": self.change,
            "n_replicas": self.n_replicas,
            "distinct_keys": self.distinct_keys,
            "distinct_bytes": self.distinct_bytes,
            "moved_keys": self.moved_keys,
            "moved_bytes": self.moved_bytes,
            "moved_fraction": round(self.moved_fraction, 6),
            "ideal_bytes": self.ideal_bytes,
            "nodes": [
                {
                    "node_id": p.node_id,
                    "share_before": round(p.share_before, 6),
                    "share_after": round(p.share_after, 6),
                    "keys_after": p.keys_after,
                    "bytes_after": p.bytes_after,
                    "keys_in": p.keys_in,
                    "bytes_in": p.bytes_in,
                    "keys_out": p.keys_out,
                    "bytes_out": p.bytes_out,
                    "joining": p.joining,
                    "leaving": p.leaving,
                }
                for p in self.nodes
            ],
        }


def placeholder_ids(count: int, taken: Iterable[str]) -> list[str]:
    """``count`` ids for nodes that do not exist yet, distinct from ``taken``."""
    taken = set(taken)
    ids: list[str] = []
    index = 1
    while len(ids) < count:
        candidate = f"{PLACEHOLDER_PREFIX}{index}"
        if candidate not in taken:
            ids.append(candidate)
        index += 1
    return ids


def distinct_data(ring: Ring, n: int, loads: Iterable[NodeLoad]) -> tuple[int, int]:
    """(keys, bytes) of distinct data, estimated from the nodes that reported.

    Each node's figures divided by the share of the copies it should hold give one
    estimate; the smallest is taken, because what inflates a node's figures (copies held
    outside its ranges, not dropped yet after a join or an outage) is common, while a node
    that misses data is SYNCING and does not report. The smallest of a few estimates is
    low by about their spread (1-2%)."""
    copies = min(n, len(ring))
    shares = ring.ownership(n)
    estimates: list[tuple[float, float]] = []
    for load in loads:
        share = shares.get(load.node_id)
        if share is None or share <= 0:
            continue
        held = share * copies
        estimates.append((load.keys / held, load.bytes / held))
    if not estimates:
        return 0, 0
    return round(min(k for k, _ in estimates)), round(min(b for _, b in estimates))


def plan_add(
    ring_nodes: Iterable[str],
    n: int,
    loads: Iterable[NodeLoad],
    count: int,
    *,
    new_ids: Sequence[str] = (),
    vnodes: int | None = None,
    sources: Mapping[str, str] | None = None,
) -> Plan:
    """What adding ``count`` nodes (ids ``new_ids`` where known) would move; ``sources``
    as ``Ring`` takes them (the members that took a replaced member's tokens)."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_ADD:
        raise PlanRefused(f"the number of nodes to add must be 1..{MAX_ADD}, not {count!r}")
    before = _ring(ring_nodes, vnodes, sources)
    known = [node_id for node_id in new_ids if node_id]
    clash = sorted(set(known) & before.nodes)
    if clash:
        raise PlanRefused(f"node {clash[0]} is already a member")
    if len(set(known)) != len(known) or len(known) > count:
        raise PlanRefused(f"name at most {count} distinct new node ids")
    joining = known + placeholder_ids(count - len(known), before.nodes | set(known))
    after = Ring(before.nodes | set(joining), before.vnodes, before.sources)
    change = f"add {count} node" + ("" if count == 1 else "s")
    return _plan(change, before, after, n, list(loads), joining=set(joining))


def plan_remove(
    ring_nodes: Iterable[str],
    n: int,
    loads: Iterable[NodeLoad],
    node_id: str,
    *,
    vnodes: int | None = None,
    sources: Mapping[str, str] | None = None,
) -> Plan:
    """What removing (or draining) ``node_id`` would move; refused when data would be lost
    or the cluster could no longer keep N copies."""
    before = _ring(ring_nodes, vnodes, sources)
    if node_id not in before.nodes:
        raise PlanRefused(f"no member of the ring has the id {node_id!r} (see p2pindex status)")
    refusal = removal_refusal(len(before), n, node_id)
    if refusal:
        raise PlanRefused(refusal)
    after = before.without_node(node_id)
    return _plan(f"remove {node_id}", before, after, n, list(loads), leaving={node_id})


def removal_refusal(members: int, n: int, node_id: str) -> str | None:
    """Why taking ``node_id`` out of a ring of ``members`` nodes is refused (None: allowed).

    Shared by `plan remove`, `drain` and `leave`, so all three refuse the same changes
    with the same words.
    """
    if members <= 1:
        return f"node {node_id} is the only member: it holds the only copy of every key"
    if n <= 1:
        return (
            f"with N=1, node {node_id} holds the only copy of its keys; removing it would lose them"
        )
    if members - 1 < n:
        return (
            f"removing node {node_id} would leave {members - 1} nodes, fewer than N={n}: "
            "every key would lose a copy; add a node first"
        )
    return None


def leave_refusal(members: int, n: int, node_id: str) -> str | None:
    """Why a live node may not leave a ring of ``members`` (None: it may).

    Unlike a removal, a leaving node hands its data over first, so N=1 is no obstacle;
    only a ring too small to keep N copies is.
    """
    if members <= 1:
        return f"node {node_id} is the only member: its data would have nowhere to go"
    if members - 1 < n:
        return (
            f"without node {node_id} the cluster would have {members - 1} nodes, fewer "
            f"than N={n}: every key it holds would lose a copy; add a node first"
        )
    return None


def _ring(ring_nodes: Iterable[str], vnodes: int | None, sources: Mapping[str, str] | None) -> Ring:
    nodes = set(ring_nodes)
    if not nodes:
        raise PlanRefused("the ring has no members")
    return Ring(nodes, DEFAULT_VNODES if vnodes is None else vnodes, sources)


def _plan(
    change: str,
    before: Ring,
    after: Ring,
    n: int,
    loads: list[NodeLoad],
    *,
    joining: set[str] | None = None,
    leaving: set[str] | None = None,
) -> Plan:
    joining = joining or set()
    leaving = leaving or set()
    keys, data = distinct_data(before, n, loads)
    union = Ring(before.nodes | after.nodes, before.vnodes, {**before.sources, **after.sources})
    every = sorted(union.nodes)
    moved_in = dict.fromkeys(every, 0)
    moved_out = dict.fromkeys(every, 0)
    # Every token of either ring is a token of the union, so each union arc lies inside one
    # arc of each ring and has one preference list in each.
    for _, end, length, _ in union.arcs(n):
        old = before.preference_list_for_token(end, n)
        new = after.preference_list_for_token(end, n)
        for node in new:
            if node not in old:
                moved_in[node] += length
        for node in old:
            if node not in new:
                moved_out[node] += length
    share_before = before.ownership(n)
    share_after = after.ownership(n)
    copies_after = min(n, len(after))
    rows = []
    for node in every:
        fraction_in = moved_in[node] / RING_SIZE
        fraction_out = moved_out[node] / RING_SIZE
        held = share_after.get(node, 0.0) * copies_after
        rows.append(
            NodePlan(
                node_id=node,
                share_before=share_before.get(node, 0.0),
                share_after=share_after.get(node, 0.0),
                keys_after=round(held * keys),
                bytes_after=round(held * data),
                keys_in=round(fraction_in * keys),
                bytes_in=round(fraction_in * data),
                keys_out=round(fraction_out * keys),
                bytes_out=round(fraction_out * data),
                joining=node in joining,
                leaving=node in leaving,
            )
        )
    moved = sum(moved_in.values()) / RING_SIZE
    if joining:
        # The newcomers' fair share of the copies stored afterwards.
        ideal = copies_after * len(joining) / len(after)
    else:
        # The leaver's copies must go somewhere, plus any copies a smaller ring adds.
        ideal = sum(share_before.get(node, 0.0) for node in leaving) * min(n, len(before))
    return Plan(
        change=change,
        n_replicas=n,
        nodes=tuple(rows),
        distinct_keys=keys,
        distinct_bytes=data,
        moved_keys=round(moved * keys),
        moved_bytes=round(moved * data),
        moved_fraction=moved / copies_after if copies_after else 0.0,
        ideal_bytes=round(ideal * data),
    )


def loads_from(reports: Mapping[str, tuple[int, int]]) -> list[NodeLoad]:
    """NodeLoads from ``{node_id: (keys, bytes)}``."""
    return [NodeLoad(node_id, keys, data) for node_id, (keys, data) in sorted(reports.items())]

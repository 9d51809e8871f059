"""A node's part of a graceful leave that can fail: hand its ranges over, then make sure a
member is there to hear that it left; or give the leave up and serve on.

Kept apart from ``node`` so the rule is read in one place: ``Node.leave`` asks
``hand_over`` and announces the leave only when it says the node may go.
"""

from __future__ import annotations

import logging

import trio

from p2pindex.errors import LeaveAbandoned, StorageFailure
from p2pindex.node.cluster_view import ClusterView
from p2pindex.node.handoff import LEAVE_PATIENCE, OwnershipHandoff, WrittenKeys
from p2pindex.node.hints import HintedHandoff
from p2pindex.node.stats import StatisticsStore
from p2pindex.types import Liveness

log = logging.getLogger("p2pindex.node.node")


async def hand_over(
    handoff: OwnershipHandoff,
    hints: HintedHandoff,
    written: WrittenKeys,
    view: ClusterView,
    stats: StatisticsStore,
) -> bool:
    """Hand the node's ranges over, and the writes it keeps hints for, and wait for a member
    to hear the leave. False when the leave was abandoned: the node then takes writes again
    and has said why (log, status). Once it may go, its data stops counting as current
    (``forget_synced``)."""
    try:
        await _refuse_a_concurrent_leave(handoff, view)  # before pushing to a leaver
        await handoff.hand_over(written, view)
        ring_after = view.ring.without_node(view.node_id)
        handoff.progress.hints = await hints.hand_over(ring_after, LEAVE_PATIENCE)
        await _refuse_a_concurrent_leave(handoff, view)  # one that began meanwhile
        await _wait_for_a_listener(view)
        await handoff.forget_synced()
    except (LeaveAbandoned, StorageFailure) as reason:
        # A storage failure (its ranges could not be read to push them) abandons the leave
        # too: the node keeps its data and its place rather than die in the middle.
        view.handing_over = False
        handoff.progress.abandoned = str(reason)
        handoff.progress.finished = trio.current_time()
        stats.incr("handoff.leaves_abandoned")
        log.error(
            "node %s abandoned its leave and stays in the cluster, serving: %s; run the leave "
            "again once every member is reachable (or remove the dead one first)",
            view.node_id,
            reason,
        )
        return False
    return True


async def _refuse_a_concurrent_leave(handoff: OwnershipHandoff, view: ClusterView) -> None:
    others = await handoff.others_leaving()
    members = len(view.ring.nodes)
    refusal = concurrent_leave_refusal(view.node_id, members, handoff.n_replicas, others)
    if refusal is not None:
        raise LeaveAbandoned(refusal)


def concurrent_leave_refusal(me: str, members: int, n: int, others: list[str]) -> str | None:
    """Why this node may not finish its leave while ``others`` leave too (None: it may).

    Only one of the leaves that run together finishes, the lowest node id's: the others
    stay members, holding what was handed to them. None finishes when the members that
    would be left are fewer than N (every node of a cluster stopped at once): all stay,
    and come back as themselves."""
    if not others:
        return None
    staying = members - 1 - len(others)
    if staying < n:
        return (
            f"{len(others)} other member(s) are leaving at the same time ({', '.join(others)}): "
            f"the cluster would keep {staying} node(s), fewer than N={n}, so none of these "
            "leaves may finish"
        )
    first = min(others)
    if first < me:
        return (
            f"member {first} is leaving at the same time; one leave at a time keeps every "
            "key's copies (leave again once it has left)"
        )
    return None


async def _wait_for_a_listener(view: ClusterView) -> None:
    """Return once another member is alive in this node's view, to hear the leave.

    A leave is announced to members this node sees alive; told to nobody (a node that was
    cut off and has not heard from the others since) it would leave them holding a dead
    member in the ring, whose ranges nobody takes over."""
    with trio.move_on_after(LEAVE_PATIENCE):
        while not any(
            member.liveness is Liveness.ALIVE
            for node_id, member in view.members.items()
            if node_id != view.node_id and node_id not in view.removed
        ):
            await trio.sleep(0.1)
        return
    raise LeaveAbandoned(
        f"no other member was seen alive for {LEAVE_PATIENCE:g}s after the handoff, so none "
        "would have heard the leave (every key was handed over)"
    )

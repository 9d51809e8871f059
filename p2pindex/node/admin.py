"""Requests an operator sends a node: introductions, status documents, leave, and the
membership changes (remove, admit) that every live member must hear about.

Kept apart from the node's data path: these are rare, talk to the whole cluster, and read
the node's state rather than the key space.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from p2pindex.core.planning import leave_refusal
from p2pindex.core.ring import DEFAULT_VNODES
from p2pindex.core.swim import Member
from p2pindex.errors import InvalidRequest, MemberRemoved, P2PIndexError
from p2pindex.node.eventlog import EventLog
from p2pindex.types import Liveness
from p2pindex.wire import messages as wm

if TYPE_CHECKING:
    from p2pindex.node.cluster_view import ClusterView
    from p2pindex.node.node import Node

events = EventLog(logging.getLogger("p2pindex.node.node"), trio.current_time)
"""The node's logger: an operator reads one log, whichever module wrote the line."""

RELAY_TIMEOUT = 5.0
"""How long a remove or admit waits for each live member it tells."""


async def serve_admin(node: Node, message: wm.Message) -> wm.Message:
    """Introductions, status documents and membership changes an operator asks for."""
    if isinstance(message, wm.Hello):
        return _hello(node, message)
    if isinstance(message, wm.StatusRequest):
        if message.leaving_only:
            return wm.StatusReply({"node_id": node.node_id, "leaving": node.leaving})
        return wm.StatusReply(node.monitor.status())
    if isinstance(message, wm.MembersRequest):
        return wm.MembersReply(node.config.n_replicas, DEFAULT_VNODES, node.monitor.member_docs())
    if isinstance(message, wm.ExplainRequest):
        return wm.ExplainReply(node.monitor.explain(message.key))
    if isinstance(message, wm.LimitsRequest):
        limits = node.config.limits
        return wm.LimitsReply(
            wm.LIMITS_VERSION,
            limits.max_key,
            limits.max_value,
            limits.max_frame,
            limits.sibling_max,
        )
    if isinstance(message, wm.LeaveRequest):
        return start_leave(node)
    if isinstance(message, wm.RemoveRequest):
        return await remove(node, message)
    if isinstance(message, wm.AdmitRequest):
        return await admit(node, message)
    node.stats.incr("rejected.unexpected_message")
    raise InvalidRequest(f"this node does not serve requests of type {message.TYPE}")


def _hello(node: Node, message: wm.Hello) -> wm.Message:
    if message.cluster != node.config.cluster:
        node.stats.incr("rejected.wrong_cluster")
        raise InvalidRequest(
            f"this node belongs to cluster {node.config.cluster!r}, not {message.cluster!r}"
        )
    if message.node_id in node.view.removed:
        node.stats.incr("rejected.removed_member")
        events.warning(
            "removed",
            "refused removed member %s (from %s): it must be admitted again",
            message.node_id,
            message.address,
        )
        raise MemberRemoved(node.removals.refusal(message.node_id))
    return wm.OkReply()


def start_leave(node: Node) -> wm.Message:
    """An operator's leave (or drain): refused when the rest could not keep N copies."""
    if node.leaving:
        return wm.OkReply(f"node {node.node_id} is already leaving")
    refusal = leave_refusal(len(node.ring.nodes), node.config.n_replicas, node.node_id)
    if refusal is not None:
        node.stats.incr("rejected.leave")
        raise InvalidRequest(f"leave refused: {refusal}")
    node.leaving = True
    node.spawn(node.leave)
    return wm.OkReply(f"node {node.node_id} is leaving")


async def remove(node: Node, request: wm.RemoveRequest) -> wm.Message:
    member = node.view.members.get(request.node_id)
    if request.relayed and request.node_id == node.node_id:
        return _removed_here(node)
    if request.relayed:
        if request.node_id in node.removals:
            if request.replaced_by is None and node.view.forget_takeover_of(request.node_id):
                node.removals.persist()  # its replacement has left since
            return wm.OkReply(f"node {request.node_id} was removed here already")
        if readmitted(member, request.incarnation):
            return wm.OkReply(f"node {request.node_id} was admitted again here")
        node.removals.remove(request.node_id, request.replaced_by, request.incarnation)
        return wm.OkReply(f"node {request.node_id} removed from the ring")
    if member is None and request.node_id not in node.ring.nodes:
        raise InvalidRequest(f"unknown node {request.node_id}")
    if member is not None and member.liveness is Liveness.ALIVE:
        raise InvalidRequest(
            f"node {request.node_id} is alive; a live node leaves with `p2pindex leave`"
        )
    if request.replaced_by is not None:
        claim_replacement(node, request.node_id, request.replaced_by)
    node.removals.remove(request.node_id, request.replaced_by)
    others = [
        m
        for m in node.view.members.values()
        if m.node_id not in (node.node_id, request.node_id) and m.running
    ]
    told = await _tell(node, others, removal_notice(node.view, request.node_id))
    return wm.OkReply(f"node {request.node_id} removed from the ring on {told}")


async def admit(node: Node, request: wm.AdmitRequest) -> wm.Message:
    """Undo a removal on this node and, unless relayed, on every live member."""
    node_id = request.node_id
    if node_id in node.view.removed:
        node.removals.readmit(node_id)
    elif request.relayed:
        return wm.OkReply(f"node {node_id} was not removed here")
    else:
        raise InvalidRequest(f"node {node_id} is not a removed member of this cluster")
    if request.relayed:
        return wm.OkReply(f"node {node_id} admitted")
    others = [
        m
        for m in node.view.members.values()
        if m.node_id not in (node.node_id, node_id)
        and m.node_id not in node.view.removed
        and m.running
    ]
    told = await _tell(node, others, wm.AdmitRequest(node_id, relayed=True))
    return wm.OkReply(f"node {node_id} may rejoin; admitted on {told}; restart it to rejoin")


async def _tell(node: Node, others: list[Member], message: wm.Message) -> str:
    """Relay a membership change to ``others`` at once; says how many heard it (this node
    included) and which to retry."""
    failed: list[str] = []

    async def relay(member: Member) -> None:
        try:
            await node.peers.request(member.address, message, RELAY_TIMEOUT)
        except (OSError, P2PIndexError):
            failed.append(member.node_id)

    async with trio.open_nursery() as nursery:
        for other in others:
            nursery.start_soon(relay, other)
    detail = f"{len(others) - len(failed) + 1} of {len(others) + 1} live members"
    if failed:
        detail += f"; not reached (retry there): {', '.join(sorted(failed))}"
    return detail


def removal_notice(view: ClusterView, node_id: str) -> wm.RemoveRequest:
    """The relayed form of the removal of ``node_id`` as this node knows it (naming the
    replacement while it holds the place)."""
    successor = view.takeovers.get(node_id, (None, ""))[0]
    if successor is not None and successor not in view.ring.nodes:
        successor = None
    incarnation = view.removed[node_id]
    return wm.RemoveRequest(node_id, relayed=True, replaced_by=successor, incarnation=incarnation)


def readmitted(member: Member | None, removed_at: int | None) -> bool:
    """Whether a relayed removal is older than the member's return (it was admitted again
    and restarted since, at a higher incarnation)."""
    if member is None or removed_at is None:
        return False
    return member.incarnation > removed_at and member.running


def _removed_here(node: Node) -> wm.Message:
    """A member says this node was removed: an operator ran `p2pindex remove` while the
    others could not reach it (paused, cut off), and it has come back. Its ranges are the
    others' now and what it holds went stale, yet it would serve reads from it and count
    its own commit as an acknowledgement. It stops, saying why and how to come back."""
    if node.view.removed_notice:
        return wm.OkReply(f"node {node.node_id} knows it was removed and is stopping")
    stop_as_removed(node, "while it was unreachable")
    return wm.OkReply(f"node {node.node_id} was removed and stops")


def stop_as_removed(node: Node, when: str) -> None:
    """Stop a node the others removed (told by a member, or refused by a seed as it
    restarted): serving would hand out stale copies of ranges that are the others' now,
    and waiting would leave it running, not ready, for good. `serve` exits 1."""
    if node.view.removed_notice:
        return
    node.view.removed_notice = True
    node.stats.incr("membership.removed_self")
    events.error(
        "removed",
        "another member says this node was removed from the cluster %s; it stops now. %s",
        when,
        node.removals.refusal(node.node_id),
    )
    node.stopped.set()


def note_change(node: Node, previous: Member | None, member: Member) -> None:
    """Removals and takeovers after a member change: one that comes alive (new, back from
    death, or restarted at a higher incarnation) is told the removals; a replacement that
    left gives its place up for good (else a node that no longer lists it would put it
    back from the takeover it saved)."""
    view = node.view
    if member.liveness is Liveness.LEFT and view.forget_successor(member.node_id):
        node.removals.persist()
    if member.liveness is not Liveness.ALIVE or not view.removed:
        return
    if member.node_id == node.node_id:
        return
    back = previous is None or previous.incarnation < member.incarnation
    if member.node_id in view.removed:
        if previous is None or back or previous.liveness is not Liveness.ALIVE:
            node.spawn(lambda: tell_removed(node, member))
        return
    if back:
        node.spawn(lambda: tell_removals(node, member))


async def tell_removed(node: Node, member: Member) -> None:
    """Tell a removed member, heard from again, that it was removed (``_removed_here``):
    it was unreachable when the removal was relayed, and nothing else would tell it."""
    if member.node_id not in node.view.removed:
        return
    try:
        notice = removal_notice(node.view, member.node_id)
        await node.peers.request(member.address, notice, RELAY_TIMEOUT)
    except (OSError, P2PIndexError):
        pass  # told again the next time it is heard from


async def tell_removals(node: Node, member: Member) -> None:
    """Tell ``member``, just seen alive (new, back from death, or restarted), every removal
    this node knows. The relay reaches only the members alive at the time; one that was
    down, cut off or not yet a member would keep the removed node in its ring for good,
    placing keys on a node nobody else does, so their copies never settle where the rest
    of the cluster reads them."""
    for node_id in sorted(node.view.removed):
        if node_id == member.node_id or node_id not in node.view.removed:
            continue
        try:
            await node.peers.request(
                member.address, removal_notice(node.view, node_id), RELAY_TIMEOUT
            )
        except (OSError, P2PIndexError):
            return  # it is told again the next time it comes back


def claim_replacement(node: Node, node_id: str, replaced_by: str) -> None:
    """As arbiter of `serve --replace`: one replacement per dead member."""
    taken = node.replaced_by.get(node_id)
    if taken is not None and taken != replaced_by:
        node.stats.incr("rejected.replace")
        raise InvalidRequest(f"node {node_id} is already being replaced by {taken}")
    if node_id in node.view.removed and taken is None:
        node.stats.incr("rejected.replace")
        raise InvalidRequest(f"node {node_id} is no longer in the ring")
    node.replaced_by[node_id] = replaced_by

"""What a client request asks for, checked, and which nodes serve it: the consistency level
as a count of replies, the context, the timeout, and the targets (sloppy or strict).

Every check here runs before anything is written or sent, so each failure is definite.
"""

from __future__ import annotations

from typing import Protocol

from p2pindex.core import versions
from p2pindex.core.placement import Target, select_targets
from p2pindex.core.ring import Ring
from p2pindex.core.versions import VersionVector
from p2pindex.errors import InvalidRequest, NotReady, Unavailable
from p2pindex.types import consistency_from_wire, required_replies
from p2pindex.wire.messages import DeleteRequest, GetRequest, PutRequest

MAX_TIMEOUT_MS = 600_000
MAX_CONTEXT_ACTORS = 256
"""A real context names the nodes that coordinated writes of one key; far fewer than this.
The cap stops a forged context from bloating the stored clock forever."""


class TargetView(Protocol):
    """What target selection needs to know about the cluster."""

    @property
    def ring(self) -> Ring: ...

    def usable(self, node_id: str) -> bool: ...

    def serves_reads(self, node_id: str, key: bytes | None = None) -> bool: ...

    @property
    def leaving(self) -> bool: ...

    @property
    def membership_confirmed(self) -> bool: ...


def required(consistency: str | int, n: int) -> int:
    """The replies a consistency level needs out of ``n`` replicas."""
    try:
        return required_replies(consistency_from_wire(consistency), n)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def context(raw: bytes | None, key: bytes) -> VersionVector:
    """The causal context a client passed back with ``key`` (empty when it passed none)."""
    if raw is None:
        return VersionVector()
    try:
        decoded = versions.decode_context(raw, key)
    except versions.ContextOfAnotherKey:
        raise InvalidRequest(
            "the context was returned for another key; pass back the context a read or "
            "write of this key returned (a context belongs to its key); nothing written"
        ) from None
    except ValueError:
        raise InvalidRequest(
            "the context is not one p2pindex gave out: pass the context a get or put "
            "returned, unmodified"
        ) from None
    if len(decoded) > MAX_CONTEXT_ACTORS:
        raise InvalidRequest(
            f"context names {len(decoded)} actors (at most {MAX_CONTEXT_ACTORS}); pass the "
            "context a read returned, unmodified"
        )
    return decoded


def timeout(timeout_ms: int, default: float) -> float:
    """The request's deadline in seconds from now (``default`` when it named none)."""
    if timeout_ms <= 0:
        return default
    return min(timeout_ms, MAX_TIMEOUT_MS) / 1000.0


def targets(
    view: TargetView,
    node_id: str,
    key: bytes,
    n: int,
    strict: bool,
    needed: int,
    *,
    read: bool = False,
) -> list[Target]:
    """The nodes that serve ``key``: NotReady while this node does not know the whole ring,
    Unavailable when fewer than ``needed`` are usable (serving reads, for a read)."""
    if not view.membership_confirmed:
        raise NotReady(
            f"node {node_id} has not reached any member since it started, so it "
            "does not know the whole ring yet; another node can serve this request"
        )
    ring = view.ring
    usable = (lambda node: view.serves_reads(node, key)) if read else view.usable
    chosen = select_targets(ring, key, n, usable, strict=strict)
    if len(chosen) < needed:
        raise Unavailable(needed, len(chosen), _too_few(len(ring.nodes), n, strict))
    return chosen


def coordinates(
    view: TargetView,
    node_id: str,
    request: PutRequest | GetRequest | DeleteRequest,
    chosen: list[Target],
) -> bool:
    """Whether this node coordinates ``request`` itself rather than relaying it: only
    for keys it is a target of, and not while it leaves (draining), unless the request
    was already relayed here (relaying it again would bounce it between nodes)."""
    if not any(t.node == node_id for t in chosen):
        return False
    if not view.leaving or request.forwarded:
        return True
    return all(t.node == node_id for t in chosen)  # nobody else to relay it to


def describe(chosen: list[Target]) -> list[dict[str, str | None]]:
    """The targets of a request as a trace shows them (fallbacks name whom they stand in for)."""
    return [{"node": t.node, "hint_for": t.hint_for} for t in chosen]


def _too_few(members: int, n: int, strict: bool) -> str:
    """Why a request has too few targets. A cluster smaller than N still serves (every
    member holds every key); only a level needing more replies than it has members fails."""
    if members < n:
        return (
            f"the cluster has {members} member(s), fewer than N={n}; a lower consistency "
            "level is served"
        )
    kind = "primary replicas" if strict else "replicas or fallbacks"
    return f"too few {kind} are up"

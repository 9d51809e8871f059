"""Relaying a client request that reached a node outside the key's targets to one of them.

A target that cannot be reached (an OSError from the peer pool: nothing was sent) is skipped
for the next. Once the relayed request went out, whatever happens next (a broken link, the
deadline passing while a target holds it) may follow a write that target applied, so only a
relay that every target refused is definite. A read changes nothing: a target that holds it
past ``replica_timeout`` is given up for the next, and a relayed read that fails is definite.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import trio

from p2pindex.core.placement import Target
from p2pindex.errors import NotReady, Timeout, Unavailable
from p2pindex.node import trace as trace_seam
from p2pindex.node.peers import PeerPool
from p2pindex.node.stats import StatisticsStore
from p2pindex.types import Address
from p2pindex.wire.messages import DeleteRequest, GetRequest, Message, PutRequest


async def forward(
    request: PutRequest | GetRequest | DeleteRequest,
    targets: list[Target],
    timeout: float,
    peers: PeerPool,
    address_of: Callable[[str], Address],
    stats: StatisticsStore,
    *,
    attempt: float | None = None,
) -> Message:
    """Relay ``request`` to the first of ``targets`` that takes it.

    A read changes nothing, so one target that holds it past ``attempt`` seconds (stalled,
    paused) is given up for the next, within the request's ``timeout``: a read relayed to a
    stalled replica used to wait out the whole deadline with two healthy ones unasked. A
    write is never sent twice (a second coordinator would make a second version)."""
    read = isinstance(request, GetRequest) and attempt is not None
    if request.forwarded:
        # Not relayed again (two nodes that disagree could pass it back and forth). Nothing
        # was done, and another node may already see the ring as the client does, so the
        # refusal is the one a client answers by trying its next node.
        raise NotReady(
            "the node this request was relayed to is no replica of the key either: the "
            "nodes' views of the ring disagree while it changes; another node may serve it"
        )
    trace = trace_seam.current()
    relayed = as_forwarded(request, trace=trace is not None)
    refused: list[str] = []
    deadline = trio.current_time() + timeout
    with trio.move_on_after(timeout):
        for target in targets:
            try:
                if trace is not None:
                    trace.step("relayed", node=target.node)
                stats.incr("requests.forwarded")
                wait = deadline - trio.current_time()
                if read and attempt is not None and target is not targets[-1]:
                    wait = min(wait, attempt)
                with trio.fail_after(wait):
                    reply = await peers.request(address_of(target.node), relayed, wait)
                if trace is not None:
                    remote = getattr(reply, "trace", None) or {}
                    trace.step("relay_answered", node=target.node, steps=remote.get("steps"))
                return reply
            except OSError as exc:  # not connected: this target got nothing
                refused.append(f"{target.node} ({exc})")
            except (trio.TooSlowError, Timeout):
                if not read:
                    raise Timeout(
                        f"no replica answered the relayed request within {timeout:g}s"
                    ) from None
                refused.append(f"{target.node} (no answer within {wait:.3g}s)")
        tried = "; ".join(refused)
        raise Unavailable(1, 0, f"no replica could be reached to relay to: {tried}")
    if read:
        tried = "; ".join(refused) or "none answered"
        raise Unavailable(
            1, 0, f"no replica answered the relayed read within {timeout:g}s: {tried}"
        )
    raise Timeout(f"no replica answered the relayed request within {timeout:g}s")


def as_forwarded(
    request: PutRequest | GetRequest | DeleteRequest, *, trace: bool = False
) -> Message:
    """The request as relayed; ``trace`` asks the relay's coordinator for its steps too."""
    return dataclasses.replace(request, forwarded=True, trace=trace)

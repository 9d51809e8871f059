"""`serve --replace NODE_ID`: a new machine stands in for a dead member in one step.

Before the new node joins, it asks the cluster (through its seeds) for the member list and
refuses, with the reason, a replacement of a member that is alive, unknown, already out of
the ring, or itself. It then asks one arbiter (the live ring member with the lowest id, the
same for every replacement that sees the same cluster) to remove the dead member on its
behalf; the arbiter refuses a second replacement of the same member. Then the node joins as
any new node does: SYNCING while it pulls its ranges from the surviving replicas, ACTIVE
once it holds them; the dead member's other ranges are repaired onto their new owners by
anti-entropy from the N-1 surviving copies.

The newcomer takes over the dead member's ring *tokens* (as Cassandra's replace_address
keeps them): the removal names it, every member rebuilds its ring with the newcomer at the
dead member's tokens (``ClusterView.takeovers``), so it gets exactly the dead member's
ranges and no other node's ranges change. Until it is up, writes for those ranges go to
fallbacks with hints for it. It pulls each range from every surviving replica (the dead
one cannot hand anything over, and a write it acknowledged with one other replica is on
that replica only), so nothing a quorum acknowledged is missing when it turns ACTIVE.

A replacement that crashes and restarts with the same command line finds its own mark
(``REPLACED_META``, which keeps what it took over) and carries on joining instead of
refusing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import trio

from p2pindex.errors import ConfigError, InvalidRequest, P2PIndexError
from p2pindex.node.cluster_view import ClusterView
from p2pindex.node.peers import PeerPool
from p2pindex.storage.base import Storage
from p2pindex.types import Address
from p2pindex.wire.messages import MembersReply, MembersRequest, RemoveRequest

REPLACED_META = "replace.done"
ASK_TIMEOUT = 10.0
ASK_ATTEMPTS = 6
RETRY_DELAY = 5.0
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Takeover:
    """The dead member a replacement stands in for, as the cluster listed it."""

    node_id: str
    incarnation: int
    tokens_of: str
    """The id the dead member's tokens came from (its own, unless it replaced another)."""

    def encode(self) -> bytes:
        return json.dumps([self.node_id, self.incarnation, self.tokens_of]).encode()

    @classmethod
    def decode(cls, raw: bytes, replace_id: str) -> Takeover | None:
        """The saved takeover of ``replace_id`` (None: none saved for it). The first format
        kept the id alone; its tokens were the member's own."""
        if raw == replace_id.encode():
            return cls(replace_id, 0, replace_id)
        try:
            node_id, incarnation, tokens_of = json.loads(raw)
        except (ValueError, TypeError):
            return None
        if node_id != replace_id or not isinstance(incarnation, int):
            return None
        return cls(str(node_id), incarnation, str(tokens_of))


def replace_refusal(replace_id: str, own_id: str, members: Sequence[dict[str, Any]]) -> str | None:
    """Why ``own_id`` may not replace ``replace_id`` in a cluster with these members."""
    if replace_id == own_id:
        return "a node cannot replace itself"
    member = next((m for m in members if m.get("node_id") == replace_id), None)
    if member is None:
        return (
            f"no member has the id {replace_id}: it is unknown, or was removed or replaced "
            "already (removed members are not listed; see p2pindex status)"
        )
    if member.get("liveness") in ("alive", "suspect"):
        return (
            f"node {replace_id} is {member.get('liveness')}: only a dead member can be "
            "replaced (a live one leaves with `p2pindex drain`)"
        )
    if not member.get("in_ring", True):
        return f"node {replace_id} is no longer in the ring (removed or already replaced)"
    return None


def arbiter(members: Sequence[dict[str, Any]], replace_id: str) -> Address | None:
    """The live ring member every replacement of ``replace_id`` asks: the lowest id."""
    live = sorted(
        (str(m["node_id"]), str(m["address"]))
        for m in members
        if m.get("liveness") == "alive" and m.get("in_ring", True) and m["node_id"] != replace_id
    )
    return Address.parse(live[0][1]) if live else None


async def prepare_replacement(
    view: ClusterView,
    replace_id: str,
    seeds: Sequence[Address],
    peers: PeerPool,
    storage: Storage,
) -> Takeover:
    """Check the replacement against the cluster and have the dead member removed in
    favour of this node, in ``view`` too; raises ConfigError (one line, nothing changed)
    when refused."""
    own_id = view.node_id
    saved = storage.get_meta(REPLACED_META)
    taken = Takeover.decode(saved, replace_id) if saved is not None else None
    if taken is None:  # else this node took the member's place already and restarted
        taken = await _ask_removal(own_id, replace_id, seeds, peers)
        await storage.set_meta(REPLACED_META, taken.encode())
    view.remove(taken.node_id, taken.incarnation, own_id, taken.tokens_of)
    return taken


async def _ask_removal(
    own_id: str, replace_id: str, seeds: Sequence[Address], peers: PeerPool
) -> Takeover:
    """Ask the arbiter; if it does not answer (it may have died since the seed listed it),
    ask again with a fresh member list, which names another arbiter once the cluster sees
    the first one down: ASK_ATTEMPTS tries, RETRY_DELAY apart."""
    if replace_id == own_id:
        raise ConfigError("replacement refused: a node cannot replace itself")
    if not seeds:
        raise ConfigError("replacement refused: --replace needs the cluster's --seed list")
    failure = ""
    for attempt in range(ASK_ATTEMPTS):
        if attempt:
            await trio.sleep(RETRY_DELAY)
        taken, judge = await _checked(own_id, replace_id, seeds, peers)
        try:
            await peers.request(judge, RemoveRequest(replace_id, replaced_by=own_id), ASK_TIMEOUT)
            return taken
        except InvalidRequest as exc:
            raise ConfigError(f"replacement refused: {exc}") from None
        except (OSError, P2PIndexError) as exc:
            failure = f"{judge} did not answer ({exc})"
            log.warning("replacement: the arbiter %s; asking again", failure)
    raise ConfigError(f"replacement not done: {failure}, {ASK_ATTEMPTS} times")


async def _checked(
    own_id: str, replace_id: str, seeds: Sequence[Address], peers: PeerPool
) -> tuple[Takeover, Address]:
    """The takeover the cluster allows and the arbiter to ask; ConfigError if refused."""
    reply = await peers.first_reply(seeds, MembersRequest(), MembersReply, ASK_TIMEOUT)
    if reply is None:
        raise ConfigError("replacement refused: no seed answered, so nothing was checked")
    refusal = replace_refusal(replace_id, own_id, reply.members)
    if refusal is not None:
        raise ConfigError(f"replacement refused: {refusal}")
    member = next(m for m in reply.members if m.get("node_id") == replace_id)
    incarnation = member.get("incarnation")
    source = member.get("tokens_of")
    taken = Takeover(
        replace_id,
        incarnation if type(incarnation) is int else 0,
        source if isinstance(source, str) and source else replace_id,
    )
    judge = arbiter(reply.members, replace_id)
    if judge is None:
        raise ConfigError("replacement refused: no live member to carry out the removal")
    return taken, judge

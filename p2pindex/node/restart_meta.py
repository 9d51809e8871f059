"""What a node keeps in its metadata so a restart carries on where it stopped: its version
actor's epoch and highest counter, its SWIM incarnation, the members removed from its ring
and the members its ring had.

Functions over a storage backend (and the injected randomness and wall clock), so the rules
read in one place; the node applies a storage failure to its state.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable, Container, Mapping, Sequence

from p2pindex.core.ring import Ring
from p2pindex.core.swim import Member
from p2pindex.errors import StorageFailure
from p2pindex.node.peers import PeerPool
from p2pindex.storage.base import Storage
from p2pindex.types import Address, Liveness, NodeState
from p2pindex.wire.messages import MembersReply, MembersRequest

log = logging.getLogger(__name__)

SEED_ASK_TIMEOUT = 2.0
"""Seconds a joiner waits for its seeds' member lists (asked all at once)."""

REMOVED_META = "removed"
TAKEOVERS_META = "takeovers"
RING_MEMBERS_META = "ring_members"
"""The ring's other members ([node id, address, incarnation]), restored on restart."""


async def storage_epoch(storage: Storage, rng: random.Random) -> tuple[str, int, str | None]:
    """The version actor's epoch and the highest counter it issued, kept across clean
    restarts, a new epoch (from counter 0) after a crash; and why the store failed, if it did.

    A crash (or a power cut with fsync off) can lose this node's latest writes after
    replicas stored them; a fresh epoch makes sure no dot is ever reissued for another
    value. A clean shutdown marks the store so the next start keeps the clocks short.
    """
    epoch = storage.get_meta("actor_epoch")
    issued = storage.get_meta("actor_issued")
    clean = storage.get_meta("clean_shutdown") == b"1"
    if epoch is None or not clean or issued is None or not issued.isdigit():
        epoch, issued = rng.randbytes(4).hex().encode(), b"0"
    failure = None
    try:
        await storage.set_meta("actor_epoch", epoch)
        await storage.set_meta("clean_shutdown", b"0")
    except StorageFailure as exc:
        # An unsaved epoch is safe: without the clean mark the next start picks a new one.
        failure = f"storage failing: {exc}"
    return epoch.decode(), int(issued), failure


async def next_incarnation(
    storage: Storage, wall_clock: Callable[[], float]
) -> tuple[int, str | None]:
    """An incarnation above every one used before, so a restart always wins over old news;
    and why the store failed, if it did (the incarnation is still above every earlier one,
    by the wall clock, so the node starts DEGRADED instead of not at all)."""
    stored = storage.get_meta("incarnation")
    previous = int(stored) if stored else 0
    incarnation = max(previous + 1, math.floor(wall_clock()))
    try:
        await storage.set_meta("incarnation", str(incarnation).encode())
    except StorageFailure as exc:
        return incarnation, f"storage failing: {exc}"
    return incarnation, None


def load_removed(storage: Storage) -> dict[str, int]:
    raw = storage.get_meta(REMOVED_META)
    return {str(k): int(v) for k, v in json.loads(raw).items()} if raw else {}


def removed_doc(removed: Mapping[str, int]) -> bytes:
    return json.dumps(dict(removed), sort_keys=True).encode()


def load_takeovers(storage: Storage) -> dict[str, tuple[str, str]]:
    """Removed members whose place a replacement took: id -> (replacement, token source)."""
    raw = storage.get_meta(TAKEOVERS_META)
    return {str(k): (str(v[0]), str(v[1])) for k, v in json.loads(raw).items()} if raw else {}


def takeovers_doc(takeovers: Mapping[str, tuple[str, str]]) -> bytes:
    return json.dumps({k: list(v) for k, v in takeovers.items()}, sort_keys=True).encode()


def ring_members(raw: bytes, node_id: str, removed: Container[str]) -> list[Member]:
    """The saved ring members other than this node and the removed ones (none when the
    document does not parse: the seeds will tell)."""
    try:
        return [
            Member(
                str(member),
                Address.parse(address),
                int(inc),
                Liveness.ALIVE,
                NodeState.ACTIVE,
                str(tokens_of[0]) if tokens_of else None,
            )
            for member, address, inc, *tokens_of in json.loads(raw)
            if member != node_id and member not in removed
        ]
    except (ValueError, TypeError) as exc:
        log.warning("ignoring the saved ring members (%s): the seeds will tell", exc)
        return []


def ring_members_doc(members: Mapping[str, Member], ring: Ring, node_id: str) -> bytes:
    saved = sorted(
        [member_id, str(member.address), member.incarnation]
        + ([member.tokens_of] if member.tokens_of else [])
        for member_id, member in members.items()
        if member_id in ring.nodes and member_id != node_id
    )
    return json.dumps(saved).encode()


async def down_ring_members(
    seeds: Sequence[Address], peers: PeerPool, node_id: str
) -> list[Member]:
    """The members a seed still places keys on but sees down, for a node joining afresh.

    SWIM does not import tombstones of members a node never saw (they would bounce between
    tables for ever), so without these a joiner's ring lacks a member that is down right
    now while every other node's ring keeps it: the joiner would coordinate writes to
    other replicas than everyone else reads, and one it acknowledged could be read by
    nobody once the joiner itself is gone. A restarted node has its saved ring members for
    this; a new one asks its seeds, all at once, and takes the first answer, so seeds that
    are down cost one timeout together rather than one each. They enter as restored
    members do, and are probed."""
    reply = await peers.first_reply(seeds, MembersRequest(), MembersReply, SEED_ASK_TIMEOUT)
    return [] if reply is None else _down_in(reply, node_id)


def _down_in(reply: MembersReply, node_id: str) -> list[Member]:
    """The ring members ``reply`` lists as dead or suspect, other than ``node_id``."""
    down: list[Member] = []
    for doc in reply.members:
        try:
            if doc.get("in_ring") is not True or doc.get("liveness") not in ("dead", "suspect"):
                continue
            member_id = str(doc["node_id"])
            if member_id != node_id:
                address = Address.parse(str(doc["address"]))
                incarnation = int(doc["incarnation"])
                tokens_of = doc.get("tokens_of")
                claim = str(tokens_of) if tokens_of and tokens_of != member_id else None
                down.append(
                    Member(member_id, address, incarnation, Liveness.ALIVE, NodeState.ACTIVE, claim)
                )
        except (KeyError, ValueError, TypeError):
            continue  # a malformed entry: the seed's others still count
    return down

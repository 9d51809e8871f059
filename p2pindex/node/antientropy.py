"""Anti-entropy: replicas compare what they hold and exchange only what differs.

Read repair heals keys that are read and hinted handoff heals writes a coordinator knew it
could not deliver; a replica that silently missed a write (a lost message, a timeout, a
power cut) and whose key is never read again stays stale without this. Every
``interval`` seconds (with jitter, so nodes do not move in lockstep) a node takes the next
peer of a shuffled rotation and the next slice of the ring and runs one round with it:

1. ask the peer for the digests of the keys both replicate in each piece of the slice,
   compare them with its own, and split the pieces that differ and hold many keys again
   (descending a Merkle tree that is computed on demand, never stored);
2. for the differing leaf pieces, fetch one digest per key and work out which keys differ;
3. pull the peer's records of those keys and merge them locally, then push the merged
   records (and the keys the peer lacks) back, so both replicas end with the causal merge.

A key whose tombstone was reaped is in no scan, only in the reaper's *marker*
(``node.reaper``), which replica reads answer with. So a round asks the peer, with a digest
read, about the keys it seems to lack, fetches the markers it turns out to hold, and pushes
its own marker of a key the peer still stores. Otherwise a replica that lost its markers (a
wiped disk) and then got an old copy of a deleted key back (a fallback's copy it pulled on
rejoining) kept the deleted value for ever: its pushes were dropped against the others'
markers, and nothing told it why. (``RecordsRequest`` answers from storage alone: the
reaper asks with it whether a peer still stores a key before its marker may expire.)

A round is bounded: a slice holds about ``SCAN_BUDGET`` keys (so a sweep of a large store
takes several rounds), and at most ``MAX_REPAIR_KEYS`` keys move per round. The pure digest
arithmetic lives in ``p2pindex.core.digest``.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Final, Protocol, TypeVar

import trio

from p2pindex.core.digest import (
    PieceDigest,
    SliceDigests,
    diff_keys,
    differing,
    fold,
    key_digest,
    slice_width,
)
from p2pindex.core.ring import RING_SIZE, Arc, Ring, arc_covers, arc_length, key_token, split_arc
from p2pindex.errors import InvalidRequest, NotReady, P2PIndexError
from p2pindex.node.eventlog import EventLog
from p2pindex.node.handoff import BatchApplier, RecordMover
from p2pindex.node.peers import PeerPool
from p2pindex.node.stats import StatisticsStore
from p2pindex.storage.base import Storage
from p2pindex.types import Address, NodeState
from p2pindex.wire.messages import (
    DigestReply,
    DigestRequest,
    KeyDigestReply,
    KeyDigestRequest,
    Message,
    RecordsReply,
    RecordsRequest,
    ReplicaDigestMany,
    ReplicaDigestManyReply,
    ReplicaReadMany,
    ReplicaReadManyReply,
    ReplicaWriteBatch,
)

FANOUT: Final = 16
"""Pieces a differing arc is split into at each level."""
LEAF_KEYS: Final = 64
"""A differing piece with at most this many keys is compared key by key."""
MAX_DEPTH: Final = 4
SCAN_BUDGET: Final = 8192
"""About how many keys one round's slice holds."""
MAX_REPAIR_KEYS: Final = 1024
"""Keys pulled (and as many pushed) per round at most."""
MARKER_FETCH: Final = 64
"""Records fetched per replica read of the keys a peer turned out to hold markers of."""
MAX_PIECES: Final = 256
"""Arcs one digest request may name."""
SCAN_PAGE: Final = 1024
REQUEST_TIMEOUT: Final = 5.0
MAX_BEHIND: Final = 1024
"""Peers remembered as behind at most (members of the ring only, so rarely near it)."""
ANSWER_KEYS: Final = 2 * SCAN_BUDGET
"""Keys of a peer's round held to answer its later requests; a larger slice is scanned per
request instead (an honest round holds about SCAN_BUDGET)."""
ANSWER_SECONDS: Final = 2.0
"""How long those keys answer: a round's requests follow each other within milliseconds."""

_R = TypeVar("_R", bound=Message)


log = logging.getLogger(__name__)
events = EventLog(log, trio.current_time)

BEHIND_ATTEMPTS: Final = 3
"""Rounds a peer known to be behind is tried first before it waits for the rotation again."""
BEHIND_PER_TICK: Final = 3
"""Peers known to be behind that get a round of their own each tick, besides the rotation's.
After a turbulent spell every node knows several (each replica write that failed marks one);
one such round every other tick, as before, left the last of eight waiting about 80 s, past
the 30 s in which the simulator expects replicas to agree after a heal."""
CATCH_UP_SECONDS: Final = 2 * REQUEST_TIMEOUT
"""How long a node that just took over ranges compares them with the other replicas."""

SUMMARY_INTERVAL = 60.0
"""Seconds over which anti-entropy repairs are summed up into one log line."""


class AntiEntropyView(Protocol):
    node_id: str
    state: NodeState

    @property
    def ring(self) -> Ring: ...

    def readable(self, node_id: str) -> bool: ...

    def address_of(self, node_id: str) -> Address: ...


ReadRecords = Callable[[list[bytes]], Sequence[bytes | None]]
"""The record a replica read answers for each key (a reaped tombstone's marker included)."""


class AntiEntropy(RecordMover):
    """One node's anti-entropy: the periodic rounds it starts and the requests it answers."""

    def __init__(
        self,
        view: AntiEntropyView,
        storage: Storage,
        peers: PeerPool,
        apply_batch: BatchApplier,
        stats: StatisticsStore,
        rng: random.Random,
        *,
        read_records: ReadRecords,
        n_replicas: int,
        interval: float,
        max_frame: int,
    ) -> None:
        super().__init__(storage, peers, apply_batch, stats)
        self._view = view
        self._rng = rng
        self._read_records = read_records
        self._n = n_replicas
        self._interval = interval
        self._max_batch_bytes = max_frame // 2
        self._rotation: list[str] = []
        self._behind: dict[str, int] = {}
        """Peers known to have missed writes, with the rounds they are still tried first.
        Without it a divergence the node saw happen waits for the rotation, which visits
        one peer in ``interval`` and so takes members x interval to come round."""
        self._answering: dict[str, tuple[Arc, float, SliceDigests]] = {}
        """Per peer: the slice its current round compares, scanned once (see ``serve``)."""
        self._cursor = rng.randrange(RING_SIZE)
        self.last_error = ""
        self._summary_since: float | None = None
        self._summary_pulled = 0
        self._summary_pushed = 0
        self._summary_peers: set[str] = set()

    # --- the periodic rounds ----------------------------------------------------------------

    async def run(self) -> None:
        """Every tick: a round with each of up to ``BEHIND_PER_TICK`` peers known to be
        behind, then one with the next peer of the rotation, so a peer that keeps missing
        writes cannot stall the rotation that finds the divergence nobody saw happen."""
        while True:
            await trio.sleep(self._interval * (0.5 + self._rng.random()))
            if self._view.state is not NodeState.ACTIVE:
                continue
            for peer, attempts in self._due_behind(BEHIND_PER_TICK):
                if not await self._attempt(peer) and attempts > 1:
                    self._behind.setdefault(peer, attempts - 1)
            next_in_rotation = self._next_in_rotation()
            if next_in_rotation is not None:
                await self._attempt(next_in_rotation)

    async def _attempt(self, peer: str, arc: Arc | None = None) -> bool:
        """One round with ``peer``, its repairs summed up; False (counted) if it failed."""
        try:
            moved = await self.round(peer, arc)
        except (OSError, P2PIndexError) as exc:
            self._stats.incr("antientropy.failed_rounds")
            self.last_error = f"{peer}: {exc}"
            return False
        self._note_repairs(peer, moved)
        return True

    def mark_behind(self, peer: str) -> None:
        """``peer`` may lack writes this node has (a replica write to it failed, or it just
        came back): its next round comes before the rotation's."""
        if peer != self._view.node_id and len(self._behind) < MAX_BEHIND:
            self._behind[peer] = BEHIND_ATTEMPTS

    async def catch_up(self) -> None:
        """Compare the next slice of this node's store (all of it up to about
        ``SCAN_BUDGET`` keys) with every other readable member, one round each, within
        ``CATCH_UP_SECONDS``: a node that has just pulled its ranges took each from one
        replica, whose copy may be older than another replica's. A larger store's other
        slices wait for the rotation, as every divergence does."""
        arc = self._next_slice()
        peers = sorted(self._view.ring.nodes - {self._view.node_id})
        with trio.move_on_after(CATCH_UP_SECONDS):
            for peer in peers:
                if self._view.readable(peer) and not await self._attempt(peer, arc):
                    self.mark_behind(peer)

    def _note_repairs(self, peer: str, moved: tuple[int, int]) -> None:
        """Sum up repairs; one line per SUMMARY_INTERVAL when any key was repaired."""
        if moved != (0, 0):
            self._summary_pulled += moved[0]
            self._summary_pushed += moved[1]
            self._summary_peers.add(peer)
        now = trio.current_time()
        if self._summary_since is None:
            self._summary_since = now
        if now - self._summary_since < SUMMARY_INTERVAL:
            return
        if self._summary_peers:
            events.info(
                "antientropy",
                "anti-entropy repaired keys over the last %.0fs: %d pulled, %d pushed, "
                "with %d peer(s)",
                now - self._summary_since,
                self._summary_pulled,
                self._summary_pushed,
                len(self._summary_peers),
            )
        self._summary_since = now
        self._summary_pulled = self._summary_pushed = 0
        self._summary_peers = set()

    def _due_behind(self, most: int) -> list[tuple[str, int]]:
        """Up to ``most`` readable peers known to be behind, oldest mark first, each with
        the attempts it has left; taken off the list (a failed round puts one back)."""
        ring = self._view.ring.nodes
        due: list[tuple[str, int]] = []
        for peer, attempts in list(self._behind.items()):
            if len(due) >= most:
                break
            if peer not in ring:
                del self._behind[peer]
            elif self._view.readable(peer):
                del self._behind[peer]
                due.append((peer, attempts))
        return due

    def _next_in_rotation(self) -> str | None:
        """The next readable peer of a shuffled rotation over the ring's other members."""
        ring = self._view.ring.nodes
        for _ in range(2):
            while self._rotation:
                peer = self._rotation.pop()
                if peer in ring and self._view.readable(peer):
                    return peer
            others = sorted(ring - {self._view.node_id})
            self._rng.shuffle(others)
            self._rotation = others
        return None

    def _next_slice(self) -> Arc:
        width = slice_width(self._storage.count(), SCAN_BUDGET)
        start = self._cursor
        if width >= RING_SIZE:
            return (start, start)
        self._cursor = (start + width) % RING_SIZE
        return (start, self._cursor)

    async def round(self, peer: str, arc: Arc | None = None) -> tuple[int, int]:
        """Compare ``arc`` (default: the next slice) with ``peer`` and repair both sides;
        returns how many records were (pulled, pushed)."""
        address = self._view.address_of(peer)
        self._stats.incr("antientropy.rounds")
        arc = arc or self._next_slice()
        local = SliceDigests(self._digest_entries(arc, peer))
        leaves = await self._differing_leaves(peer, address, arc, local)
        if not leaves:
            self._stats.incr("antientropy.in_sync")
            return (0, 0)
        reply = await self._ask(
            address,
            KeyDigestRequest(
                self._view.node_id, [a[0] for a in leaves], [a[1] for a in leaves], SCAN_BUDGET
            ),
            KeyDigestReply,
        )
        theirs = dict(reply.items)
        mine = local.keys(leaves)
        diff = diff_keys(mine, theirs)
        pull = diff.pull[:MAX_REPAIR_KEYS]
        push = diff.push[:MAX_REPAIR_KEYS] if reply.complete else []
        sent: dict[bytes, bytes] = {}
        if pull:
            records = await self._ask(address, RecordsRequest(pull), RecordsReply)
            sent.update(records.items)
        if push:
            sent.update(await self._markers(address, push))
        if sent:
            await self._apply_batch(list(sent.items()))
            self._stats.incr("antientropy.keys_pulled", len(sent))
        pulled, pushed = len(sent), 0
        outgoing: list[tuple[bytes, bytes]] = []
        keys = [*pull, *push]
        for key, record in zip(keys, self._read_records(keys), strict=True):
            if (
                record is not None
                and record != sent.get(key)
                and theirs.get(key) != key_digest(key, record)
            ):
                outgoing.append((key, record))
        for batch in self._batches(outgoing):
            await self._peers.request(address, ReplicaWriteBatch(batch), REQUEST_TIMEOUT)
            self._stats.incr("antientropy.keys_pushed", len(batch))
            pushed += len(batch)
        return (pulled, pushed)

    async def _markers(self, address: Address, keys: list[bytes]) -> dict[bytes, bytes]:
        """What the peer answers reads of ``keys`` (which its storage lacks) with: the
        markers of reaped tombstones, or a write that arrived since its scan. A digest read
        of them all first, so a peer lacking a thousand keys costs one small answer, then
        the records of those it answered."""
        try:
            reply = await self._ask(address, ReplicaDigestMany(keys), ReplicaDigestManyReply)
        except NotReady:
            return {}  # not answering reads (syncing, leaving): it holds no markers to send
        if len(reply.digests) != len(keys):
            raise InvalidRequest(f"digests of {len(reply.digests)} keys for {len(keys)} asked")
        answered = [key for key, digest in zip(keys, reply.digests, strict=True) if digest]
        found: dict[bytes, bytes] = {}
        for start in range(0, len(answered), MARKER_FETCH):
            wanted = answered[start : start + MARKER_FETCH]
            records = await self._ask(address, ReplicaReadMany(wanted), ReplicaReadManyReply)
            if len(records.records) != len(wanted):
                raise InvalidRequest(f"{len(records.records)} records for {len(wanted)} asked")
            found.update((k, r) for k, r in zip(wanted, records.records, strict=True) if r)
        return found

    async def _differing_leaves(
        self, peer: str, address: Address, arc: Arc, local: SliceDigests
    ) -> list[Arc]:
        """Descend from ``arc`` (whose keys ``local`` holds) to the small pieces whose
        digests differ."""
        pending = split_arc(arc, FANOUT)
        leaves: list[Arc] = []
        for depth in range(MAX_DEPTH):
            reply = await self._ask(
                address,
                DigestRequest(self._view.node_id, [a[0] for a in pending], [a[1] for a in pending]),
                DigestReply,
            )
            if len(reply.digests) != len(pending) or len(reply.counts) != len(pending):
                raise InvalidRequest(f"{peer} answered {len(reply.digests)} of {len(pending)} arcs")
            theirs = [PieceDigest(d, c) for d, c in zip(reply.digests, reply.counts, strict=True)]
            mine = [local.piece(piece) for piece in pending]
            self._stats.incr("antientropy.pieces_compared", len(pending))
            split: list[Arc] = []
            for index in differing(mine, theirs):
                piece = pending[index]
                self._stats.incr("antientropy.pieces_differing")
                many = max(mine[index].count, theirs[index].count) > LEAF_KEYS
                last = depth == MAX_DEPTH - 1
                if many and not last and arc_length(piece) >= FANOUT:
                    split.extend(split_arc(piece, FANOUT))
                else:
                    leaves.append(piece)
            if not split:
                break
            pending = split[:MAX_PIECES]
        return leaves

    async def _ask(self, address: Address, message: Message, expected: type[_R]) -> _R:
        reply = await self._peers.request(address, message, REQUEST_TIMEOUT)
        if not isinstance(reply, expected):
            raise InvalidRequest(
                f"unexpected reply {type(reply).__name__} to {type(message).__name__}"
            )
        return reply

    def _batches(self, items: list[tuple[bytes, bytes]]) -> Iterator[list[tuple[bytes, bytes]]]:
        batch: list[tuple[bytes, bytes]] = []
        size = 0
        for key, record in items:
            if batch and size + len(key) + len(record) > self._max_batch_bytes:
                yield batch
                batch, size = [], 0
            batch.append((key, record))
            size += len(key) + len(record)
        if batch:
            yield batch

    # --- local digests (also what the peer computes when it answers) -----------------------

    def _shared(self, arcs: list[Arc], peer: str) -> Iterator[tuple[bytes, bytes]]:
        """(key, key digest) of every key stored in ``arcs`` whose preference list holds us
        and ``peer``: the digests come from storage, which keeps them beside the records,
        so a round reads 16 bytes a key however large the values are."""
        me = self._view.node_id
        ring = self._view.ring
        preference: Callable[[bytes, int], tuple[str, ...]] = ring.preference_list
        # With no more members than replicas every member holds every key, and the
        # per-key ownership lookup was most of a digest's cost.
        everyone = len(ring.nodes) <= self._n and me in ring.nodes and peer in ring.nodes
        for start, end in arcs:
            after: bytes | None = None
            while True:
                page = self._storage.scan_digests(start, end, after, SCAN_PAGE)
                if everyone:
                    yield from page
                else:
                    for key, digest in page:
                        owners = preference(key, self._n)
                        if me in owners and peer in owners:
                            yield key, digest
                if len(page) < SCAN_PAGE:
                    break
                after = page[-1][0]

    def _digest(self, arc: Arc, peer: str) -> PieceDigest:
        return fold(digest for _key, digest in self._shared([arc], peer))

    def _digest_entries(self, arc: Arc, peer: str) -> Iterator[tuple[int, bytes, bytes]]:
        """(ring token, key, key digest) of every key ``_shared`` finds in ``arc``, the
        entries a SliceDigests holds."""
        for key, digest in self._shared([arc], peer):
            yield key_token(key), key, digest

    # --- answering a peer's round -----------------------------------------------------------

    def serve(self, message: DigestRequest | KeyDigestRequest | RecordsRequest) -> Message:
        if isinstance(message, RecordsRequest):
            return self._records(message)
        arcs = request_arcs(message.start, message.end, MAX_PIECES)
        if isinstance(message, DigestRequest):
            local = self._answering_slice(message.sender, arcs, new_round=_splits_one_arc(arcs))
            if local is None:
                digests = [self._digest(arc, message.sender) for arc in arcs]
            else:
                digests = [local.piece(arc) for arc in arcs]
            return DigestReply([d.digest for d in digests], [d.count for d in digests])
        limit = min(message.limit, SCAN_BUDGET)
        local = self._answering_slice(message.sender, arcs, new_round=False)
        if local is not None:
            items = list(local.keys(arcs).items())
            return KeyDigestReply(items[:limit], complete=len(items) <= limit)
        items = []
        for key, digest in self._shared(arcs, message.sender):
            if len(items) == limit:
                return KeyDigestReply(items, complete=False)
            items.append((key, digest))
        return KeyDigestReply(items, complete=True)

    def _answering_slice(
        self, peer: str, arcs: list[Arc], *, new_round: bool
    ) -> SliceDigests | None:
        """The keys of ``peer``'s current round, if they cover ``arcs``.

        A round asks for the digests of its whole slice first, then of smaller and smaller
        pieces of it, then for key digests: answering each by scanning storage again cost the
        answering side three scans a round. The first request of a round scans the slice
        once; later ones of the same round are answered from it. Every new round scans
        afresh, so answers are never older than the round asking (at most ANSWER_SECONDS).
        """
        now = trio.current_time()
        if not new_round:
            held = self._answering.get(peer)
            if (
                held is not None
                and now - held[1] <= ANSWER_SECONDS
                and all(arc_covers(held[0], arc) for arc in arcs)
            ):
                return held[2]
            return None
        self._answering = {  # rounds that ended; a new one of ``peer`` replaces its old
            other: held
            for other, held in self._answering.items()
            if other != peer and now - held[1] <= ANSWER_SECONDS
        }
        cover = (arcs[0][0], arcs[-1][1])
        entries = list(itertools.islice(self._digest_entries(cover, peer), ANSWER_KEYS + 1))
        if len(entries) > ANSWER_KEYS:
            return None
        local = SliceDigests(entries)
        self._answering[peer] = (cover, now, local)
        return local

    def _records(self, message: RecordsRequest) -> Message:
        if len(message.keys) > MAX_REPAIR_KEYS:
            raise InvalidRequest(
                f"asked for {len(message.keys)} records; at most {MAX_REPAIR_KEYS} at once"
            )
        items: list[tuple[bytes, bytes]] = []
        size = 0
        for key in message.keys:
            record = self._storage.get(key)
            if record is None:
                continue
            size += len(key) + len(record)
            if items and size > self._max_batch_bytes:
                break
            items.append((key, record))
        return RecordsReply(items)


def _splits_one_arc(arcs: list[Arc]) -> bool:
    """Whether ``arcs`` are one arc split in FANOUT consecutive pieces: how a round starts
    (a deeper request may look the same; answering it from a fresh scan is merely correct)."""
    return len(arcs) == FANOUT and all(arcs[i][1] == arcs[i + 1][0] for i in range(len(arcs) - 1))


def request_arcs(starts: list[int], ends: list[int], limit: int) -> list[Arc]:
    """The arcs (start[i], end[i]] a request names, refused unless paired and at most
    ``limit`` of them (for every message that carries arc lists)."""
    if len(starts) != len(ends):
        raise InvalidRequest(f"{len(starts)} arc starts but {len(ends)} ends")
    if len(starts) > limit:
        raise InvalidRequest(f"{len(starts)} arcs in one request; at most {limit}")
    return list(zip(starts, ends, strict=True))

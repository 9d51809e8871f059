"""How a node answers a peer's anti-entropy round: the same answers as a scan of storage,
with the slice scanned once per round and never reused by the next round."""

from __future__ import annotations

import random

import trio
import trio.testing

from p2pindex.core.digest import fold, key_digest
from p2pindex.core.ring import RING_SIZE, Ring, split_arc
from p2pindex.node import antientropy
from p2pindex.node.antientropy import FANOUT, AntiEntropy
from p2pindex.node.stats import StatisticsStore
from p2pindex.storage.memory import MemoryStorage
from p2pindex.types import NodeState
from p2pindex.wire.messages import (
    DigestReply,
    DigestRequest,
    KeyDigestReply,
    KeyDigestRequest,
)

ME, PEER = "a" * 16, "b" * 16


class View:
    node_id = ME
    state = NodeState.ACTIVE

    def __init__(self) -> None:
        self.ring = Ring(frozenset({ME, PEER, "c" * 16}))


class CountingStorage(MemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self.scans = 0

    def scan_range(
        self, start: int, end: int, after: bytes | None, limit: int
    ) -> list[tuple[bytes, bytes]]:
        self.scans += 1
        return super().scan_range(start, end, after, limit)


def answering(storage: MemoryStorage) -> AntiEntropy:
    return AntiEntropy(
        View(),  # type: ignore[arg-type]
        storage,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        StatisticsStore(),
        random.Random(1),
        read_records=lambda keys: [storage.get(key) for key in keys],
        n_replicas=3,
        interval=5.0,
        max_frame=1 << 20,
    )


def digests_of(storage: MemoryStorage, arcs: list[tuple[int, int]]) -> DigestReply:
    """What a scan of storage says about ``arcs`` (every key is shared: 3 nodes, N=3)."""
    pieces = [
        fold(key_digest(k, r) for k, r in storage.scan_range(s, e, None, 10**6)) for s, e in arcs
    ]
    return DigestReply([p.digest for p in pieces], [p.count for p in pieces])


def digest_request(arcs: list[tuple[int, int]]) -> DigestRequest:
    return DigestRequest(PEER, [a[0] for a in arcs], [a[1] for a in arcs])


async def test_a_round_is_answered_like_a_scan_with_one_scan(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = CountingStorage()
    storage.put_many_now([(b"k%d" % i, b"r%d" % i) for i in range(500)])
    ae = answering(storage)
    slice_ = (RING_SIZE // 3, RING_SIZE // 3 * 2)
    level1 = split_arc(slice_, FANOUT)
    level2 = [piece for arc in level1[2:5] for piece in split_arc(arc, FANOUT)]
    leaves = level2[7:30]

    scans = storage.scans
    first = ae.serve(digest_request(level1))
    second = ae.serve(digest_request(level2))
    keys = ae.serve(KeyDigestRequest(PEER, [a[0] for a in leaves], [a[1] for a in leaves], 10))
    assert storage.scans - scans == 1  # one scan of the slice answered the whole round
    storage.scans = 0
    assert first == digests_of(storage, level1)
    assert second == digests_of(storage, level2)
    expected = [
        (k, key_digest(k, r))
        for s, e in leaves
        for k, r in MemoryStorage.scan_range(storage, s, e, None, 10**6)
    ]
    assert isinstance(keys, KeyDigestReply)
    assert keys.items == expected[:10] and keys.complete == (len(expected) <= 10)

    # The next round scans afresh and sees what changed since.
    storage.put_many_now([(b"k1", b"changed"), (b"new", b"record")])
    assert ae.serve(digest_request(level1)) == digests_of(storage, level1)
    # And a round's slice answers its later requests only for a while.
    await trio.sleep(antientropy.ANSWER_SECONDS + 1)
    scans = storage.scans
    late = ae.serve(digest_request(level2))
    assert storage.scans > scans
    assert late == digests_of(storage, level2)


async def test_a_slice_too_large_to_hold_is_answered_by_scanning(
    autojump_clock: trio.testing.MockClock, monkeypatch: object
) -> None:
    storage = CountingStorage()
    storage.put_many_now([(b"k%d" % i, b"r") for i in range(300)])
    monkeypatch.setattr(antientropy, "ANSWER_KEYS", 50)  # type: ignore[attr-defined]
    ae = answering(storage)
    whole = split_arc((7, 7), FANOUT)
    assert ae.serve(digest_request(whole)) == digests_of(storage, whole)
    assert ae.serve(digest_request(whole[:3])) == digests_of(storage, whole[:3])
    assert ae._answering == {}

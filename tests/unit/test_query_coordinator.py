"""A coordinator's side of a quorum query page: what it claims when a replica goes silent."""

from __future__ import annotations

import pytest
import trio

from p2pindex.config import NodeConfig
from p2pindex.core import terms, versions
from p2pindex.core.ring import Ring
from p2pindex.core.versions import VersionVector
from p2pindex.errors import Unavailable
from p2pindex.node.query import QueryService, query_mac_key
from p2pindex.node.stats import StatisticsStore
from p2pindex.storage.memory import MemoryStorage
from p2pindex.types import Address
from p2pindex.wire.messages import (
    IndexScan,
    IndexScanReply,
    Message,
    QueryRequest,
    ReplicaReadMany,
    ReplicaReadManyReply,
)

ME, PEER, DOWN = "a" * 16, "b" * 16, "c" * 16
ADDRESSES = {ME: Address("127.0.0.1", 1), PEER: Address("127.0.0.1", 2)}


class View:
    """Three members; ``DOWN`` is not readable, so every arc is read from ``ME`` and ``PEER``."""

    ring = Ring([ME, PEER, DOWN])
    membership_confirmed = True

    def __init__(self) -> None:
        self.unreachable: list[str] = []

    def address_of(self, node_id: str) -> Address:
        return ADDRESSES[node_id]

    def serves_reads(self, node_id: str) -> bool:
        return node_id != DOWN

    def scan_refusal(self, runs: list[tuple[int, int]]) -> str | None:
        return None

    def note_unreachable(self, node_id: str) -> None:
        self.unreachable.append(node_id)


class FailsOnVersions:
    """``PEER`` answers its index scans at once (it lists nothing: it missed the write), then
    fails the version fetch that follows: it stays silent past the deadline, or answers
    with a wrong number of records."""

    def __init__(self, silent: bool) -> None:
        self.silent = silent
        self.fetches = 0

    async def request(self, address: Address, message: Message, timeout: float) -> Message:
        if isinstance(message, IndexScan):
            return IndexScanReply([], [], False)
        assert isinstance(message, ReplicaReadMany)
        self.fetches += 1
        if self.silent:
            await trio.sleep_forever()
        return ReplicaReadManyReply([None, None])


def query(**changes: object) -> QueryRequest:
    fields: dict[str, object] = {
        "index": "t",
        "lo": terms.encode_term(0),
        "hi": terms.encode_term(9),
        "prefix": b"",
        "limit": 10,
        "continuation": None,
        "consistency": "quorum",
        "timeout_ms": 500,
    }
    fields.update(changes)
    return QueryRequest(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("silent", [True, False], ids=["silent", "wrong_count"])
async def test_a_failed_version_fetch_makes_the_page_incomplete(silent: bool) -> None:
    storage = MemoryStorage()
    obj = versions.update(None, VersionVector(), ME, b"v", terms.normalize({"t": [7]}))
    storage.put_many_now([(b"k", versions.encode_object(obj))])
    peers = FailsOnVersions(silent)
    stats = StatisticsStore()
    config = NodeConfig(data_dir=None, listen=ADDRESSES[ME])
    service = QueryService(
        ME,
        View(),
        storage,
        peers,  # type: ignore[arg-type]
        config,
        stats,
        query_mac_key(b"s" * 32),
    )
    with trio.fail_after(5), pytest.raises(Unavailable, match=PEER):
        await service.query(query())
    assert peers.fetches == 1
    # Only one replica spoke for k, so k cannot be answered for, and the page must not
    # claim to be complete: a client would take the missing key for one that matches
    # nothing. PEER was the second replica of every arc, so no arc was read at all: that
    # is no page, but a definite failure (an empty page would move the cursor past k).
    assert stats.get("queries.unavailable") == 1 and stats.get("queries.pages") == 0

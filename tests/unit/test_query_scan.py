"""A replica's side of a query: what one IndexScan returns, and its bounds."""

from __future__ import annotations

import pytest

from p2pindex.config import KIB, Limits, NodeConfig
from p2pindex.core import terms, versions
from p2pindex.core.versions import VersionVector
from p2pindex.errors import InvalidRequest, NotReady
from p2pindex.node.query import QueryService, query_mac_key
from p2pindex.node.stats import StatisticsStore
from p2pindex.storage.memory import MemoryStorage
from p2pindex.types import Address
from p2pindex.wire.messages import IndexScan


class View:
    """The node's view of itself: readable unless still receiving ranges."""

    def __init__(self) -> None:
        self.receiving = False

    def serves_reads(self, node_id: str) -> bool:
        return not self.receiving

    def scan_refusal(self, runs: list[tuple[int, int]]) -> str | None:
        return "still receiving ranges" if self.receiving else None


def service(
    storage: MemoryStorage, limits: Limits | None = None, view: View | None = None
) -> QueryService:
    config = NodeConfig(data_dir=None, listen=Address("127.0.0.1", 1), limits=limits or Limits())
    return QueryService(
        "a" * 16, view or View(), storage, None, config, StatisticsStore(), query_mac_key(b"s" * 32)
    )  # type: ignore[arg-type]


def fill(storage: MemoryStorage, count: int, size: int) -> None:
    for i in range(count):
        obj = versions.update(None, VersionVector(), "n1", b"x" * size, terms.normalize({"n": [i]}))
        storage.put_many_now([(f"k{i:02d}".encode(), versions.encode_object(obj))])


def scan(**changes) -> IndexScan:
    fields = {
        "index": "n",
        "lo": terms.encode_term(0),
        "hi": terms.encode_term(99),
        "prefix": b"",
        "start": [],
        "end": [],
        "after_term": None,
        "after_key": None,
        "limit": 10,
        "records": True,
    }
    fields.update(changes)
    return IndexScan(**fields)


def test_records_stop_before_the_reply_outgrows_a_frame() -> None:
    storage = MemoryStorage()
    fill(storage, 10, 40 * KIB)
    limits = Limits(max_frame=160 * KIB, max_value=32 * KIB)  # a record: a quarter frame
    reply = service(storage, limits).scan(scan())
    assert reply.truncated and 1 <= len(reply.rows) < 10
    assert len(reply.records) == len(reply.rows)
    assert sum(len(record) for _key, record in reply.records) <= 80 * KIB + 41 * KIB


def test_a_scan_resumes_after_its_cursor_and_says_when_it_filled_its_page() -> None:
    storage = MemoryStorage()
    fill(storage, 12, 10)
    reply = service(storage).scan(scan(records=False, after_term=terms.encode_term(3),
                                       after_key=b"k03", limit=5))  # fmt: skip
    assert [key for _term, key in reply.rows] == [b"k04", b"k05", b"k06", b"k07", b"k08"]
    assert reply.truncated and reply.records == []


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"limit": 0}, "page size"),
        ({"start": [1], "end": []}, "differ in number"),
        ({"lo": None}, "both bounds"),
        ({"lo": terms.encode_term(5), "hi": terms.encode_term(1)}, "above its high end"),
    ],
)
def test_bad_scans_are_refused(changes: dict, problem: str) -> None:
    with pytest.raises(InvalidRequest, match=problem):
        service(MemoryStorage()).scan(scan(**changes))


def test_a_node_still_receiving_ranges_refuses_scans() -> None:
    """Its rows may lack keys; a coordinator that asked replans without it."""
    storage = MemoryStorage()
    fill(storage, 5, 10)
    view = View()
    node = service(storage, view=view)
    assert len(node.scan(scan()).rows) == 5
    view.receiving = True
    with pytest.raises(NotReady, match="still receiving ranges"):
        node.scan(scan())

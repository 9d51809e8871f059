"""Index queries and key listings on in-process clusters, through the real client."""

from __future__ import annotations

import base64
import dataclasses

import cbor2
import pytest
import trio

import p2pindex
from p2pindex.client.queries import continuation_from_text
from p2pindex.core.terms import encode_term
from p2pindex.errors import InvalidRequest, Unavailable
from p2pindex.sim.network import Delay, DelayKind
from p2pindex.wire.messages import ErrorReply, QueryReply, QueryRequest
from tests.support.cluster import running_cluster


def client(cluster, consistency="quorum"):
    return p2pindex.connect(
        [str(n.address) for n in cluster.nodes if not n.scope.cancel_called],
        transport=cluster.client_transport(),
        consistency=consistency,
        timeout=3.0,
    )


async def all_pages(fetch, **options) -> tuple[list, list]:
    rows, pages = [], []
    token = None
    while True:
        page = await fetch(continuation=token, **options)
        pages.append(page)
        rows += page.rows
        token = page.continuation
        if token is None:
            return rows, pages


async def test_exact_and_range_queries_and_listing_page_through_everything_once():
    async with running_cluster(3) as cluster, client(cluster) as db:
        for i in range(60):
            await db.put(f"order:{i:03d}", b"v", index={"total": [i * 10], "parity": [i % 2]})
        await db.put("user:1", b"u", index={"email": ["a@b.example"]})
        for consistency in ("one", "quorum"):
            rows, pages = await all_pages(
                lambda **o: db.query("total", 100, 500, limit=7, **o), consistency=consistency
            )
            assert [(r.term, r.key) for r in rows] == [
                (i * 10, f"order:{i:03d}".encode()) for i in range(10, 51)
            ]
            assert all(p.complete for p in pages)
        exact = await db.query("email", "a@b.example")
        assert exact.keys == [b"user:1"] and exact.complete and exact.continuation is None
        rows, _ = await all_pages(lambda **o: db.keys("order:", limit=9, **o))
        assert [r.key for r in rows] == [f"order:{i:03d}".encode() for i in range(60)]


async def test_a_new_version_moves_the_key_and_a_delete_removes_it():
    async with running_cluster(3) as cluster, client(cluster) as db:
        first = await db.put("o1", b"v", index={"total": [420]})
        await db.put("o2", b"v", index={"total": [420]})
        await db.put("o1", b"v2", context=first.context, index={"total": [99]})
        await db.delete("o2", context=(await db.get("o2")).context)
        page = await db.query("total", 0, 1000, values=True)
        assert [(r.term, r.key, r.values) for r in page.rows] == [(99, b"o1", (b"v2",))]
        assert (await db.keys()).keys == [b"o1"]


async def test_concurrent_writes_are_found_under_both_siblings_terms():
    async with running_cluster(3) as cluster, client(cluster) as db:
        await db.put("k", b"a", index={"tag": ["red"]})
        await db.put("k", b"b", index={"tag": ["blue"]})  # no context: a sibling
        page = await db.query("tag", "a", "z")
        assert [(r.term, r.key) for r in page.rows] == [(b"blue", b"k"), (b"red", b"k")]


async def test_a_dead_replica_is_covered_by_the_others_and_too_few_is_reported():
    async with running_cluster(4) as cluster, client(cluster) as db:
        for i in range(20):
            await db.put(f"k{i:02d}", b"v", index={"n": [i]})
        cluster.crash(cluster.nodes[3])
        await trio.sleep(0.1)
        page = await db.query("n", 0, 100, consistency="quorum", limit=100)
        assert page.keys == [f"k{i:02d}".encode() for i in range(20)]
        assert page.complete
        partial = await db.query("n", 0, 100, consistency="all", limit=100)
        assert not partial.complete and 0 < partial.uncovered_share < 1
        with pytest.raises(Unavailable):
            await db.query("n", 0, 100, consistency="all", complete_only=True)


async def test_a_page_that_can_read_no_arc_is_unavailable_not_an_empty_page():
    """Found by a helper: listing at ALL with one of three nodes down gave 21 empty pages,
    each 'complete: false, uncovered: 1.0', whose continuations moved past every key: a
    client following them saw no keys at all."""
    async with running_cluster(3) as cluster, client(cluster) as db:
        for i in range(20):
            await db.put(f"k{i:02d}", b"v", index={"n": [i]})
        cluster.crash(cluster.nodes[2])
        await cluster.wait_dead(cluster.nodes[2].node.node_id, 60, among=cluster.nodes[:2])
        with pytest.raises(Unavailable, match="no part of the ring can be read"):
            await db.keys(b"", consistency="all")
        with pytest.raises(Unavailable):  # an index query alike
            await db.query("n", 0, 100, consistency="all")
        assert len((await db.query("n", 0, 100, consistency="quorum")).keys) == 20


async def test_a_silent_replica_costs_a_page_one_replica_timeout_not_the_whole_deadline(
    autojump_clock,
) -> None:
    """Asked, then asked again without the replica that failed, then versions fetched: each
    step waits replica_timeout (1 s in these clusters) at most and never past the page's
    deadline, so a page comes back well inside the client's timeout rather than after it."""
    async with running_cluster(3) as cluster, client(cluster) as db:
        for i in range(20):
            await db.put(f"k{i:02d}", b"v", index={"n": [i]})
        cluster.network.pause(cluster.nodes[2].address.host)
        request = QueryRequest("n", encode_term(0), encode_term(100), b"", 100, None, 2, 5000)
        began = trio.current_time()
        reply = await cluster.request(cluster.nodes[0], request)
        took = trio.current_time() - began
        assert isinstance(reply, QueryReply) and reply.coverage["complete"]
        assert len(reply.rows) == 20
        assert 0.9 < took < 1.5, took  # one replica timeout, not the 5 s deadline
        tight = dataclasses.replace(request, timeout_ms=700)
        began = trio.current_time()
        reply = await cluster.request(cluster.nodes[1], tight)
        assert trio.current_time() - began < 0.8  # within its own deadline, however it ends
        cluster.network.resume(cluster.nodes[2].address.host)


async def test_a_query_in_a_hurry_does_not_cut_its_coordinator_off_from_slower_replicas(
    autojump_clock,
):
    """A page with a 1 ms deadline fails the replicas that could not answer within it; that
    is the client's hurry, not evidence they are down. Counted as unreachable, they were
    skipped for seconds by every request on that node: others' queries came back empty
    and key reads at ONE answered not_found for keys that exist."""
    async with running_cluster(3) as cluster, client(cluster) as db:
        for i in range(20):
            await db.put(f"k{i:02d}", b"v", index={"n": [i]})
        coordinator = cluster.nodes[0]
        slow = Delay(DelayKind.CONSTANT, minimum=0.01, mean=0.01)
        cluster.network.set_delay("slow", slow)
        hurried = QueryRequest("n", encode_term(0), encode_term(100), b"", 100, None, 2, 1)
        reply = await cluster.request(coordinator, hurried)
        # Every replica missed the deadline: no arc was read, which is no answer at all.
        assert isinstance(reply, ErrorReply) and reply.code == "unavailable", reply
        cluster.network.clear("slow")
        others = [n.node.node_id for n in cluster.nodes[1:]]
        assert all(coordinator.node.usable(node_id) for node_id in others)
        normal = dataclasses.replace(hurried, timeout_ms=3000)
        reply = await cluster.request(coordinator, normal)
        assert isinstance(reply, QueryReply) and reply.coverage["complete"]
        assert len(reply.rows) == 20


async def test_tampered_or_foreign_continuations_and_bad_pages_are_refused():
    async with running_cluster(3) as cluster, client(cluster) as db:
        for i in range(5):
            await db.put(f"k{i}", b"v", index={"n": [i]})
        page = await db.query("n", 0, 10, limit=2)
        token = page.continuation
        assert token is not None
        raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        raw[-3] ^= 1
        forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
        with pytest.raises(InvalidRequest, match="altered"):
            await db.query("n", 0, 10, continuation=forged)
        with pytest.raises(InvalidRequest, match="another query"):
            await db.query("n", 0, 9, continuation=token)
        with pytest.raises(InvalidRequest, match="above its high end"):
            await db.query("n", 10, 0)
        with pytest.raises(ValueError, match="limit"):
            await db.query("n", 0, 10, limit=0)
        with pytest.raises(TypeError, match=r"query\(\) got an unexpected .*'limt'.*limit"):
            await db.query("n", 0, 10, limt=2)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match=r"keys\(\) got an unexpected .*'limt'"):
            await db.keys(b"k", limt=2)  # type: ignore[call-arg]
        raw_token = continuation_from_text(token)
        issuer_id = cbor2.loads(raw_token)[1]
        issuer = next(n for n in cluster.nodes if n.node.node_id == issuer_id)
        other = next(n for n in cluster.nodes if n is not issuer)
        elsewhere = QueryRequest("n", encode_term(0), encode_term(10), b"", 2, raw_token, 1, 2000)
        refused = await cluster.request(other, elsewhere)
        assert isinstance(refused, ErrorReply)
        assert f"issued by node '{issuer.node.node_id}' (at {issuer.address})" in refused.message
        # The genuine continuation still resumes exactly after the first page.
        rest = await db.query("n", 0, 10, continuation=token, limit=10)
        assert rest.keys == [b"k2", b"k3", b"k4"]


async def test_quorum_merges_versions_so_a_stale_replica_cannot_answer_for_a_replaced_term():
    async with running_cluster(3) as cluster, client(cluster) as db:
        first = await db.put("k", b"old", index={"n": [1]}, consistency="all")
        stale = cluster.nodes[2].storage.get(b"k")
        await db.put("k", b"new", context=first.context, index={"n": [2]}, consistency="all")
        cluster.nodes[2].storage.put_many_now([(b"k", stale)])  # this replica missed it
        for level in ("quorum", "all"):  # "all" always asks the stale replica too
            assert (await db.query("n", 1, consistency=level)).keys == []
            page = await db.query("n", 0, 5, consistency=level, values=True)
            assert [(r.term, r.key, r.values) for r in page.rows] == [(2, b"k", (b"new",))]

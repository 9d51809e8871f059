"""Deletes without a context and overwrites supersede what the cluster holds now."""

from __future__ import annotations

import trio

from p2pindex.sim.network import Delay, DelayKind
from p2pindex.wire.messages import (
    DeleteReply,
    DeleteRequest,
    ErrorReply,
    GetReply,
    GetRequest,
    PutReply,
    PutRequest,
)
from tests.support.cluster import running_cluster


def put(key: bytes, value: bytes, consistency="quorum", *, overwrite=False, context=None):
    return PutRequest(key, value, context, consistency, 2000, overwrite=overwrite)


def get(key: bytes, consistency="all") -> GetRequest:
    return GetRequest(key, consistency, 2000)


async def test_a_delete_without_a_context_deletes_what_is_there():
    async with running_cluster(3) as cluster:
        a, b, c = cluster.nodes
        assert isinstance(await cluster.request(a, put(b"k", b"v1")), PutReply)
        deleted = await cluster.request(b, DeleteRequest(b"k", None, "all", 2000))
        assert isinstance(deleted, DeleteReply), deleted
        assert deleted.read_first and not deleted.unseen_may_remain
        got = await cluster.request(c, get(b"k"))
        assert isinstance(got, GetReply) and got.values == []


async def test_a_quorum_delete_says_an_unseen_version_may_remain_and_still_deletes():
    async with running_cluster(3) as cluster:
        a, b, _ = cluster.nodes
        await cluster.request(a, put(b"k", b"v1", "all"))
        deleted = await cluster.request(b, DeleteRequest(b"k", None, "quorum", 2000))
        assert isinstance(deleted, DeleteReply) and deleted.read_first
        assert deleted.unseen_may_remain, "2 of 3 replicas answered: the third may differ"
        got = await cluster.request(a, get(b"k"))
        assert got.values == []


async def test_a_delete_with_a_context_does_not_read_first():
    async with running_cluster(3) as cluster:
        a, b, _ = cluster.nodes
        first = await cluster.request(a, put(b"k", b"v1"))
        deleted = await cluster.request(b, DeleteRequest(b"k", first.context, "quorum", 2000))
        assert isinstance(deleted, DeleteReply) and not deleted.read_first


async def test_a_put_without_a_context_on_an_existing_key_reports_its_siblings():
    async with running_cluster(3) as cluster:
        a, b, _ = cluster.nodes
        first = await cluster.request(a, put(b"k", b"v1", "all"))
        assert isinstance(first, PutReply) and first.siblings == 1
        second = await cluster.request(a, put(b"k", b"v2", "all"))
        assert isinstance(second, PutReply) and second.siblings == 2
        got = await cluster.request(b, get(b"k"))
        assert sorted(got.values) == [b"v1", b"v2"]


async def test_an_overwrite_replaces_every_sibling_and_runs_twice_without_making_any():
    async with running_cluster(3) as cluster:
        a, b, c = cluster.nodes
        await cluster.request(a, put(b"k", b"x", "all"))
        await cluster.request(b, put(b"k", b"y", "all"))
        for value in (b"alice", b"alice"):  # the README's example, run twice
            reply = await cluster.request(c, put(b"k", value, "all", overwrite=True))
            assert isinstance(reply, PutReply), reply
            assert reply.read_first and reply.siblings == 1 and not reply.unseen_may_remain
        got = await cluster.request(a, get(b"k"))
        assert got.values == [b"alice"]


async def test_many_overwrites_at_once_take_the_batched_path_and_each_supersedes():
    async with running_cluster(3) as cluster:
        a, b, _ = cluster.nodes
        keys = [b"batch-%d" % i for i in range(30)]
        for key in keys:
            await cluster.request(a, put(key, b"old", "all"))
        channel = await cluster.channel(b)
        replies: list = []
        async with trio.open_nursery() as nursery:

            async def one(key: bytes) -> None:
                replies.append(await channel.request(put(key, b"new", "all", overwrite=True)))

            for key in keys:
                nursery.start_soon(one, key)
        await channel.aclose()
        assert all(isinstance(r, PutReply) and r.siblings == 1 for r in replies), replies
        for key in keys:
            assert (await cluster.request(a, get(key))).values == [b"new"]


async def test_an_overwrite_with_a_context_is_refused_and_writes_nothing():
    async with running_cluster(3) as cluster:
        a, _, _ = cluster.nodes
        first = await cluster.request(a, put(b"k", b"v1", "all"))
        refused = await cluster.request(
            a, put(b"k", b"v2", "all", overwrite=True, context=first.context)
        )
        assert isinstance(refused, ErrorReply) and refused.code == "invalid_request"
        assert "context" in refused.message
        assert (await cluster.request(a, get(b"k"))).values == [b"v1"]


async def test_a_delete_whose_read_times_out_is_definite_and_deletes_nothing(autojump_clock):
    """Found by a helper: with one replica stalled, DELETE at ALL answered 504 'timed out
    with 2 of 3 required replies', indeterminate; but only the read had run, and the value
    was still there. The read before a write failing is definite: nothing was written."""
    async with running_cluster(3) as cluster:
        a, b, c = cluster.nodes
        assert isinstance(await cluster.request(a, put(b"k", b"v1", "all")), PutReply)
        slow = Delay(DelayKind.CONSTANT, minimum=2.0, mean=2.0)
        cluster.network.set_delay("slow", slow, hosts=[c.address.host])
        refused = await cluster.request(a, DeleteRequest(b"k", None, "all", 500))
        assert isinstance(refused, ErrorReply) and refused.code == "unavailable", refused
        overwrite = await cluster.request(
            b, PutRequest(b"k", b"v2", None, "all", 500, overwrite=True)
        )
        assert isinstance(overwrite, ErrorReply) and overwrite.code == "unavailable", overwrite
        cluster.network.clear("slow")
        got = await cluster.request(a, get(b"k"))
        assert isinstance(got, GetReply) and got.values == [b"v1"]

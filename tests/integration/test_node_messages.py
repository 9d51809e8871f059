"""What a real node tells a client: refusals in the user's words, and its limits."""

from __future__ import annotations

from p2pindex.config import Limits
from p2pindex.wire.messages import (
    LIMITS_VERSION,
    ErrorReply,
    LimitsReply,
    LimitsRequest,
    PutReply,
    PutRequest,
)
from tests.support.cluster import running_cluster


async def test_a_bad_context_is_refused_in_plain_words() -> None:
    """Before: `bad context: context is not a non-empty CBOR array`."""
    async with running_cluster(1, n_replicas=1) as cluster:
        request = PutRequest(b"k", b"v", b"\xff\x00garbage", "one", 2000)
        reply = await cluster.request(cluster.nodes[0], request)
        assert isinstance(reply, ErrorReply) and reply.code == "invalid_request"
        assert reply.message == (
            "the context is not one p2pindex gave out: pass the context a get or put "
            "returned, unmodified"
        )
        ok = await cluster.request(cluster.nodes[0], PutRequest(b"k", b"v", None, "one", 2000))
        assert isinstance(ok, PutReply)


async def test_a_node_says_its_limits() -> None:
    async with running_cluster(1, n_replicas=1) as cluster:
        reply = await cluster.request(cluster.nodes[0], LimitsRequest())
        limits = Limits()
        assert reply == LimitsReply(
            LIMITS_VERSION, limits.max_key, limits.max_value, limits.max_frame, limits.sibling_max
        )

"""Digest reads against real node processes: a replica's digest names its exact version, a
digest that matches no version the coordinator holds makes it fetch that replica's record
(the read returns what every record together says), and bad digest requests get a clear
refusal with nothing written while the node keeps serving.

The cluster runs without security so that the test can speak as a node would (sending
replica messages directly), which is how it makes one replica hold a version no other has.
"""

from __future__ import annotations

import pytest
import trio

from p2pindex.cli.local_cluster import LocalCluster
from p2pindex.config import Limits
from p2pindex.core import versions
from p2pindex.core.digest import key_digest
from p2pindex.core.versions import VersionVector
from p2pindex.net.trio_transport import TrioTransport
from p2pindex.types import Address
from p2pindex.wire.messages import (
    ErrorReply,
    GetReply,
    GetRequest,
    Message,
    PutReply,
    PutRequest,
    ReplicaAck,
    ReplicaDigestMany,
    ReplicaDigestManyReply,
    ReplicaRead,
    ReplicaReadReply,
    ReplicaWrite,
)
from tests.support.processes import converged_cluster, request_once

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    with converged_cluster(tmp_path_factory.mktemp("cluster"), insecure=True) as cluster:
        yield cluster


def call(address: str, message: Message) -> Message:
    return trio.run(request_once, TrioTransport(Address("127.0.0.1", 0)), address, message)


def record_on(address: str, key: bytes) -> bytes | None:
    reply = call(address, ReplicaRead(key))
    assert isinstance(reply, ReplicaReadReply), reply
    return reply.record


def test_a_replica_digest_names_its_exact_version(cluster: LocalCluster) -> None:
    first, second, _third = cluster.addresses
    assert isinstance(call(first, PutRequest(b"named", b"v", None, "all", 5000)), PutReply)
    record = record_on(second, b"named")
    assert record is not None
    reply = call(second, ReplicaDigestMany([b"named", b"never-written"]))
    assert reply == ReplicaDigestManyReply([key_digest(b"named", record), None])


def test_a_digest_matching_no_version_makes_the_read_fetch_the_record(
    cluster: LocalCluster,
) -> None:
    first, second, third = cluster.addresses
    key = b"diverged"
    assert isinstance(call(first, PutRequest(key, b"everyone", None, "all", 5000)), PutReply)
    # ``third`` alone gets a concurrent version (as a write whose other copies were lost):
    # its digest now matches nothing ``first`` holds.
    stored = record_on(third, key)
    assert stored is not None
    lone = versions.update(None, VersionVector(), "lone-writer", b"only-on-third")
    merged = versions.merge(versions.decode_object(stored), lone)
    assert call(third, ReplicaWrite(key, versions.encode_object(merged))) == ReplicaAck()
    digests = call(third, ReplicaDigestMany([key]))
    assert isinstance(digests, ReplicaDigestManyReply)
    assert digests.digests != [key_digest(key, record_on(first, key) or b"")]
    got = call(first, GetRequest(key, "all", 5000))
    assert isinstance(got, GetReply), got
    assert sorted(got.values) == [b"everyone", b"only-on-third"]
    # The read repaired the replicas that lacked the version.
    for _ in range(100):
        if all(
            record_on(address, key) == versions.encode_object(merged) for address in (first, second)
        ):
            break
        trio.run(trio.sleep, 0.1)
    else:
        pytest.fail("read repair did not reach the other replicas")


@pytest.mark.parametrize(
    "bad",
    [
        "an oversized key",
        "a key that is not bytes",
    ],
)
def test_a_bad_digest_request_is_refused_and_nothing_changes(
    cluster: LocalCluster, bad: str
) -> None:
    first, second, _third = cluster.addresses
    kept = f"kept-{bad}".encode()
    assert isinstance(call(first, PutRequest(kept, b"v", None, "all", 5000)), PutReply)
    before = record_on(second, kept)
    if bad == "an oversized key":
        reply = call(second, ReplicaDigestMany([kept, b"x" * (Limits().max_key + 1)]))
    else:
        reply = call(second, ReplicaDigestMany([kept, "text"]))  # type: ignore[list-item]
    assert isinstance(reply, ErrorReply), reply
    assert "keys" in reply.message, reply.message
    assert record_on(second, kept) == before
    got = call(second, GetRequest(kept, "all", 5000))  # the node keeps serving
    assert isinstance(got, GetReply) and got.values == [b"v"]

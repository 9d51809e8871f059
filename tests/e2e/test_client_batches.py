"""Client batches (put_many, get_many, delete_many) against real node processes (security
on), and bad batches sent raw: a clear refusal per item or for the whole batch, nothing
wrong written, the node keeps serving."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cbor2
import pytest
import trio

import p2pindex
from p2pindex.cli.local_cluster import LocalCluster
from p2pindex.config import Limits
from p2pindex.net.secure.connector import SecureConnector
from p2pindex.security.credentials import ClientCredentials
from p2pindex.wire.codec import decode_item, encode_item
from p2pindex.wire.messages import (
    BATCH_VERSION,
    MAX_BATCH_ITEMS,
    BatchReply,
    BatchRequest,
    ErrorReply,
    GetReply,
    GetRequest,
    Message,
    PutReply,
    PutRequest,
    StatusRequest,
)
from tests.support.processes import converged_cluster, request_once

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    with converged_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


async def call(cluster: LocalCluster, address: str, message: Message) -> Message:
    assert cluster.credentials is not None
    connector = SecureConnector(ClientCredentials.load(cluster.credentials))
    return await request_once(connector, address, message, timeout=20)


def put(key: bytes, value: bytes = b"v") -> bytes:
    return encode_item(PutRequest(key, value, None, "all", 5000))


async def read_all(cluster: LocalCluster, key: bytes) -> list[bytes]:
    reply = await call(cluster, cluster.addresses[0], GetRequest(key, "all", 5000))
    assert isinstance(reply, GetReply), reply
    return reply.values


def items_of(reply: Message) -> list[Message]:
    assert isinstance(reply, BatchReply), reply
    return [decode_item(item, Limits()) for item in reply.replies]


async def puts_timed(cluster: LocalCluster) -> int:
    total = 0
    for address in cluster.addresses:
        reply = await call(cluster, address, StatusRequest())
        total += reply.status["statistics"].get("latency.put.all.count", 0)
    return total


async def test_put_many_get_many_delete_many_round_trip(cluster):
    async with p2pindex.connect(cluster.addresses, credentials=cluster.credentials) as db:
        items = [(f"b:{i}", f"value {i}") for i in range(250)]
        timed = await puts_timed(cluster)
        written = await db.put_many(items, consistency="all")
        assert written.ok, [o.error for o in written.failed]
        # Each key of a batch is timed as the same request sent alone would be.
        assert await puts_timed(cluster) - timed == 250
        assert [o.key for o in written] == [f"b:{i}".encode() for i in range(250)]
        read = await db.get_many(f"b:{i}" for i in range(250))
        assert read.ok and [o.unwrap().value for o in read] == [
            f"value {i}".encode() for i in range(250)
        ]
        # Each item carries its own context: writing back with it replaces, not siblings.
        again = await db.put_many(
            p2pindex.PutItem(o.key, b"new", o.unwrap().context) for o in read.outcomes[:10]
        )
        assert again.ok and all(o.unwrap().siblings == 1 for o in again)
        gone = await db.delete_many(f"b:{i}" for i in range(5))
        assert gone.ok
        after = await db.get_many([b"b:0", b"b:4", b"b:6", b"b:10"])
        assert [o.unwrap().values for o in after] == [[], [], [b"new"], [b"value 10"]]


async def test_a_client_batch_with_bad_items_and_repeated_keys_fails_only_those(cluster):
    async with p2pindex.connect(cluster.addresses, credentials=cluster.credentials) as db:
        big = b"x" * (db.limits.max_value + 1)
        result = await db.put_many(
            [
                ("mix:ok1", "a"),
                ("", "empty key"),
                ("mix:big", big),
                ("mix:dup", "one"),
                ("mix:ok2", "b", "not base64!"),
                ("mix:dup", "two"),
                ("mix:ok3", "c"),
                42,
            ]
        )
        errors = [o.error for o in result]
        assert [o.ok for o in result] == [True, False, False, False, False, False, True, False]
        assert "empty" in str(errors[1])
        assert "limit" in str(errors[2])
        assert "appears 2 times" in str(errors[3]) and "appears 2 times" in str(errors[5])
        assert "context" in str(errors[4])
        assert "PutItem" in str(errors[7])
        assert all(o.definite for o in result)
        read = await db.get_many(["mix:ok1", "mix:ok3", "mix:dup", "mix:big", "mix:ok2"])
        assert [o.unwrap().values for o in read] == [[b"a"], [b"c"], [], [], []]


async def bad_input_count(cluster: LocalCluster, address) -> int:
    reply = await call(cluster, address, StatusRequest())
    return reply.status["statistics"].get("rejected.bad_input", 0)


async def test_bad_batches_sent_raw_are_refused_and_the_node_keeps_serving(cluster):
    address = cluster.addresses[1]
    counted_before = await bad_input_count(cluster, address)
    # Over the count limit: refused whole, nothing written.
    over = BatchRequest(
        BATCH_VERSION, [put(f"over:{i}".encode()) for i in range(MAX_BATCH_ITEMS + 1)]
    )
    reply = await call(cluster, address, over)
    assert isinstance(reply, ErrorReply) and reply.code == "invalid_request", reply
    assert "over the limit of 1000" in reply.message
    assert await read_all(cluster, b"over:0") == []
    # An unknown batch version: refused whole.
    reply = await call(cluster, address, BatchRequest(BATCH_VERSION + 1, [put(b"ver:1")]))
    assert isinstance(reply, ErrorReply) and "version" in reply.message
    assert await read_all(cluster, b"ver:1") == []
    # Valid, garbage, wrong-type, over-limit, traced and repeated items in one batch.
    garbage = [
        put(b"raw:ok1", b"one"),
        b"\xff\x00garbage",
        cbor2.dumps([99, {}]),
        cbor2.dumps([PutRequest.TYPE, {"key": b"raw:x"}]),
        encode_item(StatusRequest()),
        put(b"raw:big", b"x" * (Limits().max_value + 1)),
        encode_item(PutRequest(b"raw:traced", b"t", None, "all", 5000, trace=True)),
        put(b"raw:dup", b"1"),
        put(b"raw:dup", b"2"),
        cbor2.dumps([PutRequest.TYPE, {"key": 5}]),
        put(b"raw:ok2", b"two"),
        encode_item(GetRequest(b"raw:never", "all", 5000)),
    ]
    replies = items_of(await call(cluster, address, BatchRequest(BATCH_VERSION, garbage)))
    assert len(replies) == len(garbage)
    assert isinstance(replies[0], PutReply) and isinstance(replies[10], PutReply)
    for position in range(1, 10):
        refusal = replies[position]
        assert isinstance(refusal, ErrorReply), (position, refusal)
        assert refusal.code == "invalid_request", (position, refusal)
        assert f"request {position + 1} of the batch" in refusal.message or (
            "appears 2 times" in refusal.message
        ), refusal.message
    assert "not valid CBOR" in replies[1].message
    assert "unknown message type" in replies[2].message
    assert "missing field" in replies[3].message
    assert "StatusRequest" in replies[4].message
    assert "exceeds max_value" in replies[5].message
    assert "trace" in replies[6].message
    assert isinstance(replies[11], GetReply) and replies[11].values == []
    # Two batches refused whole and nine items refused alone, each counted as bad input.
    assert await bad_input_count(cluster, address) - counted_before == 2 + 9
    for key, values in [
        (b"raw:ok1", [b"one"]),
        (b"raw:ok2", [b"two"]),
        (b"raw:dup", []),
        (b"raw:big", []),
        (b"raw:traced", []),
        (b"raw:x", []),
    ]:
        assert await read_all(cluster, key) == values, key
    # An empty batch is answered with an empty reply.
    reply = await call(cluster, address, BatchRequest(BATCH_VERSION, []))
    assert items_of(reply) == []
    # The node still serves single requests and batches.
    ok = await call(cluster, address, BatchRequest(BATCH_VERSION, [put(b"after")]))
    assert isinstance(items_of(ok)[0], PutReply)
    status = await call(cluster, address, StatusRequest())
    assert status.status["state"] in ("active", "ACTIVE")


async def test_a_raw_batch_over_the_frame_limit_closes_only_its_connection(cluster):
    # The client splits batches to fit; a peer that sends a larger frame anyway is refused
    # as any oversized frame is (its connection closed), and nothing of it is written.
    address = cluster.addresses[2]
    value = b"y" * (Limits().max_value - 100)
    items = [put(f"huge:{i}".encode(), value) for i in range(17)]
    lost = False
    try:
        await call(cluster, address, BatchRequest(BATCH_VERSION, items))
    except* p2pindex.ConnectionLost:
        lost = True
    assert lost
    assert await read_all(cluster, b"huge:0") == []
    ok = await call(cluster, address, BatchRequest(BATCH_VERSION, [put(b"huge:after")]))
    assert isinstance(items_of(ok)[0], PutReply)


async def test_a_batch_over_the_frame_limit_is_split_by_the_client(cluster):
    # 40 values of 512 KiB (20 MiB) cannot go in one 16 MiB frame: the client splits them.
    async with p2pindex.connect(cluster.addresses, credentials=cluster.credentials) as db:
        value = b"z" * (512 * 1024)
        written = await db.put_many((f"large:{i}", value) for i in range(40))
        assert written.ok, [str(o.error) for o in written.failed]
        read = await db.get_many(f"large:{i}" for i in range(40))
        # Values that do not fit one batch reply beside the others come back per key as
        # a clear refusal (a read is safe to repeat alone); the rest arrive whole.
        for outcome in read:
            if outcome.ok:
                assert outcome.unwrap().values == [value]
            else:
                assert "get that key alone" in str(outcome.error)
        assert sum(o.ok for o in read) >= 20


def cli(cluster: LocalCluster, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, **cluster.client_environment())
    return subprocess.run(
        [sys.executable, "-m", "p2pindex", *args, "--node", cluster.addresses[0]],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_command_line_puts_many_from_stdin(cluster):
    lines = [
        json.dumps({"key": "cli:1", "value": "one"}),
        json.dumps({"key": "cli:2", "value": "two"}),
        "not json",
        json.dumps({"key": "cli:3"}),
        json.dumps({"key": "cli:4", "value": "four"}),
    ]
    done = await trio.to_thread.run_sync(
        lambda: cli(cluster, "put", "--many", "-", stdin="\n".join(lines) + "\n")
    )
    assert done.returncode == 1, done
    assert "line 3" in done.stderr + done.stdout and "line 4" in done.stderr + done.stdout
    keys = "cli:1\ncli:4\ncli:3\n"
    got = await trio.to_thread.run_sync(
        lambda: cli(cluster, "get", "--many", "-", "--format", "json", stdin=keys)
    )
    rows = [json.loads(line) for line in got.stdout.splitlines()]
    assert [row["key"] for row in rows] == ["cli:1", "cli:4", "cli:3"]
    assert [row.get("values") for row in rows] == [["one"], ["four"], []]


async def test_the_blocking_client_has_the_same_batches(cluster):
    def blocking() -> None:
        with p2pindex.Client(cluster.addresses, credentials=cluster.credentials) as db:
            assert db.put_many([("sync:1", "a"), ("sync:2", "b")]).ok
            read = db.get_many(["sync:1", "sync:2", "sync:3"])
            assert [o.unwrap().values for o in read] == [[b"a"], [b"b"], []]
            assert db.delete_many(["sync:1"]).ok
            assert db.get_many(["sync:1"])[0].unwrap().values == []

    await trio.to_thread.run_sync(blocking)

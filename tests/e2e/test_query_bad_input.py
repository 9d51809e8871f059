"""Bad index input sent to real node processes (security on): one clear refusal each,
nothing written, the node keeps serving, a counter records it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cbor2
import pytest
import trio

import p2pindex
from p2pindex.cli.local_cluster import LocalCluster
from p2pindex.core import terms
from p2pindex.net.secure.connector import SecureConnector
from p2pindex.security.authority import Authority
from p2pindex.security.certs import Role
from p2pindex.security.credentials import ClientCredentials
from p2pindex.wire.messages import (
    ErrorReply,
    GetReply,
    GetRequest,
    IndexScan,
    Message,
    PutReply,
    PutRequest,
    QueryReply,
    QueryRequest,
    StatusRequest,
)
from tests.support.processes import converged_cluster, request_once

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    # The tests read and write at ALL: every node must see every other alive first.
    with converged_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


async def call(connector: SecureConnector, address: str, message: Message) -> Message:
    return await request_once(connector, address, message)


def admin(cluster: LocalCluster) -> SecureConnector:
    assert cluster.credentials is not None
    return SecureConnector(ClientCredentials.load(cluster.credentials))


def scoped(cluster: LocalCluster, role: Role, prefix: bytes) -> SecureConnector:
    assert cluster.authority_dir is not None
    return SecureConnector(Authority.load(Path(cluster.authority_dir)).credentials(role, prefix))


def query(index="n", lo=0, hi=10, *, prefix=b"", limit=10, continuation=None) -> QueryRequest:
    return QueryRequest(
        index,
        None if lo is None else terms.encode_term(lo),
        None if hi is None else terms.encode_term(hi),
        prefix,
        limit,
        continuation,
        "quorum",
        5000,
    )


async def statistics(cluster: LocalCluster, address: str) -> dict:
    reply = await call(admin(cluster), address, StatusRequest())
    return reply.status["statistics"]


async def wait_ready(cluster: LocalCluster, address: str) -> None:
    with trio.fail_after(30):
        while True:
            reply = await call(admin(cluster), address, query())
            if isinstance(reply, QueryReply) and reply.coverage["complete"]:
                return
            await trio.sleep(0.2)


BAD_TERMS = [
    (cbor2.dumps(["n", 1.5]), "integer, text or bytes"),
    (cbor2.dumps(["n", b"x" * 300]), "too long"),
    (cbor2.dumps(["n" * 65, 1]), "characters long"),
    (cbor2.dumps(["n", *[item for i in range(33) for item in ("n", i)]][1:]), "at most 32"),
    (cbor2.dumps([7, 1]), "must be text"),
    (cbor2.dumps({"n": 1}), "flat array"),
]


async def test_bad_terms_on_a_put_are_refused_and_nothing_is_written(cluster):
    address = str(cluster.nodes[0].address)
    await wait_ready(cluster, address)
    before = (await statistics(cluster, address)).get("rejected.bad_index_terms", 0)
    db = admin(cluster)
    for number, (raw, problem) in enumerate(BAD_TERMS):
        key = f"bad{number}".encode()
        reply = await call(db, address, PutRequest(key, b"v", None, "all", 5000, index=raw))
        assert isinstance(reply, ErrorReply), (problem, reply)
        assert reply.code == "invalid_request" and problem in reply.message, reply
        got = await call(db, address, GetRequest(key, "all", 5000))
        assert isinstance(got, GetReply) and got.values == []
    after = (await statistics(cluster, address)).get("rejected.bad_index_terms", 0)
    assert after - before == len(BAD_TERMS)
    good = PutRequest(b"good", b"v", None, "all", 5000, index=terms.encode((("n", 3),)))
    assert isinstance(await call(db, address, good), PutReply)


async def test_bad_queries_and_continuations_are_refused_and_the_node_keeps_serving(cluster):
    address = str(cluster.nodes[1].address)
    await wait_ready(cluster, address)
    db = admin(cluster)
    for i in range(5):
        put = PutRequest(f"q{i}".encode(), b"v", None, "all", 5000, index=terms.encode((("m", i),)))
        assert isinstance(await call(db, address, put), PutReply)
    first = await call(db, address, query("m", 0, 10, limit=2))
    assert isinstance(first, QueryReply) and first.continuation is not None
    tampered = bytearray(first.continuation)
    tampered[-2] ^= 0x40
    before = (await statistics(cluster, address)).get("rejected.bad_query", 0)
    bad = [
        (query("m", 0, 10, limit=0), "page size 0"),
        (query("m", 0, 10, limit=1001), "page size 1001"),
        (query("m", 9, 1), "above its high end"),
        (query("m", 1, b"z"), "one of each"),
        (query("m", 0, 10, continuation=bytes(tampered)), "altered"),
        (query("m", 0, 9, continuation=first.continuation), "another query"),
        (query("m", 0, 10, continuation=b"junk"), "not one this cluster issued"),
        (query("$key", 0, 1), "reserved"),
    ]
    for message, problem in bad:
        reply = await call(db, address, message)
        assert isinstance(reply, ErrorReply) and reply.code == "invalid_request", (problem, reply)
        assert problem in reply.message, (problem, reply.message)
    after = (await statistics(cluster, address)).get("rejected.bad_query", 0)
    assert after - before == len(bad)
    rest = await call(db, address, query("m", 0, 10, continuation=first.continuation))
    assert isinstance(rest, QueryReply)
    assert [key for _term, key in rest.rows] == [b"q2", b"q3", b"q4"]


async def test_capabilities_bound_what_a_query_may_see(cluster):
    address = str(cluster.nodes[2].address)
    await wait_ready(cluster, address)
    db = admin(cluster)
    for key in (b"user:1", b"order:1"):
        put = PutRequest(key, b"v", None, "all", 5000, index=terms.encode((("p", 1),)))
        assert isinstance(await call(db, address, put), PutReply)
    reader = scoped(cluster, Role.READ, b"user:")
    denied = await call(reader, address, query("p", 0, 5))
    assert isinstance(denied, ErrorReply) and denied.code == "permission_denied"
    assert "user:" in denied.message and "(asked for every key: no prefix)" in denied.message
    allowed = await call(reader, address, query("p", 0, 5, prefix=b"user:"))
    assert isinstance(allowed, QueryReply)
    assert [key for _term, key in allowed.rows] == [b"user:1"]
    scan = IndexScan(
        "p", terms.encode_term(0), terms.encode_term(5), b"", [], [], None, None, 5, True
    )
    refused = await call(reader, address, scan)
    assert isinstance(refused, ErrorReply) and refused.code == "permission_denied"
    stats = await statistics(cluster, address)
    assert stats.get("security.denied.prefix", 0) >= 1


def cli(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, **cluster.client_environment())
    node = str(cluster.nodes[0].address)
    return subprocess.run(
        [sys.executable, "-m", "p2pindex", *args, "--node", node],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_command_line_puts_terms_pages_and_explains(cluster):
    await wait_ready(cluster, str(cluster.nodes[0].address))
    for number, total in enumerate((420, 120, 990)):
        done = await trio.to_thread.run_sync(
            lambda n=number, t=total: cli(cluster, "put", f"cli:{n}", "v", "--index", f"cli={t}")
        )
        assert done.returncode == 0, done.stderr
    done = await trio.to_thread.run_sync(
        lambda: cli(cluster, "query", "cli", "--range", "100", "500", "--limit", "1", "--all")
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["120\tcli:1", "420\tcli:0"]
    done = await trio.to_thread.run_sync(
        lambda: cli(cluster, "query", "cli", "420", "--format", "json", "--explain")
    )
    document = json.loads(done.stdout)
    assert [row["key"] for row in document["rows"]] == ["cli:0"]
    assert document["complete"] and "plan" in document["coverage"]
    done = await trio.to_thread.run_sync(lambda: cli(cluster, "keys", "--prefix", "cli:"))
    assert done.stdout.splitlines() == ["cli:0", "cli:1", "cli:2"]
    done = await trio.to_thread.run_sync(lambda: cli(cluster, "query", "cli", "--range", "9", "1"))
    assert done.returncode != 0 and "above its high end" in done.stderr


def cli_bytes(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess:
    """``cli`` with stdout as bytes: keys and values that are not UTF-8 print as stored."""
    env = dict(os.environ, **cluster.client_environment())
    return subprocess.run(
        [sys.executable, "-m", "p2pindex", *args, "--node", str(cluster.nodes[0].address)],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )


def typed(raw: bytes) -> str:
    """An argument as the OS hands Python bytes that are not UTF-8 (surrogate escapes)."""
    return raw.decode("utf-8", "surrogateescape")


async def test_the_command_line_keeps_bytes_and_terms_apart(cluster):
    """Keys, terms and values that are not UTF-8, and text terms that look like integers,
    go through `put`, `keys` and `query` without a codec error or two spellings alike."""
    await wait_ready(cluster, str(cluster.nodes[0].address))

    async def run(*args: str) -> subprocess.CompletedProcess:
        return await trio.to_thread.run_sync(lambda: cli_bytes(cluster, *args))

    for key, value, term in (
        (typed(b"bin:\xff"), typed(b"\xfe\x01"), "6"),
        ("bin:\\xff", "v", "text:6"),
        ("bin:-", "w", "-abc"),
        ("bin:b", "x", "bin=" + typed(b"\xfe")),
    ):
        index = term if term.startswith("bin=") else f"bt={term}"
        done = await run("put", key, value, "--index", index, "--consistency", "all")
        assert done.returncode == 0, done.stderr
    done = await run("keys", "--prefix", "bin:", "--values", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"] == [
        {"key": "bin:-", "encoding": "utf-8", "values": ["w"]},
        {"key": "bin:\\xff", "encoding": "utf-8", "values": ["v"]},
        {"key": "bin:b", "encoding": "utf-8", "values": ["x"]},
        {"key_base64": "YmluOv8=", "encoding": "base64", "values": ["/gE="]},
    ]
    done = await run("query", "bt", "--range", "0", "9", "--values")
    assert done.stdout == b"6\tbin:\xff\t\xfe\x01\n"
    done = await run("query", "bt", "--range", "-abc", "text:7", "--prefix", "bin:")
    assert done.stdout.split(b"\n") == [b"-abc\tbin:-", b"text:6\tbin:\\xff", b""]
    done = await run("query", "bt", "-abc", "--format", "json")
    assert [row["key"] for row in json.loads(done.stdout)["rows"]] == ["bin:-"]
    done = await run("query", "bin", typed(b"\xfe"), "--format", "json")
    assert json.loads(done.stdout)["rows"] == [{"key": "bin:b", "term_base64": "/g=="}]
    done = await run("keys", "--prefix", typed(b"bin:\xff"))
    assert (done.returncode, done.stdout) == (0, b"bin:\xff\n"), done.stderr
    done = await run("query", "bt", "--range", "b", "a")
    assert done.returncode == 1
    assert b"the range's low end 'b' is above its high end 'a'" in done.stderr
    for args in (("query", typed(b"\xfe"), "1"), ("put", "k", "v", "--index", "\udcfe=1")):
        done = await run(*args)
        assert done.returncode == 2 and b"is not valid UTF-8" in done.stderr, done.stderr
        assert b"codec" not in done.stderr


async def test_the_sync_client_queries_and_lists(cluster):
    await wait_ready(cluster, str(cluster.nodes[0].address))

    def use() -> tuple:
        with p2pindex.Client(cluster.addresses, credentials=cluster.credentials) as db:
            db.put("sync:1", b"v", index={"total": [420], "email": ["a@b.example"]})
            ranged = db.query("total", 400, 450, prefix=b"sync:")
            exact = db.query("email", "a@b.example", consistency="quorum", prefix=b"sync:")
            return ranged.rows, exact.keys, db.keys("sync:").keys

    rows, exact, keys = await trio.to_thread.run_sync(use)
    assert [(row.term, row.key) for row in rows] == [(420, b"sync:1")]
    assert exact == [b"sync:1"] and keys == [b"sync:1"]

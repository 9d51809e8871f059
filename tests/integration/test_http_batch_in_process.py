"""``POST /v1/batch`` asked of real nodes in-process (simulated network, autojump clock).

What a batch must do that the single-key API already does: each item answered with the
status and fields its ``/v1/kv/{key}`` request would have had (values, contexts, siblings,
404s), binary keys, per-item authorisation, and the items served by the node's batch
handlers in one call for the writes and one for the reads. The hostile-input cases are
asked of a real node process in ``tests/e2e/test_http_batch_bad_input.py``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pindex.http.api import HttpApi
from p2pindex.net.channel import BatchHandler, Respond
from p2pindex.node.node import Node
from p2pindex.security.bearer import issue_bearer
from p2pindex.security.certs import Role
from p2pindex.wire.messages import Message
from tests.integration.test_http_api_in_process import ask, header
from tests.integration.test_security_cluster import secure_cluster
from tests.support.cluster import running_cluster


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def batch(
    api: HttpApi, requests: list[dict[str, Any]], token: str | None = None, **envelope: Any
) -> list[dict[str, Any]]:
    """The results of a batch that must be answered 200."""
    body = json.dumps({"requests": requests, **envelope}).encode()
    answer = await ask(api, "POST", "/v1/batch", body, token=token)
    assert answer.status == 200, answer.body
    assert answer.content_type == "application/json"
    results = json.loads(answer.body)["results"]
    assert len(results) == len(requests)
    return results


async def test_puts_gets_and_deletes_are_answered_as_their_single_key_requests(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running_cluster(3) as cluster:
        api = HttpApi(cluster.nodes[0].node)
        binary = b"\xff\x00bin"
        written = await batch(
            api,
            [
                {"op": "put", "key": "a", "value": b64(b"alpha")},
                {"op": "put", "key_b64": b64(binary), "value": b64(b"\x00\x01")},
                {"op": "put", "key": "café", "value": b64(b"")},
            ],
        )
        assert [r["status"] for r in written] == [204, 204, 204]
        assert all(r["sibling_count"] == 1 and r["context"] for r in written)
        # The binary-keyed and text-keyed writes are the keys the single-key API sees.
        single = await ask(api, "GET", "/v1/kv/%FF%00bin")
        assert (single.status, single.body) == (200, b"\x00\x01")
        assert (await ask(api, "GET", "/v1/kv/caf%C3%A9")).status == 200

        read = await batch(
            api,
            [
                {"op": "get", "key": "a"},
                {"op": "get", "key_b64": b64(binary), "consistency": "all"},
                {"op": "get", "key": "missing"},
            ],
        )
        assert read[0]["status"] == 200
        assert base64.b64decode(read[0]["value"]) == b"alpha"
        assert read[0]["context"] == header(await ask(api, "GET", "/v1/kv/a"), "x-p2p-context")
        assert base64.b64decode(read[1]["value"]) == b"\x00\x01"
        assert read[2]["status"] == 404
        assert read[2]["problem"]["type"] == "urn:p2pindex:error:not_found"
        assert read[2]["problem"]["outcome"] == "definite"
        assert "context" in read[2]  # as the single-key 404's header: a put may pass it

        # A write with the read's context replaces the value (no sibling), then a delete.
        replaced = await batch(
            api,
            [
                {"op": "put", "key": "a", "value": b64(b"beta"), "context": read[0]["context"]},
                {"op": "delete", "key_b64": b64(binary), "context": read[1]["context"]},
            ],
        )
        assert [r["status"] for r in replaced] == [204, 204]
        assert replaced[0]["sibling_count"] == 1
        assert (await ask(api, "GET", "/v1/kv/a")).body == b"beta"
        assert (await ask(api, "GET", "/v1/kv/%FF%00bin")).status == 404


async def test_concurrent_writes_answer_300_with_every_sibling_and_a_context_that_resolves(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running_cluster(3) as cluster:
        api = HttpApi(cluster.nodes[0].node)
        for value in (b"one", b"two"):  # no context: concurrent writes
            (result,) = await batch(api, [{"op": "put", "key": "k", "value": b64(value)}])
            assert result["status"] == 204
        assert result["sibling_count"] == 2
        (read,) = await batch(api, [{"op": "get", "key": "k"}])
        assert read["status"] == 300
        assert sorted(base64.b64decode(v) for v in read["siblings"]) == [b"one", b"two"]
        single = json.loads((await ask(api, "GET", "/v1/kv/k")).body)
        assert read["context"] == single["context"]
        (resolved,) = await batch(
            api, [{"op": "put", "key": "k", "value": b64(b"both"), "context": read["context"]}]
        )
        assert resolved["sibling_count"] == 1
        (after,) = await batch(api, [{"op": "get", "key": "k"}])
        assert (after["status"], base64.b64decode(after["value"])) == (200, b"both")


async def test_items_are_served_in_one_call_for_writes_and_one_for_reads(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One replica round per batch: the node's batch handlers are called once for all the
    writes and once for all the reads, never once per item; and each is timed per
    operation, as the single-key requests are."""
    async with running_cluster(3) as cluster:
        node = cluster.nodes[0].node
        calls: list[list[str]] = []
        handlers = node.client_batch_handlers

        def counting() -> dict[type[Message], BatchHandler]:
            def wrap(serve: BatchHandler) -> BatchHandler:
                async def counted(messages: list[Message], respond: Respond) -> None:
                    calls.append(sorted(type(m).__name__ for m in messages))
                    await serve(messages, respond)

                return counted

            wrapped: dict[int, BatchHandler] = {}
            return {
                kind: wrapped.setdefault(id(serve), wrap(serve))
                for kind, serve in handlers().items()
            }

        monkeypatch.setattr(node, "client_batch_handlers", counting)
        api = HttpApi(node)
        before = {name: h.count for name, h in node.stats.histograms().items()}
        results = await batch(
            api,
            [
                *({"op": "put", "key": f"p{i}", "value": b64(b"v")} for i in range(4)),
                {"op": "delete", "key": "d"},
                *({"op": "get", "key": f"g{i}"} for i in range(3)),
            ],
        )
        assert [r["status"] for r in results] == [204] * 5 + [404] * 3
        assert sorted(calls) == [
            ["DeleteRequest", "PutRequest", "PutRequest", "PutRequest", "PutRequest"],
            ["GetRequest", "GetRequest", "GetRequest"],
        ]
        after = node.stats.histograms()

        def grew(name: str) -> int:
            return after[name].count - before.get(name, 0)

        assert (grew("latency.put.quorum"), grew("latency.delete.quorum")) == (4, 1)
        assert grew("latency.get.quorum") == 3
        counters = node.stats.counters()
        assert counters["http.batch_items.2xx"] == 5
        assert counters["http.batch_items.4xx"] == 3


async def test_a_repeated_key_is_refused_for_every_item_and_nothing_is_done_for_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running_cluster(3) as cluster:
        api = HttpApi(cluster.nodes[0].node)
        results = await batch(
            api,
            [
                {"op": "put", "key": "dup", "value": b64(b"first")},
                {"op": "put", "key": "other", "value": b64(b"fine")},
                {"op": "delete", "key": "dup"},
                {"op": "get", "key_b64": b64(b"dup")},  # the same key, spelled in base64
            ],
        )
        assert [r["status"] for r in results] == [400, 204, 400, 400]
        for position in (0, 2, 3):
            detail = results[position]["problem"]["detail"]
            assert f"requests[{position}]" in detail and "'dup' appears 3 times" in detail
        assert (await ask(api, "GET", "/v1/kv/dup")).status == 404
        assert (await ask(api, "GET", "/v1/kv/other")).body == b"fine"


async def test_a_prefix_token_and_a_read_only_token_are_refused_per_item(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with secure_cluster(tmp_path, size=1) as cluster:
        node: Node = cluster.members[0].node
        api = HttpApi(node)
        scoped = issue_bearer(cluster.authority, Role.WRITE, b"app/", 3600)
        results = await batch(
            api,
            [
                {"op": "put", "key": "app/1", "value": b64(b"mine")},
                {"op": "put", "key": "other", "value": b64(b"theirs")},
                {"op": "get", "key": "secret"},
                {"op": "get", "key": "app/9"},
            ],
            token=scoped,
            consistency="one",  # one node of N=3
        )
        assert [r["status"] for r in results] == [204, 403, 403, 404], results
        assert "prefix 'app/'" in results[1]["problem"]["detail"]
        assert results[1]["problem"]["outcome"] == "definite"
        assert "secret" in results[2]["problem"]["detail"]

        reader = issue_bearer(cluster.authority, Role.READ, b"", 3600)
        results = await batch(
            api,
            [
                {"op": "get", "key": "app/1"},
                {"op": "put", "key": "app/2", "value": b64(b"x")},
                {"op": "delete", "key": "app/3"},
            ],
            token=reader,
            consistency="one",
        )
        assert [r["status"] for r in results] == [200, 403, 403]
        assert all("write role" in r["problem"]["detail"] for r in results[1:])
        assert cluster.members[0].storage.get(b"app/2") is None
        counters = node.stats.counters()
        assert counters["security.denied.prefix"] >= 2
        assert counters["security.denied.role"] >= 2

        # No token: the whole batch is refused as a single-key request would be.
        body = json.dumps({"requests": [{"op": "get", "key": "app/1"}]}).encode()
        unauthenticated = await ask(api, "POST", "/v1/batch", body)
        assert unauthenticated.status == 401


def test_an_answer_over_the_budget_refuses_the_largest_reads_and_keeps_the_writes() -> None:
    """As a native batch reply: values that do not fit beside the others are refused per
    key (a read is safe to repeat alone); write results always stay."""
    from p2pindex.http.batch_api import _fit
    from p2pindex.wire.messages import GetReply, PutReply

    results: list[dict[str, Any]] = [
        {"status": 200, "value": "A" * 4000, "context": "c"},
        {"status": 204, "context": "c", "sibling_count": 1},
        {"status": 300, "siblings": ["B" * 3000, "C" * 3000], "context": "c"},
        {"status": 200, "value": "D" * 100, "context": "c"},
    ]
    served: dict[int, Message] = {
        0: GetReply([b"a"], b"c"),
        1: PutReply(b"c"),
        2: GetReply([b"b", b"c"], b"c"),
        3: GetReply([b"d"], b"c"),
    }
    _fit(results, served, 5200)
    assert [r["status"] for r in results] == [200, 204, 400, 200]
    assert "get that key alone" in results[2]["problem"]["detail"]
    assert results[2]["problem"]["outcome"] == "definite"
    _fit(results, served, 100)
    assert [r["status"] for r in results] == [400, 204, 400, 400]

"""``POST /v1/batch`` against a real secure node process: what a hostile or careless client
sends, each case answered with its own clear error and nothing else disturbed.

One node is started for the whole module (a process start costs seconds; every case here
is a request), so the cases use keys of their own and never depend on each other's order.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pindex.cli.local_cluster import LocalCluster
from p2pindex.security.authority import Authority
from p2pindex.security.bearer import issue_bearer
from p2pindex.security.certs import Role
from p2pindex.wire.messages import MAX_BATCH_ITEMS
from tests.e2e.test_http_api import Http, raw

pytestmark = pytest.mark.e2e

ONE = b'{"requests": [{"op": "put", "key": "env-1", "value": "dg=="}]'
"""The start of a good envelope (one put), for cases that add a bad field after it."""

MAX_VALUE = 1024 * 1024
"""The node's default value limit (``Limits.max_value``)."""
MAX_FRAME = 16 * 1024 * 1024
"""The node's default frame limit, which bounds a batch's body."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Node:
    """The module's node, and clients holding tokens of several roles and prefixes."""

    def __init__(self, cluster: LocalCluster) -> None:
        assert cluster.authority_dir is not None
        self.cluster = cluster
        self.url = cluster.nodes[0].http_url
        self.authority = Authority.load(cluster.authority_dir)
        self.admin = Http(self.url, self.token(Role.ADMIN))

    def token(self, role: Role, prefix: bytes = b"") -> str:
        return issue_bearer(self.authority, role, prefix, 3600)

    def post(
        self, body: bytes | Any, client: Http | None = None, headers: dict | None = None
    ) -> tuple[int, dict[str, str], Any]:
        """POST a batch (``body`` as bytes, or a document to send as JSON)."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        status, answered, payload = (client or self.admin)("POST", "/v1/batch", data, headers)
        return status, answered, json.loads(payload) if payload else None

    def results(self, requests: list[Any], client: Http | None = None) -> list[dict[str, Any]]:
        status, _, doc = self.post({"requests": requests}, client)
        assert status == 200, doc
        assert len(doc["results"]) == len(requests)
        return doc["results"]

    def stored(self, key: str) -> bytes | None:
        status, _, body = self.admin("GET", f"/v1/kv/{key}")
        assert status in (200, 404), body
        return body if status == 200 else None


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    root: Path = tmp_path_factory.mktemp("batch")
    with LocalCluster(1, root, http=True) as cluster:
        cluster.start()
        yield Node(cluster)


# --- envelopes refused whole -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (
            b'{"requests": [{"op": "put", "key": "env-1", "value": "dg=="}',
            "not valid JSON (at line 1, column 61)",
        ),
        (b"\xff\xfe garbage", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'[{"op": "put", "key": "env-1", "value": "dg=="}]', "not a list"),
        (b'{"request": [{"op": "put", "key": "env-1", "value": "dg=="}]}', "'request'"),
        (b'{"requests": {"op": "put", "key": "env-1", "value": "dg=="}}', "must be a list"),
        (b"{}", 'no "requests" list'),
        (
            ONE + b', "consistncy": "one"}',
            "unknown field 'consistncy'",
        ),
        (
            ONE + b', "requests": []}',
            "'requests' more than once",
        ),
        (
            ONE + b', "consistency": "most"}',
            "bad consistency 'most'",
        ),
        (
            ONE + b', "timeout_ms": -1}',
            "timeout_ms must be a whole number",
        ),
        (
            ONE + b', "strict": "yes"}',
            "strict must be true or false",
        ),
    ],
)
def test_a_wrong_envelope_is_refused_whole_naming_what_is_wrong(
    node: Node, body: bytes, words: str
) -> None:
    status, headers, doc = node.post(body)
    assert status == 400, doc
    assert headers["content-type"] == "application/problem+json"
    assert doc["type"] == "urn:p2pindex:error:invalid_request"
    assert doc["outcome"] == "definite"
    assert words in doc["detail"] and "nothing was done" in doc["detail"], doc["detail"]
    assert "Expecting" not in doc["detail"] and "decod" not in doc["detail"], doc["detail"]
    assert node.stored("env-1") is None


def test_more_items_than_a_native_batch_takes_are_refused_with_how_to_split(node: Node) -> None:
    requests = [{"op": "put", "key": f"many-{i}", "value": "dg=="} for i in range(1001)]
    assert len(requests) == MAX_BATCH_ITEMS + 1
    status, _, doc = node.post({"requests": requests})
    assert status == 400
    assert f"over the limit of {MAX_BATCH_ITEMS}" in doc["detail"]
    assert "split it" in doc["detail"]
    assert node.stored("many-0") is None
    # Exactly the limit is served.
    results = node.results(requests[:MAX_BATCH_ITEMS])
    assert {result["status"] for result in results} == {204}


def test_other_methods_query_parameters_and_a_trace_are_refused(node: Node) -> None:
    status, headers, body = node.admin("GET", "/v1/batch")
    assert status == 405 and headers["allow"] == "POST", body
    body_doc = {"requests": [{"op": "put", "key": "trace-1", "value": "dg=="}]}
    data = json.dumps(body_doc).encode()
    status, _, body = node.admin("POST", "/v1/batch?consistency=one", data)
    assert status == 400 and b"no query parameters" in body
    status, headers, doc = node.post(body_doc, headers={"X-P2P-Trace": "1"})
    assert status == 400
    assert "X-P2P-Trace" not in headers and "x-p2p-trace" not in headers
    assert "trace a single key" in doc["detail"]
    assert "x-request-id" in headers
    assert node.stored("trace-1") is None


def test_a_body_over_the_batch_limit_is_refused_before_it_is_read_saying_how_to_split(
    node: Node,
) -> None:
    token = node.admin.token
    head = (
        f"POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {MAX_FRAME + 1}\r\n\r\n"
    ).encode()
    answer = raw(node.url, head)
    status_line, _, rest = answer.partition(b"\r\n")
    assert b" 413 " in status_line, answer[:300]
    doc = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert f"{MAX_FRAME}-byte limit" in doc["detail"]
    assert "split the batch" in doc["detail"]
    # A body over the single-key limit but under the batch's is admitted: a full-size value
    # (base64 makes it a third larger) next to another.
    results = node.results(
        [
            {"op": "put", "key": "big-1", "value": b64(b"x" * MAX_VALUE)},
            {"op": "put", "key": "big-2", "value": b64(b"y" * 1000)},
        ]
    )
    assert [result["status"] for result in results] == [204, 204]
    assert node.stored("big-1") == b"x" * MAX_VALUE


# --- items refused alone ---------------------------------------------------------------------


def test_bad_items_each_get_their_own_error_and_the_good_ones_are_served(node: Node) -> None:
    bad: list[tuple[Any, int, str]] = [
        ({"key": "mix-b0", "value": "dg=="}, 400, '"op" must be'),
        ({"op": "replace", "key": "mix-b1"}, 400, '"op" must be'),
        ({"op": "put", "key": 7, "value": "dg=="}, 400, '"key" must be a string'),
        ({"op": "put", "key": "mix-b3", "key_b64": "eA==", "value": "dg=="}, 400, "exactly one"),
        ({"op": "put", "value": "dg=="}, 400, "exactly one"),
        ({"op": "put", "key": "", "value": "dg=="}, 400, "the key is empty"),
        ({"op": "put", "key": "k" * 1025, "value": "dg=="}, 400, "over the 1024-byte limit"),
        ({"op": "put", "key_b64": "not base64!", "value": "dg=="}, 400, '"key_b64" is not base64'),
        ({"op": "put", "key": "mix-b8", "value": "dg=!"}, 400, "value is not base64"),
        ({"op": "put", "key": "mix-b9", "value": "dg"}, 400, "value is not base64"),
        ({"op": "put", "key": "mix-b10"}, 400, "value must be a base64 string, not null"),
        ({"op": "put", "key": "mix-b11", "value": 12}, 400, "value must be a base64 string"),
        ({"op": "get", "key": "mix-b12", "value": "dg=="}, 400, "get takes no field 'value'"),
        ({"op": "delete", "key": "mix-b13", "index": []}, 400, "delete takes no field 'index'"),
        ({"op": "put", "key": "mix-b14", "value": "dg==", "colour": 1}, 400, "no field 'colour'"),
        ({"op": "get", "key": "mix-b15", "strict": "yes"}, 400, "strict must be true or false"),
        ({"op": "get", "key": "mix-b16", "timeout_ms": 1.5}, 400, "whole number"),
        ({"op": "get", "key": "mix-b17", "consistency": "most"}, 400, "bad consistency"),
        ({"op": "put", "key": "mix-b18", "value": "dg==", "context": 5}, 400, "must be a string"),
        (
            {"op": "put", "key": "mix-b19", "value": "dg==", "overwrite": True, "context": "AA"},
            400,
            "a context or overwrite, not both",
        ),
        ({"op": "put", "key": "mix-b20", "value": "dg==", "index": ["nocolon"]}, 400, "NAME:TERM"),
        ({"op": "put", "key": "mix-b21", "value": b64(b"z" * (MAX_VALUE + 1))}, 413, "limit"),
        ("just a string", 400, "must be a JSON object"),
    ]
    good = [
        {"op": "put", "key": "mix-g0", "value": b64(b"good")},
        {"op": "get", "key": "mix-g0-absent"},
        {"op": "put", "key": "mix-g1", "value": b64(b"idx"), "index": ["email:a@b.example"]},
    ]
    requests = [item for item, _, _ in bad] + good
    results = node.results(requests)
    for position, (item, status, words) in enumerate(bad):
        result = results[position]
        assert result["status"] == status, (item, result)
        problem = result["problem"]
        assert problem["status"] == status and problem["outcome"] == "definite"
        assert words in problem["detail"], (item, problem["detail"])
        assert problem["detail"].startswith(f"requests[{position}]"), problem["detail"]
        named = isinstance(item, dict) and isinstance(item.get("key"), str)
        if named and "key_b64" not in item and 0 < len(item["key"]) < 64:
            assert f"(key '{item['key']}')" in problem["detail"]
    assert [r["status"] for r in results[len(bad) :]] == [204, 404, 204]
    assert node.stored("mix-g0") == b"good"
    assert node.stored("mix-b8") is None and node.stored("mix-b21") is None
    status, _, page = node.admin("GET", "/v1/query/email?term=a@b.example")
    assert status == 200 and "mix-g1" in page.decode()
    counts = node.admin.statistics()
    assert counts["http.batch_items.4xx"] >= len(bad) + 1
    assert counts["rejected.bad_input"] >= len(bad)


def test_a_repeated_field_or_a_lone_surrogate_key_is_an_item_error(node: Node) -> None:
    body = (
        b'{"requests": ['
        b'{"op": "put", "key": "rep-1", "value": "dg==", "value": "dw=="},'
        b'{"op": "put", "key": "\\ud800", "value": "dg=="},'
        b'{"op": "put", "key": "rep-3", "value": "dg=="}]}'
    )
    status, _, doc = node.post(body)
    assert status == 200, doc
    first, second, third = doc["results"]
    assert first["status"] == 400 and "'value' more than once" in first["problem"]["detail"]
    assert second["status"] == 400 and "key_b64" in second["problem"]["detail"]
    assert third["status"] == 204
    assert node.stored("rep-1") is None


def test_a_forged_or_garbage_context_is_answered_as_the_single_key_api_answers_it(
    node: Node,
) -> None:
    put = node.results([{"op": "put", "key": "ctx-1", "value": b64(b"v1")}])[0]
    assert put["status"] == 204
    good = put["context"]
    garbage = ["AAAA", "////", "!!!", good[:-4] + "AAAA", "A" * 17_000]
    results = node.results(
        [
            {"op": "put", "key": f"ctx-g{i}", "value": b64(b"x"), "context": context}
            for i, context in enumerate(garbage)
        ]
    )
    for i, (context, result) in enumerate(zip(garbage[:-1], results, strict=False)):
        status, _, body = node.admin("PUT", f"/v1/kv/ctx-s{i}", b"x", {"X-P2P-Context": context})
        assert result["status"] == status, (context, result, body)
        if status >= 400:
            single = json.loads(body)
            assert result["problem"]["type"] == single["type"]
            assert result["problem"]["outcome"] == single["outcome"]
    # None of them is a context the cluster gave out: refused, nothing written.
    assert [r["status"] for r in results] == [400] * len(garbage)
    assert {r["problem"]["type"] for r in results} == {"urn:p2pindex:error:invalid_request"}
    assert all(node.stored(f"ctx-g{i}") is None for i in range(len(garbage)))
    assert results[-1]["status"] == 400  # too long (as a header it would be over the head limit)
    assert "the context is too long" in results[-1]["problem"]["detail"]


# --- authorisation per item -------------------------------------------------------------------


def test_a_scoped_token_and_a_reader_are_refused_per_item_only(node: Node) -> None:
    scoped = Http(node.url, node.token(Role.WRITE, prefix=b"auth/"))
    results = node.results(
        [
            {"op": "put", "key": "auth/1", "value": b64(b"in")},
            {"op": "put", "key": "auth-out", "value": b64(b"out")},
            {"op": "delete", "key": "elsewhere"},
        ],
        scoped,
    )
    assert [r["status"] for r in results] == [204, 403, 403]
    assert results[1]["problem"]["type"] == "urn:p2pindex:error:permission_denied"
    assert "prefix 'auth/'" in results[1]["problem"]["detail"]
    reader = Http(node.url, node.token(Role.READ))
    results = node.results(
        [
            {"op": "get", "key": "auth/1"},
            {"op": "put", "key": "auth/2", "value": b64(b"no")},
        ],
        reader,
    )
    assert [r["status"] for r in results] == [200, 403]
    assert base64.b64decode(results[0]["value"]) == b"in"
    assert "write role" in results[1]["problem"]["detail"]
    assert node.stored("auth-out") is None and node.stored("auth/2") is None
    status, headers, _ = node.post({"requests": []}, Http(node.url, "p2pb1.garbage"))
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")

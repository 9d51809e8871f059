"""Key listings and index queries over HTTP, on a real secure node process."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest

import p2pindex
from p2pindex.cli.local_cluster import LocalCluster
from p2pindex.security.certs import Role
from tests.e2e.test_http_api import Http
from tests.e2e.test_http_auth import token

pytestmark = pytest.mark.e2e

PRODUCTS = {f"shop:{n:02d}": n * 10 for n in range(12)}
"""Twelve keys indexed under ``price`` (an integer) and ``colour`` (text)."""


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    with LocalCluster(1, tmp_path_factory.mktemp("http-queries"), http=True) as cluster:
        cluster.start()
        with p2pindex.Client(cluster.addresses, credentials=cluster.credentials) as db:
            for key, price in PRODUCTS.items():
                colour = "red" if price % 20 == 0 else "blue"
                db.put(key, f"v{price}".encode(), index={"price": [price], "colour": [colour]})
            db.put(b"bin:\xff\xfe", b"raw", index={"colour": ["red"]})
            db.put("other:1", b"x", index={"price": [50]})
        yield cluster


def admin(cluster: LocalCluster) -> Http:
    return Http(cluster.nodes[0].http_url, token(cluster, Role.ADMIN))


def get_json(client: Http, path: str) -> tuple[int, dict]:
    status, headers, body = client("GET", path)
    kind = headers.get("content-type", "")
    assert kind.startswith("application/json" if status == 200 else "application/problem+json")
    return status, json.loads(body)


def test_an_exact_query_answers_its_keys_and_with_terms_and_values_its_rows(shop):
    client = admin(shop)
    status, doc = get_json(client, "/v1/query/price?term=int:50&prefix=shop:")
    assert status == 200, doc
    assert doc["keys"] == ["shop:05"]
    assert doc["continuation"] is None and doc["complete"] is True and doc["uncovered"] == 0
    status, doc = get_json(client, "/v1/query/price?term=50&type=int&terms=true&values=true")
    assert status == 200, doc
    assert doc["rows"] == [
        {"key": "other:1", "term": 50, "values": [base64.b64encode(b"x").decode()]},
        {"key": "shop:05", "term": 50, "values": [base64.b64encode(b"v50").decode()]},
    ]
    path = "/v1/query/price?term=int:50&complete_only=true&explain=true&consistency=all"
    status, doc = get_json(client, path)
    assert status == 200 and doc["complete"] and "plan" in doc["coverage"]
    assert doc["coverage"]["replicas_per_arc"] == 1  # N=1 on a one-node cluster
    # Terms are text by default: the text "50" is a different term from the integer 50.
    assert get_json(client, "/v1/query/price?term=50")[1]["keys"] == []
    status, doc = get_json(client, "/v1/query/colour?term=red&terms=true")
    assert status == 200, doc
    assert {"key_base64": base64.b64encode(b"bin:\xff\xfe").decode(), "term": "red"} in doc["rows"]
    assert all(row["term"] == "red" for row in doc["rows"])
    assert len(doc["rows"]) == 1 + sum(1 for price in PRODUCTS.values() if price % 20 == 0)


def test_a_range_query_answers_in_term_order_inclusive_of_both_ends(shop):
    client = admin(shop)
    status, doc = get_json(client, "/v1/query/price?lo=int:30&hi=int:60&terms=true&prefix=shop:")
    assert status == 200, doc
    assert [(row["term"], row["key"]) for row in doc["rows"]] == [
        (30, "shop:03"),
        (40, "shop:04"),
        (50, "shop:05"),
        (60, "shop:06"),
    ]
    status, doc = get_json(client, "/v1/query/colour?lo=blue&hi=blue&consistency=quorum")
    assert status == 200, doc
    assert doc["keys"] == sorted(k for k, p in PRODUCTS.items() if p % 20 != 0)


def test_a_prefix_listing_pages_to_the_end_without_skipping_or_repeating(shop):
    client = admin(shop)
    seen: list[str] = []
    path = "/v1/keys?prefix=shop:&limit=5"
    pages = 0
    while True:
        status, doc = get_json(client, path)
        assert status == 200, doc
        assert len(doc["keys"]) <= 5 and doc["complete"]
        seen += doc["keys"]
        pages += 1
        if doc["continuation"] is None:
            break
        path = f"/v1/keys?prefix=shop:&limit=5&continuation={doc['continuation']}"
    assert seen == sorted(PRODUCTS) and pages >= 3
    status, doc = get_json(client, "/v1/keys?prefix=bin:&values=true")
    assert doc["rows"] == [
        {"key_base64": base64.b64encode(b"bin:\xff\xfe").decode(), "values": ["cmF3"]}
    ]
    # Any bytes as a prefix, percent-encoded.
    raw_prefix = get_json(client, "/v1/keys?prefix=bin:%FF")[1]
    assert raw_prefix["keys"] == [{"key_base64": base64.b64encode(b"bin:\xff\xfe").decode()}]


def test_a_tampered_or_foreign_continuation_is_refused_as_definite_and_counted(shop):
    client = admin(shop)
    status, doc = get_json(client, "/v1/query/price?lo=int:0&hi=int:200&limit=2")
    assert status == 200 and doc["continuation"]
    token_bytes = bytearray(base64.urlsafe_b64decode(doc["continuation"] + "=="))
    token_bytes[-1] ^= 1
    tampered = base64.urlsafe_b64encode(bytes(token_bytes)).rstrip(b"=").decode()
    before = client.statistics().get("rejected.bad_query", 0)
    for path in (
        f"/v1/query/price?lo=int:0&hi=int:200&limit=2&continuation={tampered}",
        # A genuine continuation of another query.
        f"/v1/query/price?lo=int:0&hi=int:100&limit=2&continuation={doc['continuation']}",
        "/v1/query/price?lo=int:0&hi=int:200&continuation=not*base64",
    ):
        status, problem = get_json(client, path)
        assert status == 400, (path, problem)
        assert problem["outcome"] == "definite" and "continuation" in problem["detail"]
    assert client.statistics()["rejected.bad_query"] == before + 3


def test_a_prefix_scoped_token_sees_only_its_prefix(shop):
    reader = Http(shop.nodes[0].http_url, token(shop, Role.READ, b"shop:0"))
    status, doc = get_json(reader, "/v1/keys?prefix=shop:0")
    assert status == 200, doc
    assert doc["keys"] == [f"shop:0{n}" for n in range(10)]
    status, doc = get_json(reader, "/v1/query/price?term=int:50&prefix=shop:0")
    assert status == 200 and doc["keys"] == ["shop:05"]
    for path in ("/v1/keys", "/v1/keys?prefix=shop:1", "/v1/query/price?term=int:50"):
        status, problem = get_json(reader, path)
        assert status == 403, (path, problem)
        assert problem["outcome"] == "definite" and "shop:0" in problem["detail"]
    status, _ = get_json(Http(shop.nodes[0].http_url), "/v1/keys")
    assert status == 401


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/v1/keys?limit=0", "page size 0"),
        ("/v1/keys?limit=1001", "page size 1001"),
        ("/v1/keys?limit=ten", "limit must be"),
        ("/v1/query/price?lo=int:9&hi=int:1", "above its high end"),
        ("/v1/query/price?lo=int:1&hi=nine", "not one of each"),
        ("/v1/query/price?term=int:4x", "not an integer"),
        ("/v1/query/price?term=1&type=float", "type must be"),
        ("/v1/query/price", "give term="),
        ("/v1/query/price?term=1&lo=1&hi=2", "not both"),
        ("/v1/query/price?term=1&wat=1", "unknown query parameter"),
        ("/v1/keys?term=1", "unknown query parameter"),
        ("/v1/keys?consistency=most", "bad consistency"),
        ("/v1/keys?values=maybe", "values must be true or false"),
        ("/v1/keys?prefix=%zz", "percent-encoding"),
        ("/v1/query/%FF?term=x", "index name is not UTF-8"),
        ("/v1/query/?term=x", "index name is empty"),
        (f"/v1/query/{quote('x' * 300)}?term=x", "index"),
    ],
)
def test_bad_inputs_are_a_clear_definite_400_and_counted(shop, path, words):
    client = admin(shop)
    before = client.statistics().get("rejected.bad_query", 0)
    status, problem = get_json(client, path)
    assert status == 400, problem
    assert problem["type"] == "urn:p2pindex:error:invalid_request"
    assert problem["outcome"] == "definite"
    assert words in problem["detail"], problem["detail"]
    assert client.statistics()["rejected.bad_query"] == before + 1


def test_listings_are_read_only(shop):
    status, _, _ = admin(shop)("POST", "/v1/keys", b"")
    assert status == 405

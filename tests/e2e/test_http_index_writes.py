"""A PUT's index terms and overwrite over HTTP, on a real node process.

Found by a user testing with curl: an HTTP client could not file a version under index terms
(``index=`` and ``overwrite=`` were unknown parameters), and an update with a context
silently took the key out of every index (the new version carries no terms).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from urllib.parse import quote

import pytest

from p2pindex.cli.local_cluster import LocalCluster
from tests.e2e.test_http_api import Http, raw

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    root: Path = tmp_path_factory.mktemp("http-index-writes")
    with LocalCluster(1, root, insecure=True, http=True) as running:
        running.start()
        yield running


def client_of(cluster: LocalCluster) -> Http:
    return Http(cluster.nodes[0].http_url)


def found(client: Http, index: str, term: str) -> list[str]:
    status, _, body = client("GET", f"/v1/query/{index}?term={quote(term, safe=':')}")
    assert status == 200, body
    return json.loads(body)["keys"]


def test_a_put_files_its_version_under_the_terms_a_query_spells_the_same_way(cluster):
    client = client_of(cluster)
    path = "/v1/kv/order:1?index=total:int:420&index=email:a%40b.example&index=code:420"
    status, headers, body = client("PUT", path, b"{...}")
    assert status == 204, body
    assert headers["x-p2p-siblings"] == "1"
    assert found(client, "total", "int:420") == ["order:1"]
    assert found(client, "email", "a@b.example") == ["order:1"]
    # text unless int:, as a query reads it: the text "420" is not the integer 420
    assert found(client, "code", "420") == ["order:1"]
    assert found(client, "code", "int:420") == []
    assert found(client, "total", "420") == []


def test_an_update_keeps_the_key_findable_only_when_it_repeats_the_terms(cluster):
    client = client_of(cluster)
    status, headers, _ = client("PUT", "/v1/kv/order:2?index=total:int:150", b"v1")
    assert status == 204
    context = {"X-P2P-Context": headers["x-p2p-context"]}
    status, headers, _ = client("PUT", "/v1/kv/order:2?index=total:int:150", b"v2", context)
    assert (status, headers["x-p2p-siblings"]) == (204, "1")
    assert found(client, "total", "int:150") == ["order:2"]
    # Documented: a PUT without index= stores a version with no terms, and with a
    # context it supersedes the version that had them.
    context = {"X-P2P-Context": headers["x-p2p-context"]}
    status, _, _ = client("PUT", "/v1/kv/order:2", b"v3", context)
    assert status == 204
    assert found(client, "total", "int:150") == []
    assert client("GET", "/v1/kv/order:2")[2] == b"v3"


@pytest.mark.parametrize(
    ("parameters", "words"),
    [
        ("index=%24key:x", "names starting with '$' are reserved"),
        ("index=:x", "an index name must not be empty"),
        ("index=total", "expected NAME:TERM"),
        ("index=total:int:abc", "index 'total': the term 'abc' is not an integer"),
        ("index=total:int:99999999999999999999", "outside signed 64-bit range"),
        ("index=email:" + "x" * 300, "a term of 300 bytes is too long (limit 256)"),
        ("index=" + "n" * 65 + ":x", "characters long (limit 64)"),
        ("&".join(f"index=tag:{i}" for i in range(33)), "at most 32 index terms"),
        ("index=total:%FF", "not UTF-8"),
    ],
)
def test_bad_index_parameters_are_refused_and_nothing_is_written(cluster, parameters, words):
    client = client_of(cluster)
    key = f"bad:{zlib.crc32(parameters.encode())}"
    refused = client.statistics().get("rejected.bad_index_terms", 0)
    status, headers, body = client("PUT", f"/v1/kv/{key}?{parameters}", b"v")
    assert status == 400, body
    assert headers["content-type"].startswith("application/problem+json")
    doc = json.loads(body)
    assert (doc["type"], doc["outcome"]) == ("urn:p2pindex:error:invalid_request", "definite")
    assert words in doc["detail"], doc["detail"]
    assert client("GET", f"/v1/kv/{key}")[0] == 404
    if "UTF-8" not in words:  # counted as the node counts a native client's bad terms
        assert client.statistics()["rejected.bad_index_terms"] == refused + 1


def test_thirty_two_terms_are_taken_and_repeated_ones_count_once(cluster):
    client = client_of(cluster)
    terms = "&".join(f"index=tag:{i}" for i in range(32))
    assert client("PUT", f"/v1/kv/tagged?{terms}&index=tag:0", b"v")[0] == 204
    assert found(client, "tag", "31") == ["tagged"]


def test_index_and_overwrite_are_put_parameters_only(cluster):
    client = client_of(cluster)
    for method, parameter in [("GET", "index=a:b"), ("DELETE", "overwrite=true")]:
        status, _, body = client(method, f"/v1/kv/only-put?{parameter}")
        assert status == 400, body
        assert "taken by PUT only" in json.loads(body)["detail"]


def test_a_head_announcing_bad_terms_is_refused_before_its_body_is_sent(cluster):
    answer = raw(
        cluster.nodes[0].http_url,
        b"PUT /v1/kv/screened?index=total:int:x HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"the term 'x' is not an integer" in answer
    assert b"100 Continue" not in answer
    assert client_of(cluster)("GET", "/v1/kv/screened")[0] == 404


def test_overwrite_replaces_every_sibling_and_says_it_read_first(cluster):
    client = client_of(cluster)
    assert client("PUT", "/v1/kv/contested?index=owner:ann", b"one")[0] == 204
    assert client("PUT", "/v1/kv/contested?index=owner:bob", b"two")[1]["x-p2p-siblings"] == "2"
    assert client("GET", "/v1/kv/contested")[0] == 300
    status, headers, body = client(
        "PUT", "/v1/kv/contested?overwrite=true&index=owner:cy", b"three"
    )
    assert status == 204, body
    assert headers["x-p2p-read-first"] == "true"
    assert headers["x-p2p-siblings"] == "1"
    assert "x-p2p-unseen-may-remain" not in headers  # N=1: the one replica answered the read
    assert client("GET", "/v1/kv/contested")[:3:2] == (200, b"three")
    assert found(client, "owner", "cy") == ["contested"]
    assert found(client, "owner", "ann") == [] and found(client, "owner", "bob") == []


def test_overwrite_with_a_context_is_refused_and_writes_nothing(cluster):
    client = client_of(cluster)
    status, headers, _ = client("PUT", "/v1/kv/guarded", b"kept")
    assert status == 204
    status, _, body = client(
        "PUT", "/v1/kv/guarded?overwrite=true", b"lost", {"X-P2P-Context": headers["x-p2p-context"]}
    )
    assert status == 400, body
    doc = json.loads(body)
    assert doc["outcome"] == "definite"
    assert "X-P2P-Context or overwrite=true, not both" in doc["detail"]
    assert client("GET", "/v1/kv/guarded")[2] == b"kept"
    status, _, body = client("PUT", "/v1/kv/guarded?overwrite=maybe", b"lost")
    assert status == 400 and "overwrite must be true or false" in json.loads(body)["detail"]

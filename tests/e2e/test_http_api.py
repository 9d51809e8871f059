"""The HTTP API of a real node process: keys, siblings, errors, hostile HTTP, health, leave."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from p2pindex.cli.local_cluster import LocalCluster, free_ports

pytestmark = pytest.mark.e2e


class Http:
    """One keep-alive connection to a node's HTTP listener."""

    def __init__(self, url: str, token: str | None = None) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "", parts.port or 80
        self.token = token
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=15)

    def __call__(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        headers = dict(headers or {})
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def statistics(self) -> dict[str, float]:
        status, _, body = self("GET", "/v1/status")
        assert status == 200, body
        return json.loads(body)["statistics"]


def raw(url: str, payload: bytes, *, read_timeout: float = 15.0) -> bytes:
    """Send bytes as they are; return everything the node answers before it closes."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=read_timeout) as sock:
        sock.sendall(payload)
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


@pytest.fixture
def node(tmp_path: Path):
    with LocalCluster(1, tmp_path, insecure=True, http=True) as cluster:
        cluster.start()
        yield cluster


def url_of(cluster: LocalCluster) -> str:
    return cluster.nodes[0].http_url


def test_put_get_delete_round_trip_with_the_context_header(node):
    client = Http(url_of(node))
    status, headers, _ = client("PUT", "/v1/kv/greeting", b"hello")
    assert status == 204
    first_context = headers["x-p2p-context"]
    status, headers, body = client("GET", "/v1/kv/greeting")
    assert (status, body) == (200, b"hello")
    assert headers["content-type"] == "application/octet-stream"
    status, headers, _ = client("PUT", "/v1/kv/greeting", b"bye", {"X-P2P-Context": first_context})
    assert status == 204
    assert client("GET", "/v1/kv/greeting")[2] == b"bye"  # the context replaced, no sibling
    latest = headers["x-p2p-context"]
    status, headers, _ = client("DELETE", "/v1/kv/greeting", None, {"X-P2P-Context": latest})
    assert status == 204
    status, headers, body = client("GET", "/v1/kv/greeting?consistency=one")
    assert status == 404
    assert json.loads(body)["type"] == "urn:p2pindex:error:not_found"
    assert headers["x-p2p-context"]


def test_binary_keys_travel_percent_encoded(node):
    client = Http(url_of(node))
    assert client("PUT", "/v1/kv/a%2Fb%00%FF", b"x")[0] == 204
    assert client("GET", "/v1/kv/a%2Fb%00%FF")[2] == b"x"
    assert client("GET", "/v1/kv/a/b")[0] == 404


def test_concurrent_writes_answer_300_with_every_sibling_and_resolve_with_the_context(node):
    client = Http(url_of(node))
    assert client("PUT", "/v1/kv/k", b"one")[1]["x-p2p-siblings"] == "1"
    # no context: concurrent with the first, and the answer says the key now has two values
    assert client("PUT", "/v1/kv/k", b"two")[1]["x-p2p-siblings"] == "2"
    status, headers, body = client("GET", "/v1/kv/k")
    assert status == 300
    head_status, head_headers, head_body = client("HEAD", "/v1/kv/k")
    assert (head_status, head_body) == (300, b"")
    assert head_headers["content-length"] == str(len(body))
    doc = json.loads(body)
    assert sorted(base64.b64decode(v) for v in doc["siblings"]) == [b"one", b"two"]
    assert doc["context"] == headers["x-p2p-context"]
    client("PUT", "/v1/kv/k", b"merged", {"X-P2P-Context": doc["context"]})
    assert client("GET", "/v1/kv/k")[:1] == (200,)
    assert client("GET", "/v1/kv/k")[2] == b"merged"


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("/v1/kv/k?consistency=most", "bad consistency"),
        ("/v1/kv/k%zz", "percent-encoding"),
        ("/v1/kv/k?strict=maybe", "strict must be true or false"),
        ("/v1/kv/k?colour=red", "unknown query parameter"),
        ("/v1/kv/", "the key is empty"),
        ("/v1/kv/" + "x" * 2000, "over the 1024-byte limit"),
        ("/v1/kv/k?timeout_ms=%C2%B2", "timeout_ms must be a whole number"),
        ("/v1/kv/k?consistency=%C2%B2", "bad consistency"),
        ("/v1/kv/k?consistency=one&consistency=all", "consistency is given more than once"),
    ],
)
def test_bad_requests_are_400_problems_and_write_nothing(node, path, detail):
    client = Http(url_of(node))
    status, headers, body = client("PUT", path, b"v")
    assert status == 400
    assert headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert detail in problem["detail"]
    assert problem["outcome"] == "definite"
    assert client("GET", "/v1/status")[0] == 200
    assert Http(url_of(node)).statistics().get("requests.put", 0) == 0


def test_a_value_over_the_limit_is_refused_before_it_is_read(node):
    client = Http(url_of(node))
    status = client("PUT", "/v1/kv/big", b"x" * (1024 * 1024 + 1))[0]
    assert status == 413
    assert client("GET", "/v1/kv/big")[0] == 404
    # announced far over the limit: refused on the headers, the connection closed
    answer = raw(
        url_of(node), b"PUT /v1/kv/big HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 413")
    assert Http(url_of(node)).statistics()["http.refused.body_too_large"] >= 1


@pytest.mark.parametrize(
    ("payload", "status", "counter"),
    [
        (b"GARBAGE\r\n\r\n", b"400", "http.refused.malformed"),
        (b"GET /v1/kv/k HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", b"431",
         "http.refused.headers_too_large"),
        (b"PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"zz\r\nv\r\n0\r\n\r\n",
         b"400", "http.refused.malformed"),
        (b"PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked"
         b"\r\n\r\n1\r\nv\r\n0\r\n\r\n", b"400", "http.refused.ambiguous_length"),
    ],
    ids=["bad-request-line", "huge-headers", "bad-chunked", "content-length-and-chunked"],
)  # fmt: skip
def test_malformed_http_is_refused_counted_and_writes_nothing(node, payload, status, counter):
    answer = raw(url_of(node), payload)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
    client = Http(url_of(node))
    assert client("GET", "/v1/kv/k")[0] == 404  # nothing written
    assert client.statistics()[counter] >= 1


def test_a_slow_client_is_cut_off_while_others_are_served(tmp_path: Path):
    config = tmp_path / "node.toml"
    config.write_text("[http]\nrequest_deadline = 1.5\n")
    with LocalCluster(
        1, tmp_path, insecure=True, http=True, extra_args=("--config", str(config))
    ) as cluster:
        cluster.start()
        url = url_of(cluster)
        parts = urlsplit(url)
        slow = socket.create_connection((parts.hostname, parts.port), timeout=10)
        request = b"PUT /v1/kv/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        started = time.monotonic()
        client = Http(url)
        answer = b""
        for byte in request:
            try:
                slow.sendall(bytes([byte]))
            except OSError:
                break
            # the other client is served at once meanwhile
            t0 = time.monotonic()
            assert client("GET", "/livez")[0] == 200
            assert time.monotonic() - t0 < 1.0
            time.sleep(0.25)
            if time.monotonic() - started > 4:
                break
        slow.settimeout(5)
        try:
            answer = slow.recv(4096)
        except OSError:
            answer = b""
        slow.close()
        assert answer.startswith(b"HTTP/1.1 408") or answer == b""
        assert time.monotonic() - started < 6
        assert client("GET", "/v1/kv/slow")[0] == 404
        assert client.statistics()["http.refused.slow_client"] >= 1


def test_http_1_0_and_connection_close_end_the_connection_after_the_answer(node):
    answer = raw(url_of(node), b"GET /livez HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"ok\n")
    assert b"connection: close" in answer
    answer = raw(url_of(node), b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.count(b"HTTP/1.1 200") == 1
    # two requests sent back to back on one connection are both answered, in order
    two = b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n" + (
        b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    answer = raw(url_of(node), two)
    assert answer.index(b"ok\n") < answer.index(b"ready\n")


def test_keep_alive_serves_many_requests_on_one_connection(node):
    client = Http(url_of(node))
    for i in range(50):
        assert client("PUT", f"/v1/kv/k{i}", b"v")[0] == 204
    assert client.statistics()["http.connections"] == 1  # all on this one connection


def test_health_and_admin_reads(node):
    client = Http(url_of(node))
    status, _, body = client("GET", "/livez")
    assert (status, body) == (200, b"ok\n")
    status, _, body = client("GET", "/readyz")
    assert (status, body) == (200, b"ready\n")
    status, _, body = client("GET", "/v1/members")
    assert status == 200 and len(json.loads(body)["members"]) == 1
    status, _, body = client("GET", "/v1/explain/somekey")
    assert status == 200 and json.loads(body)["nodes"][0]["role"] == "primary"
    assert client("GET", "/nowhere")[0] == 404
    for method, path in [
        ("POST", "/v1/status"),
        ("DELETE", "/v1/keys"),
        ("POST", "/livez"),
        ("PATCH", "/readyz"),
        ("POST", "/metrics"),
    ]:
        status, headers, _ = client(method, path)
        assert (status, headers.get("allow")) == (405, "GET, HEAD"), (method, path)
    assert client("HEAD", "/livez")[:1] == (200,)
    status, _, body = client("GET", "/v1/status?junk=1")
    assert status == 400 and "takes no query parameters" in json.loads(body)["detail"]
    status, _, body = client("GET", "/v1/explain/" + "x" * 1100)
    assert status == 400 and "over the 1024-byte limit" in json.loads(body)["detail"]


def test_readyz_says_why_a_node_cannot_place_n_replicas(tmp_path: Path):
    with LocalCluster(1, tmp_path, insecure=True, http=True, n_replicas=3) as cluster:
        cluster.start()
        client = Http(url_of(cluster))
        status, _, body = client("GET", "/readyz")
        assert status == 503
        assert b"fewer than N=3" in body
        assert client("GET", "/livez")[0] == 200  # liveness never needs other nodes
        # A QUORUM write it cannot place: 503, definite, and when to ask again.
        status, headers, body = client("PUT", "/v1/kv/alone?consistency=quorum", b"v")
        assert status == 503 and headers["retry-after"] == "1"
        doc = json.loads(body)
        assert (doc["type"], doc["outcome"]) == ("urn:p2pindex:error:unavailable", "definite")
        assert client("GET", "/v1/kv/alone?consistency=one")[0] == 404


def test_a_remote_leave_ends_the_serve_process_with_exit_code_0(tmp_path: Path):
    # Two nodes keeping N=1: the leaver's keys have somewhere to go (a lone node, or one
    # whose leave would leave fewer than N, is refused: see test_drain).
    with LocalCluster(2, tmp_path, insecure=True, http=True, n_replicas=1) as cluster:
        cluster.start()
        leaver = cluster.nodes[1]
        process = leaver.process
        assert process is not None
        result = subprocess.run(
            [sys.executable, "-m", "p2pindex", "leave", "--node", str(leaver.address)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        assert process.wait(timeout=30) == 0
        assert "left the cluster and stopped" in leaver.log_tail(1)


def test_a_public_http_listener_without_tls_is_refused_before_start(tmp_path: Path):
    port, http_port = free_ports(2)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "p2pindex",
            "serve",
            "--insecure",
            "--data-dir",
            str(tmp_path / "d"),
            "--listen",
            f"127.0.0.1:{port}",
            "--http",
            f"0.0.0.0:{http_port}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "not on loopback" in result.stderr
    assert "Traceback" not in result.stderr


def test_metrics_follow_prometheus_naming_and_count_both_protocols(node):
    client = Http(url_of(node))
    assert client("PUT", "/v1/kv/a", b"v")[0] == 204
    native = subprocess.run(
        [sys.executable, "-m", "p2pindex", "put", "b", "v", "--node", str(node.nodes[0].address)],
        capture_output=True,
        text=True,
        timeout=30,
        env=node.client_environment(),
    )
    assert native.returncode == 0, native.stderr
    raw(url_of(node), b"NONSENSE\r\n\r\n")
    status, headers, body = client("GET", "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["p2pindex_build_info"].samples[0].value == 1
    duration = families["p2pindex_request_duration_seconds"]
    assert duration.type == "histogram"
    count = next(
        s.value
        for s in duration.samples
        if s.name.endswith("_count") and s.labels == {"operation": "put", "consistency": "quorum"}
    )
    assert count == 2  # one over HTTP, one over the binary protocol
    refused = families["p2pindex_http_refused"]
    assert any(s.labels == {"reason": "malformed"} and s.value >= 1 for s in refused.samples)
    for required in ("process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds"):
        assert required in families
    for family in families.values():
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        if family.type == "histogram":
            assert family.name.endswith("_seconds")
        for sample in family.samples:
            assert sample.labels.get("key") != "a"  # no per-key labels
            assert all(len(value) < 64 for value in sample.labels.values())

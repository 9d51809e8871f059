"""Bearer tokens and TLS on a secure node's HTTP listener (real processes)."""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from p2pindex.cli.local_cluster import LocalCluster, free_ports
from p2pindex.security.authority import Authority
from p2pindex.security.bearer import decode_token, issue_bearer
from p2pindex.security.certs import Role, verify_capability
from tests.e2e.test_http_api import Http

pytestmark = pytest.mark.e2e


@pytest.fixture
def secure(tmp_path: Path):
    with LocalCluster(1, tmp_path, http=True) as cluster:
        cluster.start()
        yield cluster


def token(cluster: LocalCluster, role: Role, prefix: bytes = b"", lifetime: int = 3600) -> str:
    assert cluster.authority_dir is not None
    return issue_bearer(Authority.load(cluster.authority_dir), role, prefix, lifetime)


def security_counts(cluster: LocalCluster) -> dict[str, float]:
    admin = Http(cluster.nodes[0].http_url, token(cluster, Role.ADMIN))
    return admin.statistics()


def test_the_cli_issues_a_bearer_token_that_opens_the_api(secure, tmp_path: Path):
    out = tmp_path / "writer.token"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "p2pindex",
            "token",
            "issue",
            "--authority",
            str(secure.authority_dir),
            "--role",
            "write",
            "--bearer",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert out.stat().st_mode & 0o077 == 0
    client = Http(secure.nodes[0].http_url, out.read_text().strip())
    assert client("PUT", "/v1/kv/k", b"v")[0] == 204
    assert client("GET", "/v1/kv/k")[2] == b"v"


@pytest.mark.parametrize("case", ["missing", "not-bearer", "garbage", "tampered", "expired"])
def test_bad_tokens_get_401_write_nothing_and_are_counted(secure, case):
    url = secure.nodes[0].http_url
    good = token(secure, Role.WRITE)
    headers = {
        "missing": {},
        "not-bearer": {"Authorization": f"Basic {good}"},
        "garbage": {"Authorization": "Bearer p2pb1.!!!"},
        "tampered": {"Authorization": f"Bearer {good[:-6]}{'A' if good[-6] != 'A' else 'B'}"
                     f"{good[-5:]}"},
        "expired": {"Authorization": f"Bearer {token(secure, Role.WRITE, lifetime=1)}"},
    }[case]  # fmt: skip
    if case == "expired":
        time.sleep(2.1)
    client = Http(url)
    status, response_headers, body = client("PUT", "/v1/kv/k", b"v", headers)
    assert status == 401
    assert response_headers["www-authenticate"].startswith("Bearer")
    assert json.loads(body)["outcome"] == "definite"
    reader = Http(url, token(secure, Role.READ))
    assert reader("GET", "/v1/kv/k")[0] == 404  # nothing written
    counts = security_counts(secure)
    assert sum(v for k, v in counts.items() if k.startswith("security.bearer.")) >= 1


def test_roles_and_prefixes_bind_a_bearer_token_as_they_bind_a_session(secure):
    url = secure.nodes[0].http_url
    reader = Http(url, token(secure, Role.READ))
    status, _, body = reader("PUT", "/v1/kv/k", b"v")
    assert status == 403
    assert "write role" in json.loads(body)["detail"]
    scoped = Http(url, token(secure, Role.WRITE, prefix=b"app/"))
    assert scoped("PUT", "/v1/kv/app/x", b"v")[0] == 204
    assert scoped("PUT", "/v1/kv/other", b"v")[0] == 403
    assert reader("GET", "/v1/kv/other")[0] == 404
    assert security_counts(secure)["security.denied.prefix"] >= 1


def test_a_revoked_bearer_token_is_refused_at_once(secure):
    url = secure.nodes[0].http_url
    revoked = token(secure, Role.WRITE)
    client = Http(url, revoked)
    assert client("PUT", "/v1/kv/k", b"v")[0] == 204
    authority = Authority.load(secure.authority_dir)
    serial = verify_capability(decode_token(revoked)[1], authority.trust, time.time()).serial
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "p2pindex",
            "cluster",
            "revoke",
            "--capability",
            str(serial),
            "--authority",
            str(secure.authority_dir),
            "--node",
            str(secure.nodes[0].address),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert client("PUT", "/v1/kv/k", b"w")[0] == 401
    assert security_counts(secure)["security.bearer.revoked"] >= 1


def test_https_with_the_operators_certificate(tmp_path: Path):
    cert, key = tmp_path / "http.crt", tmp_path / "http.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    (http_port,) = free_ports(1)
    with LocalCluster(
        1,
        tmp_path / "c",
        insecure=True,
        extra_args=(
            "--http", f"0.0.0.0:{http_port}", "--http-cert", str(cert), "--http-key", str(key),
        ),
    ) as cluster:  # fmt: skip
        cluster.start()
        context = ssl.create_default_context(cafile=str(cert))
        conn = http.client.HTTPSConnection("127.0.0.1", http_port, context=context, timeout=10)
        conn.request("PUT", "/v1/kv/k", body=b"secret")
        put = conn.getresponse()
        put.read()
        assert put.status == 204
        conn.request("GET", "/v1/kv/k")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"secret")
        # plain HTTP to the TLS port is not served
        plain = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            plain.request("GET", "/livez")
            plain.getresponse()
        assert urlsplit(cluster.nodes[0].http_url).scheme == "https"


def test_a_bearer_token_over_its_client_rate_gets_429_and_nothing_written(tmp_path: Path):
    """`--client-rate` limits a bearer token's requests as it limits a binary session's:
    the refusal is a 429 problem (overloaded, definite) with Retry-After, the refused write
    is not stored, and the node counts it with the binary refusals."""
    args = ("--client-rate", "5", "--client-burst", "10")
    with LocalCluster(1, tmp_path, http=True, extra_args=args) as cluster:
        cluster.start()
        writer = Http(cluster.nodes[0].http_url, token(cluster, Role.WRITE))
        answers = [writer("PUT", f"/v1/kv/rate-{i}", b"v") for i in range(40)]
        statuses = [status for status, _, _ in answers]
        assert set(statuses) == {204, 429} and 10 <= statuses.count(204) < 40, statuses
        _, headers, body = next(a for a in answers if a[0] == 429)
        assert headers["retry-after"] == "1"
        assert headers["content-type"] == "application/problem+json"
        doc = json.loads(body)
        assert doc["type"] == "urn:p2pindex:error:overloaded"
        assert doc["outcome"] == "definite"
        assert "rate of 5 requests a second" in doc["detail"]
        refused = [i for i, answer in enumerate(answers) if answer[0] == 429]
        time.sleep(2.5)  # the bucket refills; another token has its own bucket anyway
        admin = Http(cluster.nodes[0].http_url, token(cluster, Role.ADMIN))
        assert admin("GET", f"/v1/kv/rate-{refused[0]}")[0] == 404
        assert admin("GET", f"/v1/kv/rate-{statuses.index(204)}")[0] == 200
        assert admin.statistics()["overloaded.client_rate"] >= len(refused)

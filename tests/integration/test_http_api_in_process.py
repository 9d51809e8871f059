"""The HTTP API's answers, asked of real nodes in-process (simulated network, autojump clock).

Each test is a defect a user met, seen through ``HttpApi`` exactly as the listener calls it
(no sockets, so no timing): the challenge a request without a token gets (RFC 6750 3.1
wants none of the error codes a refused token gets), the words an expired token is refused
with, the key ``/v1/explain`` shows, what a traced listing answers, and the latency
histogram of listings and queries in ``/metrics``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import quote

import trio

from p2pindex.http.api import HttpApi
from p2pindex.http.server import Request, Response
from p2pindex.security.bearer import bearer_key, encode_token, issue_bearer, new_secret
from p2pindex.security.certs import Role, issue_capability
from p2pindex.wire.messages import QueryReply, QueryRequest
from tests.integration.test_metrics_swim_traffic import scrape, value
from tests.integration.test_security_cluster import SecureCluster, secure_cluster
from tests.support.cluster import running_cluster

REALM_ONLY = 'Bearer realm="p2pindex"'


async def ask(
    api: HttpApi,
    method: str,
    target: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    token: str | None = None,
) -> Response:
    sent = {name.lower(): text for name, text in (headers or {}).items()}
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    return await api(Request(method, target, sent, body, "127.0.0.1:1"))


def header(response: Response, name: str) -> str | None:
    found = [text for key, text in response.headers if key == name]
    assert len(found) <= 1, found
    return found[0] if found else None


def expired_token(cluster: SecureCluster, role: Role, prefix: bytes = b"") -> str:
    """A token that expired an hour ago (issued two hours ago for one hour)."""
    secret = new_secret()
    authority = cluster.authority
    capability = issue_capability(
        authority.key,
        authority.cluster_id,
        bearer_key(secret),
        role,
        prefix=prefix,
        issued=int(time.time()) - 7200,
        lifetime=3600,
    )
    return encode_token(secret, capability)


# --- 1. the challenge ----------------------------------------------------------------------


async def test_a_request_without_a_token_is_challenged_with_no_error_code(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with secure_cluster(tmp_path, size=1) as cluster:
        api = HttpApi(cluster.members[0].node)
        for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer "}):
            answer = await ask(api, "GET", "/v1/kv/k", headers=headers)
            assert answer.status == 401, headers
            assert header(answer, "www-authenticate") == REALM_ONLY, headers
            doc = json.loads(answer.body)
            assert doc["reason"] == "missing"
            assert "--bearer" in doc["detail"]


async def test_a_token_that_is_present_but_refused_is_challenged_as_invalid_token(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with secure_cluster(tmp_path, size=1) as cluster:
        api = HttpApi(cluster.members[0].node)
        good = issue_bearer(cluster.authority, Role.WRITE, b"", 3600)
        tampered = good[:-6] + ("A" if good[-6] != "A" else "B") + good[-5:]
        for token, reason in (
            ("p2pb1.!!!", "malformed"),
            (tampered, None),
            (expired_token(cluster, Role.WRITE), "expired"),
        ):
            answer = await ask(api, "PUT", "/v1/kv/k", b"v", token=token)
            assert answer.status == 401
            challenge = header(answer, "www-authenticate")
            assert challenge is not None
            assert challenge.startswith('Bearer realm="p2pindex", error="invalid_token", ')
            assert 'error_description="' in challenge
            if reason is not None:
                assert challenge.endswith(f'reason="{reason}"'), challenge
        assert cluster.members[0].storage.get(b"k") is None


async def test_a_good_token_asking_beyond_its_role_or_prefix_gets_insufficient_scope(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with secure_cluster(tmp_path, size=1) as cluster:
        api = HttpApi(cluster.members[0].node)
        reader = issue_bearer(cluster.authority, Role.READ, b"", 3600)
        scoped = issue_bearer(cluster.authority, Role.WRITE, b"app/", 3600)
        for token, target in ((reader, "/v1/kv/k"), (scoped, "/v1/kv/other")):
            answer = await ask(api, "PUT", target, b"v", token=token)
            assert answer.status == 403
            challenge = header(answer, "www-authenticate")
            assert challenge is not None
            assert challenge.startswith('Bearer realm="p2pindex", error="insufficient_scope"')
        answer = await ask(api, "PUT", "/v1/kv/app/x?consistency=one", b"v", token=scoped)
        assert answer.status == 204
        assert header(answer, "www-authenticate") is None


# --- 2. an expired token -------------------------------------------------------------------


async def test_an_expired_token_is_told_when_it_expired_and_how_to_get_a_new_one(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with secure_cluster(tmp_path, size=1) as cluster:
        api = HttpApi(cluster.members[0].node)
        token = expired_token(cluster, Role.WRITE, b"app/")
        expires = time.strftime("%Y-%m-%d %H:%M", time.gmtime(int(time.time()) - 3600))
        answer = await ask(api, "GET", "/v1/kv/app/x", token=token)
        assert answer.status == 401
        detail = json.loads(answer.body)["detail"]
        assert f"expired at {expires}" in detail, detail
        renew = "p2pindex token issue --authority DIR --role write --prefix app/ --bearer"
        assert renew in detail, detail
        assert renew in (header(answer, "www-authenticate") or "")


# --- 3. the key of /v1/explain -------------------------------------------------------------


async def test_explain_shows_the_key_as_written_beside_its_hex(autojump_clock) -> None:
    async with running_cluster(3) as cluster:
        api = HttpApi(cluster.nodes[0].node)
        answer = await ask(api, "GET", "/v1/explain/" + quote("user:café"))
        assert answer.status == 200
        doc = json.loads(answer.body)
        key = "user:café".encode()
        assert doc["key_text"] == "user:café"
        assert doc["key"] == doc["key_hex"] == key.hex()  # kept for existing readers
        assert len(doc["nodes"]) == 3
        binary = json.loads((await ask(api, "GET", "/v1/explain/%FF%00")).body)
        assert (binary["key_text"], binary["key"]) == (None, "ff00")


# --- 4. a traced listing -------------------------------------------------------------------


async def test_a_traced_listing_shows_the_replicas_asked_and_their_answers(
    autojump_clock,
) -> None:
    async with running_cluster(3) as cluster:
        api = HttpApi(cluster.nodes[0].node)
        assert (await ask(api, "PUT", "/v1/kv/k1", b"v")).status == 204
        traced = {"X-P2P-Trace": "1", "X-Request-Id": "scan-1"}
        for target in ("/v1/keys?prefix=k", "/v1/query/email?term=a&consistency=quorum"):
            answer = await ask(api, "GET", target, headers=traced)
            assert answer.status == 200, answer.body
            trace = json.loads(header(answer, "x-p2p-trace") or "{}")
            assert trace["request_id"] == "scan-1"
            steps = trace["steps"]
            names = [step["step"] for step in steps]
            assert names[0] == "planned" and names[-1] == "decided", names
            asked = {entry["node"] for entry in steps[0]["nodes"]}
            assert asked and sum(entry["share"] for entry in steps[0]["nodes"]) > 0
            answered = {step["node"] for step in steps if step["step"] == "replica_answered"}
            assert answered == asked, (answered, asked)
            assert steps[-1]["complete"] is True
            assert all(step["at_ms"] >= 0 and step["took_ms"] >= 0 for step in steps)
            assert "trace_note" not in json.loads(answer.body)
        refused = await ask(api, "GET", "/v1/keys?limit=x", headers=traced)
        assert refused.status == 400
        assert header(refused, "x-p2p-trace") is None  # refused before any step: no claim
        assert "trace_note" in json.loads(refused.body)
        untraced = await ask(api, "GET", "/v1/keys?prefix=k")
        assert header(untraced, "x-p2p-trace") is None


# --- 5. query latency in /metrics ----------------------------------------------------------


async def test_listing_and_query_pages_are_timed_in_their_own_histogram(autojump_clock) -> None:
    async with running_cluster(3) as cluster:
        node = cluster.nodes[0].node
        api = HttpApi(node)
        family = "p2pindex_query_duration_seconds"
        before = scrape(node)
        for operation in ("keys", "query"):
            for consistency in ("one", "quorum", "all", "n"):
                labels = {"operation": operation, "consistency": consistency}
                assert value(before, f"{family}_count", **labels) == 0, labels
                assert value(before, f"{family}_bucket", le="+Inf", **labels) == 0, labels
        assert (await ask(api, "PUT", "/v1/kv/k1?index=email:a", b"v")).status == 204
        assert (await ask(api, "GET", "/v1/keys?prefix=k")).status == 200
        assert (await ask(api, "GET", "/v1/keys?consistency=quorum")).status == 200
        assert (await ask(api, "GET", "/v1/query/email?term=a&consistency=2")).status == 200
        after = scrape(node)
        counts = {
            dict(labels)["operation"] + "." + dict(labels)["consistency"]: count
            for (name, labels), count in after.items()
            if name == f"{family}_count" and count
        }
        assert counts == {"keys.one": 1, "keys.quorum": 1, "query.n": 1}, counts
        assert value(after, f"{family}_sum", operation="keys", consistency="one") > 0
        # Key requests keep their own histogram (the one the latency alert and dashboard read).
        put = value(after, "p2pindex_request_duration_seconds_count", operation="put",
                    consistency="quorum")  # fmt: skip
        assert put == 1
        assert not any(
            dict(labels).get("operation") in ("keys", "query")
            for (name, labels), _ in after.items()
            if name.startswith("p2pindex_request_duration_seconds")
        )


async def test_a_native_listing_page_is_timed_in_the_same_histogram(autojump_clock) -> None:
    async with running_cluster(3) as cluster:
        running = cluster.nodes[0]
        page = QueryRequest("", None, None, b"k", 10, None, "quorum", 0)
        assert isinstance(await cluster.request(running, page), QueryReply)
        samples = scrape(running.node)
        name = "p2pindex_query_duration_seconds_count"
        assert value(samples, name, operation="keys", consistency="quorum") == 1
        assert value(samples, "p2pindex_request_duration_seconds_count", operation="get",
                     consistency="quorum") == 0  # fmt: skip

"""Following one request over HTTP: request ids, the coordinator's steps, JSON debug logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2pindex.cli.local_cluster import LocalCluster, wait_converged
from tests.e2e.test_http_api import Http

pytestmark = pytest.mark.e2e


def test_a_traced_write_and_read_show_the_replicas_asked_and_who_answered(tmp_path: Path):
    with LocalCluster(3, tmp_path, insecure=True, http=True) as cluster:
        cluster.start()
        wait_converged(cluster)
        client = Http(cluster.nodes[0].http_url)
        ids = {node.node_id for node in cluster.nodes}
        status, headers, _ = client(
            "PUT", "/v1/kv/traced", b"v", {"X-P2P-Trace": "1", "X-Request-Id": "req-42"}
        )
        assert status == 204
        assert headers["x-request-id"] == "req-42"
        trace = json.loads(headers["x-p2p-trace"])
        assert trace["request_id"] == "req-42"
        steps = trace["steps"]
        names = [step["step"] for step in steps]
        assert names[0] == "targets"
        if "relayed" not in names:  # this node holds the key: it coordinated the write
            assert {t["node"] for t in steps[0]["nodes"]} == ids
            assert "committed_locally" in names
            answered = {s["node"] for s in steps if s["step"] == "replica_answered"}
            assert len(answered) >= 1
            assert names[-1] == "decided" and steps[-1]["outcome"] == "succeeded"
        assert all(step["at_ms"] >= 0 and step["took_ms"] >= 0 for step in steps)
        status, headers, body = client("GET", "/v1/kv/traced?consistency=all", None,
                                       {"X-P2P-Trace": "1"})  # fmt: skip
        assert (status, body) == (200, b"v")
        read_steps = json.loads(headers["x-p2p-trace"])["steps"]
        assert read_steps[0]["step"] == "targets"
        assert len(headers["x-request-id"]) == 16  # generated when the client sends none
        status, headers, _ = client("GET", "/v1/kv/traced")
        assert "x-p2p-trace" not in headers  # only when asked


def test_json_logs_carry_one_debug_line_per_request_with_its_id(tmp_path: Path):
    with LocalCluster(
        1,
        tmp_path,
        insecure=True,
        http=True,
        extra_args=("--log-level", "debug", "--log-format", "json"),
    ) as cluster:
        cluster.start()
        client = Http(cluster.nodes[0].http_url)
        client("PUT", "/v1/kv/k", b"v", {"X-Request-Id": "abc-123"})
        log = cluster.nodes[0].log_path.read_text()
        lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        assert lines, log[:500]
        mine = [line for line in lines if line.get("request_id") == "abc-123"]
        assert len(mine) == 1
        assert mine[0]["level"] == "debug" and mine[0]["status"] == 204
        assert {"time", "logger", "message"} <= set(mine[0])
        # The readiness a supervisor reads on stdout is in the structured log too.
        ready = [line for line in lines if line["message"].startswith("node ")]
        ready = [line for line in ready if " ready at " in line["message"]]
        assert len(ready) == 1, log[:2000]
        assert ready[0]["node_id"] == cluster.nodes[0].node_id
        assert ready[0]["http"] == cluster.nodes[0].http_url

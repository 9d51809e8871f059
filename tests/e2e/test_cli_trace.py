"""`p2pindex get|put|delete --trace` and the SWIM and connection metrics, against real
(secure) node processes on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from p2pindex.cli.local_cluster import LocalCluster, wait_converged
from tests.e2e.test_http_api import Http

pytestmark = pytest.mark.e2e


def p2pindex(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "p2pindex", *args, "--node", str(cluster.nodes[0].address)],
        capture_output=True,
        text=True,
        timeout=60,
        env=cluster.client_environment(),
    )


def metrics(cluster: LocalCluster, index: int = 0) -> dict[tuple[str, tuple], float]:
    status, _, body = Http(cluster.nodes[index].http_url)("GET", "/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def test_trace_shows_the_coordinators_steps_and_metrics_count_probes_and_bytes(
    tmp_path: Path,
):
    with LocalCluster(3, tmp_path, http=True) as cluster:
        cluster.start()
        wait_converged(cluster)
        ids = {node.node_id for node in cluster.nodes}

        before = metrics(cluster)
        put = p2pindex(cluster, "put", "traced", "hello", "--consistency", "all", "--trace")
        assert put.returncode == 0, put.stderr
        assert put.stdout == "ok: stored 5 bytes\n"
        assert "trace of request " in put.stderr
        assert "must answer" in put.stderr and "decided: succeeded" in put.stderr
        assert put.stderr.index("context: ") < put.stderr.index("trace of request ")

        got = p2pindex(
            cluster, "get", "traced", "--consistency", "all", "--trace", "--format", "json"
        )
        assert got.returncode == 0, got.stderr
        document = json.loads(got.stdout)
        assert document["values"] == ["hello"]
        steps = document["trace"]["steps"]
        assert document["trace"]["request_id"]
        names = [step["step"] for step in steps]
        if "relayed" in names:  # the client's node did not hold the key: the relay's steps
            steps = next(s for s in steps if s["step"] == "relay_answered")["steps"]
            names = [step["step"] for step in steps]
        assert names[0] == "targets"
        assert {t["node"] for t in steps[0]["nodes"]} == ids
        answered = {s["node"] for s in steps if s["step"] == "replica_answered"}
        assert len(answered) == 2 and answered < ids
        assert steps[-1] == {**steps[-1], "step": "decided", "outcome": "succeeded"}
        assert steps[-1]["read_repair_to"] == []

        plain = p2pindex(cluster, "get", "traced", "--format", "json")
        assert "trace" not in json.loads(plain.stdout)

        after = metrics(cluster)
        for name in ("p2pindex_received_bytes_total", "p2pindex_sent_bytes_total",
                     "p2pindex_frames_received_total", "p2pindex_frames_sent_total"):  # fmt: skip
            assert after[(name, ())] > before[(name, ())], name
        assert after[("p2pindex_connections_opened_total", (("direction", "in"),))] >= (
            before[("p2pindex_connections_opened_total", (("direction", "in"),))] + 3
        )
        assert after[("p2pindex_swim_members", (("state", "alive"),))] == 2

        # a node probes another about once a second
        deadline = time.monotonic() + 20
        while True:
            now = metrics(cluster)
            rtt = now[("p2pindex_swim_probe_rtt_seconds_count", ())]
            if rtt > before[("p2pindex_swim_probe_rtt_seconds_count", ())]:
                break
            assert time.monotonic() < deadline, "no probe round trip was recorded"
            time.sleep(0.5)
        assert now[("p2pindex_swim_probes_total", ())] >= rtt

        # a node killed outright is suspected, then counted dead
        suspicions = ("p2pindex_swim_suspicions_total", ())
        suspected_before = sum(metrics(cluster, i)[suspicions] for i in (0, 1))
        cluster.kill(2)
        deadline = time.monotonic() + 30
        while True:
            survivors = [metrics(cluster, i) for i in (0, 1)]
            if all(m[("p2pindex_swim_members", (("state", "dead"),))] == 1 for m in survivors):
                break
            assert time.monotonic() < deadline, "the killed node was never counted dead"
            time.sleep(0.5)
        assert sum(m[suspicions] for m in survivors) > suspected_before
        assert all(m[("p2pindex_swim_members", (("state", "alive"),))] == 1 for m in survivors)

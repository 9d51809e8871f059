"""The first hour, through the command line against real node processes: deletes that
delete, overwrites that replace, and a cluster that keeps serving after a removal."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from test_cli_e2e import p2pindex

from p2pindex.cli.local_cluster import ClusterError, LocalCluster, wait_converged

pytestmark = pytest.mark.e2e


def test_delete_overwrite_siblings_remove_and_admit(tmp_path: Path) -> None:
    with LocalCluster(3, tmp_path) as cluster:
        cluster.start()
        wait_converged(cluster)
        creds = {"credentials": cluster.credentials}
        node = ["--node", cluster.addresses[0]]

        assert p2pindex("put", "k", "v1", *node, "--consistency", "all", **creds).returncode == 0
        second = p2pindex("put", "k", "v2", *node, "--consistency", "all", **creds)
        assert second.returncode == 0, second.stderr
        assert b"the key now has 2 concurrent values" in second.stdout
        assert b"--overwrite" in second.stdout
        for _ in range(2):  # an overwrite run twice makes no siblings
            over = p2pindex("put", "k", "v3", *node, "--overwrite", "--consistency", "all", **creds)
            assert over.returncode == 0, over.stderr
            assert over.stdout == b"ok: stored 2 bytes\n"
        got = p2pindex("get", "k", *node, "--consistency", "all", "--format", "json", **creds)
        assert json.loads(got.stdout)["values"] == ["v3"]

        deleted = p2pindex("delete", "k", *node, "--consistency", "all", **creds)
        assert deleted.returncode == 0 and deleted.stdout == b"ok: deleted\n", deleted
        gone = p2pindex("get", "k", "--node", cluster.addresses[1], "--consistency", "all", **creds)
        assert gone.returncode == 3, gone

        victim = cluster.nodes[2]
        victim_id = victim.node_id
        cluster.kill(2)
        deadline = time.monotonic() + 30
        while True:
            status = json.loads(p2pindex("status", *node, "--format", "json", **creds).stdout)
            entry = next(m for m in status["members"] if m["node_id"] == victim_id)
            if entry["liveness"] == "dead":
                break
            assert time.monotonic() < deadline, entry
            time.sleep(0.5)
        removed = p2pindex("remove", victim_id, *node, **creds)
        assert removed.returncode == 0, removed.stderr
        for i in range(5):
            put = p2pindex("put", f"after-{i}", "v", *node, "--consistency", "quorum", **creds)
            assert put.returncode == 0, put.stderr
            get = p2pindex("get", f"after-{i}", "--node", cluster.addresses[1], **creds)
            assert get.returncode == 0 and get.stdout == b"v", get
        text = p2pindex("status", *node, **creds).stdout.decode()
        assert "warning: the cluster keeps N=3" in text and "1 removed (not listed)" in text
        assert victim_id not in text

        before = len(victim.log_path.read_text(errors="replace"))
        # The removed node starts again: it is refused, says what to do and exits 1 (it
        # neither prints `ready` nor waits, not ready, for good).
        with pytest.raises(ClusterError, match="exited with code 1 before it was ready"):
            cluster.restart(2)
        told = victim.log_path.read_text(errors="replace")[before:]
        assert re.search(rf"p2pindex admit {victim_id}", told), told
        assert f"node {victim_id} stopped: it was removed from the cluster" in told, told
        admitted = p2pindex("admit", victim_id, *node, **creds)
        assert admitted.returncode == 0, admitted.stderr
        cluster.restart(2)  # admitted: it comes back as itself
        deadline = time.monotonic() + 40
        while True:
            members = json.loads(p2pindex("status", *node, "--format", "json", **creds).stdout)[
                "members"
            ]
            if any(m["node_id"] == victim_id and m["liveness"] == "alive" for m in members):
                break
            assert time.monotonic() < deadline, members
            time.sleep(0.5)

"""A signal stops a real node process, even when the leave it asks for cannot finish."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from p2pindex.cli.local_cluster import LocalCluster

pytestmark = pytest.mark.e2e


def wait_for_line(path: Path, pattern: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, path.read_text(errors="replace"))
        if found:
            return found.group(0)
        time.sleep(0.1)
    raise AssertionError(f"no line matching {pattern!r} in {path}")


def test_a_second_signal_stops_a_leave_that_cannot_finish_and_the_node_keeps_its_place(
    tmp_path: Path,
):
    """The other node is down (kill -9), so the leave a SIGTERM starts would wait a minute
    for it and then serve on. Before the fix the process ignored every further signal and
    outlived the stop an operator asked for; now a second signal stops it at once, cleanly,
    and it starts again as the member it was (it never announced a leave)."""
    with LocalCluster(2, tmp_path, insecure=True, n_replicas=1) as cluster:
        cluster.start()
        cluster.kill(1)  # SIGKILL, by pid
        node = cluster.nodes[0]
        assert node.process is not None
        node.process.send_signal(signal.SIGTERM)
        wait_for_line(node.log_path, r"is leaving: handing its keys over")
        time.sleep(0.5)
        started = time.monotonic()
        node.process.send_signal(signal.SIGTERM)
        try:
            code = node.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            raise AssertionError("a second signal did not stop the node") from None
        assert time.monotonic() - started < 15
        assert code == 0
        log = node.log_path.read_text(errors="replace")
        assert "a second signal: stopping without finishing the leave" in log
        assert "stopped (clean shutdown)" in log
        assert "stopped without leaving: still a member" in log
        assert "left the cluster and stopped" not in log
        cluster.restart(0)  # not left: it comes back as itself, a member
        assert cluster.nodes[0].running


def test_sigterm_does_not_leave_when_the_others_would_be_fewer_than_n(tmp_path: Path):
    """`p2pindex leave` is refused on a three-node cluster with N=3; SIGTERM (a restart, an
    upgrade, `systemctl stop`) used to leave anyway, dropping the cluster below N. It now
    stops without leaving, and the node comes back as the member it was."""
    with LocalCluster(3, tmp_path, insecure=True, n_replicas=3) as cluster:
        cluster.start()
        node = cluster.nodes[2]
        assert node.process is not None
        node.process.send_signal(signal.SIGTERM)
        assert node.process.wait(timeout=30) == 0
        log = node.log_path.read_text(errors="replace")
        assert "stopping without leaving: without node" in log
        assert "fewer than N=3" in log
        assert "is leaving: handing its keys over" not in log
        assert "stopped without leaving: still a member" in log
        cluster.restart(2)
        assert cluster.nodes[2].running
        assert cluster.nodes[2].node_id == node.node_id

"""The dashboard in headless Chromium against a real 3-node cluster: a killed node shows dead.

Skipped (with the reason) where Debian's chromium is not installed; `.ci/run` installs it.
The screenshot is written to $P2PINDEX_TEST_REPORT_DIR (default ./test-report) so a CI run
can keep it with the test report.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from p2pindex.cli.local_cluster import LocalCluster, wait_converged

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("chromium") is None,
        reason="headless Chromium is not installed (apt-get install -y chromium)",
    ),
]

REPORT_DIR = Path(os.environ.get("P2PINDEX_TEST_REPORT_DIR", "test-report"))
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium(profile: Path, url: str, *extra: str) -> str:
    result = subprocess.run(
        ["chromium", *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=3000",
         *extra, url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return result.stdout


def member_liveness(dom: str) -> dict[str, str]:
    rows = re.findall(r'<tr data-node-id="([0-9a-f]+)" data-liveness="(\w+)"', dom)
    return dict(rows)


def test_the_dashboard_shows_a_killed_member_as_dead(tmp_path: Path):
    with LocalCluster(3, tmp_path / "cluster", insecure=True, http=True) as cluster:
        cluster.start()
        wait_converged(cluster)
        url = cluster.nodes[0].http_url + "/"
        profile = tmp_path / "chromium-profile"  # a fresh profile: nothing from elsewhere
        dom = chromium(profile, url, "--dump-dom")
        assert "p2pindex" in dom
        ids = {node.node_id for node in cluster.nodes}
        assert member_liveness(dom) == dict.fromkeys(ids, "alive")
        victim = cluster.nodes[2].node_id
        cluster.kill(2)
        deadline = time.monotonic() + 60
        seen = {}
        while time.monotonic() < deadline:
            seen = member_liveness(chromium(profile, url, "--dump-dom"))
            if seen.get(victim) == "dead":
                break
            time.sleep(1)
        assert seen.get(victim) == "dead", seen
        assert all(seen[node] == "alive" for node in ids - {victim})
        REPORT_DIR.mkdir(parents=True, exist_ok=True)
        shot = REPORT_DIR / "dashboard-member-dead.png"
        chromium(profile, url, "--window-size=1100,900", f"--screenshot={shot.resolve()}")
        assert shot.exists() and shot.stat().st_size > 1000


def test_the_dashboard_shows_the_node_status_warnings(tmp_path: Path):
    """A lone node of a cluster keeping N=3 copies warns in `status`; the page shows it."""
    with LocalCluster(1, tmp_path / "cluster", n_replicas=3, insecure=True, http=True) as cluster:
        cluster.start()
        url = cluster.nodes[0].http_url + "/"
        dom = chromium(tmp_path / "chromium-profile", url, "--dump-dom")
        warnings = re.search(r'<ul id="warnings"[^>]*>(.*?)</ul>', dom, re.S)
        assert warnings is not None, dom[-2000:]
        assert "N=3" in warnings.group(1) and "1 member" in warnings.group(1), warnings.group(1)

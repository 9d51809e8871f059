"""docs/alerts.yml evaluated by a real Prometheus scraping a real cluster.

Every rule must stay silent while the cluster is healthy and fire in the fault it names.
The shipped windows (``[5m]``) and ``for`` durations (minutes) are shortened here, and said
so, so the whole story takes a few minutes: Prometheus scrapes every second, rates look at
20 s and ``for`` is 3 s. The expressions themselves are the shipped ones, evaluated by
Prometheus. Skipped where Prometheus is not installed (Debian: apt-get install prometheus).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from p2pindex.cli.local_cluster import LocalCluster, free_ports, wait_converged
from tests.e2e.test_http_api import Http, raw

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("prometheus") is None,
        reason="Prometheus is not installed (apt-get install -y prometheus)",
    ),
]

HEALTHY_ENV = "P2PINDEX_ALERTS_HEALTHY_SECONDS"
RULES = Path(__file__).resolve().parents[2] / "docs" / "alerts.yml"
ALERTS = {
    "P2PIndexInstanceDown",
    "P2PIndexMemberDead",
    "P2PIndexNodeNotReady",
    "P2PIndexQuorumFailures",
    "P2PIndexRequestLatencyHigh",
    "P2PIndexSecurityRefusals",
    "P2PIndexHTTPInputRefused",
    "P2PIndexHintsRefused",
}


def shortened(rules: str) -> str:
    rules = re.sub(r"\[5m\]", "[20s]", rules)
    return re.sub(r"for: \d+m", "for: 3s", rules)


class Prometheus:
    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.targets: list[str] = []
        (root / "rules.yml").write_text(shortened(RULES.read_text()))
        self._write_targets()
        (root / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s, scrape_timeout: 900ms}\n"
            "rule_files: [rules.yml]\n"
            "scrape_configs:\n"
            "  - job_name: p2pindex\n"
            "    file_sd_configs: [{files: [targets.json], refresh_interval: 1s}]\n"
        )
        (self.port,) = free_ports(1)
        self.log = (root / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=self.log,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1)
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("Prometheus did not start")

    def _write_targets(self) -> None:
        doc = [{"targets": self.targets, "labels": {}}]
        path = self.root / "targets.json"
        path.with_suffix(".tmp").write_text(json.dumps(doc))
        path.with_suffix(".tmp").replace(path)

    def add(self, *http_urls: str) -> None:
        self.targets += [url.removeprefix("http://") for url in http_urls]
        self._write_targets()

    def alerts(self) -> list[dict]:
        url = f"http://127.0.0.1:{self.port}/api/v1/alerts"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())["data"]["alerts"]

    def active(self) -> set[str]:
        return {alert["labels"]["alertname"] for alert in self.alerts()}

    def wait_firing(self, name: str, while_waiting: Callable[[], None], timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            firing = [a for a in self.alerts() if a["labels"]["alertname"] == name]
            if any(a["state"] == "firing" for a in firing):
                return firing
            while_waiting()
        raise AssertionError(f"{name} did not fire; active: {self.alerts()}")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


class Load:
    """QUORUM writes in the background (a healthy cluster is a busy one)."""

    def __init__(self, url: str, consistency: str = "quorum", threads: int = 2) -> None:
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(url, consistency, i)) for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, url: str, consistency: str, index: int) -> None:
        i = 0
        while not self._stop.is_set():
            try:
                Http(url)("PUT", f"/v1/kv/load{index}-{i % 500}?consistency={consistency}", b"v")
            except OSError:
                time.sleep(0.2)
            i += 1
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


class IdleDashboard:
    """A dashboard tab left open without a token: GET /v1/status once a second, each one
    refused (``bearer.missing``). It must page no one."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        client = Http(self._url)
        while not self._stop.wait(1.0):
            assert client("GET", "/v1/status")[0] == 401

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class Stutter:
    """Freeze a process (by pid) for ``frozen`` s in every ``period`` s until the block ends."""

    def __init__(self, pid: int, frozen: float = 0.8, period: float = 1.0) -> None:
        self._pid = pid
        self._frozen = frozen
        self._period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            os.kill(self._pid, signal.SIGSTOP)
            try:
                self._stop.wait(self._frozen)
            finally:
                os.kill(self._pid, signal.SIGCONT)
            self._stop.wait(self._period - self._frozen)

    def __enter__(self) -> Stutter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        os.kill(self._pid, signal.SIGCONT)


def pause(seconds: float = 1.0) -> Callable[[], None]:
    return lambda: time.sleep(seconds)


def wait_until(condition: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def described(prometheus: Prometheus, alert: dict) -> str:
    """The description ``alert`` has now (Prometheus renders it at every evaluation)."""
    for each in prometheus.alerts():
        if each["labels"] == alert["labels"]:
            return each["annotations"]["description"]
    return ""


PROMTOOL_TESTS = """
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # one crash seen by two nodes, and another member seen dead by one of them
      - series: 'p2pindex_member_dead{job="p2pindex",instance="a:1",member="m3",address="h:3"}'
        values: '1x20'
      - series: 'p2pindex_member_dead{job="p2pindex",instance="b:1",member="m3",address="h:3"}'
        values: '1x20'
      - series: 'p2pindex_member_dead{job="p2pindex",instance="a:1",member="m4",address="h:4"}'
        values: '1x20'
    alert_rule_test:
      - eval_time: 5m
        alertname: P2PIndexMemberDead
        exp_alerts:
          - exp_labels: {severity: page, job: p2pindex, member: m3, address: "h:3"}
            exp_annotations:
              summary: "p2pindex member m3 (h:3) is dead, as 2 node(s) see it"
              description: "Reported dead by: a:1 b:1. Its keys run on N-1 replicas and the
                other nodes keep hints for it. Restart it at h:3; if it is gone for good, take
                it out with `p2pindex remove m3 --node HOST:PORT` (any live node) so its
                ranges move to the others."
          - exp_labels: {severity: page, job: p2pindex, member: m4, address: "h:4"}
            exp_annotations:
              summary: "p2pindex member m4 (h:4) is dead, as 1 node(s) see it"
              description: "Reported dead by: a:1. Its keys run on N-1 replicas and the
                other nodes keep hints for it. Restart it at h:4; if it is gone for good, take
                it out with `p2pindex remove m4 --node HOST:PORT` (any live node) so its
                ranges move to the others."
  - interval: 1m
    input_series:
      # dashboard tabs open without a token: one, then two (1/s and 2/s of bearer.missing)
      - series: 'p2pindex_security_events_total{instance="tab:1",event="bearer.missing"}'
        values: '0+60x30'
      - series: 'p2pindex_security_events_total{instance="tabs:1",event="bearer.missing"}'
        values: '0+120x30'
      # a flood without tokens, and forged tokens at 2/s
      - series: 'p2pindex_security_events_total{instance="flood:1",event="bearer.missing"}'
        values: '0+1200x30'
      - series: 'p2pindex_security_events_total{instance="forged:1",event="bearer.bad_signature"}'
        values: '0+120x30'
    alert_rule_test:
      - eval_time: 20m
        alertname: P2PIndexSecurityRefusals
        exp_alerts:
          - exp_labels: {severity: ticket, instance: "flood:1"}
            exp_annotations:
              summary: "flood:1 refuses 20 requests/s on security grounds"
              description: &refusals "p2pindex_security_events_total says which refusals
                (event label); the audit log names each refused client and the reason."
          - exp_labels: {severity: ticket, instance: "forged:1"}
            exp_annotations:
              summary: "forged:1 refuses 2 requests/s on security grounds"
              description: *refusals
  - interval: 1m
    input_series:
      # exported at zero from the start, so the first refusal counts
      - series: 'p2pindex_hints_total{instance="full:1",event="refused_full"}'
        values: '0 0 0 0 4 4 4 4 4 4'
      - series: 'p2pindex_hints_total{instance="fine:1",event="refused_full"}'
        values: '0x10'
    alert_rule_test:
      - eval_time: 6m
        alertname: P2PIndexHintsRefused
        exp_alerts:
          - exp_labels: {severity: ticket, instance: "full:1"}
            exp_annotations:
              summary: "full:1 refused 4 hints lately: its hint store for an unreachable
                member is full"
              description: "p2pindex_hints_pending_bytes shows the backlog and
                P2PIndexMemberDead names the member. Bring the member back, or `p2pindex
                remove` it if it is gone for good."
"""
"""The shipped rules (windows and ``for`` as they are) on made-up series, for what a live
cluster cannot show quickly: one alert per dead member whoever sees it, a dashboard tab left
open without a token is no alert (two are not either), a flood or forged tokens are."""


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_rules_name_the_dead_member_once_and_spare_an_idle_dashboard(tmp_path: Path):
    (tmp_path / "rules.yml").write_text(RULES.read_text())
    (tmp_path / "tests.yml").write_text(PROMTOOL_TESTS)
    result = subprocess.run(
        ["promtool", "test", "rules", "tests.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_is_silent_when_healthy_and_fires_in_its_fault(tmp_path: Path):
    assert {rule for rule in re.findall(r"alert: (\w+)", RULES.read_text())} == ALERTS
    prometheus = Prometheus(tmp_path / "prometheus")
    cluster = LocalCluster(3, tmp_path / "cluster", insecure=True, http=True)
    lone = LocalCluster(1, tmp_path / "lone", insecure=True, http=True, n_replicas=3)
    secure = LocalCluster(1, tmp_path / "secure", http=True)
    budget = tmp_path / "no-hints.toml"
    budget.write_text("hint_max_bytes_per_target = 0\n")
    hinted = LocalCluster(
        4, tmp_path / "hinted", insecure=True, http=True, extra_args=("--config", str(budget))
    )
    try:
        cluster.start()
        secure.start()
        wait_converged(cluster)
        urls = [node.http_url for node in cluster.nodes]
        prometheus.add(*urls, secure.nodes[0].http_url)
        load = Load(urls[0])
        dashboard = IdleDashboard(secure.nodes[0].http_url)
        try:
            # healthy: nothing pending or firing, with traffic and a dashboard tab open
            # without a token, for 30 s of evaluations (P2PINDEX_ALERTS_HEALTHY_SECONDS=600
            # for the ten minutes)
            deadline = time.monotonic() + float(os.environ.get(HEALTHY_ENV, "30"))
            while time.monotonic() < deadline:
                assert prometheus.active() == set(), prometheus.alerts()
                time.sleep(1)
        finally:
            load.stop()
            dashboard.stop()

        # malformed HTTP, several a second
        def probe() -> None:
            for _ in range(10):
                raw(urls[0], b"NOT HTTP\r\n\r\n")
            time.sleep(0.5)

        prometheus.wait_firing("P2PIndexHTTPInputRefused", probe)

        # a slow replica: ALL writes wait for it. It stutters (frozen 0.8 s in every second)
        # rather than stopping outright, so it still refutes suspicion and stays a member:
        # a member stopped for good is soon declared dead, and then ALL writes fail at once
        # instead of waiting, which is the P2PIndexQuorumFailures story below.
        victim = cluster.nodes[2]
        assert victim.process is not None
        with Stutter(victim.process.pid):
            slow = Load(urls[0], consistency="all", threads=8)
            try:
                prometheus.wait_firing("P2PIndexRequestLatencyHigh", pause())
            finally:
                slow.stop()

        # a crashed member: its scrape fails and the others see it dead
        cluster.kill(2)
        prometheus.wait_firing("P2PIndexInstanceDown", pause())
        dead = prometheus.wait_firing("P2PIndexMemberDead", pause())
        # one alert for the one dead member, not one per node that sees it dead
        assert [alert["labels"]["member"] for alert in dead] == [victim.node_id], dead
        assert dead[0]["labels"]["address"] == str(victim.address)
        survivors = [url.removeprefix("http://") for url in urls[:2]]
        wait_until(lambda: all(s in described(prometheus, dead[0]) for s in survivors))

        # two of three down: QUORUM requests fail
        cluster.kill(1)
        failing = Load(urls[0], threads=2)
        try:
            prometheus.wait_firing("P2PIndexQuorumFailures", pause())
        finally:
            failing.stop()

        # a node alone in a cluster that keeps N=3: not ready
        lone.start()
        prometheus.add(lone.nodes[0].http_url)
        prometheus.wait_firing("P2PIndexNodeNotReady", pause())

        # a flood of requests without credentials to a secure node (the idle dashboard's
        # one a second stayed silent above)
        def unauthenticated() -> None:
            client = Http(secure.nodes[0].http_url)
            for _ in range(10):
                assert client("GET", "/v1/kv/k")[0] == 401
            time.sleep(0.5)

        prometheus.wait_firing("P2PIndexSecurityRefusals", unauthenticated)

        # a dead member's hints over their budget (0 bytes here): every hint is refused.
        # Last, since the refusals also take the nodes out of service.
        hinted.start()
        wait_converged(hinted)
        hinted_urls = [node.http_url for node in hinted.nodes]
        prometheus.add(*hinted_urls[:3])
        time.sleep(3)  # scraped at zero before the first refusal
        hinted.kill(3)
        writes = Load(hinted_urls[0], consistency="one")
        try:
            prometheus.wait_firing("P2PIndexHintsRefused", pause())
        finally:
            writes.stop()
    finally:
        prometheus.stop()
        for each in (cluster, lone, secure, hinted):
            each.stop()

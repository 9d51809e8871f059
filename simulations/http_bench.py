"""HTTP QUORUM writes against native writes and a 3-member etcd, in one run, on loopback.

    python simulations/http_bench.py [--duration 8] [--connections 64] [--skip-etcd]

Starts a secure 3-node p2pindex cluster (N=3) with HTTP listeners, then measures in turn:
  1. native protocol writes (`p2pindex bench --write-only`, 64 requests in flight);
  2. HTTP PUTs with a bearer token over 64 keep-alive connections (wrk + Lua, random keys
     from 10,000, 100-byte values, ?consistency=quorum), spread over the three nodes; each
     carries the context its key's last write returned, so values are replaced (etcd's
     puts replace too) instead of piling up siblings that slow every later run;
  3. the same HTTP load while a scraper fetches /metrics from every node once a second;
  4. a 3-member etcd cluster's JSON gateway (`/v3/kv/put`) under the same wrk load.
Prints each figure and the ratios the issue asks for. Needs `wrk` and `etcd` on PATH
(Debian: apt-get install etcd-server wrk). Everything listens on 127.0.0.1 only; every
process it starts is stopped by its pid.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from p2pindex.cli.local_cluster import LocalCluster, free_ports, wait_converged
from p2pindex.security.authority import Authority
from p2pindex.security.bearer import issue_bearer
from p2pindex.security.certs import Role

P2P_LUA = r"""
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
local value = string.rep("v", 100)
local token = os.getenv("P2P_TOKEN")
local contexts = {}
request = function()
  local key = "k" .. math.random(1, 10000)
  local headers = {["Authorization"] = "Bearer " .. token, ["X-Request-Id"] = key}
  local context = contexts[key]
  if context then headers["X-P2P-Context"] = context end
  return wrk.format("PUT", "/v1/kv/" .. key .. "?consistency=quorum", headers, value)
end
-- A write carries the context the last write of its key returned, as an application
-- replacing values does (and as `p2pindex bench` does): blind writes would pile up
-- siblings, each record growing run after run. The key comes back as the request id.
response = function(status, headers, body)
  local key = headers["x-request-id"]
  local context = headers["x-p2p-context"]
  if key and context then contexts[key] = context end
end
"""

ETCD_LUA = r"""
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local value = string.rep("dmFs", 34):sub(1, 136)
request = function()
  local key = "k" .. math.random(1, 10000)
  local b64 = ""
  -- base64 of the key, enough for ASCII keys of this shape
  local bytes = {key:byte(1, -1)}
  local i = 1
  while i <= #bytes do
    local a, b, c = bytes[i], bytes[i + 1] or 0, bytes[i + 2] or 0
    local n = a * 65536 + b * 256 + c
    local q = {math.floor(n / 262144) % 64, math.floor(n / 4096) % 64,
               math.floor(n / 64) % 64, n % 64}
    b64 = b64 .. chars:sub(q[1] + 1, q[1] + 1) .. chars:sub(q[2] + 1, q[2] + 1)
    b64 = b64 .. (bytes[i + 1] and chars:sub(q[3] + 1, q[3] + 1) or "=")
    b64 = b64 .. (bytes[i + 2] and chars:sub(q[4] + 1, q[4] + 1) or "=")
    i = i + 3
  end
  local body = '{"key":"' .. b64 .. '","value":"' .. value .. '"}'
  return wrk.format("POST", "/v3/kv/put", {["Content-Type"] = "application/json"}, body)
end
"""


def wrk(
    url: str, script: Path, connections: int, duration: int, env: dict[str, str], threads: int = 2
) -> dict:
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=duration + 60,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p50 = re.search(r"50%\s+([\d.]+\w+)", out)
    p99 = re.search(r"99%\s+([\d.]+\w+)", out)
    return {
        "rate": rate,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "p50": p50.group(1) if p50 else "?",
        "p99": p99.group(1) if p99 else "?",
    }


def multi_wrk(urls: list[str], script: Path, connections: int, duration: int, env) -> dict:
    """One wrk per node (connections split evenly), run at the same time; rates summed."""
    results: list[dict] = [{} for _ in urls]

    def run(index: int, url: str) -> None:
        share = connections // len(urls) + (index < connections % len(urls))
        results[index] = wrk(url, script, share, duration, env, threads=1)

    threads = [threading.Thread(target=run, args=(i, u)) for i, u in enumerate(urls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "rate": sum(r["rate"] for r in results),
        "non_2xx": sum(r["non_2xx"] for r in results),
        "p50": "/".join(r["p50"] for r in results),
        "p99": "/".join(r["p99"] for r in results),
    }


def native(cluster: LocalCluster, duration: int, connections: int) -> dict:
    out = subprocess.run(
        [
            sys.executable, "-m", "p2pindex", "bench", "--write-only",
            "--concurrency", str(connections), "--duration", str(duration),
            "--node", cluster.addresses[0], "--format", "json",
        ],
        capture_output=True, text=True, env=cluster.client_environment(),
        timeout=duration + 120, check=True,
    ).stdout  # fmt: skip
    doc = json.loads(out)
    return {"rate": _find(doc, "throughput_ops_sec")}


def _find(doc: object, name: str) -> float:
    """The first value named ``name`` anywhere in the bench's JSON document."""
    if isinstance(doc, dict):
        if name in doc:
            return float(doc[name])
        for value in doc.values():
            with contextlib.suppress(KeyError):
                return _find(value, name)
    if isinstance(doc, list):
        for value in doc:
            with contextlib.suppress(KeyError):
                return _find(value, name)
    raise KeyError(name)


class Scraper:
    """Fetches /metrics from every node once a second while a run lasts."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.scrapes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            for url in self.urls:
                with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
                    response.read()
                self.scrapes += 1

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def etcd_cluster(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    ports = free_ports(6)
    names = ["e1", "e2", "e3"]
    peers = ",".join(f"{n}=http://127.0.0.1:{ports[3 + i]}" for i, n in enumerate(names))
    processes = []
    try:
        for i, name in enumerate(names):
            client, peer = ports[i], ports[3 + i]
            log = (root / f"{name}.log").open("wb")
            processes.append(
                subprocess.Popen(
                    [
                        "etcd", "--name", name, "--data-dir", str(root / name),
                        "--listen-client-urls", f"http://127.0.0.1:{client}",
                        "--advertise-client-urls", f"http://127.0.0.1:{client}",
                        "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                        "--initial-cluster", peers, "--initial-cluster-state", "new",
                    ],
                    stdout=log, stderr=log,
                )
            )  # fmt: skip
        urls = [f"http://127.0.0.1:{p}" for p in ports[:3]]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(urls[0] + "/health", timeout=2) as r:
                    if b"true" in r.read():
                        break
            except OSError:
                time.sleep(0.3)
        yield urls
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def etcd_leader(urls: list[str]) -> str:
    for url in urls:
        request = urllib.request.Request(url + "/v3/maintenance/status", data=b"{}")
        with urllib.request.urlopen(request, timeout=5) as response:
            doc = json.loads(response.read())
        if doc["header"]["member_id"] == doc["leader"]:
            return url
    return urls[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--skip-etcd", action="store_true")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    for tool in ("wrk",) + (() if args.skip_etcd else ("etcd",)):
        if shutil.which(tool) is None:
            print(f"error: {tool} is not installed (apt-get install etcd-server wrk)")
            return 2
    root = Path(tempfile.mkdtemp(prefix="p2p-http-bench-"))
    figures: dict[str, list[float]] = {}
    try:
        p2p_lua, etcd_lua = root / "p2p.lua", root / "etcd.lua"
        p2p_lua.write_text(P2P_LUA)
        etcd_lua.write_text(ETCD_LUA)
        with LocalCluster(3, root / "p2p", http=True) as cluster:
            cluster.start()
            wait_converged(cluster)
            token = issue_bearer(Authority.load(cluster.authority_dir), Role.WRITE, b"", 3600)
            urls = [node.http_url for node in cluster.nodes]
            env = {"P2P_TOKEN": token}
            for round_ in range(args.rounds):
                result = native(cluster, args.duration, args.connections)
                figures.setdefault("native", []).append(result["rate"])
                print(f"[{round_}] native QUORUM writes: {result['rate']:.0f}/s", flush=True)
                # Odd rounds scrape first, so neither run always has the warmer (or the
                # fuller) store: the machine drifts within minutes.
                for scraped in (False, True) if round_ % 2 == 0 else (True, False):
                    if scraped:
                        with Scraper(urls) as scraper:
                            result = multi_wrk(urls, p2p_lua, args.connections, args.duration, env)
                        figures.setdefault("http_scraped", []).append(result["rate"])
                        print(
                            f"[{round_}] HTTP writes, /metrics scraped each second "
                            f"({scraper.scrapes} scrapes): {result}",
                            flush=True,
                        )
                    else:
                        result = multi_wrk(urls, p2p_lua, args.connections, args.duration, env)
                        figures.setdefault("http", []).append(result["rate"])
                        print(f"[{round_}] HTTP QUORUM writes: {result}", flush=True)
        if not args.skip_etcd:
            with etcd_cluster(root / "etcd") as etcd_urls:
                leader = etcd_leader(etcd_urls)
                for round_ in range(args.rounds):
                    result = wrk(leader, etcd_lua, args.connections, args.duration, {})
                    figures.setdefault("etcd", []).append(result["rate"])
                    print(f"[{round_}] etcd JSON gateway puts (leader): {result}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    best = {name: max(values) for name, values in figures.items()}
    print("best of rounds:", {k: round(v) for k, v in best.items()})
    if "native" in best and "http" in best:
        print(f"HTTP / native: {best['http'] / best['native']:.2f}")
        print(f"HTTP scraped / HTTP: {best['http_scraped'] / best['http']:.3f}")
        pairs = zip(figures["http_scraped"], figures["http"], strict=True)
        ratios = [a / b for a, b in pairs]
        print("HTTP scraped / HTTP per round:", [round(r, 3) for r in ratios])
        # Each round's two runs sit side by side, so the per-round ratio is the figure least
        # moved by the machine's drift; with several rounds, their median.
        print(f"HTTP scraped / HTTP, median of rounds: {statistics.median(ratios):.3f}")
    if "etcd" in best and "http" in best:
        print(f"HTTP / etcd: {best['http'] / best['etcd']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

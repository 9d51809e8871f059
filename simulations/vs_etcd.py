"""p2pindex beside a 3-member etcd cluster, in one run on one machine: the ratios that count.

Absolute figures on a shared VM drift by a quarter within minutes, so issue 20 asks for
ratios measured side by side. This runs, in order:

  1. the machine's echo figure (`simulations/loopback_echo.py`, one run);
  2. etcd, first run: a fresh 3-member cluster on 127.0.0.1 (data directories in a temp
     dir, default fsync: etcd syncs its log before it answers), every record written once
     through `/v3/kv/txn`, then wrk at 64 connections against the leader's JSON gateway:
     `/v3/kv/put` (random keys over the keyspace), then linearizable `/v3/kv/range`;
  3. p2pindex: 3 local secure nodes (N=3; `--fsync` on every node with --fsync), then
     `p2pindex bench --write-only --load` (every record written once, then writes) and
     `p2pindex bench --workload c` against them with the same value size, keyspace and 64
     requests in flight (QUORUM; bench picks keys scrambled-zipfian, wrk uniformly);
  4. etcd again, a fresh cluster, as in 2;
  5. the echo again;

and prints a table of every run and p2pindex / (mean of the two etcd runs) for writes and
reads, in operations/s and in value bytes/s (the figure for large values).

    python simulations/vs_etcd.py [--duration 20] [--value-size 100] [--fsync] [--json]
    python simulations/vs_etcd.py --value-size 65536      # 64 KiB values: bytes/s ratio

Needs `etcd` (Debian: etcd-server) and `wrk`; exits 2 with a message when either is
missing. wrk's Lua scripts are generated into the temp dir: they count answers that are not
200 (failed) and ranges that found no key (missing), and the ratios use only the good ones.
Everything listens on 127.0.0.1; every process started is stopped by its pid.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from p2pindex.cli.bench_workload import key_name
from p2pindex.cli.local_cluster import (
    LocalCluster,
    free_ports,
    stop_signals_interrupt,
    wait_converged,
)

HERE = Path(__file__).resolve().parent
EXIT_MISSING_TOOL = 2
CONNECTIONS = 64
WRK_THREADS = 2
ETCD_QUOTA_BYTES = 8 * 1024**3
"""etcd refuses writes past its backend quota (2 GiB by default); 64 KiB values and the
revisions every put keeps reach that in one long run."""
ETCD_REQUEST_BYTES = 1024 * 1024
"""Bytes of values per prefill transaction: under etcd's 1.5 MiB request limit."""
ETCD_TXN_OPS = 128
"""etcd's default --max-txn-ops."""
ETCD_READY_TIMEOUT = 30.0

_TIME_UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


# --------------------------------------------------------------------------- wrk output


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run printed; ``ok``/``missing``/``failed`` come from our Lua's done()."""

    requests: int
    seconds: float
    requests_per_s: float
    p50_us: float
    p90_us: float
    p99_us: float
    non_2xx: int
    socket_errors: int
    ok: int
    missing: int
    failed: int

    @property
    def good_per_s(self) -> float:
        """Answers that did the job, per second: errors and empty ranges do not count."""
        return self.ok / self.seconds if self.seconds > 0 else 0.0


def parse_duration_us(text: str) -> float:
    """wrk's '8.30ms', '950.00us', '1.20s', '1.00m' in microseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if match is None:
        raise ValueError(f"wrk printed a duration this script does not know: {text!r}")
    return float(match.group(1)) * _TIME_UNITS_US[match.group(2)]


def parse_wrk(text: str) -> WrkResult:
    """Read wrk's report (run with --latency and our Lua script's done line)."""

    def number(pattern: str, default: str | None = None) -> str:
        match = re.search(pattern, text)
        if match is None:
            if default is None:
                raise ValueError(f"wrk's report has no line matching {pattern!r}:\n{text}")
            return default
        return match.group(1)

    requests = int(number(r"(\d+) requests in "))
    seconds = parse_duration_us(number(r"\d+ requests in ([\d.]+\w+),")) / 1e6
    non_2xx = int(number(r"Non-2xx or 3xx responses: (\d+)", "0"))
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    socket_errors = sum(int(n) for n in socket.groups()) if socket else 0
    counted = re.search(r"vs_etcd: ok (\d+) missing (\d+) failed (\d+)", text)
    if counted is None:
        # Without our counts a run of empty ranges or errors would pass for throughput.
        raise ValueError(f"wrk's report lacks the Lua script's counts:\n{text}")
    ok, missing, failed = (int(n) for n in counted.groups())
    return WrkResult(
        requests=requests,
        seconds=seconds,
        requests_per_s=float(number(r"Requests/sec:\s+([\d.]+)")),
        p50_us=parse_duration_us(number(r"\n\s+50%\s+([\d.]+\w+)")),
        p90_us=parse_duration_us(number(r"\n\s+90%\s+([\d.]+\w+)")),
        p99_us=parse_duration_us(number(r"\n\s+99%\s+([\d.]+\w+)")),
        non_2xx=non_2xx,
        socket_errors=socket_errors,
        ok=ok,
        missing=missing,
        failed=failed,
    )


# --------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Phase:
    """One measured phase of one system: good operations per second and latency."""

    per_s: float
    p50_us: float
    p99_us: float
    errors: int
    missing: int = 0

    @classmethod
    def from_wrk(cls, result: WrkResult) -> Phase:
        return cls(
            per_s=result.good_per_s,
            p50_us=result.p50_us,
            p99_us=result.p99_us,
            errors=result.failed + result.socket_errors,
            missing=result.missing,
        )

    @classmethod
    def from_bench(cls, document: dict[str, Any], op: str) -> Phase:
        """The run phase of `p2pindex bench --format json`; errors and misses do not count."""
        run = document["run"]
        stats = run["ops"][op]
        missing = stats["returns"].get("NOT_FOUND", 0)
        good = stats["operations"] - run["errors"] - missing
        seconds = run["runtime_ms"] / 1000
        return cls(
            per_s=good / seconds if seconds > 0 else 0.0,
            p50_us=stats["p50_us"],
            p99_us=stats["p99_us"],
            errors=run["errors"],
            missing=missing,
        )


@dataclass(frozen=True)
class Run:
    name: str
    writes: Phase
    reads: Phase


def ratios(etcd_runs: Sequence[Run], p2p: Run) -> dict[str, float | None]:
    """p2pindex / mean of the etcd runs, for writes and reads (None when etcd did nothing)."""
    out: dict[str, float | None] = {}
    for kind in ("writes", "reads"):
        mean = statistics.fmean(getattr(run, kind).per_s for run in etcd_runs)
        out[kind] = getattr(p2p, kind).per_s / mean if mean > 0 else None
    return out


def _ms(micros: float) -> str:
    return f"{micros / 1000:.2f}"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def report(etcd_runs: Sequence[Run], p2p: Run, value_size: int, echo: Sequence[float]) -> list[str]:
    """The side-by-side table: every run, then the ratios, then the echo figures."""
    header = (
        f"{'run':<26}{'writes/s':>10}{'MB/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'err':>6}"
        f"{'reads/s':>10}{'MB/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'err':>6}{'miss':>6}"
    )
    lines = [header, "-" * len(header)]
    for run in (etcd_runs[0], p2p, *etcd_runs[1:]):
        cells = ""
        for phase in (run.writes, run.reads):
            cells += (
                f"{phase.per_s:>10,.0f}{phase.per_s * value_size / 1e6:>8.1f}"
                f"{_ms(phase.p50_us):>8}{_ms(phase.p99_us):>8}{phase.errors:>6}"
            )
        lines.append(f"{run.name:<26}{cells}{run.reads.missing:>6}")
    found = ratios(etcd_runs, p2p)
    lines.append("")
    lines.append(
        f"p2pindex / mean of the etcd runs: writes {_ratio(found['writes'])}, "
        f"reads {_ratio(found['reads'])} (the same for value bytes/s: same value size)"
    )
    if echo:
        lines.append(
            "loopback echo (simulations/loopback_echo.py): "
            + ", ".join(f"{rate:,.0f}" for rate in echo)
            + " round trips/s (reference machine 10,173)"
        )
    return lines


# --------------------------------------------------------------------------- wrk scripts


def _lua_string(text: str) -> str:
    return '"' + text + '"'  # base64 needs no escaping


def wrk_script(kind: str, keys_b64: Sequence[str], value_b64: str, seed: int) -> str:
    """A wrk Lua script: POST `/v3/kv/put` or a linearizable `/v3/kv/range` of a random key.

    Bodies are made per request from base64 keys computed here; the script counts good
    answers, failures and ranges that found nothing, and prints them from done()."""
    if kind not in ("put", "range"):
        raise ValueError(f"unknown wrk script kind {kind!r}")
    keys = ",\n".join(_lua_string(key) for key in keys_b64)
    body = (
        """'{"key":"' .. keys[math.random(n)] .. '","value":"' .. value .. '"}'"""
        if kind == "put"
        else """'{"key":"' .. keys[math.random(n)] .. '"}'"""
    )
    check_missing = "true" if kind == "range" else "false"
    return f"""-- generated by simulations/vs_etcd.py
local keys = {{
{keys}
}}
local n = #keys
local value = {_lua_string(value_b64)}
local path = "/v3/kv/{kind}"
local headers = {{["Content-Type"] = "application/json"}}
local check_missing = {check_missing}
local threads = {{}}
local counter = 1

function setup(thread)
  thread:set("id", counter)
  table.insert(threads, thread)
  counter = counter + 1
end

function init(args)
  math.randomseed({seed} + id * 7919)
  ok = 0
  missing = 0
  failed = 0
end

function request()
  return wrk.format("POST", path, headers, {body})
end

function response(status, headers, body)
  if status ~= 200 then
    failed = failed + 1
  elseif check_missing and not string.find(body, '"kvs"', 1, true) then
    missing = missing + 1
  else
    ok = ok + 1
  end
end

function done(summary, latency, requests)
  local o, m, f = 0, 0, 0
  for _, thread in ipairs(threads) do
    o = o + thread:get("ok")
    m = m + thread:get("missing")
    f = f + thread:get("failed")
  end
  io.write(string.format("vs_etcd: ok %d missing %d failed %d\\n", o, m, f))
end
"""


def run_wrk(url: str, script: Path, duration: float) -> WrkResult:
    seconds = max(1, round(duration))
    command = [
        "wrk",
        f"-t{WRK_THREADS}",
        f"-c{CONNECTIONS}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode:
        raise RuntimeError(f"wrk failed: {done.stderr.strip()[-2000:]}")
    return parse_wrk(done.stdout)


# --------------------------------------------------------------------------- etcd


def _post(url: str, path: str, body: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    request = urllib.request.Request(
        url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _stop(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process we started (by pid), SIGKILL what is still there after 10 s."""
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait()


@contextlib.contextmanager
def etcd_cluster(root: Path) -> Iterator[str]:
    """A fresh 3-member etcd cluster on 127.0.0.1 under ``root``; yields the leader's URL."""
    root.mkdir(parents=True)
    ports = free_ports(6)
    names = ["e1", "e2", "e3"]
    peers = ",".join(f"{n}=http://127.0.0.1:{ports[3 + i]}" for i, n in enumerate(names))
    urls = [f"http://127.0.0.1:{port}" for port in ports[:3]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for i, name in enumerate(names):
            with (root / f"{name}.log").open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        [
                            "etcd", "--name", name, "--data-dir", str(root / name),
                            "--listen-client-urls", urls[i],
                            "--advertise-client-urls", urls[i],
                            "--listen-peer-urls", f"http://127.0.0.1:{ports[3 + i]}",
                            "--initial-advertise-peer-urls", f"http://127.0.0.1:{ports[3 + i]}",
                            "--initial-cluster", peers,
                            "--initial-cluster-state", "new",
                            "--initial-cluster-token", f"vs-etcd-{os.getpid()}-{ports[0]}",
                            "--quota-backend-bytes", str(ETCD_QUOTA_BYTES),
                        ],
                        stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env,
                        start_new_session=True,
                    )
                )  # fmt: skip
        yield _wait_leader(urls, processes, root)
    finally:
        _stop(processes)


def _wait_leader(urls: list[str], processes: Sequence[subprocess.Popen[bytes]], root: Path) -> str:
    deadline = time.monotonic() + ETCD_READY_TIMEOUT
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"an etcd member exited; see the logs in {root}")
        try:
            statuses = [_post(url, "/v3/maintenance/status", {}, timeout=2) for url in urls]
        except (OSError, ValueError):
            time.sleep(0.3)
            continue
        leaders = {status.get("leader") for status in statuses}
        if len(leaders) == 1 and None not in leaders and "0" not in leaders:
            for url, status in zip(urls, statuses, strict=True):
                if status["header"]["member_id"] == status["leader"]:
                    return url
        time.sleep(0.3)
    raise RuntimeError(f"etcd had no leader after {ETCD_READY_TIMEOUT:g}s")


def etcd_prefill(url: str, keys_b64: Sequence[str], value_b64: str, value_size: int) -> None:
    """Write every key once (transactions of many puts), so ranges find what they ask for."""
    per_txn = max(1, min(ETCD_TXN_OPS, ETCD_REQUEST_BYTES // value_size))
    for start in range(0, len(keys_b64), per_txn):
        chunk = keys_b64[start : start + per_txn]
        ops = [{"request_put": {"key": key, "value": value_b64}} for key in chunk]
        reply = _post(url, "/v3/kv/txn", {"success": ops}, timeout=60)
        if not reply.get("succeeded"):
            raise RuntimeError(f"etcd refused the prefill transaction: {reply}")


def measure_etcd(
    name: str, root: Path, scripts: dict[str, Path], keys_b64: Sequence[str], value_b64: str,
    args: argparse.Namespace,
) -> Run:  # fmt: skip
    with etcd_cluster(root) as leader:
        _note(f"{name}: prefilling {len(keys_b64):,} keys ...")
        etcd_prefill(leader, keys_b64, value_b64, args.value_size)
        _note(f"{name}: puts for {args.duration:g}s ...")
        puts = run_wrk(leader, scripts["put"], args.duration)
        _note(f"{name}: linearizable ranges for {args.duration:g}s ...")
        ranges = run_wrk(leader, scripts["range"], args.duration)
    return Run(name, Phase.from_wrk(puts), Phase.from_wrk(ranges))


# --------------------------------------------------------------------------- p2pindex


def _bench(cluster: LocalCluster, args: argparse.Namespace, mode: list[str]) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "p2pindex", "bench", *mode,
        "--consistency", "quorum",
        "--concurrency", str(CONNECTIONS),
        "--processes", str(args.processes),
        "--value-size", str(args.value_size),
        "--records", str(args.records),
        "--duration", str(args.duration),
        "--format", "json",
    ]  # fmt: skip
    for address in cluster.addresses:
        command += ["--node", address]
    timeout = args.duration + 600
    done = subprocess.run(
        command, env=cluster.client_environment(), capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"p2pindex bench failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout)


def measure_p2pindex(root: Path, args: argparse.Namespace) -> Run:
    extra = ("--fsync",) if args.fsync else ()
    with LocalCluster(3, root, extra_args=extra) as cluster:
        _note("p2pindex: starting 3 secure local nodes" + (" with --fsync" if extra else ""))
        cluster.start()
        wait_converged(cluster)
        # As for etcd: every record written once (bench's load phase, not measured), then
        # writes over the keyspace, then reads of what is there.
        _note(f"p2pindex: load, then QUORUM writes for {args.duration:g}s ...")
        writes = _bench(cluster, args, ["--write-only", "--load"])
        _note(f"p2pindex: QUORUM reads for {args.duration:g}s ...")
        reads = _bench(cluster, args, ["--workload", "c"])
    name = "p2pindex" + (" (--fsync)" if args.fsync else "")
    return Run(name, Phase.from_bench(writes, "UPDATE"), Phase.from_bench(reads, "READ"))


# --------------------------------------------------------------------------- main


def echo_figure(round_trips: int) -> float:
    """Round trips/s of one `loopback_echo.py` run: this machine's speed for a trio node."""
    sys.path.insert(0, str(HERE))
    try:
        import loopback_echo
    finally:
        sys.path.remove(str(HERE))
    rate, _median_us, _cpu_us = loopback_echo.measure(round_trips)
    return rate


def _note(text: str) -> None:
    print(f"vs_etcd: {text}", file=sys.stderr, flush=True)


def _default_records(value_size: int) -> int:
    """10,000 keys as `p2pindex bench`, fewer for large values (a 64 MiB data set at most),
    so the prefill and etcd's revisions stay within memory and disk."""
    return max(100, min(10_000, 64 * 1024 * 1024 // value_size))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration", type=float, default=20.0, help="seconds per measured phase (default 20)"
    )
    parser.add_argument("--value-size", type=int, default=100, help="bytes per value (default 100)")
    parser.add_argument(
        "--records", type=int, help="keys in the keyspace (default 10000; fewer past 6 KiB)"
    )
    parser.add_argument(
        "--fsync",
        action="store_true",
        help="start the p2pindex nodes with --fsync (etcd always syncs its log)",
    )
    parser.add_argument(
        "--processes", type=int, default=1, help="p2pindex bench worker processes (default 1)"
    )
    parser.add_argument(
        "--echo-round-trips",
        type=int,
        default=20_000,
        help="round trips of each echo run (0: skip the echo)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    if args.duration < 1 or args.value_size < 1 or args.processes < 1:
        parser.error("--duration, --value-size and --processes must be at least 1")
    if args.records is None:
        args.records = _default_records(args.value_size)
    if args.records < 1:
        parser.error("--records must be at least 1")
    missing = [tool for tool in ("etcd", "wrk") if shutil.which(tool) is None]
    if missing:
        print(
            f"error: {' and '.join(missing)} not installed; this benchmark needs both "
            "(Debian: apt-get install etcd-server wrk)",
            file=sys.stderr,
        )
        return EXIT_MISSING_TOOL

    rng = random.Random(args.seed)
    keys_b64 = [base64.b64encode(key_name(i)).decode() for i in range(args.records)]
    value_b64 = base64.b64encode(rng.randbytes(args.value_size)).decode()
    root = Path(tempfile.mkdtemp(prefix="p2pindex-vs-etcd-"))
    try:
        with stop_signals_interrupt():
            return _measure_all(args, root, keys_b64, value_b64)
    except KeyboardInterrupt:
        print("vs_etcd: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    except (RuntimeError, ValueError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _measure_all(
    args: argparse.Namespace, root: Path, keys_b64: Sequence[str], value_b64: str
) -> int:
    echo: list[float] = []
    scripts = {}
    for kind in ("put", "range"):
        scripts[kind] = root / f"{kind}.lua"
        scripts[kind].write_text(wrk_script(kind, keys_b64, value_b64, args.seed))
    if args.echo_round_trips > 0:
        echo.append(echo_figure(args.echo_round_trips))
    first = measure_etcd("etcd (first)", root / "etcd1", scripts, keys_b64, value_b64, args)
    p2p = measure_p2pindex(root / "p2pindex", args)
    second = measure_etcd("etcd (second)", root / "etcd2", scripts, keys_b64, value_b64, args)
    if args.echo_round_trips > 0:
        echo.append(echo_figure(args.echo_round_trips))
    etcd_runs = [first, second]
    if args.json:
        document = {
            "config": {
                "duration_s": args.duration,
                "value_size": args.value_size,
                "records": args.records,
                "connections": CONNECTIONS,
                "fsync": args.fsync,
                "p2pindex": "3 local secure nodes, N=3, QUORUM, p2pindex bench",
                "etcd": "3 members, JSON gateway of the leader, wrk, linearizable ranges",
            },
            "runs": [asdict(run) for run in (first, p2p, second)],
            "ratios": ratios(etcd_runs, p2p),
            "echo_round_trips_per_s": echo,
        }
        print(json.dumps(document, indent=2))
    else:
        print(
            f"# {args.value_size}-byte values, {args.records:,} keys, {CONNECTIONS} in flight, "
            f"{args.duration:g}s a phase; etcd: 3 members, wrk on the leader's JSON gateway, "
            f"fsync on; p2pindex: 3 secure nodes, N=3, QUORUM"
            + (", --fsync" if args.fsync else ", no --fsync")
        )
        print("\n".join(report(etcd_runs, p2p, args.value_size, echo)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The `p2pindex` command against real (secure) node processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pindex.cli.local_cluster import LocalCluster, free_ports, port_is_free, wait_converged
from p2pindex.security.credentials import CREDENTIALS_ENV

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(3, tmp_path_factory.mktemp("cli-e2e")) as local:
        local.start()
        wait_converged(local)
        yield local


def p2pindex(
    *args: str,
    stdin: bytes | None = None,
    timeout: float = 60,
    credentials: Path | str | None = None,
) -> subprocess.CompletedProcess:
    """Run the command line (with ``credentials`` as $P2PINDEX_CREDENTIALS); on a hang, stop
    it by pid (SIGTERM, then SIGKILL)."""
    env = {k: v for k, v in os.environ.items() if k not in ("P2PINDEX_NODE", CREDENTIALS_ENV)}
    if credentials is not None:
        env[CREDENTIALS_ENV] = str(credentials)
    process = subprocess.Popen(
        [sys.executable, "-m", "p2pindex", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        out, err = process.communicate(stdin, timeout=timeout)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_put_get_delete_round_trip(cluster: LocalCluster) -> None:
    node = ["--node", cluster.addresses[0]]
    admin = {"credentials": cluster.credentials}
    put = p2pindex(
        "put", "e2e-key", "-", *node, "--consistency", "all", stdin=b"first\x00value", **admin
    )
    assert put.returncode == 0, put.stderr
    got = p2pindex(
        "get", "e2e-key", "--node", cluster.addresses[1], "--consistency", "all", **admin
    )
    assert got.returncode == 0, got.stderr
    assert got.stdout == b"first\x00value"
    context = got.stderr.decode().split("context: ", 1)[1].strip()
    replaced = p2pindex("put", "e2e-key", "second", *node, "--context", context, **admin)
    assert replaced.returncode == 0, replaced.stderr
    as_json = p2pindex("get", "e2e-key", *node, "--format", "json", **admin)
    document = json.loads(as_json.stdout)
    assert (document["found"], document["values"]) == (True, ["second"])
    deleted = p2pindex("delete", "e2e-key", *node, "--context", document["context"], **admin)
    assert deleted.returncode == 0, deleted.stderr
    gone = p2pindex("get", "e2e-key", *node, **admin)
    assert gone.returncode == 3
    assert gone.stderr == b"not found: e2e-key\n"


def test_get_of_a_missing_key_exits_3(cluster: LocalCluster) -> None:
    result = p2pindex(
        "get", "never-written", "--node", cluster.addresses[2], credentials=cluster.credentials
    )
    assert result.returncode == 3
    assert result.stdout == b""


def test_status_lists_every_member(cluster: LocalCluster) -> None:
    node = ["--node", cluster.addresses[0]]
    result = p2pindex("status", *node, "--format", "json", credentials=cluster.credentials)
    assert result.returncode == 0, result.stderr
    members = json.loads(result.stdout)["members"]
    assert {m["address"] for m in members} == set(cluster.addresses)
    text = p2pindex("status", *node, credentials=cluster.credentials)
    assert text.returncode == 0 and b"OWNERSHIP" in text.stdout


def test_a_client_without_credentials_is_refused_with_one_line(cluster: LocalCluster) -> None:
    result = p2pindex("put", "k", "v", "--node", cluster.addresses[0])
    assert result.returncode == 1
    assert "permission denied: this node requires authenticated connections" in one_error_line(
        result
    )
    got = p2pindex("get", "k", "--node", cluster.addresses[0], credentials=cluster.credentials)
    assert got.returncode == 3


def one_error_line(result: subprocess.CompletedProcess) -> str:
    err = result.stderr.decode()
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def test_unreachable_node() -> None:
    (port,) = free_ports(1)
    result = p2pindex("get", "k", "--node", f"127.0.0.1:{port}")
    assert result.returncode == 4
    assert f"127.0.0.1:{port}" in one_error_line(result)


@pytest.fixture
def silent_seed() -> Iterator[str]:
    """An address that accepts TCP connections and never says a word (a hung process)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"127.0.0.1:{listener.getsockname()[1]}"


def test_a_silent_seed_sends_the_client_to_the_next_node(
    cluster: LocalCluster, silent_seed: str
) -> None:
    """Before: `protocol error: the handshake did not complete within 5s`, exit 1."""
    nodes = ["--node", silent_seed, "--node", cluster.addresses[1]]
    started = time.monotonic()
    put = p2pindex("put", "failover-key", "v", *nodes, credentials=cluster.credentials)
    assert put.returncode == 0, put.stderr
    got = p2pindex("get", "failover-key", *nodes, credentials=cluster.credentials)
    assert (got.returncode, got.stdout) == (0, b"v"), got.stderr
    assert time.monotonic() - started < 20
    alone = p2pindex(
        "get", "failover-key", "--node", silent_seed, "--handshake-timeout", "0.5",
        credentials=cluster.credentials,
    )  # fmt: skip
    assert alone.returncode == 4
    assert f"{silent_seed} (the handshake did not complete within 0.5s)" in one_error_line(alone)


def test_a_node_with_a_larger_value_limit_takes_large_values(tmp_path: Path) -> None:
    """Before: the CLI refused a 2 MB value by the default limit whatever the node said."""
    with LocalCluster(
        1, tmp_path, n_replicas=1, extra_args=("--max-value", str(4 * 1024 * 1024))
    ) as local:
        local.start()
        big = os.urandom(2 * 1024 * 1024)
        node = ["--node", local.addresses[0]]
        put = p2pindex("put", "big", "-", *node, stdin=big, credentials=local.credentials)
        assert put.returncode == 0, put.stderr
        got = p2pindex("get", "big", *node, credentials=local.credentials)
        assert got.returncode == 0 and got.stdout == big
        too_big = os.urandom(4 * 1024 * 1024 + 1)
        refused = p2pindex("put", "big", "-", *node, stdin=too_big, credentials=local.credentials)
        assert refused.returncode == 1
        assert "the cluster's limit is 4194304" in one_error_line(refused)


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["get", "k", "--node", "127.0.0.1"], "bad address"),
        (["get", "k", "--node", "127.0.0.1:http"], "is not a number"),
        (["put", "k", "v", "--node", "127.0.0.1:7001", "--consistency", "lots"], "bad consistency"),
    ],
)
def test_bad_arguments(args: list[str], text: str) -> None:
    result = p2pindex(*args)
    assert result.returncode == 2
    assert text in one_error_line(result)


def test_consistency_above_n_is_refused(cluster: LocalCluster) -> None:
    result = p2pindex(
        "put",
        "k",
        "v",
        "--node",
        cluster.addresses[0],
        "--consistency",
        "4",
        credentials=cluster.credentials,
    )
    assert result.returncode == 1
    assert "outside 1..3" in one_error_line(result)


def ignore_sigint() -> None:
    """What a shell does to a background job: it starts with SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def stderr_of(process: subprocess.Popen[str]) -> str:
    """What a process that went wrong said on stderr (waits a little for it to end)."""
    try:
        return process.communicate(timeout=10)[1]
    except subprocess.TimeoutExpired:
        return "(still running)"


def test_dev_starts_and_stops_its_nodes(tmp_path: Path) -> None:
    base = free_ports(1)[0]
    while not port_is_free("127.0.0.1", base + 1):
        base = free_ports(1)[0]
    # Started the way a background job is, `kill -INT` must still stop it and its nodes.
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "p2pindex",
            "dev",
            "--nodes",
            "2",
            "--base-port",
            str(base),
            "--data-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ignore_sigint,
    )
    try:
        lines = []
        for line in process.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if line.startswith("press Ctrl-C"):
                break
        pids = [int(line.split(" pid ")[1].split()[0]) for line in lines if " pid " in line]
        assert len(pids) == 2, "".join(lines) + stderr_of(process)
        assert any("security on" in line for line in lines)
        exports = [line.split("=", 1)[1].strip() for line in lines if "export " in line]
        assert exports == [str(tmp_path / "admin.cred")]
        node = ["--node", f"127.0.0.1:{base}"]
        put = p2pindex("put", "dev-key", "v", *node, credentials=exports[0])
        assert put.returncode == 0, put.stderr
        assert p2pindex("get", "dev-key", *node).returncode == 1  # no credentials: refused
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        assert process.returncode == 0
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def test_bench_fsync_starts_its_nodes_syncing_every_commit() -> None:
    args = ["bench", "--nodes", "1", "--write-only", "--duration", "1", "--records", "50"]
    args += ["--concurrency", "4", "--format", "json", "--fsync"]
    result = p2pindex(*args, timeout=120)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert "fsync on every commit" in document["config"]["cluster"]
    assert document["run"]["operations"] > 0 and document["run"]["errors"] == 0


@pytest.mark.parametrize("insecure", [False, True])
def test_bench_runs_its_local_cluster_secure_unless_told_insecure(insecure: bool) -> None:
    args = ["bench", "--nodes", "1", "--write-only", "--duration", "1", "--records", "50"]
    args += ["--concurrency", "4", "--format", "json"] + (["--insecure"] if insecure else [])
    result = p2pindex(*args, timeout=120)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    expected = "security off (--insecure)" if insecure else "security on"
    assert expected in document["config"]["cluster"]
    run = document["run"]
    assert run["operations"] > 0 and run["errors"] == 0, run
    # It started the nodes, so it reports what they cost: CPU per operation and memory.
    assert run["node_cpu_us_per_op"] > 0 and 10 < run["node_max_rss_mb"] < 1000, run

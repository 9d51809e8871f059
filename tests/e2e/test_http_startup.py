"""The HTTP port of a starting node: bound before the node starts (a busy port fails the
start at once, named as the HTTP port, before the node joins anyone), and answering health
and status during the join wait (up to 10 s while no seed answers)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from p2pindex.cli.local_cluster import free_ports

pytestmark = pytest.mark.e2e


def serve(tmp_path: Path, node_port: int, http_port: int, seed: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable, "-m", "p2pindex", "serve", "--insecure",
            "--data-dir", str(tmp_path / "node"), "--listen", f"127.0.0.1:{node_port}",
            "--seed", f"127.0.0.1:{seed}", "--http", f"127.0.0.1:{http_port}",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def test_health_answers_during_the_join_wait(tmp_path: Path) -> None:
    node_port, http_port, nobody = free_ports(3)
    process = serve(tmp_path, node_port, http_port, nobody)  # its only seed never answers
    try:
        started = time.monotonic()
        while True:
            try:
                live = get(f"http://127.0.0.1:{http_port}/livez")
                break
            except OSError:
                assert time.monotonic() - started < 8, "no HTTP answer within 8 s"
                assert process.poll() is None, process.communicate()
                time.sleep(0.2)
        assert time.monotonic() - started < 8  # the join wait alone is 10 s
        assert live[0] == 200
        status, why = get(f"http://127.0.0.1:{http_port}/readyz")
        assert status == 503 and "no seed or known member has answered" in why, why
    finally:
        process.kill()
        process.communicate()


def test_a_busy_http_port_fails_the_start_naming_the_http_port(tmp_path: Path) -> None:
    node_port, http_port, nobody = free_ports(3)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", http_port))
        holder.listen()
        process = serve(tmp_path, node_port, http_port, nobody)
        try:
            out, err = process.communicate(timeout=30)
        finally:
            process.kill()
    assert process.returncode != 0
    assert f"cannot listen for HTTP on 127.0.0.1:{http_port}" in err, err
    assert "already in use" in err
    assert "listening on" not in err  # the node never started (nor joined anyone)
    assert "ready" not in out

"""Real node processes on loopback for end-to-end tests; every one is stopped by its pid."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

READY_TIMEOUT = 20.0


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both TCP and UDP on ``host`` (SWIM shares the data port number)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port found")


@dataclass
class NodeProcess:
    process: subprocess.Popen[str]
    data_dir: Path
    address: str
    node_id: str
    args: list[str]

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: a crash with no goodbye."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not exit in time."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        return self.process.returncode


def start_node(
    data_dir: Path, address: str, seeds: list[str] = (), extra: list[str] = ()
) -> NodeProcess:
    args = [
        sys.executable,
        "-m",
        "p2pindex",
        "serve",
        "--data-dir",
        str(data_dir),
        "--listen",
        address,
        *[arg for seed in seeds for arg in ("--seed", seed)],
        *extra,
    ]
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "stderr.log"
    with open(log_path, "a") as log:
        process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True
        )
    deadline = time.monotonic() + READY_TIMEOUT
    line = ""
    while time.monotonic() < deadline:
        line = process.stdout.readline() if process.stdout else ""
        if line.startswith("ready "):
            fields = dict(part.split("=", 1) for part in line.split()[1:])
            return NodeProcess(process, data_dir, fields["address"], fields["node_id"], args)
        if process.poll() is not None:
            break
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    stderr = log_path.read_text()
    raise RuntimeError(f"node did not become ready: {line!r} {stderr[-2000:]}")

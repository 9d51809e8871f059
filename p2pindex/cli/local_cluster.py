"""Real node processes on 127.0.0.1, for `dev`, `demo`, `bench --nodes` and end-to-end tests.

Each node is ``python -m p2pindex serve`` in its own session (so a terminal's Ctrl-C
reaches only us and we stop the nodes in order), with stdout and stderr going to files:
a pipe nobody drains would eventually block a chatty node. The cluster stops exactly the
processes it started, by pid: SIGTERM first, SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import BinaryIO

from p2pindex.client import Client
from p2pindex.errors import P2PIndexError
from p2pindex.types import Address

HOST = "127.0.0.1"
READY_PREFIX = "ready "


class ClusterError(OSError):
    """A local node could not be started, or the cluster did not come together in time."""


@dataclass
class LocalNode:
    index: int
    address: Address
    data_dir: Path
    out_path: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    node_id: str = ""
    _files: list[BinaryIO] = field(default_factory=list, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


def port_is_free(host: str, port: int) -> bool:
    """True when both TCP and UDP can bind ``port`` (a node serves both on one port)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, port))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, port))
    except OSError:
        return False
    return True


def free_ports(count: int, host: str = HOST) -> list[int]:
    """Ports free for TCP and UDP right now, chosen by the kernel (distinct from each other)."""
    ports: list[int] = []
    holders: list[socket.socket] = []
    try:
        while len(ports) < count:
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            holders.append(tcp)
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            holders.append(udp)
            try:
                udp.bind((host, port))
            except OSError:
                continue
            ports.append(port)
    finally:
        for holder in holders:
            holder.close()
    return ports


class LocalCluster:
    """``size`` node processes under ``root``; a context manager that always stops them."""

    def __init__(
        self,
        size: int,
        root: Path,
        *,
        base_port: int | None = None,
        n_replicas: int | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        if base_port is not None:
            if not 1 <= base_port <= 65535 - size + 1:
                raise ValueError(f"base port {base_port} leaves no room for {size} nodes")
            ports = list(range(base_port, base_port + size))
            busy = [port for port in ports if not port_is_free(HOST, port)]
            if busy:
                raise ClusterError(
                    f"port(s) {', '.join(map(str, busy))} on {HOST} are in use; "
                    "pick another --base-port"
                )
        else:
            ports = free_ports(size)
        self.root = root
        self.n_replicas = n_replicas if n_replicas is not None else min(3, size)
        self.extra_args = extra_args
        self.nodes = [
            LocalNode(
                index=i,
                address=Address(HOST, port),
                data_dir=root / f"node{i + 1}",
                out_path=root / f"node{i + 1}.out",
                log_path=root / f"node{i + 1}.log",
            )
            for i, port in enumerate(ports)
        ]

    @property
    def addresses(self) -> list[str]:
        return [str(node.address) for node in self.nodes]

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> None:
        """Start every node and wait for each one's ``ready`` line."""
        self.root.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            self._spawn(node)
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            self._wait_ready(node, deadline)

    def restart(self, index: int, timeout: float = 30.0) -> None:
        """Start a stopped node again with its old data directory."""
        node = self.nodes[index]
        if node.running:
            raise ClusterError(f"node {index + 1} is still running")
        self._spawn(node)
        self._wait_ready(node, time.monotonic() + timeout)

    def _command(self, node: LocalNode) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "p2pindex",
            "serve",
            "--data-dir",
            str(node.data_dir),
            "--listen",
            str(node.address),
            "--n-replicas",
            str(self.n_replicas),
        ]
        for other in self.nodes:
            if other is not node:
                command += ["--seed", str(other.address)]
        return command + list(self.extra_args)

    def _spawn(self, node: LocalNode) -> None:
        for handle in node._files:
            handle.close()
        out = node.out_path.open("wb")
        log = node.log_path.open("ab")
        node._files = [out, log]
        node.process = subprocess.Popen(
            self._command(node),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=log,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def _wait_ready(self, node: LocalNode, deadline: float) -> None:
        while True:
            line = _ready_line(node.out_path)
            if line is not None:
                fields = dict(
                    part.split("=", 1) for part in line[len(READY_PREFIX) :].split() if "=" in part
                )
                node.node_id = fields.get("node_id", "")
                return
            assert node.process is not None
            if node.process.poll() is not None:
                raise ClusterError(
                    f"node {node.index + 1} ({node.address}) exited with code "
                    f"{node.process.returncode} before it was ready"
                    + (f": {node.log_tail(1)}" if node.log_tail(1) else "")
                    + f" (log: {node.log_path})"
                )
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"node {node.index + 1} ({node.address}) was not ready in time "
                    f"(log: {node.log_path})"
                )
            time.sleep(0.02)

    def kill(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to one node (by its pid) and wait for it to exit."""
        node = self.nodes[index]
        if node.running:
            assert node.process is not None
            node.process.send_signal(sig)
            node.process.wait()

    def stop(self, grace: float = 5.0) -> None:
        """Stop every node still running: SIGTERM, then SIGKILL after ``grace`` seconds."""
        running = [node for node in self.nodes if node.running]
        for node in running:
            assert node.process is not None
            with contextlib.suppress(ProcessLookupError):
                node.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for node in running:
            assert node.process is not None
            try:
                node.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    node.process.kill()
                node.process.wait()
        for node in self.nodes:
            for handle in node._files:
                handle.close()
            node._files = []


def _ready_line(path: Path) -> str | None:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        if line.startswith(READY_PREFIX):
            return line
    return None


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C while the block runs, so cleanup code still stops the nodes."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def wait_converged(cluster: LocalCluster, timeout: float = 20.0) -> None:
    """Wait until every running node sees every running node alive and active.

    Alive alone is not enough: a node that just joined is SYNCING (receiving its ranges)
    and does not take requests for them until it is ACTIVE.
    """
    running = [node for node in cluster.nodes if node.running]
    expected = {node.node_id for node in running}
    deadline = time.monotonic() + timeout
    with Client([str(node.address) for node in running], timeout=2.0) as db:
        while True:
            lagging = []
            for node in running:
                try:
                    members = db.members(node.address).members
                except P2PIndexError:
                    lagging.append(node)
                    continue
                ready = {
                    m.get("node_id")
                    for m in members
                    if m.get("liveness") == "alive" and m.get("state", "active") == "active"
                }
                if not expected <= ready:
                    lagging.append(node)
            if not lagging:
                return
            if time.monotonic() > deadline:
                names = ", ".join(str(node.address) for node in lagging)
                raise ClusterError(
                    f"the cluster did not converge in {timeout:g}s (lagging: {names})"
                )
            time.sleep(0.1)

"""Real node processes on 127.0.0.1, for `dev`, `demo`, `bench --nodes` and end-to-end tests.

Each node is ``python -m p2pindex serve`` in its own session (so a terminal's Ctrl-C
reaches only us and we stop the nodes in order), with stdout and stderr going to files:
a pipe nobody drains would eventually block a chatty node. The cluster stops exactly the
processes it started, by pid: SIGTERM first, SIGKILL after a grace period.

A cluster is secure unless told ``insecure``: it keeps a cluster authority (its own under
the root, or one it is given), provisions every node's data directory with it right before
each start (so restarted and later nodes are members too), and keeps an admin credentials
file in the root for the clients that talk to it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import BinaryIO

import trio

from p2pindex.client import connect
from p2pindex.errors import ConfigError, P2PIndexError
from p2pindex.security.authority import Authority
from p2pindex.security.bearer import issue_bearer
from p2pindex.security.certs import Role
from p2pindex.security.credentials import CREDENTIALS_ENV, ClientCredentials
from p2pindex.types import Address

HOST = "127.0.0.1"
READY_PREFIX = "ready "
DASHBOARD_TOKEN_LIFETIME = 7 * 24 * 3600
AUTHORITY_DIR = "authority"
ADMIN_CREDENTIALS = "admin.cred"


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
    http_port: int | None = None
    http_url: str = ""
    """The node's HTTP listener, from its ready line (empty when it has none)."""
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
    """True when both TCP and UDP can bind ``port`` (a node serves both on one port).

    TCP binds with SO_REUSEADDR, as the node's listener does (trio sets it), so connections
    of a node stopped a moment ago, lingering in TIME_WAIT, do not count as a user."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((host, port))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, port))
    except OSError:
        return False
    return True


def free_ports(count: int, host: str = HOST, exclude: Collection[int] = ()) -> list[int]:
    """Ports free for TCP and UDP right now, chosen by the kernel, distinct from each other
    and from ``exclude`` (ports already promised to something that has not bound them yet)."""
    ports: list[int] = []
    holders: list[socket.socket] = []
    try:
        while len(ports) < count:
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            holders.append(tcp)
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            if port in exclude:
                continue
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
    """``size`` node processes under ``root``; a context manager that always stops them.

    Secure by default: ``authority`` names the authority directory to certify nodes with
    (default ``root/authority``, created on first use); ``insecure`` runs the nodes with
    ``--insecure`` instead, for benchmarks that need the baseline.
    """

    def __init__(
        self,
        size: int,
        root: Path,
        *,
        base_port: int | None = None,
        n_replicas: int | None = None,
        extra_args: tuple[str, ...] = (),
        insecure: bool = False,
        authority: Path | None = None,
        http: bool = False,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        if "--insecure" in extra_args:
            raise ValueError("pass insecure=True rather than --insecure in extra_args")
        if insecure and authority is not None:
            raise ValueError("an insecure cluster has no authority")
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
        self.insecure = insecure
        self.authority_dir = None if insecure else (authority or root / AUTHORITY_DIR)
        self.credentials = None if insecure else root / ADMIN_CREDENTIALS
        """The admin credentials file clients of this cluster use (None when insecure)."""
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
        if http:
            http_ports = free_ports(size, exclude=ports)
            for node, port in zip(self.nodes, http_ports, strict=True):
                node.http_port = port

    @property
    def addresses(self) -> list[str]:
        return [str(node.address) for node in self.nodes]

    def dashboard_url(self, node: LocalNode) -> str:
        """The node's dashboard; on a secure cluster with a read-only bearer token (valid a
        week) in the URL's fragment, which the page sends and the browser never logs."""
        if not node.http_url:
            return ""
        if self.authority_dir is None:
            return f"{node.http_url}/"
        authority = Authority.load(self.authority_dir)
        token = issue_bearer(authority, Role.READ, b"", DASHBOARD_TOKEN_LIFETIME)
        return f"{node.http_url}/#token={token}"

    def client_environment(self) -> dict[str, str]:
        """This process's environment with ``$P2PINDEX_CREDENTIALS`` naming this cluster's
        admin credentials (or unset when insecure): for `p2pindex` client subprocesses."""
        env = {k: v for k, v in os.environ.items() if k != CREDENTIALS_ENV}
        if self.credentials is not None:
            env[CREDENTIALS_ENV] = str(self.credentials)
        return env

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

    def _provision(self, node: LocalNode) -> None:
        """Certify ``node`` and make sure the admin credentials are current.

        The authority is read from its directory every time, so a rotation done on disk by
        the caller is what the next start uses. Provisioning again renews the certificate;
        credentials that expired or predate a rotation are issued again.
        """
        if self.authority_dir is None or self.credentials is None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        authority = Authority.load_or_init(self.authority_dir)
        authority.provision(node.data_dir)
        try:
            current = ClientCredentials.load(self.credentials)
            current.check(time.time())
        except ConfigError:
            current = None
        if current is None or current.trust != authority.trust:
            authority.credentials(Role.ADMIN).save(self.credentials)

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
        for other in self.nodes:  # the same list on every node, its own address included
            command += ["--seed", str(other.address)]
        if self.insecure:
            command.append("--insecure")
        if node.http_port is not None:
            command += ["--http", f"{HOST}:{node.http_port}"]
        return command + list(self.extra_args)

    def _spawn(self, node: LocalNode) -> None:
        self._provision(node)
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
                node.http_url = fields.get("http", "")
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
def stop_signals_interrupt() -> Iterator[None]:
    """Treat SIGTERM and SIGINT like Ctrl-C while the block runs, so cleanup code still stops
    the nodes. SIGINT is set explicitly: a command started as a background job inherits it
    ignored, and `kill -INT` would then leave its nodes running (seen in a test harness)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous_term = signal.signal(signal.SIGTERM, handler)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)


@contextlib.contextmanager
def credentials_in_environment(credentials: Path | None) -> Iterator[None]:
    """Point ``$P2PINDEX_CREDENTIALS`` at ``credentials`` (unset it for None) while the
    block runs: for clients that take them from the environment, as the blocking Client and
    the `p2pindex` client commands do."""
    previous = os.environ.get(CREDENTIALS_ENV)
    if credentials is None:
        os.environ.pop(CREDENTIALS_ENV, None)
    else:
        os.environ[CREDENTIALS_ENV] = str(credentials)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(CREDENTIALS_ENV, None)
        else:
            os.environ[CREDENTIALS_ENV] = previous


def wait_converged(cluster: LocalCluster, timeout: float = 20.0) -> None:
    """Wait until every running node sees every running node alive and active.

    Alive alone is not enough: a node that just joined is SYNCING (receiving its ranges)
    and does not take requests for them until it is ACTIVE.
    """
    trio.run(_wait_converged, cluster, timeout)


async def _wait_converged(cluster: LocalCluster, timeout: float) -> None:
    running = [node for node in cluster.nodes if node.running]
    expected = {node.node_id for node in running}
    deadline = time.monotonic() + timeout
    addresses = [str(node.address) for node in running]
    # The client reads its credentials when it is made; scoping the environment also keeps
    # an insecure cluster's client from picking up credentials meant for another cluster.
    with credentials_in_environment(cluster.credentials):
        db = connect(addresses, timeout=2.0)
    async with db:
        while True:
            lagging = []
            for node in running:
                try:
                    members = await db.members(node.address)
                except P2PIndexError:
                    lagging.append(node)
                    continue
                ready = {
                    m.node_id for m in members if m.liveness == "alive" and m.state == "active"
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
            await trio.sleep(0.1)

"""Running a node as a real process: real sockets, SQLite on disk, signals, one ready line."""

from __future__ import annotations

import fcntl
import os
import random
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trio

from p2pindex.config import NodeConfig
from p2pindex.errors import ConfigError
from p2pindex.net.trio_transport import TrioTransport
from p2pindex.node.identity import NodeIdentity
from p2pindex.node.node import Node
from p2pindex.security.files import node_security
from p2pindex.storage.sqlite import SqliteStorage
from p2pindex.types import Address

DATA_FILE = "data.sqlite3"
LOCK_FILE = "LOCK"


@contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Refuse to start two nodes on one data directory: they would corrupt each other."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{data_dir} is in use by another running node") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


async def serve_node(
    config: NodeConfig,
    *,
    task_status: trio.TaskStatus[tuple[Node, Address]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a node until SIGINT or SIGTERM, then leave the cluster gracefully and exit."""
    assert config.data_dir is not None
    with data_dir_lock(config.data_dir):
        identity = NodeIdentity.load_or_create(config.data_dir)
        security = node_security(
            config.data_dir,
            identity.signing_key,
            insecure=config.insecure,
            trust=config.trust_file,
            certificate=config.certificate_file,
        )
        storage = await SqliteStorage.open(config.data_dir / DATA_FILE, fsync=config.fsync)
        try:
            node = Node(
                config,
                transport=TrioTransport(config.listen),
                storage=storage,
                identity=identity,
                rng=random.Random(),
                wall_clock=time.time,
                security=security,
            )
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async with trio.open_nursery() as nursery:

                    async def run_node(
                        task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
                    ) -> None:
                        await node.run(task_status=task_status)
                        # The node left (`p2pindex leave` or drain): the process exits too.
                        nursery.cancel_scope.cancel()

                    address = await nursery.start(run_node)
                    task_status.started((node, address))
                    async for _ in signals:
                        await node.leave()
                        break
        finally:
            with trio.CancelScope(shield=True):
                await storage.aclose()

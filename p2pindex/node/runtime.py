"""Running a node as a real process: real sockets, SQLite on disk, signals, one ready line."""

from __future__ import annotations

import fcntl
import logging
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import trio

from p2pindex.config import NodeConfig
from p2pindex.core.planning import leave_refusal
from p2pindex.errors import ConfigError
from p2pindex.net.secure.loading import node_security
from p2pindex.net.trio_transport import TrioTransport
from p2pindex.node.identity import NodeIdentity
from p2pindex.node.node import Node
from p2pindex.storage.sqlite import SqliteStorage
from p2pindex.types import Address

log = logging.getLogger("p2pindex.node.node")
DATA_FILE = "data.sqlite3"
LOCK_FILE = "LOCK"


@contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Refuse to start two nodes on one data directory: they would corrupt each other.

    A directory created here is private (0700): it holds every value in clear and the
    node's key."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
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


async def _leave_unless_signalled_again(node: Node, signals: AsyncIterator[int]) -> bool:
    """Leave as a signal asks; whether the node left. A second signal while the leave runs
    (handing a large store over can take long) stops it there: an operator who signals
    twice wants the process gone. A leave that cannot finish (a node taking over is down)
    is given up as ``Node.leave`` gives it up; either way the caller then stops the node
    without leaving, which keeps its data and its place, as a crash would, minus the risk.

    A leave that `p2pindex leave` would refuse (the others would be fewer than N) is not
    started: stopping a node of a three-node cluster, to restart or upgrade it, must not
    turn into a membership change the leave command forbids."""
    refusal = leave_refusal(len(node.ring.nodes), node.config.n_replicas, node.node_id)
    if refusal is not None:
        log.warning(
            "stopping without leaving: %s; the node stays a member (down) with its data, and "
            "comes back as itself when started again",
            refusal,
        )
        return False
    async with trio.open_nursery() as nursery:

        async def on_second_signal() -> None:
            async for _ in signals:
                log.warning(
                    "a second signal: stopping without finishing the leave; the node stays a "
                    "member (down) with its data, and comes back as itself when started again"
                )
                nursery.cancel_scope.cancel()
                return

        nursery.start_soon(on_second_signal)
        left = await node.leave()
        nursery.cancel_scope.cancel()
        if not left:
            log.error(
                "stopping without leaving, as the signal asked: the node stays a member "
                "(down) with its data; start it again, or run `p2pindex leave` once every "
                "member is reachable"
            )
        return left
    return False


async def serve_node(
    config: NodeConfig,
    *,
    task_status: trio.TaskStatus[tuple[Node, Address]] = trio.TASK_STATUS_IGNORED,
    created: Callable[[Node], None] | None = None,
) -> bool:
    """Run a node until SIGINT or SIGTERM (then leave the cluster gracefully) or until a
    remote `p2pindex leave` has handed its data over; either way, return whether it left
    (False: stopped without leaving, see ``_leave_unless_signalled_again``). ``created``
    gets the node as soon as it exists (`serve` starts its HTTP listener once the node is
    ``running``, before the join wait that ``task_status`` reports the end of)."""
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
            if created is not None:
                created(node)
            left = True
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async with trio.open_nursery() as nursery:

                    async def run_until_left(
                        task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
                    ) -> None:
                        # A remote `p2pindex leave` ends run() too: stop waiting for a signal.
                        await node.run(task_status=task_status)
                        nursery.cancel_scope.cancel()

                    address = await nursery.start(run_until_left)
                    task_status.started((node, address))
                    async for _ in signals:
                        break
                    left = await _leave_unless_signalled_again(node, signals)
                    if not left:
                        node.stopped.set()  # stop anyway, still a member: asked to stop
        finally:
            with trio.CancelScope(shield=True):
                await storage.aclose()
    return left

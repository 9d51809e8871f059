"""In-process fake nodes for the client tests: real TCP on 127.0.0.1, real RpcChannel framing.

A FakeNode answers MembersRequest with the fake cluster's member list and everything else
with a scripted behaviour, records what it received, and can crash (close its listener and
every connection at once) to exercise the client's failover.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator

import trio

from p2pindex.config import Limits
from p2pindex.net.channel import RpcChannel
from p2pindex.types import Address
from p2pindex.wire.messages import (
    DeleteReply,
    DeleteRequest,
    ErrorReply,
    ExplainReply,
    ExplainRequest,
    GetReply,
    GetRequest,
    LeaveRequest,
    LimitsRequest,
    MembersReply,
    MembersRequest,
    Message,
    OkReply,
    PutReply,
    PutRequest,
    RemoveRequest,
    StatusReply,
    StatusRequest,
)

VNODES = 16
Behaviour = Callable[["FakeNode", Message], Awaitable[Message]]


def closed_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def default_behaviour(node: FakeNode, message: Message) -> Message:
    if isinstance(message, PutRequest):
        node.store[message.key] = message.value
        return PutReply(b"ctx-" + node.node_id.encode())
    if isinstance(message, GetRequest):
        stored = node.store.get(message.key)
        return GetReply([stored] if stored is not None else [], b"ctx-" + node.node_id.encode())
    if isinstance(message, DeleteRequest):
        node.store.pop(message.key, None)
        return DeleteReply(b"tomb-" + node.node_id.encode())
    if isinstance(message, StatusRequest):
        return StatusReply(
            {
                "node_id": node.node_id,
                "address": str(node.address),
                "cluster": "fake",
                "state": "active",
                "n_replicas": 3,
                "keys": len(node.store),
                "statistics": {"requests.get": 1},
            }
        )
    if isinstance(message, ExplainRequest):
        return ExplainReply({"key": message.key.hex(), "n_replicas": 3, "nodes": []})
    if isinstance(message, LeaveRequest | RemoveRequest):
        return OkReply()
    return ErrorReply("invalid_request", f"unexpected {type(message).__name__}")


class FakeNode:
    def __init__(self, cluster: FakeCluster, node_id: str) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.address = Address("127.0.0.1", 0)
        self.received: list[Message] = []
        self.connections = 0
        self.store: dict[bytes, bytes] = {}
        self.behaviour: Behaviour = default_behaviour
        self._scope: trio.CancelScope | None = None

    def requests(self, kind: type[Message]) -> list[Message]:
        return [m for m in self.received if isinstance(m, kind)]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            self._scope = scope
            listeners = await trio.open_tcp_listeners(self.address.port, host="127.0.0.1")
            self.address = Address("127.0.0.1", listeners[0].socket.getsockname()[1])
            async with trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, self._handle, listeners)
                task_status.started()

    def crash(self) -> None:
        """Stop listening and drop every connection at once, like a killed process."""
        assert self._scope is not None
        self._scope.cancel()

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        channel = RpcChannel(
            stream, self.cluster.node_limits, handler=self._dispatch, name=self.node_id
        )
        await channel.run()

    async def _dispatch(self, message: Message) -> Message:
        self.received.append(message)
        if isinstance(message, MembersRequest):
            return self.cluster.members_reply()
        if isinstance(message, LimitsRequest):
            return self.cluster.limits_reply
        return await self.behaviour(self, message)


class FakeCluster:
    def __init__(self, size: int, n_replicas: int = 3, *, shared_store: bool = False) -> None:
        """``shared_store``: every node answers from one store, as replicas in sync do (a
        load-aware client may send a key's read to another replica than its write)."""
        self.n_replicas = n_replicas
        self.nodes = [FakeNode(self, f"node{i}") for i in range(size)]
        if shared_store:
            for node in self.nodes[1:]:
                node.store = self.nodes[0].store
        self.liveness: dict[str, str] = {node.node_id: "alive" for node in self.nodes}
        self.states: dict[str, str] = {node.node_id: "active" for node in self.nodes}
        """Each member's state as the others' gossip has it (which can lag its own)."""
        self.node_limits = Limits()
        self.limits_reply: Message = ErrorReply("invalid_request", "unknown message type 19")
        """What the nodes answer a client asking for their limits (by default: what a node
        that predates the question answers)."""

    def members_reply(self) -> MembersReply:
        docs = [
            {
                "node_id": node.node_id,
                "address": str(node.address),
                "liveness": self.liveness[node.node_id],
                "state": self.states[node.node_id],
                "incarnation": 1,
            }
            for node in self.nodes
        ]
        return MembersReply(self.n_replicas, VNODES, docs)

    def by_id(self, node_id: str) -> FakeNode:
        return next(node for node in self.nodes if node.node_id == node_id)

    @property
    def addresses(self) -> list[str]:
        return [str(node.address) for node in self.nodes]

    async def start(self, nursery: trio.Nursery) -> FakeCluster:
        for node in self.nodes:
            await nursery.start(node.run)
        return self


@contextlib.contextmanager
def serve_in_thread(cluster: FakeCluster) -> Iterator[FakeCluster]:
    """Run ``cluster`` on a trio loop in a background thread (for blocking callers)."""
    ready = threading.Event()
    started: list[tuple[trio.lowlevel.TrioToken, trio.Event]] = []

    async def serve() -> None:
        stop = trio.Event()
        started.append((trio.lowlevel.current_trio_token(), stop))
        async with trio.open_nursery() as nursery:
            await cluster.start(nursery)
            ready.set()
            await stop.wait()
            nursery.cancel_scope.cancel()

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    assert ready.wait(10), "the fake cluster did not start"
    try:
        yield cluster
    finally:
        token, stop = started[0]
        trio.from_thread.run_sync(stop.set, trio_token=token)
        thread.join(10)

"""An in-process cluster of real Node objects on the simulated network, for protocol tests.

The nodes are the real ones; only the seams differ: the simulator's network (hosts n1, n2,
... and one client host per request channel) and a wall clock that follows trio's clock.
Tests that use it take pytest-trio's ``autojump_clock``, so every deadline is virtual and a
loaded machine cannot make them flaky: time only moves when every task waits.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from p2pindex.config import Limits, NodeConfig
from p2pindex.core.swim import SwimConfig
from p2pindex.net.channel import RpcChannel, open_channel
from p2pindex.node.identity import NodeIdentity
from p2pindex.node.node import Node
from p2pindex.sim.determinism import SimWallClock, Trace
from p2pindex.sim.network import SimNetwork, SimTransport
from p2pindex.storage.memory import MemoryStorage
from p2pindex.types import Address, Liveness, NodeState
from p2pindex.wire.messages import Message


@dataclass
class RunningNode:
    node: Node
    address: Address
    scope: trio.CancelScope
    storage: MemoryStorage
    identity: NodeIdentity


NODE_PORT = 7000
CLIENT_PORT = 9000


@dataclass
class Cluster:
    nursery: trio.Nursery
    n_replicas: int
    network: SimNetwork
    nodes: list[RunningNode] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    swim_config: SwimConfig | None = None
    _clients: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _hosts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    """Host names n1, n2, ... never reused: a node started after another was dropped from
    ``nodes`` gets a host of its own (restarting on a host is asked with ``listen``)."""
    node_options: dict[str, Any] = field(default_factory=dict)
    """Extra NodeConfig fields for every node started (e.g. tombstone_grace)."""

    async def start_node(
        self,
        *,
        storage: MemoryStorage | None = None,
        identity: NodeIdentity | None = None,
        seeds: tuple[Address, ...] | None = None,
        listen: Address | None = None,
        options: dict[str, Any] | None = None,
    ) -> RunningNode:
        storage = storage or MemoryStorage()
        identity = identity or NodeIdentity.generate(random.Random(len(self.nodes) + 1000))
        if seeds is None:
            seeds = tuple(n.address for n in self.nodes if not n.scope.cancel_called)[:2]
        listen = listen or Address(f"n{next(self._hosts)}", NODE_PORT)
        config = NodeConfig(
            data_dir=None,
            listen=listen,
            seeds=seeds,
            n_replicas=self.n_replicas,
            limits=self.limits,
            replica_timeout=1.0,
            **{**self.node_options, **(options or {})},
        )
        node = Node(
            config,
            transport=self.network.transport_for(listen),
            storage=storage,
            identity=identity,
            rng=random.Random(len(self.nodes)),
            wall_clock=SimWallClock(),
            swim_config=self.swim_config,
        )
        scope = trio.CancelScope()

        async def run(task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await node.run(task_status=task_status)

        address = await self.nursery.start(run)
        running = RunningNode(node, address, scope, storage, identity)
        self.nodes.append(running)
        return running

    def crash(self, running: RunningNode) -> None:
        """Kill the node's process: its tasks stop and its host drops every connection."""
        running.scope.cancel()
        self.network.crash(running.address.host)

    def crash_out(self, *nodes: RunningNode) -> None:
        """Crash ``nodes`` and take them off the running list (their storage stays, for a
        restart)."""
        for running in nodes:
            self.crash(running)
            self.nodes.remove(running)

    async def wait_converged(self, timeout: float = 30.0) -> None:
        """Wait until every running node sees every other running node alive and ACTIVE."""
        live = [n for n in self.nodes if not n.scope.cancel_called]
        ids = {n.node.node_id for n in live}
        with trio.fail_after(timeout):
            while True:
                if all(
                    {
                        m.node_id
                        for m in n.node.members()
                        if m.liveness is Liveness.ALIVE and m.state is NodeState.ACTIVE
                    }
                    >= ids
                    for n in live
                ):
                    return
                await trio.sleep(0.05)

    async def wait_dead(
        self, node_id: str, timeout: float = 30.0, among: list[RunningNode] | None = None
    ) -> None:
        """Wait until every running node (or those ``among``; a paused node runs but hears
        nothing) holds ``node_id`` dead (as `remove` requires)."""
        live = among or [n for n in self.nodes if not n.scope.cancel_called]
        with trio.fail_after(timeout):
            while any(
                m.liveness is not Liveness.DEAD
                for n in live
                for m in n.node.members()
                if m.node_id == node_id
            ):
                await trio.sleep(0.1)

    def client_transport(self) -> SimTransport:
        """A fresh client host on the simulated network (for ``p2pindex.connect``)."""
        return self.network.transport_for(Address(f"c{next(self._clients)}", CLIENT_PORT))

    async def channel(self, running: RunningNode) -> RpcChannel:
        transport = self.client_transport()
        return await open_channel(self.nursery, transport, running.address, self.limits)

    async def request(self, running: RunningNode, message: Message) -> Message:
        channel = await self.channel(running)
        try:
            return await channel.request(message)
        finally:
            await channel.aclose()


@asynccontextmanager
async def running_cluster(
    size: int,
    n_replicas: int = 3,
    swim_config: SwimConfig | None = None,
    node_options: dict[str, Any] | None = None,
) -> AsyncIterator[Cluster]:
    async with trio.open_nursery() as nursery:
        network = SimNetwork(random.Random(size), Trace())
        await nursery.start(network.run)
        cluster = Cluster(
            nursery,
            n_replicas,
            network,
            swim_config=swim_config,
            node_options=node_options or {},
        )
        for _ in range(size):
            await cluster.start_node()
        await cluster.wait_converged()
        yield cluster
        nursery.cancel_scope.cancel()

"""The chaos harness's own bookkeeping of which nodes faults and churn may act on: a node
it believes gone is never faulted or sampled again, so believing it wrongly hides it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from trio.testing import wait_all_tasks_blocked

from p2pindex.chaos import Cluster
from p2pindex.errors import NoNodeReachable
from p2pindex.sim.history import History


@dataclass
class FakeProcess:
    name: str
    address: str = "127.0.0.11:7400"
    process: Any = None
    started: trio.Event | None = None

    async def start(self) -> None:
        assert self.started is not None
        await self.started.wait()

    def kill(self) -> None:
        pass


class RefusingAdmin:
    async def leave(self, address: str) -> None:
        raise NoNodeReachable(f"cannot reach {address}: connection refused")


def cluster_of(*names: str) -> Cluster:
    cluster = Cluster(Path("/nonexistent"), History(), 3, authority=None)  # type: ignore[arg-type]
    cluster.nodes = [FakeProcess(name) for name in names]  # type: ignore[list-item]
    return cluster


async def test_a_leave_refused_before_it_began_leaves_the_node_in_the_cluster() -> None:
    """Seed 7006: a leave sent while the node's port was not open yet was refused
    (definite), and the node, still serving, was never faulted or sampled again."""
    cluster = cluster_of("n1", "n2")
    cluster.admin = RefusingAdmin()
    with pytest.raises(NoNodeReachable):
        await cluster.leave("n2")
    assert "n2" not in cluster.gone and "n2" in cluster.members()


async def test_a_restarting_node_is_out_of_faults_and_churn_until_it_is_ready() -> None:
    cluster = cluster_of("n1", "n2")
    node = cluster.by_name("n2")
    assert isinstance(node, FakeProcess)
    node.started = trio.Event()
    cluster.crash("n2")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cluster.restart, "n2")
        await wait_all_tasks_blocked()
        assert "n2" not in cluster.names() and "n2" not in cluster.members()
        node.started.set()
    assert "n2" in cluster.names() and "n2" in cluster.members()

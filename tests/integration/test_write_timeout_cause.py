"""A write whose replicas stay silent until its deadline timed out; one they refused failed.

Both outcomes are indeterminate, but they point an operator at different problems (slow or
unreachable replicas against replicas answering with errors), and ``p2pindex status``, the
error a client gets and ``p2pindex_quorum_failures_total{cause}`` tell them apart only if
the coordinator does.
"""

from __future__ import annotations

import pytest
import trio

from p2pindex.client import connect
from p2pindex.errors import QuorumFailed, Timeout
from tests.support.cluster import running_cluster


async def test_replicas_silent_until_the_deadline_make_a_timeout_not_a_failed_quorum(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running_cluster(3) as cluster:
        coordinator = cluster.nodes[0]
        address = str(coordinator.address)
        async with connect([address], transport=cluster.client_transport(), timeout=3.0) as db:
            await db.put("warm", "up", consistency="all")
            here = coordinator.address.host
            others = [running.address.host for running in cluster.nodes[1:]]
            # Only the coordinator's sends are lost, and for less than SWIM needs to call
            # the others dead: they stay alive in its view and are asked, and never answer.
            cluster.network.block("silent", [(here, other) for other in others])
            with pytest.raises(Timeout) as raised:
                await db.put("k", "v", consistency="all", timeout=0.5)
            assert not isinstance(raised.value, QuorumFailed)
            assert raised.value.required == 3 and raised.value.acknowledged == 1
            stats = coordinator.node.stats
            assert stats.get("requests.errors.put.timeout") == 1
            assert stats.get("requests.errors.put.quorum_failed") == 0
            cluster.network.clear("silent")

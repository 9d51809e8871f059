"""The data path frees what it allocates by reference counting: a request that left a
reference cycle behind would make the cyclic collector scan and free every write, quorum and
message it touched (about 5% of a node's CPU under a write benchmark)."""

from __future__ import annotations

import gc

from p2pindex.core.quorum import ReadQuorum, WriteQuorum
from p2pindex.wire.messages import GetReply, GetRequest, Message, PutReply, PutRequest
from tests.integration.test_data_path_batching import burst
from tests.support.cluster import running_cluster

DATA_PATH_TYPES = (WriteQuorum, ReadQuorum, PutRequest, GetRequest, PutReply, GetReply)


async def test_writes_and_reads_leave_no_cyclic_garbage(autojump_clock):
    async with running_cluster(3) as cluster:
        keys = [f"key{i}".encode() for i in range(30)]
        warmup: list[Message] = [PutRequest(k, b"warm", None, "quorum", 5000) for k in keys]
        await burst(cluster, cluster.nodes[0], warmup)
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for running in cluster.nodes:
                writes: list[Message] = [PutRequest(k, b"v", None, "all", 5000) for k in keys]
                assert all(isinstance(r, PutReply) for r in await burst(cluster, running, writes))
                reads: list[Message] = [GetRequest(k, "all", 5000) for k in keys]
                assert all(isinstance(r, GetReply) for r in await burst(cluster, running, reads))
                for key in keys[:3]:  # and one at a time
                    assert isinstance(
                        await cluster.request(running, PutRequest(key, b"w", None, "all", 5000)),
                        PutReply,
                    )
            gc.collect()
            leaked = [type(o).__name__ for o in gc.garbage if isinstance(o, DATA_PATH_TYPES)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        assert leaked == []

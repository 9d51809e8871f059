"""What a connection serves without a task per request: replica requests (node peers
only) and the client requests the coordinator batches, each first authorised.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from p2pindex.config import Limits
from p2pindex.errors import P2PIndexError
from p2pindex.net.channel import BatchHandler, FastPath, Respond
from p2pindex.node.client_batch import serve_batches
from p2pindex.node.coordinator import Coordinator
from p2pindex.node.replica import ReplicaService
from p2pindex.wire.errors import reply_for_error
from p2pindex.wire.messages import BatchRequest, DeleteRequest, GetRequest, Message, PutRequest


def data_fast_path(
    coordinator: Coordinator,
    replica: ReplicaService,
    *,
    node_peer: bool,
    authorize: Callable[[Message], None] | None = None,
) -> FastPath:
    """What a connection serves without a task per request (see ``net.channel.FastPath``).

    Replica requests are served only for node peers; a client's writes are batched too,
    each first passing ``authorize`` (which raises for a request the peer may not send).
    """
    answer: dict[type[Message], Callable[[Message], Message]] = {}
    batch: dict[type[Message], BatchHandler] = {}
    if node_peer:
        replica_path = replica.fast_path()
        answer.update(replica_path.answer)
        batch.update(replica_path.batch)
    reads = coordinator.get_batch
    batch[GetRequest] = reads if authorize is None else _authorized(authorize, reads)
    writes = coordinator.put_batch
    batch[PutRequest] = batch[DeleteRequest] = (
        writes if authorize is None else _authorized(authorize, writes)
    )
    return FastPath(answer, batch)


def with_client_batches(
    fast_path: FastPath, limits: Limits, refused: Callable[[str], None]
) -> FastPath:
    """``fast_path`` serving a client's BatchRequest too: its items go through the very
    handlers single requests use (authorised, and timed when ``fast_path`` is), so a batch
    is served, refused and measured exactly as its requests sent one by one would be."""
    batch = dict(fast_path.batch)
    batch[BatchRequest] = functools.partial(
        serve_batches,
        writes=batch[PutRequest],
        reads=batch[GetRequest],
        limits=limits,
        refused=refused,
    )
    return FastPath(fast_path.answer, batch)


def _authorized(authorize: Callable[[Message], None], serve: BatchHandler) -> BatchHandler:
    async def serve_authorized(messages: list[Message], respond: Respond) -> None:
        allowed: list[int] = []
        for position, message in enumerate(messages):
            try:
                authorize(message)
            except P2PIndexError as exc:
                respond(position, reply_for_error(exc))
            else:
                allowed.append(position)
        if allowed:
            await serve(
                [messages[position] for position in allowed],
                lambda index, reply: respond(allowed[index], reply),
            )

    return serve_authorized

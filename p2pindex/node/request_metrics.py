"""Latency and errors of client requests, per operation and consistency level.

Both protocols feed it: the binary protocol's data path through ``timed`` (wrapped around
the batch handlers a connection serves) and the HTTP API through ``Node.serve_client``.
Relayed requests (``forwarded``) are left out: the node the client asked counts them.
Labels are bounded: three operations, and one/quorum/all or ``n`` for an explicit count.

Pages of key listings and index queries (``QueryRequest``, from either protocol: both reach
``Node._dispatch``) are timed apart, in ``query_latency.{keys|query}.{level}``: a page reads
a share of every arc, and mixing it with key requests would move their p99 (which the
latency alert and the dashboard watch) with nothing wrong.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from p2pindex.net.channel import BatchHandler, FastPath, Respond
from p2pindex.node.stats import Histogram, StatisticsStore
from p2pindex.wire.messages import (
    DeleteRequest,
    ErrorReply,
    GetRequest,
    Message,
    PutRequest,
    QueryRequest,
)

OPERATIONS: dict[type[Message], str] = {
    GetRequest: "get",
    PutRequest: "put",
    DeleteRequest: "delete",
}
LEVELS = frozenset({"one", "quorum", "all"})
QUERY_OPERATIONS = ("keys", "query")
"""A page of a key listing (no index) or of an index query."""


def consistency_label(consistency: object) -> str:
    return consistency if isinstance(consistency, str) and consistency in LEVELS else "n"


def query_latency_name(message: QueryRequest) -> str:
    """The histogram a page of ``message`` is timed in (operation and consistency)."""
    operation = "query" if message.index else "keys"
    return f"query_latency.{operation}.{consistency_label(message.consistency)}"


class RequestMetrics:
    def __init__(
        self,
        stats: StatisticsStore,
        clock: Callable[[], float] = time.perf_counter,
        on_latency: Callable[[float], None] | None = None,
    ):
        self._stats = stats
        self._clock = clock
        self._on_latency = on_latency
        """Also told every latency (the node's load signals, ``node.load``): one timing
        feeds both, so a request is timed once."""
        self._histograms: dict[tuple[type[Message], object], Histogram] = {}

    def _histogram(self, message: Message) -> Histogram:
        consistency = message.consistency  # type: ignore[attr-defined]
        key = (type(message), consistency)
        histogram = self._histograms.get(key)
        if histogram is None:
            name = f"latency.{OPERATIONS[type(message)]}.{consistency_label(consistency)}"
            histogram = self._histograms[key] = self._stats.histogram(name)
        return histogram

    def observe(self, message: Message, seconds: float, error_code: str | None) -> None:
        if message.forwarded:  # type: ignore[attr-defined]
            return
        self._histogram(message).observe(seconds)
        if self._on_latency is not None:
            self._on_latency(seconds)
        if error_code is not None:
            self._stats.incr(f"requests.errors.{OPERATIONS[type(message)]}.{error_code}")

    async def timed_query(
        self, message: QueryRequest, serve: Callable[[QueryRequest], Awaitable[Message]]
    ) -> Message:
        """``serve(message)``, one page timed whatever its outcome. Not a load signal: the
        load meter judges the key requests' latency, which a long listing must not make
        look overloaded."""
        started = self._clock()
        try:
            return await serve(message)
        finally:
            self._stats.histogram(query_latency_name(message)).observe(self._clock() - started)

    def timed(self, fast_path: FastPath) -> FastPath:
        """``fast_path`` with its client-request handlers timed (a handler shared by several
        types stays shared, so requests that arrive together are still served together)."""
        wrapped: dict[int, BatchHandler] = {}
        batch = dict(fast_path.batch)
        for kind in OPERATIONS:
            handler = batch.get(kind)
            if handler is not None:
                if id(handler) not in wrapped:
                    wrapped[id(handler)] = self._timed(handler)
                batch[kind] = wrapped[id(handler)]
        return FastPath(fast_path.answer, batch)

    def _timed(self, serve: BatchHandler) -> BatchHandler:
        clock = self._clock
        observe = self.observe

        async def timed(messages: list[Message], respond: Respond) -> None:
            started = clock()

            def respond_timed(position: int, reply: Message) -> None:
                code = reply.code if type(reply) is ErrorReply else None
                observe(messages[position], clock() - started, code)
                respond(position, reply)

            await serve(messages, respond_timed)

        return timed

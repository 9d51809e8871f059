"""Connections that have not yet earned their place, and who gives way when there are too many.

A connection still in its handshake, or an HTTP connection still waiting for its request,
holds a descriptor and a task, and a stranger can open them for free: a few thousand idle
sockets would otherwise exhaust the node's open-files limit or its connection limit, and then
legitimate clients and peers could not connect at all. A handshake or a request that is
going to arrive comes within milliseconds, so when room is short the connection that has
waited longest is closed to admit the new one: an attacker holding sockets open only evicts
its own, and a legitimate client that was evicted reconnects.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import trio


class WaitingRoom:
    """At most ``limit`` connections wait at once; one more evicts the one waiting longest.

    ``wait()`` brackets the waiting part of a connection (its handshake, or the wait for its
    next request); an eviction cancels that part, which the caller sees as
    ``scope.cancelled_caught`` and answers by closing the connection.
    """

    def __init__(self, limit: int | None = None) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"a waiting room holds at least one connection, not {limit}")
        self.limit = limit
        """None: no limit of its own (the owner evicts with ``evict_oldest`` when it must)."""
        self._waiting: dict[trio.CancelScope, None] = {}  # insertion order: oldest first
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._waiting)

    @contextmanager
    def wait(self) -> Iterator[trio.CancelScope]:
        if self.limit is not None and len(self._waiting) >= self.limit:
            self.evict_oldest()
        scope = trio.CancelScope()
        self._waiting[scope] = None
        try:
            with scope:
                yield scope
        finally:
            self._waiting.pop(scope, None)

    def evict_oldest(self) -> bool:
        """Close the wait of the connection waiting longest; False when none waits."""
        if not self._waiting:
            return False
        oldest = next(iter(self._waiting))
        del self._waiting[oldest]
        oldest.cancel()
        self.evicted += 1
        return True

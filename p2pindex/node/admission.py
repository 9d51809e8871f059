"""Who may open another connection and send another request: the operator's limits on
connections (per node and per client key) and on each client key's request rate.

Why per client key rather than per address: one credential is one tenant, whatever the
addresses it connects from; nodes are never limited here (their traffic is the cluster's
own replication). Every refusal is counted in the node's statistics, so `status` shows it.
"""

from __future__ import annotations

from collections.abc import Callable

from p2pindex.config import AdmissionLimits
from p2pindex.core.ratelimit import TokenBucket
from p2pindex.node.stats import StatisticsStore


class Admission:
    def __init__(
        self, limits: AdmissionLimits, stats: StatisticsStore, clock: Callable[[], float]
    ) -> None:
        self._limits = limits
        self._stats = stats
        self._clock = clock
        self._open = 0
        self._limited = 0
        """Open connections ``max_connections`` applies to: all but the cluster's nodes."""
        self._by_client: dict[bytes, int] = {}
        self._buckets: dict[bytes, TokenBucket] = {}

    def connect(self, client: bytes | None, *, node: bool = False) -> str | None:
        """Count a new connection (``client``: its key, None for a node or an unauthenticated
        peer); returns why it is refused instead, having counted nothing.

        ``node``: an authenticated member of the cluster, never refused. Replication, hints
        and membership must not queue behind clients: were clients holding every connection
        the node serves, the cluster would stop healing; and peers are few (a handful per
        member), while anything else must hold a credential the authority issued."""
        limits = self._limits
        if node:
            self._opened(1)
            return None
        if self._limited >= limits.max_connections:
            self._stats.incr("rejected.connections")
            return f"the node serves {self._limited} client connections, its limit"
        if client is not None:
            held = self._by_client.get(client, 0)
            if held >= limits.max_client_connections:
                self._stats.incr("rejected.client_connections")
                return f"this client key has {held} connections open, its limit"
            self._by_client[client] = held + 1
        self._limited += 1
        self._opened(1)
        return None

    def _opened(self, change: int) -> None:
        self._open += change
        self._stats.set_gauge("connections.open", self._open)

    def disconnect(self, client: bytes | None, *, node: bool = False) -> None:
        self._opened(-1)
        if not node:
            self._limited -= 1
        if client is not None:
            left = self._by_client.pop(client) - 1
            if left:
                self._by_client[client] = left
            # A client's bucket outlives its connections: reconnecting must not refill it.

    def throttle(self, client: bytes) -> Callable[[], str | None]:
        """The per-request check of one client key's connections (its rate)."""
        return lambda: self.take(client)

    def take(self, client: bytes) -> str | None:
        """Count one request of ``client`` against its rate; why it is refused instead.
        Binary sessions check every request; the HTTP API checks every request whose bearer
        token names ``client``, so neither protocol gets round the other's limit."""
        rate = self._limits.client_rate
        if rate is None:
            return None
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = TokenBucket(rate, self._limits.client_burst, now)
        if bucket.take(now):
            return None
        self._stats.incr("overloaded.client_rate")
        return f"this client key is over its rate of {rate:g} requests a second"

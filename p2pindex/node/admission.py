"""Who may open another connection and send another request: the operator's limits on
connections (per node and per client key), on each client key's request rate, and on the
sessions a client key may make the node close for unreadable frames.

Why per client key rather than per address: one credential is one tenant, whatever the
addresses it connects from; nodes are never limited here (their traffic is the cluster's
own replication). Every refusal is counted in the node's statistics, so `status` shows it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from p2pindex.config import AdmissionLimits
from p2pindex.core.ratelimit import TokenBucket
from p2pindex.node.stats import StatisticsStore
from p2pindex.security.errors import ConnectionRefused

log = logging.getLogger(__name__)


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
        self._held: dict[bytes, int] = {}
        """Client key -> places held for its sessions still in their handshake: ``screen``
        counted them as connections already; ``connect`` takes one over, ``release`` gives
        one back."""
        self._buckets: dict[bytes, TokenBucket] = {}
        self._broken: dict[bytes, TokenBucket] = {}
        """Client key -> its allowance of broken sessions (``broken_sessions``). One entry per
        key that ever broke one; keys are the authority's to issue, so this stays small."""

    def connect(self, client: bytes | None, *, node: bool = False) -> str | None:
        """Count a new connection (``client``: its key, None for a node or an unauthenticated
        peer); returns why it is refused instead, having counted nothing. A session whose
        place ``screen`` held is counted in it, never refused.

        ``node``: an authenticated member of the cluster, never refused. Replication, hints
        and membership must not queue behind clients: were clients holding every connection
        the node serves, the cluster would stop healing; and peers are few (a handful per
        member), while anything else must hold a credential the authority issued."""
        if node:
            self._opened(1)
            return None
        if client is not None and client in self._held:
            _drop_one(self._held, client)  # screen counted it already
        else:
            over = self._over_limit(client)
            if over is not None:
                self._stats.incr(f"rejected.{over[0]}")
                return over[1]
            self._count(client)
        self._opened(1)
        return None

    def _count(self, client: bytes | None) -> None:
        """Count a connection of ``client`` against the limits."""
        if client is not None:
            self._by_client[client] = self._by_client.get(client, 0) + 1
        self._limited += 1

    def _over_limit(self, client: bytes | None) -> tuple[str, str] | None:
        """(reason, why) when one more connection of ``client`` would pass a limit (a reason
        of ``ConnectionRefused``, counted as ``rejected.<reason>``)."""
        limits = self._limits
        if self._limited >= limits.max_connections:
            return (
                "connections",
                f"the node serves {self._limited} client connections, its limit "
                f"(admission.max_connections)",
            )
        held = 0 if client is None else self._by_client.get(client, 0)
        if held >= limits.max_client_connections:
            return (
                "client_connections",
                f"this client key has {held} connections open, its limit "
                f"(admission.max_client_connections)",
            )
        return None

    def _opened(self, change: int) -> None:
        self._open += change
        self._stats.set_gauge("connections.open", self._open)

    def disconnect(
        self, client: bytes | None, *, node: bool = False, broke_protocol: bool = False
    ) -> None:
        """A connection ended; ``broke_protocol``: the node closed it because the peer sent
        a frame it could not read (charged to ``client``'s broken-session allowance)."""
        self._opened(-1)
        if not node:
            self._limited -= 1
        if client is not None:
            _drop_one(self._by_client, client)
            # A client's buckets outlive its connections: reconnecting must not refill them.
            if broke_protocol:
                self._broke(client)

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

    def _broke(self, client: bytes) -> None:
        limits = self._limits
        if not limits.broken_sessions:
            return
        now = self._clock()
        bucket = self._broken.get(client)
        if bucket is None:
            rate = 1 / limits.broken_session_interval
            bucket = self._broken[client] = TokenBucket(rate, limits.broken_sessions, now)
        wait = bucket.wait(now) if bucket.take(now) else 0.0
        if wait > 0:  # this one used up the allowance
            log.warning(
                "client %s: %d sessions closed for frames the node could not read; its new "
                "connections are refused for %d s",
                client[:8].hex(),
                limits.broken_sessions,
                math.ceil(wait),
            )

    def screen(self, client: bytes) -> ConnectionRefused | None:
        """Why a handshake of ``client`` is refused before any more cryptography is spent on
        it, or None, holding a place for its session: it is at a connection limit (so it is
        told why rather than closed once its handshake is done), or it broke too many
        sessions lately. Checked after its credential, so a key is only ever refused for its
        own connections and for what its holder sent inside an authenticated session."""
        over = self._over_limit(client)
        if over is not None:
            self._stats.incr(f"rejected.{over[0]}")
            return ConnectionRefused(*over)
        bucket = self._broken.get(client)
        wait = 0.0 if bucket is None else bucket.wait(self._clock())
        if wait > 0:
            return ConnectionRefused(
                "broken_sessions",
                f"this client key's sessions kept sending frames the node could not read "
                f"(invalid CBOR or over the frame limit); its new connections are refused "
                f"for {math.ceil(wait)} s more",
            )
        self._count(client)
        self._held[client] = self._held.get(client, 0) + 1
        return None

    def release(self, client: bytes) -> None:
        """Give back the place ``screen`` held for ``client``: its handshake ended without a
        session."""
        _drop_one(self._held, client)
        _drop_one(self._by_client, client)
        self._limited -= 1


def _drop_one(counts: dict[bytes, int], key: bytes) -> None:
    """One fewer of ``key`` in ``counts``, which holds no zeros."""
    left = counts.pop(key) - 1
    if left:
        counts[key] = left

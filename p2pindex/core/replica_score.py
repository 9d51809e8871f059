"""Load-aware choice among a key's replicas (Cassandra's dynamic snitch, the C3 ranking of
Scylla's drivers): rank replicas by their measured latency and the requests still out to
them, instead of always taking the first live one.

A replica's score is its latency (an EWMA of the times its requests took, failures and
timeouts included, so a failing replica scores as slow as it made us wait), raised to how
long it has had requests out without answering any (a stalled process, SIGSTOP, a node on
a stuck disk: its EWMA stays as it was, but this grows by the second), times one plus its
outstanding requests (so load spreads over replicas that are equally fast). Lower is better.

A replica that scores badly stops getting requests, so nothing would ever show it has
recovered: once it has had nothing out and answered nothing for ``probe_after`` seconds, a
ranking that allows probes (``probe=True``) puts it first until one request goes out to
it, a probe, whose time then replaces its stale EWMA. A caller probes with requests whose
delay hurts nobody (a client's background member refresh), not with its users' reads: a
probe of a replica that is still slow would land in their tail latency. Unknown replicas
are tried first, which is how a new one gets measured.

The preferred order (the preference list, which spreads coordinators over the ring) is
kept among the replicas scoring within ``tolerance`` of the best one, so noise in the
figures does not make every client chase the same node.

Pure: time comes in as ``now`` and ``elapsed``; the caller measures with its own clock.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

WEIGHT = 0.25
"""Weight of a new latency in the EWMA: about the last eight requests count."""
PROBE_AFTER = 1.0
"""Seconds a replica that gets nothing (it scored badly) waits before one request probes it."""
TOLERANCE = 0.5
"""The preferred first replica is kept while its score is at most (1 + this) times the best."""
SLACK = 0.005
"""Seconds of latency treated as equal anyway: a few milliseconds are scheduling noise on a
loaded machine (a garbage collection, a busy core), not a slow replica, and chasing them
would move a key's requests between coordinators for nothing."""
MAX_TRACKED = 4096
"""Most replicas remembered; the one heard from longest ago is forgotten first."""


@dataclass(slots=True)
class _Replica:
    latency: float | None = None
    """EWMA of the seconds its requests took; None until one was answered."""
    outstanding: int = 0
    waiting_since: float | None = None
    """Since when it has had requests out and answered none (None: nothing out)."""
    last_heard: float = 0.0
    """When it last answered (or was first asked)."""
    probing: bool = False
    """A request went out after ``probe_after`` without one: its answer replaces the EWMA,
    which is stale by then (a recovered replica comes back at once)."""


class ReplicaScores(Generic[K]):
    """Latency and outstanding requests per replica, and the order they imply."""

    __slots__ = ("_max_tracked", "_probe_after", "_replicas", "_tolerance", "_weight")

    def __init__(
        self,
        *,
        weight: float = WEIGHT,
        probe_after: float = PROBE_AFTER,
        tolerance: float = TOLERANCE,
        max_tracked: int = MAX_TRACKED,
    ) -> None:
        if not 0.0 < weight <= 1.0:
            raise ValueError(f"weight {weight} is outside (0, 1]")
        if probe_after <= 0.0 or tolerance < 0.0 or max_tracked < 1:
            raise ValueError("probe_after must be positive, tolerance and max_tracked not negative")
        self._weight = weight
        self._probe_after = probe_after
        self._tolerance = tolerance
        self._max_tracked = max_tracked
        self._replicas: dict[K, _Replica] = {}

    def _entry(self, node: K, now: float) -> _Replica:
        entry = self._replicas.get(node)
        if entry is None:
            if len(self._replicas) >= self._max_tracked:
                oldest = min(self._replicas, key=lambda n: self._replicas[n].last_heard)
                del self._replicas[oldest]
            entry = self._replicas[node] = _Replica(last_heard=now)
        return entry

    def sent(self, node: K, now: float) -> None:
        """A request went out to ``node``."""
        entry = self._entry(node, now)
        if entry.outstanding == 0 and now - entry.last_heard >= self._probe_after:
            entry.probing = True
        entry.outstanding += 1
        if entry.waiting_since is None:
            entry.waiting_since = now

    def answered(self, node: K, elapsed: float, now: float) -> None:
        """A request to ``node`` ended after ``elapsed`` seconds: answered, failed or timed
        out alike (a failure that took long is as bad as a slow answer)."""
        entry = self._entry(node, now)
        elapsed = max(0.0, elapsed)
        if entry.latency is None or entry.probing:
            entry.latency = elapsed
            entry.probing = False
        else:
            entry.latency += self._weight * (elapsed - entry.latency)
        entry.outstanding = max(0, entry.outstanding - 1)
        entry.waiting_since = now if entry.outstanding else None
        entry.last_heard = now

    def score(self, node: K, now: float, *, probe: bool = False) -> float:
        """Seconds a request to ``node`` is expected to cost (lower is better; 0: try it);
        with ``probe``, 0 for a replica due for a probe."""
        entry = self._replicas.get(node)
        if entry is None or (entry.latency is None and entry.outstanding == 0):
            return 0.0
        if probe and entry.outstanding == 0 and now - entry.last_heard >= self._probe_after:
            return 0.0  # not heard from for a while: one request probes it
        latency = entry.latency or 0.0
        if entry.waiting_since is not None:
            latency = max(latency, now - entry.waiting_since)
        return latency * (1 + entry.outstanding)

    def rank(self, nodes: Sequence[K], now: float, *, probe: bool = False) -> list[K]:
        """``nodes`` best first: those scoring within the tolerance of the best keep their
        own order, the others follow by score. With ``probe``, replicas due for a probe
        come first."""
        if len(nodes) < 2:
            return list(nodes)
        scores = [self.score(node, now, probe=probe) for node in nodes]
        bar = min(scores) * (1 + self._tolerance) + SLACK
        if max(scores) <= bar:  # the usual case: nothing to reorder
            return list(nodes)
        good = [node for node, score in zip(nodes, scores, strict=True) if score <= bar]
        bad = sorted(
            ((score, position) for position, score in enumerate(scores) if score > bar),
        )
        return good + [nodes[position] for _score, position in bad]

    def outstanding(self, node: K) -> int:
        entry = self._replicas.get(node)
        return 0 if entry is None else entry.outstanding

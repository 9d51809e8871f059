"""Lifeguard's local health multiplier (LHM): how much this node distrusts its own timing.

A node that misses nacks, has to refute accusations or finds its own timers firing late is
probably the slow one; stretching its probe periods and timeouts keeps it from blaming
healthy peers for its own lag.
"""

from __future__ import annotations


class Awareness:
    __slots__ = ("_max", "score")

    def __init__(self, max_multiplier: int) -> None:
        self._max = max_multiplier
        self.score = 0

    def apply(self, delta: int) -> None:
        self.score = min(max(self.score + delta, 0), self._max - 1)

    def scale(self, timeout: float) -> float:
        return timeout * (self.score + 1)

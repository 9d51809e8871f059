"""Lifeguard's confirmation-shortened suspicion timer.

A suspicion starts at ``max_timeout`` and shrinks towards ``min_timeout`` as other members
independently report the same suspect (log-scaled in the count, as in memberlist), so one
confused accuser cannot kill a member quickly while a real failure seen by many is
declared fast.
"""

from __future__ import annotations

import math


class Suspicion:
    __slots__ = ("_k", "_max", "_min", "accusers", "deadline", "incarnation", "start")

    def __init__(
        self,
        accuser: str,
        incarnation: int,
        start: float,
        k: int,
        min_timeout: float,
        max_timeout: float,
    ) -> None:
        self.incarnation = incarnation
        self.start = start
        self._k = k
        self._min = min_timeout
        self._max = max_timeout
        self.accusers = {accuser}
        self.deadline = start + self.timeout()

    @property
    def confirmations(self) -> int:
        """Independent accusers besides the first one."""
        return len(self.accusers) - 1

    def timeout(self) -> float:
        if self._k < 1:
            return self._min
        frac = math.log(self.confirmations + 1) / math.log(self._k + 1)
        return max(self._min, self._max - frac * (self._max - self._min))

    def confirm(self, accuser: str) -> bool:
        """Count ``accuser``; True when it is new (then the update is worth re-gossiping)."""
        if accuser in self.accusers or self.confirmations >= self._k:
            return False
        self.accusers.add(accuser)
        self.deadline = self.start + self.timeout()
        return True

    def postpone(self, deadline: float) -> None:
        """Push an overdue verdict back (this node was stalled; see the stall guard)."""
        self.deadline = max(self.deadline, deadline)

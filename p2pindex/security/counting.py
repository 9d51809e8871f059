"""The counting seam: security components count into whatever the node uses for statistics."""

from __future__ import annotations

from collections import Counter
from typing import Protocol


class Counts(Protocol):
    def incr(self, name: str, amount: int = 1) -> None: ...


class Tally:
    """Counters in memory: for a component used on its own, in tests and tools."""

    def __init__(self) -> None:
        self.values: Counter[str] = Counter()

    def incr(self, name: str, amount: int = 1) -> None:
        self.values[name] += amount

    def __getitem__(self, name: str) -> int:
        return self.values[name]

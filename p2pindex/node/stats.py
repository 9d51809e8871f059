"""StatisticsStore: every counter a node keeps, in one place, snapshotted for status."""

from __future__ import annotations

from collections import Counter


class StatisticsStore:
    """Monotonic named counters plus a few gauges; cheap enough for the hot path."""

    def __init__(self) -> None:
        self._counters: Counter[str] = Counter()
        self._gauges: dict[str, float] = {}

    def incr(self, name: str, amount: int = 1) -> None:
        self._counters[name] += amount

    def set_gauge(self, name: str, value: float) -> None:
        self._gauges[name] = value

    def get(self, name: str) -> int:
        return self._counters[name]

    def snapshot(self) -> dict[str, float]:
        merged: dict[str, float] = dict(sorted(self._counters.items()))
        merged.update(sorted(self._gauges.items()))
        return merged

"""StatisticsStore: every counter, gauge and latency histogram a node keeps, in one place.

`p2pindex status`, the HTTP ``/metrics`` endpoint and the dashboard all read this one
store, so a figure means the same thing wherever an operator sees it.

Histograms have fixed buckets (seconds) and are cumulative only when exported: observing a
value is one ``bisect`` and two additions, cheap enough for every request on the hot path.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds (seconds) from half a millisecond (a local read) to a request's deadline."""


class Histogram:
    """Counts of observations per bucket (the last one is +Inf) and their sum."""

    __slots__ = ("buckets", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it) pairs, ending with +Inf."""
        total = 0
        out = []
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out

    def quantile(self, q: float) -> float:
        """An estimate (the bucket bound where the q-th observation falls), for summaries."""
        total = self.count
        if total == 0:
            return 0.0
        rank = q * total
        for bound, seen in self.cumulative():
            if seen >= rank:
                return bound if bound != float("inf") else self.buckets[-1]
        return self.buckets[-1]


class StatisticsStore:
    """Monotonic named counters, gauges and histograms; cheap enough for the hot path."""

    def __init__(self) -> None:
        self._counters: Counter[str] = Counter()
        self._gauges: dict[str, float] = {}
        self._histograms: dict[str, Histogram] = {}

    def incr(self, name: str, amount: int = 1) -> None:
        self._counters[name] += amount

    def set_gauge(self, name: str, value: float) -> None:
        self._gauges[name] = value

    def get(self, name: str) -> int:
        return self._counters[name]

    def histogram(self, name: str) -> Histogram:
        """The histogram ``name`` (created on first use); keep it to observe without lookups."""
        histogram = self._histograms.get(name)
        if histogram is None:
            histogram = self._histograms[name] = Histogram()
        return histogram

    def observe(self, name: str, value: float) -> None:
        self.histogram(name).observe(value)

    def histograms(self) -> dict[str, Histogram]:
        return dict(self._histograms)

    def counters(self) -> dict[str, int]:
        return dict(self._counters)

    def gauges(self) -> dict[str, float]:
        return dict(self._gauges)

    def snapshot(self) -> dict[str, float]:
        merged: dict[str, float] = dict(sorted(self._counters.items()))
        merged.update(sorted(self._gauges.items()))
        for name, histogram in sorted(self._histograms.items()):
            merged[f"{name}.count"] = histogram.count
            merged[f"{name}.p99_seconds"] = histogram.quantile(0.99)
        return merged

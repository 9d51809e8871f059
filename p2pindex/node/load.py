"""Load signals for an autoscaler: requests/s, p99 latency and CPU over a recent window.

An external autoscaler (or an operator's script) reads these from `status` and decides to
add or drain nodes; this module only measures. Client requests are timed where they enter
and leave the node (the data fast path and the ordinary dispatch), so the figure is what a
client sees minus the network. Latencies go into fixed logarithmic buckets (bounded memory
and cost per request); two windows are kept, the current one and the one before, so the
signal never covers less than one full window.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import trio

from p2pindex.net.channel import BatchHandler, FastPath, Respond
from p2pindex.wire.messages import DeleteRequest, GetRequest, Message, PutRequest

WINDOW = 10.0
"""Seconds per window; signals cover the last one to two windows."""
BUCKETS_PER_DOUBLING = 8
SMALLEST = 1e-5
"""Latencies below 10 µs share the first bucket."""
BUCKETS = 8 * 32
"""10 µs * 2**32: anything slower shares the last bucket."""
CLIENT_REQUESTS = (GetRequest, PutRequest, DeleteRequest)


def _bucket(seconds: float) -> int:
    if seconds <= SMALLEST:
        return 0
    index = int(math.log2(seconds / SMALLEST) * BUCKETS_PER_DOUBLING) + 1
    return min(index, BUCKETS - 1)


def _upper(bucket: int) -> float:
    """The largest latency a bucket holds (what a percentile in it is reported as)."""
    return SMALLEST * 2 ** (bucket / BUCKETS_PER_DOUBLING)


class _Window:
    __slots__ = ("buckets", "count", "cpu", "started")

    def __init__(self, started: float, cpu: float) -> None:
        self.started = started
        self.cpu = cpu
        self.count = 0
        self.buckets = [0] * BUCKETS


class LoadMeter:
    """Counts and times client requests; ``signals`` summarises the recent windows."""

    def __init__(
        self,
        clock: Callable[[], float] = trio.current_time,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self._clock = clock
        self._cpu_clock = cpu_clock
        now = clock()
        self._previous: _Window | None = None
        self._current = _Window(now, cpu_clock())

    def record(self, seconds: float) -> None:
        window = self._window()
        window.count += 1
        window.buckets[_bucket(seconds)] += 1

    def _window(self) -> _Window:
        current = self._current
        now = self._clock()
        elapsed = now - current.started
        if elapsed >= WINDOW:
            cpu = self._cpu_clock()
            # After a quiet spell of two windows or more, nothing old is left to count.
            self._previous = current if elapsed < 2 * WINDOW else _Window(now - WINDOW, cpu)
            self._current = current = _Window(now, cpu)
        return current

    def signals(self) -> dict[str, float | int | None]:
        current = self._window()
        first = self._previous or current
        now = self._clock()
        span = max(now - first.started, 1e-9)
        windows = [w for w in (self._previous, current) if w is not None]
        count = sum(w.count for w in windows)
        cpu = self._cpu_clock() - first.cpu
        return {
            "window_s": round(span, 1),
            "requests": count,
            "requests_per_s": round(count / span, 1),
            "p50_ms": _percentile(windows, count, 0.50),
            "p99_ms": _percentile(windows, count, 0.99),
            "cpu_percent": round(100 * cpu / span, 1),
        }

    # --- wrapping the places client requests enter -----------------------------------------

    def timed_fast_path(self, fast_path: FastPath) -> FastPath:
        """``fast_path`` with its client request handlers timed (replica traffic is not)."""
        batch = dict(fast_path.batch)
        wrapped: dict[BatchHandler, BatchHandler] = {}
        for kind in CLIENT_REQUESTS:
            handler = batch.get(kind)
            if handler is not None:
                # One wrapper per handler: the channel batches requests by handler, so
                # puts and deletes that shared one must still share one.
                if handler not in wrapped:
                    wrapped[handler] = self._timed_batch(handler)
                batch[kind] = wrapped[handler]
        return FastPath(fast_path.answer, batch)

    def _timed_batch(self, handler: BatchHandler) -> BatchHandler:
        clock = self._clock
        record = self.record

        async def timed(messages: list[Message], respond: Respond) -> None:
            started = clock()

            def respond_timed(position: int, reply: Message) -> None:
                record(clock() - started)
                respond(position, reply)

            await handler(messages, respond_timed)

        return timed


def _percentile(windows: list[_Window], count: int, fraction: float) -> float | None:
    if not count:
        return None
    rank = max(1, math.ceil(count * fraction))
    seen = 0
    for bucket in range(BUCKETS):
        seen += sum(w.buckets[bucket] for w in windows)
        if seen >= rank:
            return round(_upper(bucket) * 1000, 3)
    return round(_upper(BUCKETS - 1) * 1000, 3)

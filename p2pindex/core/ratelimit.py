"""A token bucket: the request rate one client key may use (sans-IO, time passed in).

Why a bucket: it allows a burst up to ``burst`` requests and then ``rate`` a second on
average, so a client that pipelines a batch now and then is not refused while one that
floods is held to its share. Time comes in as ``now`` so it runs on the simulated clock too.
"""

from __future__ import annotations


class TokenBucket:
    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if not rate > 0 or not burst >= 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._last = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one (True), else refuse (False).

        A clock read that went back (a wall clock stepped by NTP or by hand) refills
        nothing and counts on from the new reading; waiting for the old one would hold the
        bucket empty for as long as the step."""
        self._refill(now)
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def wait(self, now: float) -> float:
        """Seconds until ``take`` would grant a token (0.0: it would now); takes none."""
        self._refill(now)
        return max(0.0, (1 - self._tokens) / self._rate)

    def _refill(self, now: float) -> None:
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._last = now

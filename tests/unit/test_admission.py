"""Operator limits: connections per node and per client key, and each client key's request
rate (a token bucket), every refusal counted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pindex.config import AdmissionLimits
from p2pindex.core.ratelimit import TokenBucket
from p2pindex.errors import ConfigError
from p2pindex.node.admission import Admission
from p2pindex.node.stats import StatisticsStore


@given(st.lists(st.floats(0, 10), max_size=200), st.floats(0.5, 50), st.integers(1, 20))
def test_a_bucket_never_grants_more_than_its_burst_plus_its_rate_over_time(
    gaps: list[float], rate: float, burst: int
) -> None:
    bucket = TokenBucket(rate, burst, 0.0)
    now = granted = 0.0
    for gap in gaps:
        now += gap
        granted += bucket.take(now)
        assert granted <= burst + rate * now + 1e-6


def test_a_flood_is_held_to_the_rate_and_a_pause_refills_the_bucket() -> None:
    bucket = TokenBucket(10, 5, 0.0)
    assert sum(bucket.take(0.0) for _ in range(100)) == 5
    assert sum(bucket.take(1.0) for _ in range(100)) == 5  # refilled to the burst, not 10
    assert bucket.take(1.05) is False
    assert bucket.take(1.11) is True


def test_a_clock_stepped_back_does_not_hold_the_bucket_empty() -> None:
    bucket = TokenBucket(10, 5, 1000.0)
    assert sum(bucket.take(1000.0) for _ in range(100)) == 5
    assert bucket.take(940.0) is False  # stepped back a minute: nothing refilled
    assert sum(bucket.take(941.0) for _ in range(100)) == 5  # a second after the step


@given(st.lists(st.floats(0, 10), max_size=100), st.floats(0.01, 50), st.integers(1, 20))
def test_a_buckets_wait_is_exactly_when_it_grants_again(
    gaps: list[float], rate: float, burst: int
) -> None:
    bucket = TokenBucket(rate, burst, 0.0)
    now = 0.0
    for gap in gaps:
        now += gap
        wait = bucket.wait(now)
        assert wait >= 0
        if wait == 0:
            assert bucket.take(now)
        else:
            assert bucket.wait(now + wait / 2) > 0  # waiting is no take
            assert bucket.take(now + wait * 0.999) is False
            now += wait * 1.001
            assert bucket.take(now)


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_connections_are_limited_per_node_and_per_client_key_and_counted() -> None:
    stats = StatisticsStore()
    admission = Admission(
        AdmissionLimits(max_connections=3, max_client_connections=2), stats, Clock()
    )
    assert admission.connect(b"alice") is None
    assert admission.connect(b"alice") is None
    assert "client key" in (admission.connect(b"alice") or "")
    assert admission.connect(None) is None  # an anonymous peer (an insecure node)
    assert "3 client connections" in (admission.connect(b"bob") or "")
    admission.disconnect(b"alice")
    assert admission.connect(b"bob") is None
    counts = stats.snapshot()
    assert counts["rejected.client_connections"] == 1
    assert counts["rejected.connections"] == 1
    assert counts["connections.open"] == 3


def test_a_client_over_its_rate_is_refused_and_reconnecting_does_not_refill_it() -> None:
    stats = StatisticsStore()
    clock = Clock()
    admission = Admission(AdmissionLimits(client_rate=2, client_burst=3), stats, clock)
    admission.connect(b"alice")
    check = admission.throttle(b"alice")
    assert [check() for _ in range(4)][:3] == [None, None, None]
    admission.disconnect(b"alice")
    admission.connect(b"alice")
    assert "rate of 2" in (admission.throttle(b"alice")() or "")
    assert admission.throttle(b"bob")() is None  # another key has its own bucket
    clock.now = 1.0
    assert check() is None
    assert stats.snapshot()["overloaded.client_rate"] == 2


def test_bad_admission_limits_are_refused() -> None:
    with pytest.raises(ConfigError):
        AdmissionLimits(client_rate=0)
    with pytest.raises(ConfigError):
        AdmissionLimits(max_client_connections=0)


def test_the_clusters_own_nodes_are_admitted_past_the_client_limit() -> None:
    """Clients holding every connection must not cut a node off from its peers."""
    stats = StatisticsStore()
    admission = Admission(AdmissionLimits(max_connections=2), stats, Clock())
    assert admission.connect(b"alice") is None
    assert admission.connect(b"bob") is None
    assert admission.connect(b"carol") is not None  # clients: at their limit
    assert admission.connect(None, node=True) is None
    assert admission.connect(None, node=True) is None
    assert stats.snapshot()["connections.open"] == 4
    # A node leaving gives clients no room; a client leaving does.
    admission.disconnect(None, node=True)
    assert admission.connect(b"carol") is not None
    admission.disconnect(b"alice")
    assert admission.connect(b"carol") is None
    assert stats.snapshot()["rejected.connections"] == 2


def test_a_client_key_that_keeps_breaking_sessions_is_screened_until_it_regains_one() -> None:
    clock = Clock()
    limits = AdmissionLimits(broken_sessions=3, broken_session_interval=10)
    admission = Admission(limits, StatisticsStore(), clock)
    for _ in range(3):
        assert admission.screen(b"mallory") is None
        admission.connect(b"mallory")
        admission.disconnect(b"mallory", broke_protocol=True)
    refusal = admission.screen(b"mallory")
    assert refusal is not None and refusal.reason == "broken_sessions"
    assert "could not read" in str(refusal) and "10 s more" in str(refusal)
    assert admission.screen(b"alice") is None  # another key is not screened
    admission.connect(b"alice")
    admission.disconnect(b"alice")  # closed the ordinary way: nothing charged
    assert admission.screen(b"alice") is None
    clock.now = 9.9
    assert admission.screen(b"mallory") is not None
    clock.now = 10.0
    assert admission.screen(b"mallory") is None  # one more session, not three
    admission.connect(b"mallory")
    admission.disconnect(b"mallory", broke_protocol=True)
    assert admission.screen(b"mallory") is not None


def test_broken_sessions_zero_screens_nobody_and_nodes_are_never_charged() -> None:
    off = Admission(AdmissionLimits(broken_sessions=0), StatisticsStore(), Clock())
    for _ in range(100):
        off.connect(b"mallory")
        off.disconnect(b"mallory", broke_protocol=True)
    assert off.screen(b"mallory") is None
    on = Admission(AdmissionLimits(broken_sessions=1), StatisticsStore(), Clock())
    on.connect(None, node=True)
    on.disconnect(None, node=True, broke_protocol=True)  # a node (or an insecure peer)
    assert on.screen(b"") is None
    with pytest.raises(ConfigError):
        AdmissionLimits(broken_sessions=-1)
    with pytest.raises(ConfigError):
        AdmissionLimits(broken_session_interval=0)


def test_a_client_at_a_connection_limit_is_screened_with_the_reason_and_counted() -> None:
    stats = StatisticsStore()
    admission = Admission(
        AdmissionLimits(max_connections=3, max_client_connections=2), stats, Clock()
    )
    admission.connect(b"alice")
    assert admission.screen(b"alice") is None
    admission.connect(b"alice")
    refusal = admission.screen(b"alice")
    assert refusal is not None and refusal.reason == "client_connections"
    assert "2 connections open, its limit (admission.max_client_connections)" in str(refusal)
    assert admission.screen(b"bob") is None
    admission.connect(b"bob")
    refusal = admission.screen(b"carol")
    assert refusal is not None and refusal.reason == "connections"
    assert "serves 3 client connections" in str(refusal)
    admission.disconnect(b"alice")
    assert admission.screen(b"carol") is None  # holds the place alice gave up
    refusal = admission.screen(b"alice")
    assert refusal is not None and refusal.reason == "connections"
    counts = stats.snapshot()
    assert counts["rejected.client_connections"] == 1 and counts["rejected.connections"] == 2


def test_a_screened_handshake_holds_its_place_until_its_session_is_counted_or_released() -> None:
    """Handshakes that pass the screen together cannot overrun a limit: each holds a place,
    which its session takes over (never refused then) or the failed handshake gives back."""
    stats = StatisticsStore()
    admission = Admission(
        AdmissionLimits(max_connections=3, max_client_connections=2), stats, Clock()
    )
    assert admission.screen(b"alice") is None
    assert admission.screen(b"alice") is None
    refusal = admission.screen(b"alice")  # two handshakes running, no session yet
    assert refusal is not None and refusal.reason == "client_connections"
    assert admission.screen(b"bob") is None
    refusal = admission.screen(b"carol")
    assert refusal is not None and refusal.reason == "connections"
    assert "serves 3 client connections" in str(refusal)
    admission.release(b"bob")  # bob's handshake failed
    assert admission.connect(b"alice") is None and admission.connect(b"alice") is None
    assert "client key" in (admission.connect(b"alice") or "")  # unscreened: checked
    assert admission.screen(b"carol") is None
    assert admission.connect(b"carol") is None
    assert stats.snapshot()["connections.open"] == 3
    admission.disconnect(b"carol")
    assert admission.screen(b"bob") is None  # carol's place is free again

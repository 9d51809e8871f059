"""How fast the tombstone reaper reads its store: the whole store once per quarter grace,
never the whole store every round of a long grace."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from p2pindex.node.reaper import MIN_SCAN_CHUNK, SCAN_CHUNK, reap_interval, scan_chunk

graces = st.floats(min_value=0.1, max_value=7 * 86400.0)
stores = st.integers(min_value=0, max_value=50_000_000)


@given(stores, graces)
def test_a_chunk_is_bounded(stored: int, grace: float) -> None:
    assert MIN_SCAN_CHUNK <= scan_chunk(stored, grace) <= SCAN_CHUNK


@given(stores, graces)
def test_the_whole_store_is_scanned_within_a_quarter_grace_when_chunks_allow(
    stored: int, grace: float
) -> None:
    chunk = scan_chunk(stored, grace)
    rounds = math.ceil(stored / chunk) if stored else 1
    if stored <= SCAN_CHUNK * grace / 4 / reap_interval(grace):  # chunks are not the limit
        # one more round: a cycle ends on the round that finds fewer than a chunk
        assert (rounds - 1) * reap_interval(grace) <= grace / 4 + 1e-6


@given(st.integers(min_value=0, max_value=SCAN_CHUNK - 1), st.floats(0.1, 8.0))
def test_short_graces_scan_a_small_store_whole_every_round(stored: int, grace: float) -> None:
    assert scan_chunk(stored, grace) > stored  # one round sees it all and ends the cycle


def test_an_hour_of_grace_does_not_read_a_small_store_over_and_over() -> None:
    assert scan_chunk(10_000, 3600.0) == MIN_SCAN_CHUNK  # 32 records a second, not 2,048
    assert scan_chunk(2_000_000, 3600.0) == SCAN_CHUNK  # a large store still goes round

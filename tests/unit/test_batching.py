"""Batches of records cut to fit a frame: nothing lost or reordered, none too large unless it
is a single record, never empty."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from p2pindex.core.batching import batches, fitting_prefix

ITEMS = st.lists(st.tuples(st.binary(max_size=4), st.binary(max_size=40)), max_size=30)


def size(batch: list[tuple[bytes, bytes]]) -> int:
    return sum(len(key) + len(record) for key, record in batch)


@given(ITEMS, st.integers(1, 100))
def test_batches_keep_every_item_in_order_and_fit_unless_alone(items, max_bytes) -> None:
    cut = list(batches(items, max_bytes))
    assert [item for batch in cut for item in batch] == items
    assert all(batch and (size(batch) <= max_bytes or len(batch) == 1) for batch in cut)


@given(ITEMS, st.integers(1, 100))
def test_a_fitting_prefix_is_the_longest_that_fits_and_never_empty(items, max_bytes) -> None:
    prefix = fitting_prefix(items, max_bytes)
    assert prefix == items[: len(prefix)]
    assert bool(prefix) == bool(items)
    assert size(prefix) <= max_bytes or len(prefix) == 1
    if len(prefix) < len(items):
        assert size(items[: len(prefix) + 1]) > max_bytes

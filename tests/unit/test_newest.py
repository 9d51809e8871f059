"""put_newest: a dict that keeps the newest ``limit`` entries, whatever order keys come in."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from p2pindex.core.newest import put_newest


@given(st.lists(st.tuples(st.integers(0, 20), st.integers()), max_size=300), st.integers(1, 8))
def test_it_holds_the_most_recently_put_distinct_keys_with_their_last_values(
    puts: list[tuple[int, int]], limit: int
) -> None:
    entries: dict[int, int] = {}
    for key, value in puts:
        put_newest(entries, key, value, limit)
        assert len(entries) <= limit
    newest: list[int] = []
    for key, _ in reversed(puts):  # the distinct keys, most recent first
        if key not in newest:
            newest.append(key)
    assert list(entries) == list(reversed(newest[:limit]))  # oldest first, as a dict keeps
    last = dict(puts)
    assert all(entries[key] == last[key] for key in entries)


def test_a_key_put_again_is_recent_again_and_none_values_count() -> None:
    entries: dict[str, None] = {}
    for key in ("a", "b", "c"):
        put_newest(entries, key, None, 3)
    put_newest(entries, "a", None, 3)
    put_newest(entries, "d", None, 3)
    assert list(entries) == ["c", "a", "d"]  # b was the oldest

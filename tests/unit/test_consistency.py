"""The consistency arithmetic: how many replies ONE, QUORUM, ALL and an explicit count need,
and why a quorum read after a quorum write sees it (the two quorums overlap)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pindex.types import ConsistencyLevel, required_replies

replicas = st.integers(1, 64)


@given(replicas)
def test_levels_need_one_a_majority_and_all(n: int) -> None:
    assert required_replies(ConsistencyLevel.ONE, n) == 1
    assert required_replies(ConsistencyLevel.ALL, n) == n
    quorum = required_replies(ConsistencyLevel.QUORUM, n)
    assert 2 * quorum > n  # a strict majority...
    assert 2 * (quorum - 1) <= n  # ...and the smallest one


@given(replicas)
def test_every_level_is_satisfiable_and_ordered(n: int) -> None:
    counts = [required_replies(level, n) for level in ConsistencyLevel]
    assert all(1 <= count <= n for count in counts)
    one, quorum, everyone = counts
    assert one <= quorum <= everyone


@given(replicas, st.data())
def test_quorum_reads_and_writes_overlap_in_at_least_one_replica(n: int, data) -> None:
    r = required_replies(ConsistencyLevel.QUORUM, n)
    w = required_replies(ConsistencyLevel.QUORUM, n)
    writers = data.draw(st.sets(st.integers(0, n - 1), min_size=w, max_size=w))
    readers = data.draw(st.sets(st.integers(0, n - 1), min_size=r, max_size=r))
    assert writers & readers


@given(replicas, st.integers(-3, 70))
def test_an_explicit_count_is_taken_as_is_inside_one_to_n_and_refused_outside(
    n: int, count: int
) -> None:
    if 1 <= count <= n:
        assert required_replies(count, n) == count
    else:
        with pytest.raises(ValueError, match=f"outside 1..{n}"):
            required_replies(count, n)


@pytest.mark.parametrize("bad", [True, 1.0, "2", None])
def test_a_count_that_is_not_an_integer_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="one, quorum, all or an integer"):
        required_replies(bad, 3)  # type: ignore[arg-type]

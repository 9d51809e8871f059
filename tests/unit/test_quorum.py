"""Quorum bookkeeping: counting answers once, deciding once, merging replies."""

from __future__ import annotations

from functools import reduce

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pindex.core.quorum import Outcome, ReadQuorum, WriteQuorum
from p2pindex.core.versions import VersionedObject, VersionVector, merge, update

TARGETS = ("n1", "n2", "n3", "n4", "n5")
STRANGERS = ("x1", "x2")


def expected_outcome(targets: int, required: int, successes: int, failures: int) -> Outcome:
    if successes >= required:
        return Outcome.SUCCEEDED
    if targets - failures < required:
        return Outcome.FAILED
    return Outcome.PENDING


@st.composite
def setups(draw: st.DrawFn) -> tuple[tuple[str, ...], int]:
    targets = tuple(draw(st.permutations(TARGETS))[: draw(st.integers(1, len(TARGETS)))])
    return targets, draw(st.integers(1, len(targets)))


answers = st.lists(st.tuples(st.sampled_from(TARGETS + STRANGERS), st.booleans()), max_size=15)


@given(setup=setups(), events=answers)
def test_write_outcome_is_decided_once_and_follows_the_counts(
    setup: tuple[tuple[str, ...], int], events: list[tuple[str, bool]]
) -> None:
    targets, required = setup
    quorum = WriteQuorum(targets, required)
    acked: set[str] = set()
    failed: set[str] = set()
    history = [quorum.outcome]
    for node, ok in events:
        if node in targets and node not in acked | failed:
            (acked if ok else failed).add(node)
        if ok:
            quorum.record_ack(node)
        else:
            quorum.record_failure(node)
        assert quorum.acks == len(acked)
        assert quorum.pending == tuple(t for t in targets if t not in acked | failed)
        assert quorum.outcome is expected_outcome(len(targets), required, len(acked), len(failed))
        history.append(quorum.outcome)
    decided = [outcome for outcome in history if outcome is not Outcome.PENDING]
    assert len(set(decided)) <= 1
    assert history[: len(history) - len(decided)] == [Outcome.PENDING] * (
        len(history) - len(decided)
    )


def test_write_quorum_ignores_duplicates_and_strangers() -> None:
    quorum = WriteQuorum(["a", "b", "c"], 2)
    quorum.record_ack("a")
    quorum.record_ack("a")
    quorum.record_ack("z")
    assert quorum.acks == 1 and quorum.outcome is Outcome.PENDING
    quorum.record_failure("a")
    assert quorum.pending == ("b", "c")
    quorum.record_ack("c")
    assert quorum.outcome is Outcome.SUCCEEDED
    quorum.record_failure("b")
    assert quorum.outcome is Outcome.SUCCEEDED


def test_write_quorum_fails_as_soon_as_success_is_impossible() -> None:
    quorum = WriteQuorum(["a", "b", "c"], 2)
    quorum.record_failure("b")
    assert quorum.outcome is Outcome.PENDING
    quorum.record_failure("c")
    assert quorum.outcome is Outcome.FAILED
    quorum.record_ack("a")
    assert quorum.outcome is Outcome.FAILED and quorum.acks == 1


@pytest.mark.parametrize(
    ("targets", "required", "error"),
    [
        (["a", "b"], 0, ValueError),
        (["a", "b"], 3, ValueError),
        (["a", "a"], 1, ValueError),
        ([], 1, ValueError),
        (["a", ""], 1, ValueError),
        (["a"], True, TypeError),
    ],
)
def test_impossible_quorums_are_refused(targets: list[str], required: int, error: type) -> None:
    with pytest.raises(error):
        WriteQuorum(targets, required)
    with pytest.raises(error):
        ReadQuorum(targets, required)


# --- reads ---------------------------------------------------------------------------------


def copies_of_one_key() -> list[VersionedObject]:
    """Replica copies at different points of one history: stale, divergent, deleted."""
    empty = VersionVector()
    first = update(None, empty, "n1", b"a")
    second = update(first, first.context, "n2", b"b")
    concurrent = update(first, empty, "n3", b"c")
    deleted = update(second, second.context, "n1", None)
    return [first, second, concurrent, deleted, merge(second, concurrent)]


COPIES = copies_of_one_key()
replies = st.lists(
    st.tuples(st.sampled_from(TARGETS + STRANGERS), st.none() | st.sampled_from(COPIES)),
    max_size=12,
)


@given(setup=setups(), events=replies, failures=st.sets(st.sampled_from(TARGETS)))
def test_read_merges_every_reply_whatever_the_order(
    setup: tuple[tuple[str, ...], int],
    events: list[tuple[str, VersionedObject | None]],
    failures: set[str],
) -> None:
    targets, required = setup
    quorum = ReadQuorum(targets, required)
    for node in sorted(failures):
        quorum.record_failure(node)
    answered: dict[str, VersionedObject | None] = {}
    history = [quorum.outcome]
    for node, obj in events:
        quorum.record_reply(node, obj)
        if node in targets and node not in answered and node not in failures:
            answered[node] = obj
        assert quorum.replies == len(answered)
        history.append(quorum.outcome)
        assert quorum.outcome is expected_outcome(
            len(targets), required, len(answered), len(failures & set(targets))
        )
    decided = [outcome for outcome in history if outcome is not Outcome.PENDING]
    assert len(set(decided)) <= 1
    present = [obj for obj in answered.values() if obj is not None]
    expected = reduce(merge, present) if present else None
    assert quorum.merged == expected
    assert quorum.stale_replicas() == [
        node for node in targets if node in answered and answered[node] != expected
    ]


def test_stale_replicas_are_the_ones_to_repair() -> None:
    first, second, *_ = COPIES
    quorum = ReadQuorum(["a", "b", "c"], 2)
    quorum.record_reply("a", second)
    quorum.record_reply("b", first)
    assert quorum.outcome is Outcome.SUCCEEDED
    assert quorum.merged == second
    assert quorum.stale_replicas() == ["b"]
    quorum.record_reply("c", None)
    assert quorum.stale_replicas() == ["b", "c"]
    assert quorum.pending == ()


def test_a_read_where_no_replica_has_the_key() -> None:
    quorum = ReadQuorum(["a", "b"], 2)
    quorum.record_reply("a", None)
    quorum.record_reply("b", None)
    assert quorum.outcome is Outcome.SUCCEEDED
    assert quorum.merged is None and quorum.stale_replicas() == []


def test_a_bad_reply_is_refused_and_changes_nothing() -> None:
    quorum = ReadQuorum(["a", "b"], 1)
    with pytest.raises(TypeError):
        quorum.record_reply("a", b"raw record")  # type: ignore[arg-type]
    assert quorum.replies == 0 and quorum.pending == ("a", "b")
    quorum.record_reply("a", COPIES[0])
    assert quorum.outcome is Outcome.SUCCEEDED

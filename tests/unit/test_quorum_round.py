"""The round record of one coordinated request: when its caller is answered, and only once.

``core.quorum.Round`` decides what the coordinator used to decide inline: answer once the
quorum is decided or every replica asked has answered, or once the deadline passed. These
properties drive rounds with random answers and clock readings, as the coordinator does.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pindex.config import Limits
from p2pindex.core.quorum import Outcome, ReadQuorum, Round, WriteQuorum, next_deadline
from p2pindex.core.versions import VersionVector, update
from p2pindex.errors import DefiniteError, IndeterminateError, Timeout
from p2pindex.node.replies import read_reply, write_reply
from p2pindex.node.stats import StatisticsStore
from p2pindex.wire.messages import PutReply

TARGETS = ("n1", "n2", "n3", "n4", "n5")


@st.composite
def rounds(draw: st.DrawFn) -> tuple[Round, list[tuple[str, bool]], float]:
    """A write round whose coordinator (the first target) has acknowledged or not (its own
    answer missing: the quorum may still be pending once every replica asked answered),
    the remote answers in a random order (True: an ack), and its deadline."""
    size = draw(st.integers(1, len(TARGETS)))
    targets = TARGETS[:size]
    quorum = WriteQuorum(targets, draw(st.integers(1, size)))
    if draw(st.booleans()):
        quorum.record_ack(targets[0])
    deadline = draw(st.floats(0, 10))
    remote = draw(st.permutations(targets[1:]))
    answers = [(node, draw(st.booleans())) for node in remote]
    return Round(quorum, size - 1, deadline), answers, deadline


@given(setup=rounds(), answered_after=st.integers(0, len(TARGETS)))
def test_a_round_is_ready_exactly_when_its_quorum_is_decided_or_all_have_answered(
    setup: tuple[Round, list[tuple[str, bool]], float], answered_after: int
) -> None:
    round_, answers, _deadline = setup
    quorum = round_.quorum
    assert isinstance(quorum, WriteQuorum)
    for position, (node, acked) in enumerate(answers):
        decided = quorum.outcome is not Outcome.PENDING or round_.remaining == 0
        assert round_.ready() is (decided and not round_.answered)
        if position == answered_after:
            assert round_.answer() is True
        if acked:
            quorum.record_ack(node)
        else:
            quorum.record_failure(node)
        assert round_.heard() is round_.ready()
    assert round_.all_heard and round_.remaining == 0
    assert round_.ready() is not round_.answered
    with pytest.raises(ValueError, match="more answers"):
        round_.heard()
    assert round_.remaining == 0


@given(setup=rounds(), clock=st.lists(st.floats(0, 12), max_size=8))
def test_the_caller_is_answered_once_and_a_write_never_fails_definitely(
    setup: tuple[Round, list[tuple[str, bool]], float], clock: list[float]
) -> None:
    """Drive the round as the coordinator does: answers and clock readings interleaved,
    answering whenever it is ready or expired, then at the end of time."""
    round_, answers, deadline = setup
    quorum = round_.quorum
    assert isinstance(quorum, WriteQuorum)
    times = sorted(clock)
    answered: list[str] = []

    def answer_if_due(now: float | None) -> None:
        ready = round_.ready()
        if ready:  # before the deadline, only a decided quorum or a full count answers
            assert quorum.outcome is not Outcome.PENDING or round_.all_heard
        if (ready or (now is not None and round_.expired(now))) and round_.answer():
            answered.append(quorum.outcome.name)

    for node, acked in answers:
        if times:
            answer_if_due(times.pop(0))
        if acked:
            quorum.record_ack(node)
        else:
            quorum.record_failure(node)
        assert round_.heard() is round_.ready()
        answer_if_due(None)
    answer_if_due(deadline)
    assert len(answered) == 1
    assert round_.answer() is False and not round_.ready() and not round_.expired(1e9)
    obj = update(None, VersionVector(), "n1.e1", b"v")
    try:
        reply = write_reply(quorum, b"k", obj, False, StatisticsStore(), Limits())
    except IndeterminateError as exc:
        assert not isinstance(exc, DefiniteError)
        assert quorum.outcome is not Outcome.SUCCEEDED
    else:
        assert isinstance(reply, PutReply) and quorum.outcome is Outcome.SUCCEEDED


@given(deadline=st.floats(-5, 5), now=st.floats(-10, 10))
def test_a_round_expires_at_its_deadline_unless_answered(deadline: float, now: float) -> None:
    round_ = Round(ReadQuorum(["n1", "n2"], 2), 1, deadline)
    assert round_.expired(now) is (now >= deadline)
    round_.answer()
    assert not round_.expired(now)


@given(deadlines=st.lists(st.floats(0, 100), min_size=1, max_size=6), data=st.data())
def test_the_next_deadline_is_the_earliest_of_the_rounds_not_answered(
    deadlines: list[float], data: st.DataObject
) -> None:
    rounds_ = [Round(ReadQuorum(["n1"], 1), 0, deadline) for deadline in deadlines]
    done = data.draw(st.sets(st.integers(0, len(rounds_) - 1)))
    for position in done:
        rounds_[position].answer()
    waiting = [r.deadline for position, r in enumerate(rounds_) if position not in done]
    assert next_deadline(rounds_) == (min(waiting) if waiting else None)


def test_a_read_answered_early_is_ready_no_more_but_repairs_once_all_have_answered() -> None:
    quorum = ReadQuorum(["n1", "n2", "n3"], 2)
    round_ = Round(quorum, 2, 5.0)
    quorum.record_reply("n1", None)
    assert not round_.ready()
    quorum.record_reply("n2", update(None, VersionVector(), "n2.e1", b"v"))
    assert round_.heard() is True
    assert round_.ready() and round_.answer()
    assert not round_.all_heard
    quorum.record_failure("n3")
    assert round_.heard() is False  # answered already
    assert round_.all_heard and not round_.ready()
    assert quorum.stale_replicas() == ["n1"]
    assert read_reply(quorum, b"k", StatisticsStore()).values == [b"v"]  # type: ignore[attr-defined]


def test_a_round_whose_replicas_all_answered_is_ready_though_its_quorum_is_pending() -> None:
    quorum = WriteQuorum(["n1", "n2", "n3"], 3)  # n1, the coordinator, never answered
    round_ = Round(quorum, 2, 5.0)
    quorum.record_ack("n2")
    assert round_.heard() is False
    quorum.record_ack("n3")
    assert round_.heard() is True
    assert quorum.outcome is Outcome.PENDING and round_.ready()


def test_a_read_answered_at_its_deadline_is_a_timeout_not_a_definite_failure() -> None:
    quorum = ReadQuorum(["n1", "n2", "n3"], 3)
    round_ = Round(quorum, 2, 1.0)
    quorum.record_reply("n1", None)
    assert not round_.ready() and not round_.expired(0.5)
    assert round_.expired(1.0) and round_.answer()
    with pytest.raises(IndeterminateError):
        read_reply(quorum, b"k", StatisticsStore())


@pytest.mark.parametrize("asked", [-1, 3, 4])
def test_a_round_asks_fewer_replicas_than_its_targets(asked: int) -> None:
    with pytest.raises(ValueError, match="asked"):
        Round(WriteQuorum(["n1", "n2", "n3"], 2), asked, 1.0)


def test_a_write_out_of_time_says_it_may_have_landed_and_what_to_do() -> None:
    quorum = WriteQuorum(["n1", "n2", "n3"], 2)
    quorum.record_ack("n1")
    obj = update(None, VersionVector(), "n1.e1", b"v")
    with pytest.raises(Timeout) as timed_out:
        write_reply(quorum, b"k", obj, False, StatisticsStore(), Limits())
    assert (timed_out.value.required, timed_out.value.acknowledged) == (2, 1)
    text = str(timed_out.value)
    assert text.startswith("timed out with 1 of 2 required acknowledgements")
    assert "may still be stored" in text and "read before retrying" in text

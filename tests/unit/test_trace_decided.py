"""The "decided" step of a trace says how a round ended and who had not answered."""

from __future__ import annotations

from p2pindex.core.quorum import WriteQuorum
from p2pindex.node.coordinator import _decided


def test_a_round_answered_at_its_deadline_is_timed_out_and_names_the_silent() -> None:
    quorum = WriteQuorum(["aa", "bb", "cc"], 2)
    quorum.record_ack("aa")
    assert _decided(quorum) == {"outcome": "timed_out", "unanswered": ["bb", "cc"]}


def test_a_decided_round_names_only_those_still_to_answer() -> None:
    quorum = WriteQuorum(["aa", "bb", "cc"], 2)
    quorum.record_ack("aa")
    quorum.record_ack("cc")
    assert _decided(quorum) == {"outcome": "succeeded", "unanswered": ["bb"]}
    quorum.record_failure("bb")
    assert _decided(quorum) == {"outcome": "succeeded"}

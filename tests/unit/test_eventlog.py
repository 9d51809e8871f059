"""The operator's log: rate-limited per topic, and one sentence per membership change."""

from __future__ import annotations

import logging

import pytest

from p2pindex.node.eventlog import EventLog, describe_member_change


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logger(caplog: pytest.LogCaptureFixture) -> logging.Logger:
    caplog.set_level(logging.INFO, logger="test.events")
    return logging.getLogger("test.events")


def test_a_storm_costs_burst_lines_per_period_and_the_next_line_counts_what_was_held(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    events = EventLog(logger, clock, burst=3, period=60.0)
    written = [events.info("member", "line %d", i) for i in range(1000)]
    assert written.count(True) == 3
    assert [r.getMessage() for r in caplog.records] == ["line 0", "line 1", "line 2"]
    clock.now = 61.0
    assert events.info("member", "after the storm")
    assert caplog.records[-1].getMessage() == (
        "after the storm (997 similar member line(s) held back)"
    )


def test_topics_have_separate_budgets(logger: logging.Logger) -> None:
    events = EventLog(logger, Clock(), burst=1)
    assert events.info("hints", "one")
    assert not events.info("hints", "two")
    assert events.warning("storage", "other topic")


def test_nothing_is_counted_below_the_loggers_level(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="test.events")
    events = EventLog(logger, Clock(), burst=1)
    assert not events.info("member", "hidden")
    assert events.warning("member", "shown")


@pytest.mark.parametrize(
    ("liveness", "state", "previous", "previous_state", "expected"),
    [
        ("alive", "syncing", None, None, "joined (syncing)"),
        ("suspect", "active", "alive", "active", "is suspected"),
        ("dead", "active", "suspect", "active", "is dead"),
        ("alive", "active", "suspect", "active", "alive again (it answered"),
        ("alive", "active", "dead", "active", "alive again (was dead)"),
        ("left", "active", "alive", "active", "left the cluster"),
        ("alive", "degraded", "alive", "active", "is now degraded"),
    ],
)
def test_each_membership_change_has_its_sentence(
    liveness: str, state: str, previous: str | None, previous_state: str | None, expected: str
) -> None:
    line = describe_member_change("abc", "127.0.0.1:1", liveness, state, previous, previous_state)
    assert line is not None and expected in line and "abc" in line


def test_a_refreshed_incarnation_is_not_news() -> None:
    assert describe_member_change("abc", "h:1", "alive", "active", "alive", "active") is None


def test_a_verdict_taken_over_from_another_member_names_it() -> None:
    suspected = describe_member_change("abc", "h:1", "suspect", "active", "alive", "active", "xyz")
    dead = describe_member_change("abc", "h:1", "dead", "active", "suspect", "active", "xyz")
    own = describe_member_change("abc", "h:1", "dead", "active", "suspect", "active")
    assert suspected is not None and "suspected by member xyz" in suspected
    assert dead is not None and "declared by member xyz" in dead
    assert own is not None and "declared by" not in own


def test_a_removed_member_is_not_said_to_stay_in_the_ring() -> None:
    """The line had said 'it stays in the ring (hints are kept for it) until it comes back
    or is removed' and then '(a removed member: kept out of the ring)'."""
    dead = describe_member_change("abc", "h:1", "dead", "active", "suspect", "active", None, True)
    assert dead == "member abc at h:1 is dead; it was removed, and stays out of the ring"
    back = describe_member_change("abc", "h:1", "alive", "active", "dead", "active", None, True)
    assert back is not None and back.endswith("(a removed member: kept out of the ring)")

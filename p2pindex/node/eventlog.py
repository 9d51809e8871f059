"""The operator's log: one info line per event worth reading afterwards, never a flood.

A node logs what an operator would want to reconstruct after the fact (members joining,
dying, coming back and leaving; its own state changes; handoff progress; hints; repairs;
storage errors; shutdown). Some of these can come in storms (a flapping link, a disk that
fails every write), so every line goes through a per-topic budget: at most ``burst`` lines
per ``period`` seconds for a topic, and the next line that is let through says how many
were held back. A storm therefore costs a few lines a minute, not the disk.

The clock is injected so the same class runs under trio's clock in a node, in the
simulation, and in unit tests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from p2pindex.core.swim import MemberChanged
from p2pindex.types import Liveness

DEFAULT_BURST = 10
DEFAULT_PERIOD = 60.0
MAX_TOPICS = 4096
"""Topics are a small vocabulary ("hints", "state", one per member), but a bound keeps a
bug that made them per-key from growing this table without end."""


@dataclass(slots=True)
class _Budget:
    window_start: float
    used: int = 0
    held_back: int = 0


class EventLog:
    """Rate-limited info/warning lines, per topic."""

    def __init__(
        self,
        logger: logging.Logger,
        clock: Callable[[], float],
        *,
        burst: int = DEFAULT_BURST,
        period: float = DEFAULT_PERIOD,
    ) -> None:
        self._logger = logger
        self._clock = clock
        self._burst = burst
        self._period = period
        self._budgets: dict[str, _Budget] = {}

    def info(self, topic: str, message: str, *args: object) -> bool:
        """Log at info level unless ``topic`` is over budget; True if the line was written."""
        return self._emit(logging.INFO, topic, message, args)

    def warning(self, topic: str, message: str, *args: object) -> bool:
        return self._emit(logging.WARNING, topic, message, args)

    def error(self, topic: str, message: str, *args: object) -> bool:
        return self._emit(logging.ERROR, topic, message, args)

    def _emit(self, level: int, topic: str, message: str, args: tuple[object, ...]) -> bool:
        if not self._logger.isEnabledFor(level):
            return False
        now = self._clock()
        budget = self._budgets.get(topic)
        if budget is None:
            if len(self._budgets) >= MAX_TOPICS:
                self._budgets.clear()
            budget = self._budgets[topic] = _Budget(now)
        elif now - budget.window_start >= self._period:
            budget.window_start = now
            budget.used = 0
        if budget.used >= self._burst:
            budget.held_back += 1
            return False
        budget.used += 1
        if budget.held_back:
            message += " (%d similar %s line(s) held back)"
            args = (*args, budget.held_back, topic)
            budget.held_back = 0
        self._logger.log(level, message, *args)
        return True


def log_member_change(events: EventLog, change: MemberChanged, own_id: str, removed: bool) -> None:
    """Log a change of another member in the operator's words (``describe_member_change``),
    within a budget per member so one flapping member cannot hide the others. An unplanned
    death is a warning; a ``removed`` member's is expected, and logged at info."""
    member, previous = change.member, change.previous
    if member.node_id == own_id:
        return
    line = describe_member_change(
        member.node_id,
        str(member.address),
        member.liveness.value,
        member.state.value,
        previous.liveness.value if previous is not None else None,
        previous.state.value if previous is not None else None,
        None if change.accuser in (None, own_id) else change.accuser,
        removed,
    )
    if line is None:
        return
    died = member.liveness is Liveness.DEAD and not removed
    (events.warning if died else events.info)(f"member {member.node_id}", "%s", line)


def describe_member_change(
    node_id: str,
    address: str,
    liveness: str,
    state: str,
    previous_liveness: str | None,
    previous_state: str | None,
    accuser: str | None = None,
    removed: bool = False,
) -> str | None:
    """The operator's sentence for a membership change, or None when nothing they would
    look for changed (a refreshed incarnation, say). Liveness and state are their names;
    ``accuser`` is the other member whose word this node took (None: its own probes);
    ``removed``: the member was removed (`p2pindex remove`), so it is out of the ring."""
    who = f"member {node_id} at {address}"
    if removed and liveness == "dead" and previous_liveness not in (None, "dead"):
        by = "" if accuser is None else f" (declared by member {accuser})"
        return f"{who} is dead{by}; it was removed, and stays out of the ring"
    line = _liveness_sentence(who, liveness, state, previous_liveness, accuser)
    if line is None and state != previous_state and liveness == "alive":
        line = f"{who} is now {state}"
    if line is None or not removed:
        return line
    return f"{line} (a removed member: kept out of the ring)"


def _liveness_sentence(
    who: str, liveness: str, state: str, previous: str | None, accuser: str | None
) -> str | None:
    """What changed in a member's liveness, said for a member still in the ring; None when
    its liveness did not change."""
    if previous is None:
        return f"{who} joined ({state})" if liveness == "alive" else f"{who} is known, {liveness}"
    if liveness == previous:
        return None
    if liveness == "alive":
        if previous == "suspect":
            return f"{who} is alive again (it answered the suspicion)"
        return f"{who} is alive again (was {previous}), {state}"
    if liveness == "suspect":
        if accuser is not None:
            return f"{who} is suspected by member {accuser}: it did not answer its probes"
        return f"{who} is suspected: it did not answer probes"
    if liveness == "dead":
        by = "" if accuser is None else f" (declared by member {accuser})"
        return (
            f"{who} is dead{by}; it stays in the ring (hints are kept for it) until it "
            "comes back or is removed with `p2pindex remove`"
        )
    if liveness == "left":
        return f"{who} left the cluster"
    return f"{who} is {liveness}"

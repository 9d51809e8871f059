"""What both simulation engines record about faults, written once.

The cluster engine (``runner``) and the membership-only engine (``membership_run``) apply
faults to different machinery, but they describe them the same way: a fault event in the
history at the engine's current time, a count per fault kind, and a span on the timeline
from the fault's start to its end.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from p2pindex.sim.determinism import Trace
from p2pindex.sim.faults import Fault
from p2pindex.sim.history import EventKind, FaultEvent, History
from p2pindex.sim.network import Link
from p2pindex.sim.timeline import Timeline


class FaultRecorder:
    """Appends fault events to ``history`` stamped by ``now``; with a ``trace`` (an engine
    whose trace is its event log) each event is hashed into the trace as well."""

    def __init__(
        self, history: History, now: Callable[[], float], trace: Trace | None = None
    ) -> None:
        self._history = history
        self._now = now
        self._trace = trace

    def __call__(
        self,
        kind: EventKind,
        nodes: tuple[str, ...] = (),
        *,
        links: tuple[Link, ...] = (),
        amount: float = 0.0,
        detail: str = "",
    ) -> None:
        now = self._now()
        self._history.append(FaultEvent(now, kind, nodes, links, amount, detail))
        if self._trace is not None:
            self._trace.at(now, "fault", f"{kind.value} {','.join(nodes)} {amount:g} {detail}")


class FaultWindows:
    """Counts the faults that began, per kind, and draws each one's span on the timeline
    when it ends (times relative to the run's ``origin``)."""

    def __init__(self, timeline: Timeline) -> None:
        self._timeline = timeline
        self._starts: dict[str, float] = {}
        self.counts: Counter[str] = Counter()

    def begin(self, fault_id: str, fault: Fault, now: float) -> None:
        self.counts[fault.kind.value] += 1
        self._starts[fault_id] = now

    def end(self, fault_id: str, fault: Fault, now: float, origin: float = 0.0) -> None:
        start = self._starts.pop(fault_id, now)
        label = f"{fault.kind.value} {','.join(fault.nodes)}".strip()
        self._timeline.add_fault(label, fault.kind.value, start - origin, now - origin)

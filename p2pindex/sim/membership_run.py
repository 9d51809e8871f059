"""The membership-only engine (``engine = "swim"``): SWIM cores on the discrete-event
``SwimSimulation``, no data path, so a thousand nodes fit in one process.

It drives the schedule's crashes, pauses, loss and group partitions, records every
member's view of every other as observations, and checks them with the membership checker.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from pathlib import Path
from typing import Any, Final

from p2pindex.core.swim import SwimConfig
from p2pindex.sim import checkers
from p2pindex.sim.determinism import (
    Trace,
    derive_seed,
)
from p2pindex.sim.faults import (
    Fault,
    FaultKind,
)
from p2pindex.sim.history import (
    EventKind,
    History,
    Observation,
    RunMeta,
)
from p2pindex.sim.network import Link
from p2pindex.sim.outputs import (
    MembershipResult,
    default_output,
    membership_report,
    write_run_files,
)
from p2pindex.sim.plan import MembershipPlan
from p2pindex.sim.recording import FaultRecorder, FaultWindows
from p2pindex.sim.swim_sim import SwimSimulation
from p2pindex.sim.timeline import Timeline
from p2pindex.types import Liveness

SWIM_SAMPLE_INTERVAL: Final = 5.0
SWIM_TIMELINE_ROWS: Final = 40


class _MembershipRun:
    """Drives SwimSimulation through a schedule and records views, faults and the trace."""

    def __init__(self, plan: MembershipPlan) -> None:
        scenario = plan.scenario
        delay = scenario.network.delay
        self.plan = plan
        self.sim = SwimSimulation(
            seed=derive_seed(plan.seed, "swim"),
            latency=(delay.minimum, 2 * delay.mean - delay.minimum),
            loss=scenario.network.loss,
        )
        self.nodes = self.sim.build(SwimConfig(), scenario.nodes)
        self.names = {node.node_id: f"n{node.index + 1}" for node in self.nodes}
        self.by_name = {f"n{node.index + 1}": node for node in self.nodes}
        self.trace = Trace()
        self.history = History(RunMeta(plan.seed, scenario.options()))
        self.timeline = Timeline(f"{scenario.name} — seed {plan.seed}")
        self.timeline.divergence_label = "(observer, member) views that are wrong"
        self.not_alive: dict[tuple[str, str], Liveness] = {}
        self.doubted: Counter[str] = Counter()
        """observer -> how many other members it does not believe alive."""
        self.doubters: Counter[str] = Counter()
        """subject -> how many observers do not believe it alive."""
        self.losses: dict[str, float] = {}
        self.windows = FaultWindows(self.timeline)
        self.fault_counts = self.windows.counts
        self._event = FaultRecorder(self.history, lambda: self.sim.now, self.trace)
        self.down: set[str] = set()
        self.served: list[tuple[float, float, int]] = []
        faulted = [name for fault in plan.schedule.faults for name in fault.nodes]
        rows = list(dict.fromkeys(faulted))
        rows += [name for name in self.by_name if name not in set(rows)]
        self.rows = rows[:SWIM_TIMELINE_ROWS]
        self.sim.observers.append(self._observe)
        crashed = dict.fromkeys(
            f.nodes[0] for f in plan.schedule.faults if f.kind is FaultKind.CRASH
        )
        for subject in crashed:
            for observer in self.by_name:
                if observer != subject:
                    self.history.append(Observation(0.0, observer, subject, Liveness.ALIVE))

    def run(self) -> None:
        scenario = self.plan.scenario
        for index, fault in enumerate(self.plan.schedule.faults):
            fault_id = f"f{index + 1}-{fault.kind.value}"
            self.sim.at(fault.at, functools.partial(self._begin, fault_id, fault))
            self.sim.at(fault.end, functools.partial(self._end, fault_id, fault))
        end = scenario.duration + scenario.quiesce
        sample = 0.0
        while sample <= end:
            self.sim.at(sample, self._sample)
            sample += SWIM_SAMPLE_INTERVAL
        self.sim.run_until(end)

    def _observe(self, now: float, node: Any, event: Any) -> None:
        member = event.member
        if member.node_id == node.node_id:
            return
        observer = self.names[node.node_id]
        subject = self.names.get(member.node_id, member.node_id)
        liveness = member.liveness
        key = (observer, subject)
        if liveness is Liveness.ALIVE:
            if self.not_alive.pop(key, None) is not None:
                self.doubted[observer] -= 1
                self.doubters[subject] -= 1
        elif key not in self.not_alive:
            self.not_alive[key] = liveness
            self.doubted[observer] += 1
            self.doubters[subject] += 1
        else:
            self.not_alive[key] = liveness
        self.history.append(Observation(now, observer, subject, liveness))
        self.trace.record(f"{now:.6f} view {observer} {subject} {liveness.value}")

    def _begin(self, fault_id: str, fault: Fault) -> None:
        self.windows.begin(fault_id, fault, self.sim.now)
        if fault.kind is FaultKind.CRASH:
            name = fault.nodes[0]
            self.sim.crash(self.by_name[name])
            self.down.add(name)
            self._event(EventKind.CRASH, fault.nodes)
        elif fault.kind is FaultKind.PAUSE:
            self.sim.stall(self.by_name[fault.nodes[0]], fault.duration)
            self._event(EventKind.PAUSE, fault.nodes, amount=fault.duration)
        elif fault.kind is FaultKind.LOSS:
            self.losses[fault_id] = fault.param("rate")
            self._set_loss()
        else:
            groups = fault.params["groups"]
            self.sim.partition([[self.by_name[name] for name in group] for group in groups])
            cover = _cover_links(groups)
            self._event(
                EventKind.PARTITION,
                tuple(sorted({name for link in cover for name in link})),
                links=cover,
                detail=f"{len(groups)} groups",
            )

    def _end(self, fault_id: str, fault: Fault) -> None:
        self.windows.end(fault_id, fault, self.sim.now)
        if fault.kind is FaultKind.CRASH:
            name = fault.nodes[0]
            node = self.by_name[name]
            seeds = [n.address for n in self.nodes if n.up and n is not node][:3]
            self.sim.restart(node, incarnation=node.incarnation + 1, seeds=seeds)
            self.down.discard(name)
            self._event(EventKind.RESTART, fault.nodes)
        elif fault.kind is FaultKind.PAUSE:
            self._event(EventKind.RESUME, fault.nodes)
        elif fault.kind is FaultKind.LOSS:
            del self.losses[fault_id]
            self._set_loss()
        else:
            self.sim.partition(None)
            self._event(EventKind.HEAL)

    def _set_loss(self) -> None:
        keep = 1.0 - self.plan.scenario.network.loss
        for rate in self.losses.values():
            keep *= 1.0 - rate
        self.sim.loss = 1.0 - keep
        self._event(EventKind.LOSS, amount=self.sim.loss)

    def _sample(self) -> None:
        now = self.sim.now
        total = len(self.nodes)
        up = total - len(self.down)
        self.served.append((now, up / total, total))
        for name in self.rows:
            if name in self.down:
                self.timeline.add_view(now, name, None)
                continue
            self.timeline.add_view(now, name, 1.0 - self.doubted[name] / max(total - 1, 1))
        # Wrong views: live members doubted by live observers, plus live observers that
        # still believe a crashed member alive. Counts are kept per observer and subject.
        doubts_by_down = sum(self.doubted[name] for name in self.down)
        doubts_of_down = sum(self.doubters[name] for name in self.down)
        doubts_between_down = sum(
            1
            for observer in self.down
            for subject in self.down
            if (observer, subject) in self.not_alive
        )
        live_doubts = len(self.not_alive) - doubts_by_down - doubts_of_down + doubts_between_down
        unnoticed = sum(
            up
            - (
                self.doubters[name]
                - sum(1 for observer in self.down if (observer, name) in self.not_alive)
            )
            for name in self.down
        )
        self.timeline.add_divergence(now, live_doubts + unnoticed)


def _cover_links(groups: tuple[tuple[str, ...], ...]) -> tuple[Link, ...]:
    """One cut link per partitioned node: the full set has N²/2 links at 1,000 nodes.

    The membership checker only asks which nodes a partition touched; the groups themselves
    are in the fault schedule written next to the history.
    """
    first, second = groups[0], groups[1]
    links = [(a, second[i % len(second)]) for i, a in enumerate(first)]
    links += [(b, first[i % len(first)]) for i, b in enumerate(second)]
    return tuple(links)


def run_membership(
    plan: MembershipPlan, *, output: Path | None = None, replay_command: str = ""
) -> MembershipResult:
    """Run a membership-only plan; write its files into ``output`` when given. A failing
    run's report ends with ``replay_command``, the command that runs it again."""
    started = time.perf_counter()
    cpu = time.process_time()
    run = _MembershipRun(plan)
    run.run()
    violations = checkers.check_membership(run.history, plan.bounds)
    scenario = plan.scenario
    datagrams = sum(node.datagrams_out for node in run.nodes)
    sent = sum(node.udp_out + node.tcp_out for node in run.nodes)
    virtual = run.sim.now
    result = MembershipResult(
        scenario=scenario.name,
        seed=plan.seed,
        nodes=scenario.nodes,
        trace_hash=run.trace.hexdigest(),
        trace_events=run.trace.count,
        faults=sum(run.fault_counts.values()),
        fault_kinds=dict(run.fault_counts),
        violations=violations,
        virtual_seconds=virtual,
        wall_seconds=time.perf_counter() - started,
        cpu_seconds=time.process_time() - cpu,
        datagrams=datagrams,
        bytes_per_node_second=sent / max(virtual, 1e-9) / scenario.nodes,
        events=run.sim.events_processed,
    )
    if violations:
        result.report = membership_report(plan, run.history, violations, replay_command)
    if output is not None:
        output = default_output(output, scenario.name, plan.seed)
        result.output_dir = str(output)
        subtitle = f"{scenario.nodes} nodes, {result.faults} faults, trace {result.trace_hash[:12]}"
        write_run_files(
            output,
            plan,
            run.history,
            result.table() + "\n" + result.report,
            run.timeline,
            run.served,
            subtitle,
            availability_label="share of nodes up",
        )
    return result

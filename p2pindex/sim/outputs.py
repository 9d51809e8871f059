"""What a run produced and the files it leaves: the result rows both engines print, the
failure reports, and one writer for the output directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2pindex.sim import checkers
from p2pindex.sim.checkers import Violation
from p2pindex.sim.history import (
    History,
)
from p2pindex.sim.plan import MembershipPlan, PlannedRun, RunPlan
from p2pindex.sim.timeline import Timeline, write_svg


@dataclass(slots=True)
class RunResult:
    """What one run produced; picklable, so batch workers can return it."""

    scenario: str
    seed: int
    trace_hash: str
    trace_events: int
    ops: int
    ok: int
    failed: int
    unknown: int
    faults: int
    fault_kinds: dict[str, int]
    violations: list[Violation]
    virtual_seconds: float
    wall_seconds: float
    cpu_seconds: float = 0.0
    network: dict[str, int] = field(default_factory=dict)
    lost_disk_writes: int = 0
    tombstones: dict[str, int] = field(default_factory=dict)
    """Tombstones on the disks at the end, and reaped / stale copies dropped (node/reaper.py)."""
    output_dir: str | None = None
    report: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.violations

    def summary_rows(self) -> list[tuple[str, str]]:
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(self.fault_kinds.items()))
        dropped = sum(
            count
            for name, count in self.network.items()
            if name
            in (
                "datagram_lost",
                "datagram_partitioned",
                "datagram_no_receiver",
                "datagram_overflow",
            )
        )
        rows = [
            ("scenario", self.scenario),
            ("seed", str(self.seed)),
            ("result", "PASS" if self.passed else f"FAIL ({len(self.violations)} violations)"),
            (
                "operations",
                f"{self.ops} ({self.ok} ok, {self.failed} failed, {self.unknown} unknown)",
            ),
            ("faults", f"{self.faults} of {len(self.fault_kinds)} kinds: {kinds or '-'}"),
            (
                "messages",
                f"{self.network.get('datagram_delivered', 0)} datagrams, "
                f"{self.network.get('stream_chunks', 0)} stream chunks, "
                f"{self.network.get('connect_ok', 0)} connections",
            ),
            (
                "dropped",
                f"{dropped} datagrams, "
                f"{self.network.get('stream_timeouts', 0)} stream timeouts, "
                f"{self.network.get('stream_resets', 0)} resets",
            ),
            ("disk writes lost", str(self.lost_disk_writes)),
            (
                "tombstones",
                f"{self.tombstones.get('on_disk', 0)} on disk at the end"
                + (
                    f" (peak {self.tombstones['peak_first_half']} in the first half, "
                    f"{self.tombstones['peak_second_half']} in the second), "
                    if "peak_second_half" in self.tombstones
                    else ", "
                )
                + f"{self.tombstones.get('reaped', 0)} reaped, "
                f"{self.tombstones.get('stale_dropped', 0)} stale copies dropped",
            ),
            (
                "copies",
                f"{self.tombstones.get('keys_over_n', 0)} keys on more than N running nodes, "
                f"{self.tombstones.get('keys_under_n', 0)} on fewer",
            ),
            ("virtual time", f"{self.virtual_seconds:.1f} s"),
            ("wall time", f"{self.wall_seconds:.2f} s ({self.cpu_seconds:.2f} s CPU)"),
            ("trace", f"{self.trace_hash} ({self.trace_events} events)"),
        ]
        if self.output_dir:
            rows.append(("output", self.output_dir))
        return rows


def format_table(rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name.ljust(width)}  {value}" for name, value in rows)


@dataclass(slots=True)
class MembershipResult:
    scenario: str
    seed: int
    nodes: int
    trace_hash: str
    trace_events: int
    faults: int
    fault_kinds: dict[str, int]
    violations: list[Violation]
    virtual_seconds: float
    wall_seconds: float
    cpu_seconds: float
    datagrams: int
    bytes_per_node_second: float
    events: int
    report: str = ""
    output_dir: str | None = None

    @property
    def passed(self) -> bool:
        return not self.violations

    def table(self) -> str:
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(self.fault_kinds.items()))
        rows = [
            ("scenario", f"{self.scenario} (membership only, {self.nodes} nodes)"),
            ("seed", str(self.seed)),
            ("result", "PASS" if self.passed else f"FAIL ({len(self.violations)} violations)"),
            ("faults", f"{self.faults}: {kinds or '-'}"),
            ("datagrams", f"{self.datagrams} ({self.bytes_per_node_second:.0f} B/s per node)"),
            ("events", str(self.events)),
            ("virtual time", f"{self.virtual_seconds:.1f} s"),
            ("wall time", f"{self.wall_seconds:.2f} s ({self.cpu_seconds:.2f} s CPU)"),
            ("trace", f"{self.trace_hash} ({self.trace_events} events)"),
        ]
        if self.output_dir:
            rows.append(("output", self.output_dir))
        return format_table(rows)


def failure_report(
    plan: RunPlan, history: History, violations: list[Violation], replay_command: str
) -> str:
    lines = [checkers.failure_report(history, violations)]
    lines.append("fault schedule:")
    lines.extend(f"  {fault.describe()}" for fault in plan.schedule.faults)
    if replay_command:
        lines.append(f"replay: {replay_command}")
    return "\n".join(lines)


def write_run_files(
    output: Path,
    plan: PlannedRun,
    history: History,
    summary: str,
    timeline: Timeline,
    served: list[tuple[float, float, int]],
    subtitle: str,
    *,
    trace_tail: list[str] | None = None,
    availability_label: str | None = None,
) -> None:
    """The files of one run: its history (JSON lines), the concrete fault schedule, the
    summary, the trace's last lines (cluster runs) and the timeline SVG."""
    output.mkdir(parents=True, exist_ok=True)
    history.save(output / "history.jsonl")
    (output / "schedule.json").write_text(
        json.dumps({"seed": plan.seed, "faults": {"schedule": plan.schedule.to_list()}}, indent=2)
        + "\n",
        encoding="utf-8",
    )
    (output / "summary.txt").write_text(summary, encoding="utf-8")
    if trace_tail is not None:
        (output / "trace-tail.txt").write_text("\n".join(trace_tail) + "\n", encoding="utf-8")
    if availability_label is None:
        write_svg(output / "timeline.svg", timeline, served, subtitle)
    else:
        write_svg(
            output / "timeline.svg",
            timeline,
            served,
            subtitle,
            availability_label=availability_label,
        )


def default_output(root: Path, scenario: str, seed: int) -> Path:
    return root / f"{scenario}-{seed}"


def membership_report(
    plan: MembershipPlan, history: History, violations: list[Violation], replay_command: str = ""
) -> str:
    lines = [f"FAILED: {len(violations)} violation(s)", f"seed: {plan.seed}"]
    lines.append("options: " + " ".join(f"{k}={v}" for k, v in plan.scenario.options().items()))
    lines.extend(f"[{v.checker}] {v.message}" for v in violations[:20])
    lines.append("fault schedule:")
    lines.extend(f"  {fault.describe()}" for fault in plan.schedule.faults)
    if replay_command:
        lines.append(f"replay: {replay_command}")
    return "\n".join(lines)

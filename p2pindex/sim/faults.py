"""Fault schedules as data: what goes wrong, when, to whom; validated before anything runs.

A :class:`FaultSchedule` is a list of :class:`Fault` entries ``(at, kind, duration, nodes,
params)``. It is either written by hand in a scenario file or generated from the seed by
:func:`generate_schedule`; either way it is fully concrete (partition groups resolved to node
names) so that printing it is enough to replay it. :func:`validate_schedule` rejects anything
that could not run — an unknown kind or parameter, a node that does not exist, a partition with
more nodes than the cluster, a fault running past the end, a node crashed twice at once — with
one :class:`ScheduleError` naming the entry and the problem.

:func:`run_schedule` drives a schedule against a :class:`FaultTarget` (the runner), starting and
ending each fault at its virtual time, and ends every fault still active when asked to heal.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import trio

from p2pindex.errors import ConfigError
from p2pindex.sim.network import Delay, DelayKind

Link = tuple[str, str]


class ScheduleError(ConfigError):
    """A fault schedule that cannot run; the message names the entry and the problem."""


class FaultKind(enum.Enum):
    PARTITION = "partition"
    LOSS = "loss"
    DUPLICATE = "duplicate"
    REORDER = "reorder"
    DELAY = "delay"
    CRASH = "crash"
    PAUSE = "pause"
    CLOCK_SKEW = "clock_skew"
    CLOCK_JUMP = "clock_jump"
    SLOW = "slow"
    DISK_FULL = "disk_full"
    FSYNC_ERROR = "fsync_error"


class PartitionShape(enum.Enum):
    HALVES = "halves"
    """Two groups of (nearly) equal size."""
    ISOLATE = "isolate"
    """One node cut off from all others."""
    MAJORITY = "majority"
    """A majority and a minority (the minority may have more than one node)."""
    BRIDGE = "bridge"
    """Two groups that cannot talk, plus one bridge node that sees both (non-transitive)."""
    RING = "ring"
    """Majorities ring: every node sees a majority, no two nodes the same majority."""
    ONE_WAY = "one_way"
    """The first group cannot send to the second; the reverse direction works."""
    LINKS = "links"
    """An explicit list of blocked directed links."""


class DiskMode(enum.Enum):
    """What a crash leaves on the node's disk."""

    KEPT = "kept"
    """A process crash (kill -9): committed writes survive; writes still committing do not."""
    UNSYNCED_LOST = "unsynced_lost"
    """A power cut: only synced writes survive (with fsync on, the same as KEPT)."""
    WIPED = "wiped"
    """The disk is lost; the node comes back empty with the same identity (amnesia)."""


GENERATED_SHAPES: Final = tuple(
    shape for shape in PartitionShape if shape is not PartitionShape.LINKS
)
"""Shapes a generated schedule may draw (explicit link lists are written by hand)."""
NETWORK_KINDS: Final = frozenset(
    {FaultKind.PARTITION, FaultKind.LOSS, FaultKind.DUPLICATE, FaultKind.REORDER, FaultKind.DELAY}
)
PROCESS_KINDS: Final = frozenset({FaultKind.CRASH, FaultKind.PAUSE})
INSTANT_KINDS: Final = frozenset({FaultKind.CLOCK_JUMP})
"""Kinds with no duration: they happen once and stay (a clock step is not undone)."""


@dataclass(frozen=True, slots=True)
class _Param:
    kind: type
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()


_RATE = _Param(float, None, 0.0, 1.0)
PARAMS: Final[Mapping[FaultKind, Mapping[str, _Param]]] = {
    FaultKind.PARTITION: {
        "shape": _Param(str, "halves", choices=tuple(s.value for s in PartitionShape)),
        "groups": _Param(list, None),
        "links": _Param(list, None),
    },
    FaultKind.LOSS: {"rate": _RATE},
    FaultKind.DUPLICATE: {"rate": _RATE},
    FaultKind.REORDER: {"rate": _RATE, "max_delay": _Param(float, 0.05, 0.0, 10.0)},
    FaultKind.DELAY: {
        "distribution": _Param(str, "exponential", choices=tuple(k.value for k in DelayKind)),
        "minimum": _Param(float, 0.001, 0.0, 10.0),
        "mean": _Param(float, 0.05, 0.0, 10.0),
        "shape": _Param(float, 1.5, 0.01, 100.0),
    },
    FaultKind.CRASH: {"disk": _Param(str, "kept", choices=tuple(m.value for m in DiskMode))},
    FaultKind.PAUSE: {},
    FaultKind.CLOCK_SKEW: {
        "offset": _Param(float, None, -1e9, 1e9),
        "drift": _Param(float, 0.0, -0.5, 0.5),
    },
    FaultKind.CLOCK_JUMP: {"offset": _Param(float, None, -1e9, 1e9)},
    FaultKind.SLOW: {
        "delay": _Param(float, 0.05, 0.0, 10.0),
        "disk_factor": _Param(float, 10.0, 1.0, 1000.0),
    },
    FaultKind.DISK_FULL: {},
    FaultKind.FSYNC_ERROR: {"rate": _Param(float, 1.0, 0.0, 1.0)},
}
NODE_TARGETED: Final = frozenset(FaultKind) - NETWORK_KINDS
"""Kinds that must name at least one node: every kind but the network's (which optionally
restrict themselves to some nodes)."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault: start at ``at`` (virtual seconds), last ``duration``, hit ``nodes``.

    For a crash, ``duration`` is the downtime before the node restarts. ``params`` holds the
    kind's parameters (see ``PARAMS``); partitions carry resolved ``groups`` or ``links``.
    """

    at: float
    kind: FaultKind
    duration: float = 0.0
    nodes: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def end(self) -> float:
        return self.at + self.duration

    def param(self, name: str) -> Any:
        if name in self.params:
            return self.params[name]
        return PARAMS[self.kind][name].default

    def describe(self) -> str:
        parts = [f"t={self.at:g}", self.kind.value]
        if self.duration:
            parts.append(f"for {self.duration:g}s")
        if self.nodes:
            parts.append(",".join(self.nodes))
        parts.extend(f"{name}={_show(value)}" for name, value in sorted(self.params.items()))
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The scenario-file form of this entry (round-trips through :func:`fault_from_dict`)."""
        document: dict[str, Any] = {"at": self.at, "kind": self.kind.value}
        if self.duration:
            document["duration"] = self.duration
        if self.nodes:
            document["nodes"] = list(self.nodes)
        for name, value in self.params.items():
            document[name] = _plain(value)
        return document


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


def _show(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "[" + " ".join(_show(item) for item in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True, slots=True)
class FaultSchedule:
    faults: tuple[Fault, ...] = ()

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.faults, key=lambda f: f.at))
        object.__setattr__(self, "faults", ordered)

    def kinds(self) -> set[FaultKind]:
        return {fault.kind for fault in self.faults}

    def __len__(self) -> int:
        return len(self.faults)

    def describe(self) -> str:
        return "\n".join(fault.describe() for fault in self.faults)

    def to_list(self) -> list[dict[str, Any]]:
        return [fault.to_dict() for fault in self.faults]


# ------------------------------------------------------------------------- parsing


def fault_from_dict(document: Mapping[str, Any], where: str) -> Fault:
    """Parse one scenario-file entry; ``where`` names it in errors (``faults.schedule[3]``)."""
    if not isinstance(document, Mapping):
        raise ScheduleError(f"{where}: expected a table, got {type(document).__name__}")
    known = {"at", "kind", "duration", "nodes"}
    if "kind" not in document:
        raise ScheduleError(f"{where}: missing 'kind'")
    kind_name = document["kind"]
    try:
        kind = FaultKind(kind_name)
    except ValueError:
        raise ScheduleError(
            f"{where}: unknown fault kind {kind_name!r} "
            f"(expected one of: {', '.join(k.value for k in FaultKind)})"
        ) from None
    specs = PARAMS[kind]
    unknown = sorted(set(document) - known - set(specs))
    if unknown:
        allowed = ", ".join(sorted(known | set(specs)))
        raise ScheduleError(
            f"{where}: unknown key {unknown[0]!r} for fault kind {kind.value!r} "
            f"(expected: {allowed})"
        )
    if "at" not in document:
        raise ScheduleError(f"{where}: missing 'at' (start time in virtual seconds)")
    at = _number(document["at"], f"{where}.at")
    duration = _number(document.get("duration", 0.0), f"{where}.duration")
    nodes_raw = document.get("nodes", [])
    if isinstance(nodes_raw, str):
        nodes_raw = [nodes_raw]
    if not isinstance(nodes_raw, list) or not all(isinstance(n, str) for n in nodes_raw):
        raise ScheduleError(f'{where}.nodes: expected a list of node names like "n1"')
    params: dict[str, Any] = {}
    for name, spec in specs.items():
        if name not in document:
            continue
        params[name] = _param(document[name], spec, f"{where}.{name}")
    return Fault(at, kind, duration, tuple(nodes_raw), params)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ScheduleError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _param(value: Any, spec: _Param, where: str) -> Any:
    if spec.kind is float:
        number = _number(value, where)
        if spec.low is not None and number < spec.low:
            raise ScheduleError(f"{where}: {number:g} is below the minimum {spec.low:g}")
        if spec.high is not None and number > spec.high:
            raise ScheduleError(f"{where}: {number:g} is above the maximum {spec.high:g}")
        return number
    if spec.kind is str:
        if not isinstance(value, str):
            raise ScheduleError(f"{where}: expected a string, got {value!r}")
        if spec.choices and value not in spec.choices:
            raise ScheduleError(f"{where}: {value!r} is not one of {', '.join(spec.choices)}")
        return value
    if not isinstance(value, list | tuple) or not all(isinstance(g, list | tuple) for g in value):
        raise ScheduleError(f"{where}: expected a list of lists of node names")
    if not all(isinstance(name, str) for group in value for name in group):
        raise ScheduleError(f"{where}: expected a list of lists of node names")
    return tuple(tuple(group) for group in value)


# ------------------------------------------------------------------------- partitions


def partition_links(shape: PartitionShape, groups: Sequence[Sequence[str]]) -> frozenset[Link]:
    """The blocked directed links of a partition given its resolved groups."""
    blocked: set[Link] = set()
    if shape is PartitionShape.LINKS:
        return frozenset((a, b) for a, b in groups)
    if shape is PartitionShape.RING:
        ring = list(groups[0])
        size = len(ring)
        reach = math.ceil((size // 2) / 2)
        for i, src in enumerate(ring):
            for j, dst in enumerate(ring):
                distance = min((i - j) % size, (j - i) % size)
                if i != j and distance > reach:
                    blocked.add((src, dst))
        return frozenset(blocked)
    if shape is PartitionShape.ONE_WAY:
        return frozenset((a, b) for a in groups[0] for b in groups[1])
    sides = groups[:2]
    for a in sides[0]:
        for b in sides[1]:
            blocked.add((a, b))
            blocked.add((b, a))
    return frozenset(blocked)


def resolve_partition(
    shape: PartitionShape, nodes: Sequence[str], rng: random.Random, minority: int | None = None
) -> tuple[tuple[str, ...], ...]:
    """Concrete groups for ``shape`` over ``nodes``, chosen with ``rng``."""
    if len(nodes) < 2:
        raise ScheduleError(f"a {shape.value} partition needs at least 2 nodes, not {len(nodes)}")
    shuffled = list(nodes)
    rng.shuffle(shuffled)
    count = len(shuffled)
    if shape is PartitionShape.RING:
        if count < 3:
            raise ScheduleError("a majorities ring needs at least 3 nodes")
        return (tuple(shuffled),)
    if shape is PartitionShape.BRIDGE:
        if count < 3:
            raise ScheduleError("a bridge partition needs at least 3 nodes")
        bridge, rest = shuffled[0], shuffled[1:]
        half = len(rest) // 2
        return (tuple(rest[:half]), tuple(rest[half:]), (bridge,))
    if shape is PartitionShape.ISOLATE:
        size = 1
    elif shape is PartitionShape.MAJORITY:
        if count < 3:
            raise ScheduleError("a majority/minority partition needs at least 3 nodes")
        size = minority if minority is not None else rng.randint(1, (count - 1) // 2)
        if not 1 <= size <= (count - 1) // 2:
            raise ScheduleError(f"a minority of {size} does not fit in {count} nodes")
    else:
        size = count // 2
    return (tuple(shuffled[:size]), tuple(shuffled[size:]))


def fault_links(fault: Fault) -> frozenset[Link]:
    """The directed links a (validated) partition fault blocks."""
    shape = PartitionShape(fault.param("shape"))
    if shape is PartitionShape.LINKS:
        return partition_links(shape, fault.params["links"])
    return partition_links(shape, fault.params["groups"])


# ------------------------------------------------------------------------- validation


def validate_schedule(schedule: FaultSchedule, nodes: Sequence[str], duration: float) -> None:
    """Raise ScheduleError for the first entry that could not run on ``nodes`` in ``duration``."""
    windows: dict[str, list[tuple[float, float, str]]] = {}
    for index, fault in enumerate(schedule.faults):
        where = f"fault {index + 1} ({fault.describe()})"
        _validate_timing(fault, duration, where)
        _validate_targets(fault, nodes, where)
        if fault.kind is FaultKind.PARTITION:
            _validate_partition(fault, nodes, where)
        if fault.kind is FaultKind.DELAY and fault.param("mean") < fault.param("minimum"):
            raise ScheduleError(f"{where}: delay mean is below its minimum")
        if fault.kind in PROCESS_KINDS:
            _validate_not_down(fault, windows, where)


def _validate_timing(fault: Fault, duration: float, where: str) -> None:
    if fault.at < 0:
        raise ScheduleError(f"{where}: starts before time 0")
    if fault.duration < 0:
        raise ScheduleError(f"{where}: negative duration")
    if fault.kind in INSTANT_KINDS:
        if fault.duration:
            raise ScheduleError(f"{where}: a {fault.kind.value} is instantaneous; drop duration")
    elif fault.duration <= 0:
        raise ScheduleError(f"{where}: needs a positive duration")
    if fault.end > duration:
        raise ScheduleError(
            f"{where}: ends at {fault.end:g}s, after the run's duration of {duration:g}s"
        )


def _validate_targets(fault: Fault, nodes: Sequence[str], where: str) -> None:
    missing = [
        name
        for name, spec in PARAMS[fault.kind].items()
        if spec.default is None
        and name not in fault.params
        and fault.kind is not FaultKind.PARTITION
    ]
    if missing:
        raise ScheduleError(f"{where}: missing parameter {missing[0]!r}")
    _require_known(fault.nodes, nodes, where)
    if len(set(fault.nodes)) != len(fault.nodes):
        raise ScheduleError(f"{where}: a node is named twice")
    if fault.kind in NODE_TARGETED and not fault.nodes:
        raise ScheduleError(f"{where}: name the node(s) it hits in 'nodes'")


def _require_known(names: Sequence[str], nodes: Sequence[str], where: str) -> None:
    known = set(nodes)
    for name in names:
        if name not in known:
            raise ScheduleError(
                f"{where}: node {name!r} does not exist (the cluster has {', '.join(nodes)})"
            )


def _validate_not_down(
    fault: Fault, windows: dict[str, list[tuple[float, float, str]]], where: str
) -> None:
    """A process fault may not hit a node that another process fault holds down."""
    for name in fault.nodes:
        for start, end, other in windows.get(name, []):
            if fault.at < end and start < fault.end:
                raise ScheduleError(
                    f"{where}: node {name} is already down ({other}) from {start:g}s to {end:g}s"
                )
        windows.setdefault(name, []).append((fault.at, fault.end, fault.kind.value))


def _validate_partition(fault: Fault, nodes: Sequence[str], where: str) -> None:
    shape = PartitionShape(fault.param("shape"))
    if shape is PartitionShape.LINKS:
        _validate_links(fault, nodes, where)
        return
    if "links" in fault.params:
        raise ScheduleError(f"{where}: 'links' is only for shape 'links'")
    groups = fault.params.get("groups")
    if groups is None:
        raise ScheduleError(f"{where}: partition groups were not resolved")
    members = [name for group in groups for name in group]
    if len(members) > len(nodes):
        raise ScheduleError(
            f"{where}: partitions {len(members)} nodes but the cluster has only {len(nodes)}"
        )
    _require_known(members, nodes, where)
    if len(set(members)) != len(members):
        raise ScheduleError(f"{where}: a node appears in more than one group")
    if any(not group for group in groups):
        raise ScheduleError(f"{where}: a partition group is empty")
    _validate_groups(shape, groups, where)


def _validate_links(fault: Fault, nodes: Sequence[str], where: str) -> None:
    links = fault.params.get("links")
    if not links:
        raise ScheduleError(f"{where}: shape 'links' needs a 'links' list of [src, dst] pairs")
    known = set(nodes)
    for link in links:
        if len(link) != 2 or link[0] == link[1]:
            raise ScheduleError(f"{where}: link {list(link)} is not a [src, dst] pair")
        for name in link:
            if name not in known:
                raise ScheduleError(f"{where}: link names unknown node {name!r}")


def _validate_groups(shape: PartitionShape, groups: Sequence[Sequence[str]], where: str) -> None:
    """The group count and sizes each shape needs."""
    expected = {PartitionShape.RING: 1, PartitionShape.BRIDGE: 3}.get(shape, 2)
    if len(groups) != expected:
        raise ScheduleError(f"{where}: shape {shape.value!r} needs {expected} group(s)")
    if shape is PartitionShape.RING and len(groups[0]) < 3:
        raise ScheduleError(f"{where}: a majorities ring needs at least 3 nodes")
    if shape is PartitionShape.BRIDGE and len(groups[2]) != 1:
        raise ScheduleError(f"{where}: the third group of a bridge is the single bridge node")
    if shape is PartitionShape.ISOLATE and len(groups[0]) != 1:
        raise ScheduleError(f"{where}: 'isolate' cuts off exactly one node (first group)")
    if shape is PartitionShape.MAJORITY and len(groups[0]) >= len(groups[1]):
        raise ScheduleError(f"{where}: 'majority' needs the first group to be the minority")


def resolve_schedule(
    schedule: FaultSchedule, nodes: Sequence[str], rng: random.Random
) -> FaultSchedule:
    """Fill in partition groups that a hand-written schedule left to chance.

    An entry may give ``shape`` without ``groups`` (and optionally restrict to ``nodes``);
    the groups are then drawn from ``rng`` so the schedule becomes concrete and printable.
    """
    resolved = []
    for fault in schedule.faults:
        shape_name = fault.param("shape") if fault.kind is FaultKind.PARTITION else None
        if (
            shape_name is not None
            and shape_name != PartitionShape.LINKS.value
            and "groups" not in fault.params
        ):
            pool = list(fault.nodes) or list(nodes)
            unknown = [name for name in pool if name not in set(nodes)]
            if unknown:
                raise ScheduleError(
                    f"fault ({fault.describe()}): node {unknown[0]!r} does not exist "
                    f"(the cluster has {', '.join(nodes)})"
                )
            groups = resolve_partition(PartitionShape(shape_name), pool, rng)
            params = dict(fault.params)
            params["groups"] = groups
            fault = Fault(fault.at, fault.kind, fault.duration, (), params)
        resolved.append(fault)
    return FaultSchedule(tuple(resolved))


# ------------------------------------------------------------------------- generation


DEFAULT_MIX: Final = (
    FaultKind.PARTITION,
    FaultKind.CRASH,
    FaultKind.PAUSE,
    FaultKind.LOSS,
    FaultKind.DUPLICATE,
    FaultKind.REORDER,
    FaultKind.DELAY,
    FaultKind.CLOCK_SKEW,
    FaultKind.CLOCK_JUMP,
    FaultKind.SLOW,
    FaultKind.DISK_FULL,
    FaultKind.FSYNC_ERROR,
)


@dataclass(frozen=True, slots=True)
class GenerationPolicy:
    """Bounds that keep a generated schedule within the system's promised fault budget.

    With N replicas the store promises no acknowledged loss while fewer than N replicas of a
    key are down at once and at most one replica of a key lost its disk; the defaults keep
    at most ``max_down`` nodes crashed or paused together and at most ``max_wipes`` wipes.
    """

    warmup: float = 5.0
    """No fault starts before this (the cluster forms first)."""
    tail: float = 5.0
    """Every fault ends this long before the run's end."""
    min_duration: float = 2.0
    max_duration: float = 15.0
    max_down: int = 1
    max_wipes: int = 1
    wipe_spacing: float = 40.0
    """No other node is crashed within this long of a wipe, so re-replication can finish."""
    power_loss: bool = True
    """Generate power-cut crashes (unsynced writes lost); only promised safe with fsync on."""
    shapes: tuple[PartitionShape, ...] = GENERATED_SHAPES
    """Partition shapes to draw from."""
    overlapping_partitions: bool = True
    """Allow a partition to start while another is in force (their link sets add up)."""


def generate_schedule(
    rng: random.Random,
    nodes: Sequence[str],
    duration: float,
    *,
    count: int,
    kinds: Sequence[FaultKind] = DEFAULT_MIX,
    policy: GenerationPolicy | None = None,
) -> FaultSchedule:
    """``count`` faults over ``duration`` seconds, every kind in ``kinds`` at least once.

    Raises ScheduleError when the request cannot fit (too many faults or kinds for the time).
    """
    policy = policy or GenerationPolicy()
    if not kinds:
        raise ScheduleError("no fault kinds to generate from")
    if count < len(kinds):
        raise ScheduleError(
            f"{count} faults cannot cover {len(kinds)} kinds; ask for at least {len(kinds)}"
        )
    if len(nodes) < 2:
        raise ScheduleError("generated schedules need at least 2 nodes")
    window_start = policy.warmup
    window_end = duration - policy.tail
    if window_end - window_start < policy.min_duration:
        raise ScheduleError(
            f"a {duration:g}s run leaves no room for faults after {policy.warmup:g}s of warm-up "
            f"and before a {policy.tail:g}s tail"
        )
    chosen = list(kinds) + [rng.choice(list(kinds)) for _ in range(count - len(kinds))]
    rng.shuffle(chosen)
    # Evenly spaced slots with jitter; process faults that cannot fit are retried elsewhere.
    spacing = (window_end - window_start) / count
    faults: list[Fault] = []
    down: list[tuple[float, float, str, bool]] = []
    for slot, kind in enumerate(chosen):
        base = window_start + slot * spacing
        fault = None
        for _attempt in range(8):
            at = round(base + rng.random() * spacing * 0.8, 3)
            fault = _generate_one(rng, kind, at, nodes, window_end, policy, down)
            if fault is not None:
                break
            base = window_start + rng.random() * (window_end - window_start - policy.min_duration)
        if fault is None:
            fault = _generate_one(
                rng, FaultKind.DELAY, round(base, 3), nodes, window_end, policy, down
            )
        assert fault is not None
        faults.append(fault)
    schedule = FaultSchedule(tuple(faults))
    validate_schedule(schedule, nodes, duration)
    return schedule


def _generate_one(
    rng: random.Random,
    kind: FaultKind,
    at: float,
    nodes: Sequence[str],
    window_end: float,
    policy: GenerationPolicy,
    down: list[tuple[float, float, str, bool]],
) -> Fault | None:
    longest = min(policy.max_duration, window_end - at)
    if longest < policy.min_duration and kind not in INSTANT_KINDS:
        return None
    length = round(rng.uniform(policy.min_duration, longest), 3) if longest >= 0 else 0.0
    node = rng.choice(list(nodes))
    if kind is FaultKind.PARTITION:
        if not policy.overlapping_partitions and any(
            w[2] == "" and at < w[1] and w[0] < at + length for w in down
        ):
            return None
        shape = rng.choice(list(policy.shapes))
        if shape in (PartitionShape.RING, PartitionShape.BRIDGE, PartitionShape.MAJORITY) and (
            len(nodes) < 4
        ):
            shape = PartitionShape.HALVES
        groups = resolve_partition(shape, nodes, rng)
        down.append((at, at + length, "", False))
        return Fault(at, kind, length, (), {"shape": shape.value, "groups": groups})
    if kind in (FaultKind.LOSS, FaultKind.DUPLICATE):
        return Fault(at, kind, length, (), {"rate": round(rng.uniform(0.05, 0.3), 3)})
    if kind is FaultKind.REORDER:
        return Fault(
            at,
            kind,
            length,
            (),
            {
                "rate": round(rng.uniform(0.1, 0.5), 3),
                "max_delay": round(rng.uniform(0.01, 0.2), 3),
            },
        )
    if kind is FaultKind.DELAY:
        distribution = rng.choice([k for k in DelayKind if k is not DelayKind.CONSTANT])
        minimum = round(rng.uniform(0.0005, 0.005), 4)
        mean = round(minimum + rng.uniform(0.005, 0.1), 4)
        params = {"distribution": distribution.value, "minimum": minimum, "mean": mean}
        if distribution is DelayKind.PARETO:
            params["shape"] = round(rng.uniform(1.5, 3.0), 2)
        if distribution is DelayKind.LOGNORMAL:
            params["shape"] = round(rng.uniform(0.3, 1.2), 2)
        return Fault(at, kind, length, (), params)
    if kind in PROCESS_KINDS:
        return _generate_process(rng, kind, at, length, nodes, policy, down)
    if kind is FaultKind.CLOCK_SKEW:
        return Fault(
            at,
            kind,
            length,
            (node,),
            {
                "offset": round(rng.uniform(-30.0, 30.0), 3),
                "drift": round(rng.uniform(-0.01, 0.01), 5),
            },
        )
    if kind is FaultKind.CLOCK_JUMP:
        return Fault(at, kind, 0.0, (node,), {"offset": round(rng.uniform(-60.0, 60.0), 3)})
    if kind is FaultKind.SLOW:
        return Fault(
            at,
            kind,
            length,
            (node,),
            {
                "delay": round(rng.uniform(0.01, 0.2), 3),
                "disk_factor": round(rng.uniform(2.0, 50.0), 1),
            },
        )
    if kind is FaultKind.DISK_FULL:
        return Fault(at, kind, length, (node,), {})
    return Fault(at, kind, length, (node,), {"rate": round(rng.uniform(0.2, 1.0), 3)})


def _generate_process(
    rng: random.Random,
    kind: FaultKind,
    at: float,
    length: float,
    nodes: Sequence[str],
    policy: GenerationPolicy,
    down: list[tuple[float, float, str, bool]],
) -> Fault | None:
    end = at + length
    overlapping = [w for w in down if w[2] and at < w[1] and w[0] < end]
    if len(overlapping) >= policy.max_down:
        return None
    busy = {w[2] for w in overlapping}
    candidates = [name for name in nodes if name not in busy]
    if not candidates:
        return None
    node = rng.choice(candidates)
    wipe = False
    params: dict[str, Any] = {}
    if kind is FaultKind.CRASH:
        wipes = sum(1 for w in down if w[3])
        near_wipe = any(
            w[3] and at < w[1] + policy.wipe_spacing and w[0] - policy.wipe_spacing < end
            for w in down
        )
        if near_wipe:
            return None
        draw = rng.random()
        crowded = any(
            w[2] and at < w[1] + policy.wipe_spacing and w[0] - policy.wipe_spacing < end
            for w in down
        )
        if draw < 0.15 and wipes < policy.max_wipes and not crowded:
            wipe = True
            params["disk"] = DiskMode.WIPED.value
        elif draw < 0.5 and policy.power_loss:
            params["disk"] = DiskMode.UNSYNCED_LOST.value
        else:
            params["disk"] = DiskMode.KEPT.value
    down.append((at, end, node, wipe))
    return Fault(at, kind, length, (node,), params)


def delay_from_fault(fault: Fault) -> Delay:
    """The delay distribution a DELAY fault installs."""
    return Delay(
        kind=DelayKind(fault.param("distribution")),
        minimum=fault.param("minimum"),
        mean=fault.param("mean"),
        shape=fault.param("shape"),
    )


# ------------------------------------------------------------------------- driving


class FaultTarget(Protocol):
    """What the runner offers the schedule driver: begin and end one fault."""

    async def begin_fault(self, fault_id: str, fault: Fault) -> None: ...

    async def end_fault(self, fault_id: str, fault: Fault) -> None: ...


class ScheduleDriver:
    """Applies a schedule at its virtual times and knows which faults are still active."""

    def __init__(self, schedule: FaultSchedule, target: FaultTarget) -> None:
        self.schedule = schedule
        self._target = target
        self._active: dict[str, Fault] = {}
        self.started = 0

    async def run(self, origin: float) -> None:
        """Play the schedule with its time 0 at virtual time ``origin``; returns at its end."""
        events: list[tuple[float, int, int, str, Fault]] = []
        for index, fault in enumerate(self.schedule.faults):
            fault_id = f"f{index + 1}-{fault.kind.value}"
            events.append((fault.at, 1, index, fault_id, fault))
            if fault.kind not in INSTANT_KINDS:
                events.append((fault.end, 0, index, fault_id, fault))
        events.sort(key=lambda e: (e[0], e[1], e[2]))
        for at, starting, _, fault_id, fault in events:
            await trio.sleep_until(origin + at)
            if starting:
                self.started += 1
                if fault.kind not in INSTANT_KINDS:
                    self._active[fault_id] = fault
                await self._target.begin_fault(fault_id, fault)
            elif fault_id in self._active:
                del self._active[fault_id]
                await self._target.end_fault(fault_id, fault)

    async def heal_all(self) -> None:
        """End every fault still active, in the order they started."""
        for fault_id, fault in list(self._active.items()):
            del self._active[fault_id]
            await self._target.end_fault(fault_id, fault)

    def active(self) -> list[str]:
        return list(self._active)

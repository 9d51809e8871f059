"""Scenarios: everything a simulation run needs besides its seed, read from TOML or JSON.

A scenario file names the cluster (nodes, replicas), the run (duration, quiescence), the
node, network and disk settings, the workload, the checks and the faults — either a fault mix
to generate from the seed or an explicit schedule. :func:`load_scenario` reads and validates a
file; :meth:`Scenario.with_overrides` applies command-line options; :func:`prepare` validates the
result against the seed (resolving generated faults) so that every problem is reported as one
:class:`ScenarioError` naming it *before* anything runs.

File layout (TOML; JSON uses the same keys)::

    name = "partition-and-heal"
    description = "..."
    engine = "cluster"          # or "swim": membership only, thousands of nodes
    nodes = 5                   # n1..n5 start as the cluster; [5, 9]: the seed picks 5..9
    spare_nodes = 0             # n6.. start outside it and may join (membership churn)
    replicas = 3
    duration = 120.0            # virtual seconds of workload and faults
    quiesce = 30.0              # virtual seconds after healing, before the final reads
    planted_bugs = []           # bugs the simulator plants in every node (sim/planted.py)

    [node]                      # NodeConfig fields
    fsync = true
    insecure = false            # true: no certificates, handshakes or signed datagrams
    [network]
    delay = { distribution = "exponential", minimum = 0.0005, mean = 0.002 }
    loss = 0.0
    stream_break_after = 15.0
    tick = 0.01                 # deliveries are rounded up to this (batches scheduler work)
    [disk]
    latency = 0.002             # mean commit latency
    writeback_interval = 5.0    # how often unsynced writes reach the platter when fsync = false
    [faults]
    count = 24                  # generate this many from the seed...
    kinds = ["partition", "crash", "pause", "loss", "clock_skew", "slow"]
    # ...or give them one by one (not both):
    # [[faults.schedule]]
    # at = 10.0
    # kind = "partition"
    # shape = "halves"
    # duration = 20.0
    [workload]                  # passed to p2pindex.sim.workloads
    [checks]                    # passed to the checkers
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from p2pindex.config import NodeConfig
from p2pindex.errors import ConfigError
from p2pindex.sim.determinism import derive_rng
from p2pindex.sim.faults import (
    DEFAULT_MIX,
    GENERATED_SHAPES,
    FaultKind,
    FaultSchedule,
    GenerationPolicy,
    PartitionShape,
    ScheduleError,
    fault_from_dict,
    generate_schedule,
    resolve_schedule,
    validate_schedule,
)
from p2pindex.sim.network import DEFAULT_DELAY, Delay, DelayKind


class ScenarioError(ConfigError):
    """A scenario file or option that cannot run; the message names the problem."""


class Engine(enum.Enum):
    CLUSTER = "cluster"
    """Real nodes with storage, clients and checkers on the simulated network."""
    SWIM = "swim"
    """Membership only (p2pindex.sim.swim_sim): SWIM cores, for thousands of nodes."""


MAX_CLUSTER_NODES: Final = 64
MAX_SWIM_NODES: Final = 20_000
TOP_LEVEL: Final = frozenset(
    {
        "name",
        "description",
        "engine",
        "nodes",
        "spare_nodes",
        "replicas",
        "duration",
        "quiesce",
        "seed",
        "planted_bugs",
        "node",
        "network",
        "disk",
        "faults",
        "workload",
        "checks",
    }
)
NODE_FIELDS: Final = frozenset(
    f.name
    for f in dataclasses.fields(NodeConfig)
    if f.name not in {"data_dir", "listen", "seeds", "advertise", "n_replicas", "limits"}
)
"""NodeConfig fields a scenario may set; addresses, seeds and data_dir belong to the runner."""
NETWORK_KEYS: Final = frozenset(
    {"delay", "loss", "duplicate", "reorder", "reorder_delay", "stream_break_after", "tick"}
)
DELAY_KEYS: Final = frozenset({"distribution", "minimum", "mean", "shape"})
DISK_KEYS: Final = frozenset({"latency", "writeback_interval"})
FAULT_KEYS: Final = frozenset({"count", "kinds", "schedule", "max_down", "shapes"})


@dataclass(frozen=True, slots=True)
class NetworkSettings:
    delay: Delay = DEFAULT_DELAY
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.05
    stream_break_after: float = 15.0
    tick: float = 0.01
    """Deliveries are rounded up to this many seconds, so messages arriving together are
    handled in the same scheduler passes (the main cost of a run); 0 turns it off."""


@dataclass(frozen=True, slots=True)
class DiskSettings:
    latency: float = 0.002
    writeback_interval: float = 5.0


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Either a mix to generate from the seed (``count``, ``kinds``) or a fixed schedule."""

    count: int = 0
    kinds: tuple[FaultKind, ...] = DEFAULT_MIX
    schedule: FaultSchedule | None = None
    max_down: int = 1
    shapes: tuple[PartitionShape, ...] = GENERATED_SHAPES
    """Partition shapes a generated schedule draws from."""

    @property
    def generated(self) -> bool:
        return self.schedule is None


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str = ""
    engine: Engine = Engine.CLUSTER
    nodes: int = 5
    nodes_max: int | None = None
    """With a maximum, each seed picks its cluster size in nodes..nodes_max."""
    spare_nodes: int = 0
    replicas: int = 3
    duration: float = 120.0
    quiesce: float = 30.0
    seed: int = 1
    planted_bugs: frozenset[str] = frozenset()
    node: Mapping[str, Any] = field(default_factory=dict)
    network: NetworkSettings = NetworkSettings()
    disk: DiskSettings = DiskSettings()
    faults: FaultPlan = FaultPlan()
    workload: Mapping[str, Any] = field(default_factory=dict)
    checks: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    """The file it was read from ('' when built in code)."""

    @property
    def node_names(self) -> list[str]:
        """The initial cluster's node names."""
        return [f"n{i}" for i in range(1, self.nodes + 1)]

    @property
    def secure(self) -> bool:
        """Whether nodes run with security (the default; ``node.insecure`` switches it off,
        as ``--insecure`` does for a real node)."""
        return not self.node.get("insecure", False)

    @property
    def all_node_names(self) -> list[str]:
        """The cluster plus the spares that may join later."""
        return [f"n{i}" for i in range(1, self.nodes + self.spare_nodes + 1)]

    def with_overrides(
        self,
        *,
        nodes: int | None = None,
        duration: float | None = None,
        fault_kinds: Sequence[str] | None = None,
        fault_count: int | None = None,
        planted_bugs: Sequence[str] = (),
        insecure: bool = False,
    ) -> Scenario:
        """This scenario with command-line options applied (validated again by ``prepare``).

        ``fault_kinds`` replaces a fixed schedule by a generated mix of these kinds (an empty
        list means no faults at all); ``fault_count`` sets how many to generate;
        ``insecure`` runs the nodes without security.
        """
        changes: dict[str, Any] = {}
        if nodes is not None:
            changes["nodes"] = nodes
            changes["nodes_max"] = None
        if duration is not None:
            changes["duration"] = duration
        plan = self.faults
        if fault_kinds is not None:
            kinds = tuple(_fault_kind(name, "--faults") for name in fault_kinds)
            count = fault_count if fault_count is not None else max(plan.count, len(kinds))
            plan = FaultPlan(count if kinds else 0, kinds, None, plan.max_down, plan.shapes)
        elif fault_count is not None:
            if not plan.generated:
                raise ScenarioError(
                    f"--fault-count cannot change {self.name}'s fixed fault schedule; "
                    "give --faults KINDS to generate faults instead"
                )
            plan = FaultPlan(fault_count, plan.kinds, None, plan.max_down, plan.shapes)
        changes["faults"] = plan
        if planted_bugs:
            changes["planted_bugs"] = self.planted_bugs | frozenset(planted_bugs)
        if insecure:
            changes["node"] = {**self.node, "insecure": True}
        return dataclasses.replace(self, **changes)

    def options(self) -> dict[str, Any]:
        """Every option of the run, flat, for the failure report and the history's meta."""
        plan = self.faults
        options: dict[str, Any] = {
            "scenario": self.name,
            "engine": self.engine.value,
            "nodes": self.nodes if self.nodes_max is None else f"{self.nodes}..{self.nodes_max}",
            "spare_nodes": self.spare_nodes,
            "replicas": self.replicas,
            "duration": self.duration,
            "quiesce": self.quiesce,
            "planted_bugs": ",".join(sorted(self.planted_bugs)),
            "security": _security_text(self),
            "faults": "schedule"
            if plan.schedule is not None
            else f"generate count={plan.count} kinds={','.join(k.value for k in plan.kinds)}",
            "network": settings_text(self.network),
            "disk": settings_text(self.disk),
        }
        for name, value in sorted(self.node.items()):
            options[f"node.{name}"] = value
        for name, value in sorted(self.workload.items()):
            options[f"workload.{name}"] = value
        for name, value in sorted(self.checks.items()):
            options[f"checks.{name}"] = value
        return options


def _security_text(scenario: Scenario) -> str:
    if scenario.engine is Engine.SWIM:
        # Signing 1,000 nodes' datagrams costs about 4.5 times the run's CPU; the signed
        # protocol is measured by simulations/membership_*.py (--security on, their default).
        return "off (the membership engine runs unsigned)"
    return "on" if scenario.secure else "off"


def settings_text(value: object) -> str:
    """Settings as a person reads them (``delay=(kind=exponential, mean=0.002), loss=0``):
    field names and plain values, no class names or enum reprs."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return ", ".join(
            f"{item.name}={_setting_value(getattr(value, item.name))}"
            for item in dataclasses.fields(value)
        )
    return _setting_value(value)


def _setting_value(value: object) -> str:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return f"({settings_text(value)})"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclass(frozen=True, slots=True)
class PreparedRun:
    """A scenario bound to a seed with its concrete fault schedule: ready to run."""

    scenario: Scenario
    seed: int
    schedule: FaultSchedule


# ------------------------------------------------------------------------- loading


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file (``.toml`` or ``.json``)."""
    path = Path(path)
    if not path.is_file():
        raise ScenarioError(f"scenario file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            document = tomllib.loads(text)
        elif path.suffix == ".json":
            document = json.loads(text)
        else:
            raise ScenarioError(f"{path}: scenario files end in .toml or .json")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ScenarioError(f"{path}: malformed {path.suffix[1:].upper()}: {exc}") from None
    if not isinstance(document, dict):
        raise ScenarioError(f"{path}: the top level must be a table")
    try:
        return scenario_from_dict(document, source=str(path), default_name=path.stem)
    except ScenarioError as exc:
        raise ScenarioError(f"{path}: {exc}") from None


def scenario_from_dict(
    document: Mapping[str, Any], *, source: str = "", default_name: str = "scenario"
) -> Scenario:
    unknown = sorted(set(document) - TOP_LEVEL)
    if unknown:
        raise ScenarioError(
            f"unknown key {unknown[0]!r} (expected: {', '.join(sorted(TOP_LEVEL))})"
        )
    name = _string(document.get("name", default_name), "name")
    engine_name = _string(document.get("engine", "cluster"), "engine")
    try:
        engine = Engine(engine_name)
    except ValueError:
        raise ScenarioError(
            f"engine: {engine_name!r} is not one of {', '.join(e.value for e in Engine)}"
        ) from None
    bugs = document.get("planted_bugs", [])
    if not isinstance(bugs, list) or not all(isinstance(b, str) for b in bugs):
        raise ScenarioError("planted_bugs: expected a list of bug names")
    schedule_doc, plan = _fault_plan(document.get("faults", {}))
    nodes, nodes_max = _node_count(document.get("nodes", 5))
    scenario = Scenario(
        name=name,
        description=_string(document.get("description", ""), "description"),
        engine=engine,
        nodes=nodes,
        nodes_max=nodes_max,
        spare_nodes=_integer(document.get("spare_nodes", 0), "spare_nodes", 0),
        replicas=_integer(document.get("replicas", 3), "replicas", 1),
        duration=_seconds(document.get("duration", 120.0), "duration"),
        quiesce=_seconds(document.get("quiesce", 30.0), "quiesce", allow_zero=True),
        seed=_integer(document.get("seed", 1), "seed", 0),
        planted_bugs=frozenset(bugs),
        node=_node_settings(document.get("node", {})),
        network=_network_settings(document.get("network", {})),
        disk=_disk_settings(document.get("disk", {})),
        faults=plan,
        workload=_table(document.get("workload", {}), "workload"),
        checks=_table(document.get("checks", {}), "checks"),
        source=source,
    )
    if schedule_doc is not None:
        try:
            faults = tuple(
                fault_from_dict(entry, f"faults.schedule[{index}]")
                for index, entry in enumerate(schedule_doc)
            )
        except ScheduleError as exc:
            raise ScenarioError(str(exc)) from None
        scenario = dataclasses.replace(
            scenario, faults=dataclasses.replace(plan, schedule=FaultSchedule(faults))
        )
    check_shape(scenario)
    return scenario


def _node_count(value: Any) -> tuple[int, int | None]:
    if isinstance(value, list):
        if len(value) != 2:
            raise ScenarioError("nodes: give a count or a [min, max] range")
        low = _integer(value[0], "nodes[0]", 1)
        high = _integer(value[1], "nodes[1]", low)
        return low, high
    return _integer(value, "nodes", 1), None


def check_shape(scenario: Scenario) -> None:
    """Checks that need no seed: sizes and limits that hold whatever is generated."""
    if scenario.engine is Engine.CLUSTER:
        total = (scenario.nodes_max or scenario.nodes) + scenario.spare_nodes
        if not 1 <= total <= MAX_CLUSTER_NODES:
            raise ScenarioError(
                f"nodes: a cluster simulation runs 1..{MAX_CLUSTER_NODES} nodes, not {total}"
            )
        if scenario.replicas > scenario.nodes:
            raise ScenarioError(
                f"replicas: {scenario.replicas} replicas need at least as many nodes "
                f"(the scenario starts {scenario.nodes})"
            )
        if not 1 <= scenario.replicas <= 16:
            raise ScenarioError(f"replicas: must be within 1..16, not {scenario.replicas}")
    elif not 1 <= scenario.nodes <= MAX_SWIM_NODES:
        raise ScenarioError(
            f"nodes: a membership simulation runs 1..{MAX_SWIM_NODES} nodes, not {scenario.nodes}"
        )
    if scenario.faults.count < 0:
        raise ScenarioError("faults.count must not be negative")


def prepare(
    scenario: Scenario, seed: int, *, policy: GenerationPolicy | None = None
) -> PreparedRun:
    """Validate ``scenario`` for ``seed`` and make its fault schedule concrete.

    ``policy`` bounds generated faults; by default it follows the scenario (``max_down``,
    and power cuts only when the nodes fsync).

    Everything that could stop a run — a schedule that names nodes that do not exist, faults
    past the end, more faults than fit — is raised here as ScenarioError.
    """
    check_shape(scenario)
    if scenario.nodes_max is not None:
        size = derive_rng(seed, "nodes").randint(scenario.nodes, scenario.nodes_max)
        scenario = dataclasses.replace(scenario, nodes=size, nodes_max=None)
    names = scenario.all_node_names
    plan = scenario.faults
    rng = derive_rng(seed, "faults")
    try:
        if plan.schedule is not None:
            schedule = resolve_schedule(plan.schedule, names, rng)
        elif plan.count:
            if policy is None:
                fsync = scenario.node.get("fsync", False)
                policy = GenerationPolicy(
                    max_down=plan.max_down, power_loss=fsync is True, shapes=plan.shapes
                )
            schedule = generate_schedule(
                rng,
                scenario.node_names,
                scenario.duration,
                count=plan.count,
                kinds=plan.kinds,
                policy=policy,
            )
        else:
            schedule = FaultSchedule()
        validate_schedule(schedule, names, scenario.duration)
    except ScheduleError as exc:
        raise ScenarioError(f"scenario {scenario.name}: {exc}") from None
    return PreparedRun(scenario, seed, schedule)


# ------------------------------------------------------------------------- sections


def _fault_plan(document: Any) -> tuple[list[Any] | None, FaultPlan]:
    table = _table(document, "faults")
    unknown = sorted(set(table) - FAULT_KEYS)
    if unknown:
        raise ScenarioError(
            f"faults: unknown key {unknown[0]!r} (expected: {', '.join(sorted(FAULT_KEYS))})"
        )
    max_down = _integer(table.get("max_down", 1), "faults.max_down", 0)
    schedule = table.get("schedule")
    if schedule is not None:
        if "count" in table or "kinds" in table or "shapes" in table:
            raise ScenarioError(
                "faults: give either a generated mix (count, kinds) or a schedule, not both"
            )
        if not isinstance(schedule, list):
            raise ScenarioError("faults.schedule: expected a list of fault tables")
        return schedule, FaultPlan(0, DEFAULT_MIX, FaultSchedule(), max_down)
    kinds_raw = table.get("kinds", [k.value for k in DEFAULT_MIX])
    if not isinstance(kinds_raw, list) or not all(isinstance(k, str) for k in kinds_raw):
        raise ScenarioError("faults.kinds: expected a list of fault kind names")
    kinds = tuple(_fault_kind(name, "faults.kinds") for name in kinds_raw)
    count = _integer(table.get("count", 0), "faults.count", 0)
    shapes_raw = table.get("shapes", [shape.value for shape in GENERATED_SHAPES])
    if not isinstance(shapes_raw, list) or not shapes_raw:
        raise ScenarioError("faults.shapes: expected a non-empty list of partition shapes")
    shapes = []
    for name in shapes_raw:
        try:
            shape = PartitionShape(name)
        except ValueError:
            shape = None
        if shape is None or shape not in GENERATED_SHAPES:
            raise ScenarioError(
                f"faults.shapes: {name!r} is not one of "
                f"{', '.join(s.value for s in GENERATED_SHAPES)}"
            )
        shapes.append(shape)
    return None, FaultPlan(count, kinds, None, max_down, tuple(shapes))


def _fault_kind(name: str, where: str) -> FaultKind:
    try:
        return FaultKind(name)
    except ValueError:
        raise ScenarioError(
            f"{where}: unknown fault kind {name!r} "
            f"(expected one of: {', '.join(k.value for k in FaultKind)})"
        ) from None


def _node_settings(document: Any) -> dict[str, Any]:
    table = _table(document, "node")
    unknown = sorted(set(table) - NODE_FIELDS)
    if unknown:
        raise ScenarioError(
            f"node: unknown key {unknown[0]!r} (expected: {', '.join(sorted(NODE_FIELDS))})"
        )
    for name, value in table.items():
        if isinstance(value, dict | list):
            raise ScenarioError(f"node.{name}: expected a single value")
    return dict(table)


def _network_settings(document: Any) -> NetworkSettings:
    table = _table(document, "network")
    unknown = sorted(set(table) - NETWORK_KEYS)
    if unknown:
        raise ScenarioError(
            f"network: unknown key {unknown[0]!r} (expected: {', '.join(sorted(NETWORK_KEYS))})"
        )
    values: dict[str, Any] = {}
    if "delay" in table:
        values["delay"] = _delay(table["delay"], "network.delay")
    for name in ("loss", "duplicate", "reorder"):
        if name in table:
            values[name] = _rate(table[name], f"network.{name}")
    if "reorder_delay" in table:
        values["reorder_delay"] = _seconds(
            table["reorder_delay"], "network.reorder_delay", allow_zero=True
        )
    if "tick" in table:
        values["tick"] = _seconds(table["tick"], "network.tick", allow_zero=True)
        if values["tick"] > 1.0:
            raise ScenarioError("network.tick: more than a second would distort every timeout")
    if "stream_break_after" in table:
        values["stream_break_after"] = _seconds(
            table["stream_break_after"], "network.stream_break_after"
        )
    return NetworkSettings(**values)


def _delay(document: Any, where: str) -> Delay:
    table = _table(document, where)
    unknown = sorted(set(table) - DELAY_KEYS)
    if unknown:
        raise ScenarioError(
            f"{where}: unknown key {unknown[0]!r} (expected: {', '.join(sorted(DELAY_KEYS))})"
        )
    kind_name = _string(table.get("distribution", "exponential"), f"{where}.distribution")
    try:
        kind = DelayKind(kind_name)
    except ValueError:
        raise ScenarioError(
            f"{where}.distribution: {kind_name!r} is not one of "
            f"{', '.join(k.value for k in DelayKind)}"
        ) from None
    minimum = _seconds(table.get("minimum", 0.0005), f"{where}.minimum", allow_zero=True)
    mean = _seconds(table.get("mean", max(minimum, 0.002)), f"{where}.mean", allow_zero=True)
    shape = _seconds(table.get("shape", 1.5), f"{where}.shape")
    try:
        return Delay(kind, minimum, mean, shape)
    except ValueError as exc:
        raise ScenarioError(f"{where}: {exc}") from None


def _disk_settings(document: Any) -> DiskSettings:
    table = _table(document, "disk")
    unknown = sorted(set(table) - DISK_KEYS)
    if unknown:
        raise ScenarioError(
            f"disk: unknown key {unknown[0]!r} (expected: {', '.join(sorted(DISK_KEYS))})"
        )
    values = {
        name: _seconds(table[name], f"disk.{name}", allow_zero=name == "latency")
        for name in DISK_KEYS
        if name in table
    }
    return DiskSettings(**values)


# ------------------------------------------------------------------------- scalars


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ScenarioError(f"{where}: expected a table, got {type(value).__name__}")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ScenarioError(f"{where}: expected a string, got {value!r}")
    return value


def _integer(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScenarioError(f"{where}: expected an integer, got {value!r}")
    if value < minimum:
        raise ScenarioError(f"{where}: must be at least {minimum}, not {value}")
    return value


def _seconds(value: Any, where: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ScenarioError(f"{where}: expected a number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ScenarioError(f"{where}: must be positive, not {value}")
    return float(value)


def _rate(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ScenarioError(f"{where}: expected a probability within 0..1, got {value!r}")
    return float(value)


def parse_fault_kinds(text: str) -> list[str]:
    """``--faults`` value: comma-separated kinds, or ``none`` for a run without faults."""
    text = text.strip()
    if text.lower() == "none":
        return []
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ScenarioError("--faults: give comma-separated fault kinds, or 'none'")
    for name in names:
        _fault_kind(name, "--faults")
    return names


def scenario_path(name_or_path: str, directory: Path) -> Path:
    """A scenario named on the command line: a file path, or a name in ``directory``."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".toml", ".json") or candidate.exists():
        return candidate
    for suffix in (".toml", ".json"):
        named = directory / f"{name_or_path}{suffix}"
        if named.is_file():
            return named
    available = sorted(p.stem for p in directory.glob("*.toml")) + sorted(
        p.stem for p in directory.glob("*.json")
    )
    raise ScenarioError(
        f"no scenario {name_or_path!r} (a file path, or one of: {', '.join(available) or 'none'})"
    )

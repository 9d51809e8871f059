"""Planning a simulation run: a scenario and a seed become a validated plan, or a
ScenarioError naming the first problem, before anything starts.

:func:`plan_run` plans a cluster run (engine ``cluster``, see ``runner``);
:func:`plan_membership` a membership-only run (engine ``swim``, see ``membership_run``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Final

from p2pindex.config import NodeConfig
from p2pindex.errors import ConfigError
from p2pindex.sim.checkers import CheckConfig, MembershipBounds
from p2pindex.sim.faults import (
    Fault,
    FaultKind,
    FaultSchedule,
    GenerationPolicy,
    PartitionShape,
)
from p2pindex.sim.planted import unknown_bugs
from p2pindex.sim.scenario import Engine, PreparedRun, Scenario, ScenarioError, prepare
from p2pindex.sim.workloads import WorkloadOptions
from p2pindex.types import Address

PORT: Final = 7000
"""The port every simulated node listens on (hosts are named n1, n2, ...)."""
RUNNER_WORKLOAD_KEYS: Final = frozenset(
    {"clients", "churn_interval", "churn_min", "churn_max", "churn_replace", "final_level"}
)
WORKLOAD_OPTION_KEYS: Final = frozenset(f.name for f in dataclasses.fields(WorkloadOptions))
CHECK_KEYS: Final = frozenset(
    {
        "convergence_bound",
        "membership",
        "detect_within",
        "max_pause",
        "max_loss",
        "max_delay",
        "settle",
    }
)


@dataclass(frozen=True, slots=True)
class ChurnSettings:
    interval: float
    min_members: int
    max_members: int
    replace: bool = False
    """Members are also replaced (`serve --replace` on a spare machine), not only removed."""


class PlannedRun:
    """Shortcuts from a plan to the prepared run it wraps (its scenario, seed, schedule)."""

    __slots__ = ()
    prepared: PreparedRun

    @property
    def scenario(self) -> Scenario:
        return self.prepared.scenario

    @property
    def seed(self) -> int:
        return self.prepared.seed

    @property
    def schedule(self) -> FaultSchedule:
        return self.prepared.schedule


@dataclass(frozen=True, slots=True)
class RunPlan(PlannedRun):
    """A prepared run plus the workload and check settings, all validated."""

    prepared: PreparedRun
    workload: WorkloadOptions
    clients: int
    churn: ChurnSettings | None
    final_level: str
    check: CheckConfig


def plan_run(scenario: Scenario, seed: int) -> RunPlan:
    """Validate a scenario for ``seed``; raises ScenarioError naming the first problem."""
    if scenario.engine is not Engine.CLUSTER:
        raise ScenarioError(f"scenario {scenario.name} uses the {scenario.engine.value} engine")
    prepared = prepare(scenario, seed)
    scenario = prepared.scenario
    _check_node_settings(scenario)
    table = dict(scenario.workload)
    unknown = sorted(set(table) - WORKLOAD_OPTION_KEYS - RUNNER_WORKLOAD_KEYS)
    if unknown:
        allowed = ", ".join(sorted(WORKLOAD_OPTION_KEYS | RUNNER_WORKLOAD_KEYS))
        raise ScenarioError(f"workload: unknown key {unknown[0]!r} (expected: {allowed})")
    options = {k: v for k, v in table.items() if k in WORKLOAD_OPTION_KEYS}
    for name in ("write_levels", "read_levels"):
        if name in options:
            if not isinstance(options[name], list):
                raise ScenarioError(f"workload.{name}: expected a list of levels")
            options[name] = tuple(options[name])
    try:
        workload = WorkloadOptions(**options)
    except (TypeError, ValueError) as exc:
        raise ScenarioError(f"workload: {exc}") from None
    for level in (*workload.write_levels, *workload.read_levels):
        if level not in ("one", "quorum", "all"):
            raise ScenarioError(f"workload: consistency level {level!r} is not one/quorum/all")
    clients = _int(table.get("clients", min(scenario.nodes, 5)), "workload.clients", 1)
    final_level = table.get("final_level", "all")
    if final_level not in ("one", "quorum", "all"):
        raise ScenarioError(f"workload.final_level: {final_level!r} is not one/quorum/all")
    churn = None
    if "churn_interval" in table:
        interval = _float(table["churn_interval"], "workload.churn_interval")
        total = scenario.nodes + scenario.spare_nodes
        low = _int(table.get("churn_min", scenario.replicas), "workload.churn_min", 1)
        high = _int(table.get("churn_max", total), "workload.churn_max", low)
        if high > total:
            raise ScenarioError(
                f"workload.churn_max: {high} members need {high} nodes, the scenario has "
                f"{scenario.nodes} plus {scenario.spare_nodes} spare"
            )
        if low < scenario.replicas:
            raise ScenarioError(
                f"workload.churn_min: keep at least {scenario.replicas} members (the replicas)"
            )
        replace = table.get("churn_replace", False)
        if type(replace) is not bool:
            raise ScenarioError(f"workload.churn_replace: {replace!r} is not true or false")
        churn = ChurnSettings(interval, low, high, replace)
    elif "churn_min" in table or "churn_max" in table or "churn_replace" in table:
        raise ScenarioError("workload: churn_min/churn_max/churn_replace need churn_interval")
    return RunPlan(prepared, workload, clients, churn, final_level, check_config(scenario))


def _check_node_settings(scenario: Scenario) -> None:
    """Build one NodeConfig now, so a bad [node] value or bug name fails before the run."""
    extra: dict[str, Any] = dict(scenario.node)
    refusal = unknown_bugs(scenario.planted_bugs)
    if refusal is not None:
        raise ScenarioError(refusal)
    try:
        NodeConfig(data_dir=None, listen=Address("n1", PORT), n_replicas=scenario.replicas, **extra)
    except ConfigError as exc:
        raise ScenarioError(f"node: {exc}") from None
    except TypeError as exc:
        raise ScenarioError(f"node: {exc}") from None


def check_config(scenario: Scenario, *, replicas: bool = True) -> CheckConfig:
    """The checks a run asks for; ``replicas=False`` (membership only) has no convergence."""
    table = dict(scenario.checks)
    unknown = sorted(set(table) - CHECK_KEYS)
    if unknown:
        raise ScenarioError(
            f"checks: unknown key {unknown[0]!r} (expected: {', '.join(sorted(CHECK_KEYS))})"
        )
    bound = table.get("convergence_bound", 30.0) if replicas else False
    if bound is not False:
        bound = _float(bound, "checks.convergence_bound")
        if bound > scenario.quiesce:
            raise ScenarioError(
                f"checks.convergence_bound: {bound:g}s is longer than the {scenario.quiesce:g}s "
                "quiescence, so it could never be checked"
            )
    membership = None
    if table.get("membership", True) is not False:
        membership = MembershipBounds(
            detect_within=_float(table.get("detect_within", 25.0), "checks.detect_within"),
            max_pause=_float(table.get("max_pause", 1.0), "checks.max_pause"),
            max_loss=_float(table.get("max_loss", 0.1), "checks.max_loss"),
            max_delay=_float(table.get("max_delay", 0.2), "checks.max_delay"),
            settle=_float(table.get("settle", 10.0), "checks.settle"),
        )
    return CheckConfig(convergence_bound=None if bound is False else bound, membership=membership)


def _int(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ScenarioError(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return value


def _float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ScenarioError(f"{where}: expected a positive number, got {value!r}")
    return float(value)


SWIM_KINDS: Final = frozenset(
    {FaultKind.CRASH, FaultKind.PAUSE, FaultKind.LOSS, FaultKind.PARTITION}
)
SWIM_SHAPES: Final = (PartitionShape.HALVES, PartitionShape.ISOLATE, PartitionShape.MAJORITY)


@dataclass(frozen=True, slots=True)
class MembershipPlan(PlannedRun):
    """A membership-only run (engine ``swim``): SWIM cores on ``p2pindex.sim.swim_sim``."""

    prepared: PreparedRun
    bounds: MembershipBounds


def plan_membership(scenario: Scenario, seed: int) -> MembershipPlan:
    """Validate a membership scenario; the swim engine models fewer faults than the cluster.

    It runs crashes, pauses, datagram loss and group partitions (halves, isolate, majority),
    one partition at a time; everything else is refused here, before anything runs.
    """
    if scenario.engine is not Engine.SWIM:
        raise ScenarioError(f"scenario {scenario.name} uses the {scenario.engine.value} engine")
    unsupported = [kind.value for kind in scenario.faults.kinds if kind not in SWIM_KINDS]
    if scenario.faults.generated and scenario.faults.count and unsupported:
        raise ScenarioError(
            f"the swim engine simulates {', '.join(sorted(k.value for k in SWIM_KINDS))} "
            f"faults, not {unsupported[0]}"
        )
    if scenario.workload:
        raise ScenarioError("the swim engine runs membership only: remove the [workload] table")
    if scenario.spare_nodes:
        raise ScenarioError("the swim engine has no spare nodes")
    shapes = tuple(shape for shape in scenario.faults.shapes if shape in SWIM_SHAPES)
    if not shapes:
        raise ScenarioError(
            "faults.shapes: the swim engine partitions into groups: halves, isolate or majority"
        )
    policy = GenerationPolicy(
        max_down=scenario.faults.max_down,
        power_loss=False,
        max_wipes=0,
        shapes=shapes,
        overlapping_partitions=False,
    )
    prepared = prepare(scenario, seed, policy=policy)
    partitions: list[Fault] = []
    for fault in prepared.schedule.faults:
        if fault.kind not in SWIM_KINDS:
            raise ScenarioError(
                f"the swim engine cannot simulate {fault.kind.value} ({fault.describe()})"
            )
        if fault.kind is FaultKind.LOSS and fault.nodes:
            raise ScenarioError(f"the swim engine applies loss to every link ({fault.describe()})")
        if fault.kind is FaultKind.PARTITION:
            if PartitionShape(fault.param("shape")) not in SWIM_SHAPES:
                raise ScenarioError(
                    f"the swim engine partitions into groups (halves, isolate, majority), "
                    f"not {fault.param('shape')} ({fault.describe()})"
                )
            if any(other.at < fault.end and fault.at < other.end for other in partitions):
                raise ScenarioError(
                    f"the swim engine runs one partition at a time ({fault.describe()})"
                )
            partitions.append(fault)
    check = check_config(scenario, replicas=False)
    if check.membership is None:
        raise ScenarioError("checks.membership: the swim engine has only the membership checker")
    return MembershipPlan(prepared, check.membership)

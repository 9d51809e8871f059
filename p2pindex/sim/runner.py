"""Runs one simulated cluster: real nodes and clients on the simulated network, clock and disk.

One ``trio.run`` under ``MockClock(autojump_threshold=0)`` holds everything, so virtual time
jumps whenever every task waits, and the seed decides the rest (see ``determinism``). A run:

1. starts the scenario's nodes (n1 first, the others joining through it) and waits until
   every node sees every other alive and ACTIVE — that moment is the schedule's time 0.
   They are the founding members of a new, empty cluster, so their disks are provisioned
   as already synced (nothing to pull); spares that join later do the full handoff;
2. opens the clients, then runs the workload, the fault schedule and (if enabled) membership
   churn side by side for ``duration`` virtual seconds, while samplers record every node's
   membership view and the replicas' divergence;
3. heals every fault still active, lets the cluster quiesce for ``quiesce`` seconds while
   sampling the replicas of every key (convergence), then reads every key at ALL;
4. runs the checkers on the history and writes the history (JSON lines), the concrete
   fault schedule, the summary and the timeline SVG into the output directory.

:func:`plan_run` validates everything first, so bad input fails before anything starts.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import trio
import trio.testing

from p2pindex.client.async_client import AsyncClient
from p2pindex.config import NodeConfig
from p2pindex.core.ring import DEFAULT_VNODES, Ring
from p2pindex.core.swim import SwimConfig
from p2pindex.core.versions import decode_object, encode_context
from p2pindex.errors import ConfigError, InvalidRequest
from p2pindex.node.handoff import SYNCED_META
from p2pindex.node.identity import NodeIdentity
from p2pindex.node.node import Node
from p2pindex.sim import checkers
from p2pindex.sim.checkers import CheckConfig, MembershipBounds, Violation
from p2pindex.sim.determinism import (
    SimWallClock,
    Trace,
    derive_rng,
    derive_seed,
    seed_trio_scheduler,
    tick_clock,
)
from p2pindex.sim.disk import SimDisk
from p2pindex.sim.faults import (
    INSTANT_KINDS,
    NETWORK_KINDS,
    DiskMode,
    Fault,
    FaultKind,
    FaultSchedule,
    GenerationPolicy,
    PartitionShape,
    ScheduleDriver,
    delay_from_fault,
    fault_links,
)
from p2pindex.sim.history import FaultEvent, History, Observation, OpType, ReplicaState, RunMeta
from p2pindex.sim.history import FaultKind as EventKind
from p2pindex.sim.index_checker import check_index_run
from p2pindex.sim.index_workload import index_workload_for
from p2pindex.sim.network import DatagramFaults, Delay, DelayKind, Link, SimNetwork
from p2pindex.sim.scenario import Engine, PreparedRun, Scenario, ScenarioError, prepare
from p2pindex.sim.swim_sim import SwimSimulation
from p2pindex.sim.timeline import Timeline, availability, write_svg
from p2pindex.sim.workloads import Workload, WorkloadOptions, run_churn
from p2pindex.types import Address, Liveness, NodeState

PORT: Final = 7000
CLIENT_PORT: Final = 9000
FORM_TIMEOUT: Final = 120.0
"""Virtual seconds the initial cluster gets to form before the run is declared broken."""
OBSERVE_INTERVAL: Final = 0.5
DIVERGENCE_INTERVAL: Final = 1.0
CHURN_EVENTS: Final = frozenset({EventKind.JOIN, EventKind.LEAVE, EventKind.REMOVE})
REPLICA_ROUNDS: Final = 6
"""Convergence samples of every key taken during quiescence."""

RUNNER_WORKLOAD_KEYS: Final = frozenset(
    {"clients", "churn_interval", "churn_min", "churn_max", "final_level"}
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


# ------------------------------------------------------------------------- planning


@dataclass(frozen=True, slots=True)
class ChurnSettings:
    interval: float
    min_members: int
    max_members: int


class _PlannedRun:
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
class RunPlan(_PlannedRun):
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
        churn = ChurnSettings(interval, low, high)
    elif "churn_min" in table or "churn_max" in table:
        raise ScenarioError("workload: churn_min/churn_max need churn_interval")
    return RunPlan(prepared, workload, clients, churn, final_level, _check_config(scenario))


def _check_node_settings(scenario: Scenario) -> None:
    """Build one NodeConfig now, so a bad [node] value or bug name fails before the run."""
    extra: dict[str, Any] = dict(scenario.node)
    if scenario.planted_bugs:
        extra["planted_bugs"] = scenario.planted_bugs
    try:
        NodeConfig(data_dir=None, listen=Address("n1", PORT), n_replicas=scenario.replicas, **extra)
    except ConfigError as exc:
        raise ScenarioError(f"node: {exc}") from None
    except TypeError as exc:
        raise ScenarioError(f"node: {exc}") from None


def _check_config(scenario: Scenario, *, replicas: bool = True) -> CheckConfig:
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


# ------------------------------------------------------------------------- results


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


# ------------------------------------------------------------------------- the cluster


class SlotState(enum.Enum):
    SPARE = "spare"
    UP = "up"
    DOWN = "down"
    LEFT = "left"
    REMOVED = "removed"


@dataclass(slots=True)
class Slot:
    """One simulated machine: its identity, disk and clock outlive the node processes."""

    name: str
    address: Address
    identity: NodeIdentity
    disk: SimDisk
    clock: SimWallClock
    state: SlotState = SlotState.SPARE
    node: Node | None = None
    scope: trio.CancelScope | None = None
    stopped: trio.Event | None = None
    incarnation: int = 0


class SimCluster:
    """The machines of one run, and every fault and membership action on them."""

    def __init__(
        self,
        plan: RunPlan,
        network: SimNetwork,
        history: History,
        trace: Trace,
        timeline: Timeline,
        nursery: trio.Nursery,
    ) -> None:
        self._plan = plan
        scenario = plan.scenario
        self._network = network
        self._history = history
        self._trace = trace
        self._timeline = timeline
        self._nursery = nursery
        self.origin = 0.0
        seed = plan.seed
        fsync = bool(scenario.node.get("fsync", NodeConfig.__dataclass_fields__["fsync"].default))
        self.slots: dict[str, Slot] = {}
        for name in scenario.all_node_names:
            address = Address(name, PORT)
            self.slots[name] = Slot(
                name=name,
                address=address,
                identity=NodeIdentity.generate(derive_rng(seed, f"identity:{name}")),
                disk=SimDisk(
                    name,
                    derive_rng(seed, f"disk:{name}"),
                    latency=scenario.disk.latency,
                    fsync=fsync,
                    writeback_interval=scenario.disk.writeback_interval,
                    gate=_gate(network, name),
                ),
                clock=SimWallClock(derive_rng(seed, f"clock:{name}").uniform(-0.05, 0.05)),
            )
        self.names_by_id = {slot.identity.node_id: name for name, slot in self.slots.items()}
        self._skipped: set[str] = set()
        self._net_state: dict[str, tuple[FaultKind, Fault]] = {}
        self._published: tuple[frozenset[Link], float, float, float] = (frozenset(), 0.0, 0.0, 0.0)
        self._fault_starts: dict[str, float] = {}
        self.fault_counts: Counter[str] = Counter()
        self.deaths: list[Violation] = []
        """Node processes that died of an unhandled error (each one is a violation)."""

    # --- processes ---------------------------------------------------------------------

    def _config(self, slot: Slot, seeds: tuple[Address, ...]) -> NodeConfig:
        scenario = self._plan.scenario
        extra: dict[str, Any] = dict(scenario.node)
        if scenario.planted_bugs:
            extra["planted_bugs"] = scenario.planted_bugs
        return NodeConfig(
            data_dir=None,
            listen=slot.address,
            seeds=seeds,
            n_replicas=scenario.replicas,
            **extra,
        )

    def _seeds_for(self, slot: Slot) -> tuple[Address, ...]:
        others = [
            s.address for s in self.slots.values() if s is not slot and s.state is SlotState.UP
        ]
        return tuple(others[:3])

    async def start(self, name: str, *, wait: bool) -> None:
        """Start a node process on machine ``name`` (first start, join or restart)."""
        slot = self.slots[name]
        slot.incarnation += 1
        node = Node(
            self._config(slot, self._seeds_for(slot)),
            transport=self._network.transport_for(slot.address),
            storage=slot.disk.open(),
            identity=slot.identity,
            rng=derive_rng(self._plan.seed, f"node:{name}:{slot.incarnation}"),
            wall_clock=slot.clock,
        )
        slot.node = node
        slot.scope = trio.CancelScope()
        slot.stopped = trio.Event()
        slot.state = SlotState.UP
        ready = trio.Event()
        self._nursery.start_soon(self._supervise, slot, node, slot.scope, slot.stopped, ready)
        if wait:
            await ready.wait()

    async def _supervise(
        self,
        slot: Slot,
        node: Node,
        scope: trio.CancelScope,
        stopped: trio.Event,
        ready: trio.Event,
    ) -> None:
        """Run one node process; an error escaping it kills only that process.

        A real process dies of an unhandled error while the cluster goes on, so that is
        what happens here: the death is recorded as a violation and the node stays down
        until the final heal restarts it.
        """
        try:
            with scope:
                async with trio.open_nursery() as nursery:
                    await nursery.start(node.run)
                    ready.set()
        except Exception as exc:
            await self._died(slot, node, exc)
        finally:
            ready.set()
            stopped.set()

    async def _died(self, slot: Slot, node: Node, exc: Exception) -> None:
        now = trio.current_time()
        cause = _first_error(exc)
        summary = f"{type(cause).__name__}: {cause}{_where(cause)}"
        self.deaths.append(
            Violation(
                "process",
                f"{slot.name} died at {now:.3f} of an unhandled {summary}",
                nodes=(slot.name,),
            )
        )
        self._trace.event("died", f"{slot.name} {type(cause).__name__}")
        if slot.node is not node or slot.state is not SlotState.UP:
            return
        slot.node = None
        slot.state = SlotState.DOWN
        if self._network.is_up(slot.name):
            self._network.crash(slot.name)
        await slot.disk.crash(DiskMode.KEPT)
        self._event(EventKind.CRASH, (slot.name,), detail=f"died: {summary}")

    async def crash(self, name: str, mode: DiskMode) -> None:
        slot = self.slots[name]
        assert slot.scope is not None and slot.stopped is not None
        slot.scope.cancel()
        slot.node = None
        slot.state = SlotState.DOWN
        self._network.crash(name)
        await slot.disk.crash(mode)
        await slot.stopped.wait()

    def up(self) -> list[Slot]:
        return [slot for slot in self.slots.values() if slot.state is SlotState.UP]

    def in_cluster(self) -> list[Slot]:
        return [s for s in self.slots.values() if s.state in (SlotState.UP, SlotState.DOWN)]

    # --- ClusterControl (membership churn) --------------------------------------------

    def members(self) -> list[str]:
        return [slot.name for slot in self.in_cluster()]

    async def join(self) -> str:
        spare = next((s for s in self.slots.values() if s.state is SlotState.SPARE), None)
        if spare is None:
            raise InvalidRequest("no spare machine is left to join")
        await self.start(spare.name, wait=True)
        self._trace.event("join", spare.name)
        return spare.name

    async def leave(self, node: str) -> None:
        slot = self.slots[node]
        if slot.state is not SlotState.UP or slot.node is None or slot.stopped is None:
            raise InvalidRequest(f"{node} is not running, so it cannot leave")
        self._trace.event("leave", node)
        await slot.node.leave()
        await slot.stopped.wait()
        self._network.crash(node)
        slot.node = None
        slot.state = SlotState.LEFT

    async def remove(self, node: str) -> None:
        slot = self.slots[node]
        if slot.state not in (SlotState.UP, SlotState.DOWN):
            raise InvalidRequest(f"{node} is not in the cluster")
        self._trace.event("remove", node)
        if slot.state is SlotState.UP:
            await self.crash(node, DiskMode.KEPT)
        slot.state = SlotState.REMOVED
        for other in self.up():
            assert other.node is not None
            other.node.remove_member(slot.identity.node_id)

    # --- FaultTarget ----------------------------------------------------------------------

    async def begin_fault(self, fault_id: str, fault: Fault) -> None:
        now = trio.current_time()
        kind = fault.kind
        if any(self.slots[name].state is not SlotState.UP for name in fault.nodes) and (
            kind not in NETWORK_KINDS
        ):
            self._skipped.add(fault_id)
            self._trace.event("skip", f"{fault_id} {fault.describe()}")
            return
        self.fault_counts[kind.value] += 1
        self._fault_starts[fault_id] = now
        self._trace.event("begin", f"{fault_id} {fault.describe()}")
        nodes = fault.nodes
        if kind in NETWORK_KINDS:
            hosts = nodes or None
            if kind is FaultKind.PARTITION:
                self._network.block(fault_id, fault_links(fault))
            elif kind is FaultKind.DELAY:
                self._network.set_delay(fault_id, delay_from_fault(fault), hosts)
            else:
                self._network.set_datagram_faults(fault_id, _datagram_faults(fault), hosts)
            self._net_state[fault_id] = (kind, fault)
            self._publish_network(now)
        elif kind is FaultKind.CRASH:
            mode = DiskMode(fault.param("disk"))
            await self.crash(nodes[0], mode)
            self._event(EventKind.CRASH, nodes, detail=f"disk {mode.value}")
            if mode is DiskMode.WIPED:
                self._event(EventKind.WIPE, nodes)
        elif kind is FaultKind.PAUSE:
            self._network.pause(nodes[0])
            self._event(EventKind.PAUSE, nodes, amount=fault.duration)
        elif kind is FaultKind.CLOCK_SKEW:
            self.slots[nodes[0]].clock.skew(fault.param("offset"), fault.param("drift"))
            self._event(
                EventKind.CLOCK_SKEW,
                nodes,
                amount=fault.param("offset"),
                detail=f"drift {fault.param('drift'):g}",
            )
        elif kind is FaultKind.CLOCK_JUMP:
            self.slots[nodes[0]].clock.jump(fault.param("offset"))
            self._event(EventKind.CLOCK_SKEW, nodes, amount=fault.param("offset"), detail="jump")
            self._timeline.add_fault(
                f"jump {nodes[0]}", kind.value, now - self.origin, now - self.origin
            )
        elif kind is FaultKind.SLOW:
            extra = Delay(DelayKind.EXPONENTIAL, 0.0, fault.param("delay"))
            self._network.set_slow(nodes[0], extra)
            self.slots[nodes[0]].disk.latency_factor = fault.param("disk_factor")
            self._net_state[fault_id] = (kind, fault)
            self._publish_network(now)
        elif kind is FaultKind.DISK_FULL:
            self.slots[nodes[0]].disk.full = True
            self._event(EventKind.DISK_FULL, nodes, amount=1.0)
        elif kind is FaultKind.FSYNC_ERROR:
            self.slots[nodes[0]].disk.fsync_error_rate = fault.param("rate")
            self._event(EventKind.DISK_ERROR, nodes, amount=fault.param("rate"))

    async def end_fault(self, fault_id: str, fault: Fault) -> None:
        if fault_id in self._skipped:
            return
        now = trio.current_time()
        kind = fault.kind
        nodes = fault.nodes
        self._trace.event("end", fault_id)
        start = self._fault_starts.pop(fault_id, now)
        label = f"{kind.value} {','.join(nodes)}".strip()
        self._timeline.add_fault(label, kind.value, start - self.origin, now - self.origin)
        if kind in NETWORK_KINDS:
            self._network.clear(fault_id)
            del self._net_state[fault_id]
            self._publish_network(now)
            return
        slot = self.slots[nodes[0]]
        if kind is FaultKind.CRASH:
            if slot.state is SlotState.DOWN:
                await self.start(slot.name, wait=False)
                self._event(EventKind.RESTART, nodes)
        elif kind is FaultKind.PAUSE:
            self._network.resume(slot.name)
            self._event(EventKind.RESUME, nodes)
        elif kind is FaultKind.CLOCK_SKEW:
            slot.clock.unskew(fault.param("offset"))
            self._event(EventKind.CLOCK_SKEW, nodes, amount=0.0, detail="skew ends")
        elif kind is FaultKind.SLOW:
            self._network.set_slow(slot.name, None)
            slot.disk.latency_factor = 1.0
            del self._net_state[fault_id]
            self._publish_network(now)
        elif kind is FaultKind.DISK_FULL:
            slot.disk.full = False
            self._event(EventKind.DISK_FULL, nodes, amount=0.0, detail="space freed")
        elif kind is FaultKind.FSYNC_ERROR:
            slot.disk.fsync_error_rate = 0.0
            self._event(EventKind.DISK_ERROR, nodes, amount=0.0, detail="disk healthy")
        assert kind not in INSTANT_KINDS

    def _event(
        self,
        kind: EventKind,
        nodes: tuple[str, ...] = (),
        *,
        links: tuple[Link, ...] = (),
        amount: float = 0.0,
        detail: str = "",
    ) -> None:
        self._history.append(FaultEvent(trio.current_time(), kind, nodes, links, amount, detail))

    def _publish_network(self, now: float) -> None:
        """Describe the network faults in force in the history's vocabulary.

        The history knows one partition set and one loss, duplication and delay figure at a
        time, and HEAL ends them all; so when a partition ends we publish HEAL and then
        whatever is still in force.
        """
        links: set[Link] = set()
        loss = duplicate = delay = 0.0
        for kind, fault in self._net_state.values():
            if kind is FaultKind.PARTITION:
                links |= fault_links(fault)
            elif kind is FaultKind.LOSS:
                loss = 1 - (1 - loss) * (1 - fault.param("rate"))
            elif kind is FaultKind.DUPLICATE:
                duplicate = max(duplicate, fault.param("rate"))
            elif kind is FaultKind.REORDER:
                delay = max(delay, fault.param("max_delay"))
            elif kind is FaultKind.DELAY:
                delay = max(delay, fault.param("mean"))
            elif kind is FaultKind.SLOW:
                delay = max(delay, fault.param("delay"))
        before_links, before_loss, before_duplicate, before_delay = self._published
        current = frozenset(links)
        if not current >= before_links:
            self._event(EventKind.HEAL)
            before_links, before_loss, before_duplicate, before_delay = frozenset(), 0, 0, 0
        if current != before_links:
            added = tuple(sorted(current - before_links))
            self._event(
                EventKind.PARTITION, tuple(sorted({n for link in added for n in link})), links=added
            )
        if loss != before_loss:
            self._event(EventKind.LOSS, amount=loss)
        if duplicate != before_duplicate:
            self._event(EventKind.DUPLICATE, amount=duplicate)
        if delay != before_delay:
            self._event(EventKind.DELAY, amount=delay)
        self._published = (current, loss, duplicate, delay)


def _first_error(exc: BaseException) -> BaseException:
    """The first real error inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _where(error: BaseException) -> str:
    """Where an error left the node's own code (the deepest frame outside sim and trio)."""
    frames = traceback.extract_tb(error.__traceback__)
    own = [f for f in frames if "/p2pindex/" in f.filename and "/p2pindex/sim/" not in f.filename]
    if not own:
        return ""
    frame = own[-1]
    path = frame.filename[frame.filename.rindex("/p2pindex/") + 1 :]
    return f" (raised through {path}:{frame.lineno} in {frame.name})"


def _gate(network: SimNetwork, host: str) -> Any:
    async def wait_running() -> None:
        await network.wait_running(host)

    return wait_running


def _datagram_faults(fault: Fault) -> DatagramFaults:
    if fault.kind is FaultKind.LOSS:
        return DatagramFaults(loss=fault.param("rate"))
    if fault.kind is FaultKind.DUPLICATE:
        return DatagramFaults(duplicate=fault.param("rate"))
    return DatagramFaults(reorder=fault.param("rate"), reorder_delay=fault.param("max_delay"))


# ------------------------------------------------------------------------- the run


class Simulation:
    """One run of a plan inside ``trio.run`` (see the module docstring for the phases)."""

    def __init__(self, plan: RunPlan) -> None:
        self.plan = plan
        scenario = plan.scenario
        self.trace = Trace()
        self.history = History(RunMeta(plan.seed, scenario.options()))
        self.timeline = Timeline(f"{scenario.name} — seed {plan.seed}")
        self.network: SimNetwork | None = None
        self.cluster: SimCluster | None = None
        self.origin = 0.0
        self.heal_time = 0.0
        self.end_time = 0.0
        self.faults_started = 0
        self._views: dict[tuple[str, str], Liveness] = {}
        self._workload = Workload(self.history, derive_rng(plan.seed, "workload"), plan.workload)
        self.index_workload = index_workload_for(plan.seed, plan.workload)
        self._ring: Ring | None = None

    async def main(self) -> None:
        plan = self.plan
        scenario = plan.scenario
        settings = scenario.network
        self.network = network = SimNetwork(
            derive_rng(plan.seed, "network"),
            self.trace,
            delay=settings.delay,
            datagrams=DatagramFaults(
                settings.loss, settings.duplicate, settings.reorder, settings.reorder_delay
            ),
            stream_break_after=settings.stream_break_after,
            tick=settings.tick,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(network.run)
            cluster = self.cluster = SimCluster(
                plan, network, self.history, self.trace, self.timeline, nursery
            )
            for name in scenario.node_names:
                await cluster.slots[name].disk.provision({SYNCED_META: b"1"})
                await cluster.start(name, wait=True)
            await self._await_formed()
            self.origin = cluster.origin = trio.current_time()
            self.trace.event("origin", f"seed={plan.seed}")
            async with AsyncExitStack() as stack:
                clients = await self._open_clients(stack)
                async with trio.open_nursery() as samplers:
                    samplers.start_soon(self._observe)
                    samplers.start_soon(self._sample_divergence)
                    await self._run_phase(clients)
                    await self._quiesce()
                    unread = await self._workload.final_reads(clients, level=plan.final_level)
                    if self.index_workload is not None:
                        await self.index_workload.final_queries(clients)
                    if unread:
                        self.trace.event("unread", ",".join(unread))
                    samplers.cancel_scope.cancel()
            self.end_time = trio.current_time()
            nursery.cancel_scope.cancel()

    async def _await_formed(self) -> None:
        assert self.cluster is not None
        with trio.move_on_after(FORM_TIMEOUT) as scope:
            while not self._formed():
                await trio.sleep(0.25)
        if scope.cancelled_caught:
            raise RuntimeError(
                f"the cluster did not form within {FORM_TIMEOUT:g} virtual seconds: "
                + "; ".join(f"{s.name} sees {self._view_summary(s)}" for s in self.cluster.up())
            )

    def _formed(self) -> bool:
        assert self.cluster is not None
        up = self.cluster.up()
        ids = {slot.identity.node_id for slot in up}
        for slot in up:
            node = slot.node
            if node is None or node.state is not NodeState.ACTIVE:
                return False
            alive = {
                m.node_id
                for m in node.members()
                if m.liveness is Liveness.ALIVE and m.state is NodeState.ACTIVE
            }
            if not ids - {slot.identity.node_id} <= alive:
                return False
        return True

    def _view_summary(self, slot: Slot) -> str:
        assert self.cluster is not None and slot.node is not None
        names = self.cluster.names_by_id
        return (
            ", ".join(
                f"{names.get(m.node_id, m.node_id[:8])}={m.liveness.value}/{m.state.value}"
                for m in slot.node.members()
            )
            + f" (itself {slot.node.state.value})"
        )

    async def _open_clients(self, stack: AsyncExitStack) -> dict[str, AsyncClient]:
        assert self.network is not None and self.cluster is not None
        addresses = [slot.address for slot in self.cluster.up()]
        clients = {}
        timeout = self.plan.workload.timeout
        for index in range(1, self.plan.clients + 1):
            name = f"c{index}"
            transport = self.network.transport_for(Address(name, CLIENT_PORT))
            client = AsyncClient(addresses, timeout=timeout, transport=transport)
            clients[name] = await stack.enter_async_context(client)
        return clients

    async def _run_phase(self, clients: dict[str, AsyncClient]) -> None:
        plan = self.plan
        scenario = plan.scenario
        assert self.cluster is not None
        driver = ScheduleDriver(plan.schedule, self.cluster)
        async with trio.open_nursery() as phase:
            phase.start_soon(self._workload.run, clients, scenario.duration)
            if self.index_workload is not None:
                phase.start_soon(self.index_workload.run, clients, scenario.duration)
            phase.start_soon(driver.run, self.origin)
            if plan.churn is not None:
                phase.start_soon(self._churn, plan.churn)
        self.faults_started = driver.started
        await driver.heal_all()
        for slot in self.cluster.slots.values():
            if slot.state is SlotState.DOWN:
                await self.cluster.start(slot.name, wait=False)
        self.heal_time = trio.current_time()
        self.timeline.heal = self.heal_time - self.origin
        self.history.append(FaultEvent(self.heal_time, EventKind.HEAL, detail="heal all"))
        self.trace.event("heal", "all")

    async def _churn(self, churn: ChurnSettings) -> None:
        assert self.cluster is not None
        await run_churn(
            self.cluster,
            self.history,
            derive_rng(self.plan.seed, "churn"),
            duration=self.plan.scenario.duration,
            interval=churn.interval,
            min_members=churn.min_members,
            max_members=churn.max_members,
        )

    async def _quiesce(self) -> None:
        """Let repair run, sampling every key's replicas in rounds (for convergence).

        Rounds are at fixed offsets from the heal, the last one a tick before the end of
        quiescence, so timer rounding never pushes a sample past the convergence bound.
        """
        quiesce = self.plan.scenario.quiesce
        margin = min(self.plan.scenario.network.tick, quiesce / (2 * REPLICA_ROUNDS))
        for number in range(1, REPLICA_ROUNDS + 1):
            await trio.sleep_until(self.heal_time + quiesce * number / REPLICA_ROUNDS - margin)
            self._sample_replicas(number - 1)
        await trio.sleep_until(self.heal_time + quiesce)

    def _replica_sets(self) -> Iterator[tuple[str, bytes, list[Slot]]]:
        """Every key the run touched with the machines that own it now (its preference list)."""
        assert self.cluster is not None
        members = self.cluster.in_cluster()
        if not members:
            return
        by_id = {slot.identity.node_id: slot for slot in members}
        key_set = frozenset(by_id)
        if self._ring is None or self._ring.nodes != key_set:
            self._ring = Ring(list(by_id), DEFAULT_VNODES)
        ring = self._ring
        replicas = self.plan.scenario.replicas
        keys = self.history.keys()
        for key in keys:
            raw = key.encode()
            yield key, raw, [by_id[node_id] for node_id in ring.preference_list(raw, replicas)]

    def _sample_replicas(self, number: int) -> None:
        now = trio.current_time()
        for key, raw, owners in self._replica_sets():
            for slot in owners:
                record = slot.disk.image.get(raw)
                if record is None:
                    values: tuple[bytes, ...] = ()
                    clock = b""
                else:
                    obj = decode_object(record)
                    values = tuple(sorted(obj.values))
                    clock = encode_context(obj.clock)
                self.history.append(ReplicaState(now, number, slot.name, key, values, clock))

    async def _observe(self) -> None:
        """Record each node's liveness view of the others when it changes."""
        assert self.cluster is not None
        cluster = self.cluster
        names = cluster.names_by_id
        while True:
            now = trio.current_time()
            for slot in cluster.slots.values():
                if slot.state is SlotState.SPARE:
                    continue
                node = slot.node
                if node is None:
                    if slot.state is not SlotState.REMOVED:
                        self.timeline.add_view(now - self.origin, slot.name, None)
                    continue
                others = [m for m in node.members() if m.node_id != slot.identity.node_id]
                alive = 0
                for member in others:
                    subject = names.get(member.node_id, member.node_id)
                    if member.liveness is Liveness.ALIVE:
                        alive += 1
                    if self._views.get((slot.name, subject)) is not member.liveness:
                        self._views[(slot.name, subject)] = member.liveness
                        self.history.append(Observation(now, slot.name, subject, member.liveness))
                expected = max(len(cluster.in_cluster()) - 1, 1)
                self.timeline.add_view(now - self.origin, slot.name, min(alive / expected, 1.0))
            await trio.sleep(OBSERVE_INTERVAL)

    async def _sample_divergence(self) -> None:
        """Count the keys whose current replicas do not all hold the same record."""
        while True:
            divergent = 0
            for _key, raw, owners in self._replica_sets():
                first = owners[0].disk.image.get(raw)
                if any(slot.disk.image.get(raw) != first for slot in owners[1:]):
                    divergent += 1
            self.timeline.add_divergence(trio.current_time() - self.origin, divergent)
            await trio.sleep(DIVERGENCE_INTERVAL)


def run_simulation(
    plan: RunPlan,
    *,
    output: Path | None = None,
    replay_command: str = "",
    write_passing: bool = True,
) -> RunResult:
    """Run ``plan`` to the end; write its files into ``output`` when given.

    ``write_passing=False`` writes the files only when the run found violations (batches).
    """
    seed_trio_scheduler(plan.seed)
    simulation = Simulation(plan)
    started = time.perf_counter()
    cpu = time.process_time()
    tick = plan.scenario.network.tick
    clock = tick_clock(tick) if tick else trio.testing.MockClock(autojump_threshold=0)
    trio.run(simulation.main, clock=clock)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    history = simulation.history
    assert simulation.cluster is not None
    violations = [*simulation.cluster.deaths, *checkers.check_all(history, plan.check)]
    violations += check_index_run(simulation.index_workload, history, CHURN_EVENTS)
    counts = Counter(op.type for op in history.ops if op.type is not OpType.INVOKE)
    fault_counts = Counter(simulation.cluster.fault_counts)
    fault_counts.update(event.kind.value for event in history.faults if event.kind in CHURN_EVENTS)
    cluster = simulation.cluster
    assert cluster is not None and simulation.network is not None
    result = RunResult(
        scenario=plan.scenario.name,
        seed=plan.seed,
        trace_hash=simulation.trace.hexdigest(),
        trace_events=simulation.trace.count,
        ops=sum(counts.values()),
        ok=counts[OpType.OK],
        failed=counts[OpType.FAIL],
        unknown=counts[OpType.INFO],
        faults=sum(fault_counts.values()),
        fault_kinds=dict(fault_counts),
        violations=violations,
        virtual_seconds=simulation.end_time,
        wall_seconds=wall,
        cpu_seconds=cpu,
        network=dict(simulation.network.stats),
        lost_disk_writes=sum(s.disk.stats["lost_writes"] for s in cluster.slots.values()),
        options=plan.scenario.options(),
    )
    if violations:
        result.report = _failure_report(plan, history, violations, replay_command)
    if output is not None and (write_passing or violations):
        _write_outputs(output, plan, simulation, result)
        result.output_dir = str(output)
    return result


def _failure_report(
    plan: RunPlan, history: History, violations: list[Violation], replay_command: str
) -> str:
    lines = [checkers.failure_report(history, violations)]
    lines.append("fault schedule:")
    lines.extend(f"  {fault.describe()}" for fault in plan.schedule.faults)
    if replay_command:
        lines.append(f"replay: {replay_command}")
    return "\n".join(lines)


def _write_outputs(output: Path, plan: RunPlan, simulation: Simulation, result: RunResult) -> None:
    output.mkdir(parents=True, exist_ok=True)
    simulation.history.save(output / "history.jsonl")
    (output / "schedule.json").write_text(
        json.dumps({"seed": plan.seed, "faults": {"schedule": plan.schedule.to_list()}}, indent=2)
        + "\n",
        encoding="utf-8",
    )
    (output / "summary.txt").write_text(
        format_table(result.summary_rows())
        + "\n"
        + (result.report + "\n" if result.report else ""),
        encoding="utf-8",
    )
    (output / "trace-tail.txt").write_text(
        "\n".join(simulation.trace.tail()) + "\n", encoding="utf-8"
    )
    served = availability(simulation.history, simulation.origin)
    subtitle = (
        f"{plan.scenario.nodes} nodes, N={plan.scenario.replicas}, "
        f"{result.ops} ops, {result.faults} faults, trace {result.trace_hash[:12]}"
    )
    write_svg(output / "timeline.svg", simulation.timeline, served, subtitle)


def default_output(root: Path, scenario: str, seed: int) -> Path:
    return root / f"{scenario}-{seed}"


# ------------------------------------------------------------------------- membership engine

SWIM_KINDS: Final = frozenset(
    {FaultKind.CRASH, FaultKind.PAUSE, FaultKind.LOSS, FaultKind.PARTITION}
)
SWIM_SHAPES: Final = (PartitionShape.HALVES, PartitionShape.ISOLATE, PartitionShape.MAJORITY)
SWIM_SAMPLE_INTERVAL: Final = 5.0
SWIM_TIMELINE_ROWS: Final = 40


@dataclass(frozen=True, slots=True)
class MembershipPlan(_PlannedRun):
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
    check = _check_config(scenario, replicas=False)
    if check.membership is None:
        raise ScenarioError("checks.membership: the swim engine has only the membership checker")
    return MembershipPlan(prepared, check.membership)


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
        self.fault_counts: Counter[str] = Counter()
        self.down: set[str] = set()
        self.started: dict[str, float] = {}
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
            self.sim.at(fault.at, lambda f=fault, i=fault_id: self._begin(i, f))
            self.sim.at(fault.end, lambda f=fault, i=fault_id: self._end(i, f))
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

    def _event(
        self,
        kind: EventKind,
        nodes: tuple[str, ...] = (),
        *,
        links: tuple[Link, ...] = (),
        amount: float = 0.0,
        detail: str = "",
    ) -> None:
        now = self.sim.now
        self.history.append(FaultEvent(now, kind, nodes, links, amount, detail))
        self.trace.record(f"{now:.6f} fault {kind.value} {','.join(nodes)} {amount:g} {detail}")

    def _begin(self, fault_id: str, fault: Fault) -> None:
        self.fault_counts[fault.kind.value] += 1
        self.started[fault_id] = self.sim.now
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
        start = self.started.pop(fault_id)
        label = f"{fault.kind.value} {','.join(fault.nodes)}".strip()
        self.timeline.add_fault(label, fault.kind.value, start, self.sim.now)
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


def run_membership(plan: MembershipPlan, *, output: Path | None = None) -> MembershipResult:
    """Run a membership-only plan; write its files into ``output`` when given."""
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
        result.report = _membership_report(plan, run.history, violations)
    if output is not None:
        output = default_output(output, scenario.name, plan.seed)
        output.mkdir(parents=True, exist_ok=True)
        run.history.save(output / "history.jsonl")
        (output / "schedule.json").write_text(
            json.dumps(
                {"seed": plan.seed, "faults": {"schedule": plan.schedule.to_list()}}, indent=2
            )
            + "\n",
            encoding="utf-8",
        )
        result.output_dir = str(output)
        (output / "summary.txt").write_text(result.table() + "\n" + result.report, encoding="utf-8")
        subtitle = f"{scenario.nodes} nodes, {result.faults} faults, trace {result.trace_hash[:12]}"
        write_svg(
            output / "timeline.svg",
            run.timeline,
            run.served,
            subtitle,
            availability_label="share of nodes up",
        )
    return result


def _membership_report(plan: MembershipPlan, history: History, violations: list[Violation]) -> str:
    lines = [f"FAILED: {len(violations)} violation(s)", f"seed: {plan.seed}"]
    lines.append("options: " + " ".join(f"{k}={v}" for k, v in plan.scenario.options().items()))
    lines.extend(f"[{v.checker}] {v.message}" for v in violations[:20])
    lines.append("fault schedule:")
    lines.extend(f"  {fault.describe()}" for fault in plan.schedule.faults)
    return "\n".join(lines)

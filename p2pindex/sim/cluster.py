"""The simulated machines of one cluster run and every fault and membership action on them.

Each machine (a ``Slot``) keeps its identity, disk and wall clock across node processes, so
a crash and restart, a wipe or a leave and re-join act on the same machine. The real
``Node`` runs on each, over the simulated network and disk; a process that dies of an
unhandled error is recorded as a violation and stays down until the final heal.

Unless the scenario sets ``node.insecure`` (``simulate --insecure``), every machine holds a
certificate from the run's in-memory cluster authority and each node process runs with a
``SecurityManager`` built from it, as a process started on a certified data directory does:
handshakes, sealed sessions and signed SWIM datagrams and claims under every fault.
"""

from __future__ import annotations

import enum
import traceback
from dataclasses import dataclass
from typing import Any

import trio
import trio.testing

from p2pindex.config import NodeConfig
from p2pindex.errors import InvalidRequest, LeaveAbandoned
from p2pindex.node.identity import NodeIdentity
from p2pindex.node.node import Node
from p2pindex.sim.authority import SimClusterAuthority
from p2pindex.sim.checkers import Violation
from p2pindex.sim.determinism import (
    SimWallClock,
    Trace,
    derive_rng,
)
from p2pindex.sim.disk import SimDisk
from p2pindex.sim.faults import (
    INSTANT_KINDS,
    NETWORK_KINDS,
    DiskMode,
    Fault,
    FaultKind,
    delay_from_fault,
    fault_links,
)
from p2pindex.sim.history import (
    EventKind,
    History,
)
from p2pindex.sim.losses import copy_losses
from p2pindex.sim.network import DatagramFaults, Delay, DelayKind, Link, SimNetwork
from p2pindex.sim.plan import PORT, RunPlan
from p2pindex.sim.planted import AckBeforeCommit, plant, prepare
from p2pindex.sim.recording import FaultRecorder, FaultWindows
from p2pindex.sim.timeline import Timeline
from p2pindex.types import Address, Liveness


class SlotState(enum.Enum):
    SPARE = "spare"
    UP = "up"
    DOWN = "down"
    LEFT = "left"
    REMOVED = "removed"


REPLACE_WAIT = 30.0
"""Seconds a replacement waits for every live member to see the machine it replaces dead."""


@dataclass(slots=True)
class Slot:
    """One simulated machine: its identity, disk and clock outlive the node processes."""

    name: str
    address: Address
    identity: NodeIdentity
    disk: SimDisk
    clock: SimWallClock
    certificate: bytes | None = None
    """Issued by the run's cluster authority (None when the run is insecure)."""
    state: SlotState = SlotState.SPARE
    node: Node | None = None
    scope: trio.CancelScope | None = None
    stopped: trio.Event | None = None
    incarnation: int = 0
    replaces: str | None = None
    """The id of the member this machine was started to replace (`serve --replace`)."""


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
        self.authority = SimClusterAuthority(seed) if scenario.secure else None
        """None: the nodes run without security (``--insecure``)."""
        if self.authority is not None:
            for slot in self.slots.values():
                slot.certificate = self.authority.certify(slot.identity)
        self._skipped: set[str] = set()
        self._net_state: dict[str, tuple[FaultKind, Fault]] = {}
        self._published: tuple[frozenset[Link], float, float, float] = (frozenset(), 0.0, 0.0, 0.0)
        self._windows = FaultWindows(timeline)
        self.fault_counts = self._windows.counts
        self._event = FaultRecorder(history, trio.current_time)
        self.token_sources: dict[str, str] = {}
        """Replacements' node ids -> the id their ring tokens come from (the checkers' ring)."""
        self.deaths: list[Violation] = []
        """Node processes that died of an unhandled error (each one is a violation)."""

    # --- processes ---------------------------------------------------------------------

    def _config(self, slot: Slot, seeds: tuple[Address, ...]) -> NodeConfig:
        scenario = self._plan.scenario
        extra: dict[str, Any] = dict(scenario.node)
        if slot.replaces is not None:
            extra["replace"] = slot.replaces
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
        config = self._config(slot, self._seeds_for(slot))
        storage = slot.disk.open()
        transport = self._network.transport_for(slot.address)
        seams = plant(self._plan.scenario.planted_bugs, storage, transport)
        security = None
        if self.authority is not None and slot.certificate is not None:
            process = f"{name}:{slot.incarnation}"
            security = self.authority.manager(slot.identity, slot.certificate, process, slot.clock)
        node = Node(
            config,
            transport=seams.transport,
            storage=seams.storage,
            identity=slot.identity,
            rng=derive_rng(self._plan.seed, f"node:{name}:{slot.incarnation}"),
            wall_clock=slot.clock,
            swim_config=seams.swim_config,
            versioning=seams.versioning,
            security=security,
        )
        slot.node = node
        slot.scope = trio.CancelScope()
        slot.stopped = trio.Event()
        slot.state = SlotState.UP
        ready = trio.Event()
        await prepare(seams, storage)
        self._nursery.start_soon(
            self._supervise, slot, node, slot.scope, slot.stopped, ready, seams.write_back
        )
        if wait:
            await ready.wait()

    async def _supervise(
        self,
        slot: Slot,
        node: Node,
        scope: trio.CancelScope,
        stopped: trio.Event,
        ready: trio.Event,
        write_back: AckBeforeCommit | None = None,
    ) -> None:
        """Run one node process; an error escaping it kills only that process.

        A real process dies of an unhandled error while the cluster goes on, so that is
        what happens here: the death is recorded as a violation and the node stays down
        until the final heal restarts it.
        """
        try:
            with scope:
                async with trio.open_nursery() as nursery:
                    if write_back is not None:  # its commits die with the process
                        write_back.run_in(nursery.start_soon)
                    await nursery.start(node.run)
                    ready.set()
        except Exception as exc:
            await self._died(slot, node, exc)
        finally:
            ready.set()
            stopped.set()

    async def _died(self, slot: Slot, node: Node, exc: Exception) -> None:
        if slot.node is not node or slot.state is not SlotState.UP:
            # The harness crashed this process first (its disk is already gone, so its
            # last synchronous steps may fail on it): a kill, not a death of its own.
            return
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
        # A kill loses only writes in flight, which no correct node acknowledged; any other
        # crash may destroy committed copies, which the checkers are told about.
        durable = None if mode is DiskMode.KEPT else slot.disk.durable_records()
        await slot.disk.crash(mode)
        if durable:
            disks = self._cluster_disks()
            for loss in copy_losses(trio.current_time(), name, durable, slot.disk, disks):
                self._history.append(loss)
        await slot.stopped.wait()

    def _cluster_disks(self) -> list[SimDisk]:
        """Every disk but those of removed nodes, which are gone for good. A node that left
        still counts: a token only its disk holds was lost by its handoff, not by design."""
        return [slot.disk for slot in self.slots.values() if slot.state is not SlotState.REMOVED]

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
        leaver, stopped = slot.node, slot.stopped
        left = True

        async def leave(cancel_scope: trio.CancelScope) -> None:
            nonlocal left
            left = await leaver.leave()
            if not left:
                cancel_scope.cancel()  # abandoned: the node serves on

        # The leave runs for the node, so it dies with the node: a crash fault during the
        # handoff ends it as it would end a real process (index seed 79: a leaver crashed
        # mid-push, and its push retried a dead transport forever).
        async with trio.open_nursery() as nursery:
            nursery.start_soon(leave, nursery.cancel_scope)
            await stopped.wait()
            nursery.cancel_scope.cancel()
        if not left:
            raise LeaveAbandoned(f"{node} abandoned its leave and stays in the cluster")
        if slot.node is not leaver or slot.state is not SlotState.UP:
            return  # crashed while leaving: still a member, down until it restarts
        self._network.crash(node)
        slot.node = None
        slot.state = SlotState.LEFT

    async def remove(self, node: str) -> None:
        slot = self.slots[node]
        if slot.state not in (SlotState.UP, SlotState.DOWN):
            raise InvalidRequest(f"{node} is not in the cluster")
        self._trace.event("remove", node)
        await self._retire(slot)
        for other in self.up():
            assert other.node is not None
            other.node.removals.remove(slot.identity.node_id)

    async def _retire(self, slot: Slot, *, replaced: bool = False) -> None:
        """Stop ``slot``'s machine for good. An operator removes (or replaces) a node that
        is gone: whatever only it held (a write acknowledged at ONE that replication had
        not spread yet) is lost with it. Hints meant for a removed node are never
        delivered; those for a replaced one go to its replacement."""
        if slot.state is SlotState.UP:
            await self.crash(slot.name, DiskMode.KEPT)
        slot.state = SlotState.REMOVED
        others = self._cluster_disks()
        node_id = slot.identity.node_id
        durable = slot.disk.durable_records()
        undeliverable = None if replaced else node_id
        for loss in copy_losses(
            trio.current_time(), slot.name, durable, None, others, undeliverable_hints=undeliverable
        ):
            self._history.append(loss)

    async def replace(self, node: str) -> str | None:
        """Stop ``node`` for good and start a spare machine with ``--replace`` its id, once
        the live members see it dead (a replacement of a member not yet dead is refused).
        If they do not within REPLACE_WAIT (a partition keeps it alive somewhere), it is
        removed instead, no spare is used, and None is returned.

        Until the wait is over the machine is only crashed (recorded as such), so a run
        that ends meanwhile restarts it at the heal like any crashed node; from then on
        nothing can cancel the change halfway."""
        slot = self.slots[node]
        spare = next((s for s in self.slots.values() if s.state is SlotState.SPARE), None)
        if slot.state not in (SlotState.UP, SlotState.DOWN) or spare is None:
            raise InvalidRequest(f"{node} cannot be replaced now")
        self._trace.event("replace", f"{node} {spare.name}")
        if slot.state is SlotState.UP:
            self._event(EventKind.CRASH, (node,), detail=f"to be replaced by {spare.name}")
            await self.crash(node, DiskMode.KEPT)
        node_id = slot.identity.node_id
        with trio.move_on_after(REPLACE_WAIT):
            while not self._seen_dead(node_id):
                await trio.sleep(0.5)
        with trio.CancelScope(shield=True):
            await self._retire(slot, replaced=self._seen_dead(node_id))
            if not self._seen_dead(node_id):
                for other in self.up():
                    assert other.node is not None
                    other.node.removals.remove(node_id)
                return None
            spare.replaces = node_id
            self.token_sources[spare.identity.node_id] = self.token_sources.get(node_id, node_id)
            await self.start(spare.name, wait=True)
        return spare.name

    def _seen_dead(self, node_id: str) -> bool:
        return all(
            slot.node is not None
            and all(
                m.liveness is Liveness.DEAD for m in slot.node.members() if m.node_id == node_id
            )
            for slot in self.up()
        )

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
        self._windows.begin(fault_id, fault, now)
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
        self._windows.end(fault_id, fault, now, self.origin)
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

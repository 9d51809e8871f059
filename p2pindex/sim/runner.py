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

import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Final

import trio
import trio.testing

from p2pindex.client.async_client import AsyncClient
from p2pindex.core.ring import DEFAULT_VNODES, Ring
from p2pindex.core.versions import decode_object, encode_context
from p2pindex.net.secure.connector import Connector
from p2pindex.node.handoff import SYNCED_META
from p2pindex.node.reaper import saved_markers
from p2pindex.sim import checkers
from p2pindex.sim import history as hist
from p2pindex.sim.cluster import SimCluster, Slot, SlotState
from p2pindex.sim.determinism import (
    SimWallClock,
    Trace,
    derive_rng,
    seed_trio_scheduler,
    tick_clock,
)
from p2pindex.sim.faults import (
    ScheduleDriver,
)
from p2pindex.sim.index_checker import check_index_run
from p2pindex.sim.index_workload import index_workload_for
from p2pindex.sim.network import DatagramFaults, SimNetwork
from p2pindex.sim.outputs import RunResult, failure_report, format_table, write_run_files
from p2pindex.sim.plan import ChurnSettings, RunPlan
from p2pindex.sim.planted import plant_client
from p2pindex.sim.timeline import Timeline, availability
from p2pindex.sim.workloads import Workload, run_churn
from p2pindex.types import Address, Liveness, NodeState

CLIENT_PORT: Final = 9000
FORM_TIMEOUT: Final = 120.0
"""Virtual seconds the initial cluster gets to form before the run is declared broken."""
OBSERVE_INTERVAL: Final = 0.5
DIVERGENCE_INTERVAL: Final = 1.0
TOMBSTONE_SAMPLE_EVERY: Final = 30
"""Divergence samples between two counts of the tombstones on disk (a full scan)."""
CHURN_EVENTS: Final = frozenset({hist.EventKind.JOIN, hist.EventKind.LEAVE, hist.EventKind.REMOVE})
REPLICA_ROUNDS: Final = 6
"""Convergence samples of every key taken during quiescence."""


class Simulation:
    """One run of a plan inside ``trio.run`` (see the module docstring for the phases)."""

    def __init__(self, plan: RunPlan) -> None:
        self.plan = plan
        scenario = plan.scenario
        self.trace = Trace()
        self.history = hist.History(hist.RunMeta(plan.seed, scenario.options()))
        self.timeline = Timeline(f"{scenario.name} — seed {plan.seed}")
        self.tombstone_samples: list[tuple[float, int]] = []
        """(seconds since the origin, tombstones on every disk), while reaping is on: the
        count must stay bounded however many deletes the run makes."""
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
            transport: Connector = self.network.transport_for(Address(name, CLIENT_PORT))
            authority = self.cluster.authority
            if authority is not None:  # credentials, as `token issue` gives a real client
                transport = authority.connector(name, transport, SimWallClock())
            transport = plant_client(self.plan.scenario.planted_bugs, transport)
            client = AsyncClient(addresses, timeout=timeout, transport=transport)  # type: ignore[arg-type]
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
        self.history.append(hist.FaultEvent(self.heal_time, hist.EventKind.HEAL, detail="heal all"))
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
            replacer=self.cluster.replace if churn.replace else None,
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
        sources = {n: s for n, s in self.cluster.token_sources.items() if n in key_set}
        if self._ring is None or self._ring.nodes != key_set or self._ring.sources != sources:
            self._ring = Ring(list(by_id), DEFAULT_VNODES, sources)
        ring = self._ring
        replicas = self.plan.scenario.replicas
        keys = self.history.keys()
        for key in keys:
            raw = key.encode()
            yield key, raw, [by_id[node_id] for node_id in ring.preference_list(raw, replicas)]

    def _sample_replicas(self, number: int) -> None:
        now = trio.current_time()
        markers: dict[str, dict[bytes, bytes]] = {}
        for key, raw, owners in self._replica_sets():
            for slot in owners:
                record = slot.disk.image.get(raw)
                if record is None:
                    # A reaped tombstone is still what the node answers (node/reaper.py).
                    if slot.name not in markers:
                        markers[slot.name] = saved_markers(slot.disk.image)
                    record = markers[slot.name].get(raw)
                if record is None:
                    values: tuple[bytes, ...] = ()
                    clock = b""
                else:
                    obj = decode_object(record)
                    values = tuple(sorted(obj.values))
                    clock = encode_context(obj.clock)
                self.history.append(hist.ReplicaState(now, number, slot.name, key, values, clock))

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
                        accuser = node.accuser(member.node_id)
                        by = None if accuser is None else names.get(accuser, accuser)
                        self.history.append(
                            hist.Observation(now, slot.name, subject, member.liveness, by)
                        )
                expected = max(len(cluster.in_cluster()) - 1, 1)
                self.timeline.add_view(now - self.origin, slot.name, min(alive / expected, 1.0))
            await trio.sleep(OBSERVE_INTERVAL)

    async def _sample_divergence(self) -> None:
        """Count the keys whose current replicas do not all hold the same record, and every
        TOMBSTONE_SAMPLE_EVERY samples the tombstones on all disks (when reaping is on)."""
        reaping = self.plan.scenario.node.get("tombstone_grace") is not None
        number = 0
        while True:
            if reaping and number % TOMBSTONE_SAMPLE_EVERY == 0:
                assert self.cluster is not None
                slots = self.cluster.slots.values()
                held = sum(_tombstones_on(slot.disk.image) for slot in slots)
                self.tombstone_samples.append((trio.current_time() - self.origin, held))
            number += 1
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
    violations += check_index_run(
        simulation.index_workload, history, CHURN_EVENTS, plan.scenario.replicas
    )
    counts = Counter(op.type for op in history.ops if op.type is not hist.OpType.INVOKE)
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
        ok=counts[hist.OpType.OK],
        failed=counts[hist.OpType.FAIL],
        unknown=counts[hist.OpType.INFO],
        faults=sum(fault_counts.values()),
        fault_kinds=dict(fault_counts),
        violations=violations,
        virtual_seconds=simulation.end_time,
        wall_seconds=wall,
        cpu_seconds=cpu,
        network=dict(simulation.network.stats),
        lost_disk_writes=sum(s.disk.stats["lost_writes"] for s in cluster.slots.values()),
        tombstones=_tombstone_counts(cluster.slots.values(), plan.scenario.replicas)
        | _tombstone_peaks(simulation.tombstone_samples),
        options=plan.scenario.options(),
    )
    if violations:
        result.report = failure_report(plan, history, violations, replay_command)
    if output is not None and (write_passing or violations):
        _write_outputs(output, plan, simulation, result)
        result.output_dir = str(output)
    return result


def _write_outputs(output: Path, plan: RunPlan, simulation: Simulation, result: RunResult) -> None:
    summary = format_table(result.summary_rows()) + "\n"
    if result.report:
        summary += result.report + "\n"
    subtitle = (
        f"{plan.scenario.nodes} nodes, N={plan.scenario.replicas}, "
        f"{result.ops} ops, {result.faults} faults, trace {result.trace_hash[:12]}"
    )
    write_run_files(
        output,
        plan,
        simulation.history,
        summary,
        simulation.timeline,
        availability(simulation.history, simulation.origin),
        subtitle,
        trace_tail=simulation.trace.tail(),
    )


def _tombstones_on(image: Any) -> int:
    return sum(
        1
        for _key, record in image.scan_range(0, 0, None, image.count() + 1)
        if decode_object(record).is_deleted
    )


def _tombstone_peaks(samples: list[tuple[float, int]]) -> dict[str, int]:
    """The most tombstones on disk at once in each half of the run (empty without
    reaping): with reaping they must not grow with the deletes, so the second half's peak
    stays near the first's."""
    if not samples:
        return {}
    middle = samples[-1][0] / 2
    first = [held for t, held in samples if t <= middle] or [0]
    second = [held for t, held in samples if t > middle] or [0]
    return {"peak_first_half": max(first), "peak_second_half": max(second)}


def _tombstone_counts(slots: Iterable[Slot], n: int) -> dict[str, int]:
    """Tombstones left on every disk, what the nodes running at the end reaped, and how
    many keys the running nodes hold more or fewer than N copies of."""
    on_disk = 0
    reaped = dropped = 0
    held: Counter[bytes] = Counter()
    for slot in slots:
        image = slot.disk.image
        for key, record in image.scan_range(0, 0, None, image.count() + 1):
            if decode_object(record).is_deleted:
                on_disk += 1
            if slot.node is not None:
                held[key] += 1
        if slot.node is not None:
            reaped += slot.node.stats.get("tombstones.reaped")
            dropped += slot.node.stats.get("tombstones.stale_dropped")
    return {
        "on_disk": on_disk,
        "reaped": reaped,
        "stale_dropped": dropped,
        "keys_over_n": sum(1 for count in held.values() if count > n),
        "keys_under_n": sum(1 for count in held.values() if count < n),
    }

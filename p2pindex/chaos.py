"""Real node processes under real faults, inside a network namespace of their own.

It lives outside ``p2pindex.sim`` on purpose: the simulator is deterministic (one seed,
virtual time, a trace hash), this harness is not (real processes, nftables, signals), and
it only borrows the simulator's workloads, history and checkers.

    python -m p2pindex.chaos --duration 60 [--seed N] [--nodes 5] [--workdir DIR]

The harness re-executes itself under ``unshare --net --pid --fork --kill-child``: the new
network namespace has nothing but a loopback interface (checked before any node starts),
so nothing the nodes or the client send can reach any other address; the new PID
namespace makes the kernel kill every node if the harness itself dies.

Inside it starts the nodes as ``python -m p2pindex serve`` on 127.0.0.11, .12, ... each
under its own group id, secure as users run them (a cluster authority in the work directory
certifies every node; the clients hold an admin capability), runs the workloads of
``p2pindex.sim.workloads`` through the real client, and meanwhile injects a fault every few
seconds: partitions (halves, one node isolated, a bridge, a majorities ring, one way) and
lossy spells (30% of every packet the nodes send) as nftables rules in the namespace's own
table, kill -9 and restart, SIGSTOP/SIGCONT pauses
shorter and longer than the SWIM suspicion timeout. It records each node's membership view
by polling it. Then it heals everything, waits for quiescence, reads every key at ALL, stops
the nodes and samples each replica's copy of every key from its data file, and runs every
checker.

A partition rule drops a directed link (a, b) twice over: datagrams from a's bound address
to b on the input hook, and TCP segments from a's sockets (matched by a's group id, since an
outgoing TCP connection on loopback takes 127.0.0.1 as its source) to b on the output hook.

Exit status: 0 no violation, 1 violations (the report and the shortened history are
printed; the node data and the whole history are kept in the work directory), 2
requirements missing (root, unshare, nft, ip), 3 the cluster could not be run. A passing
run without ``--workdir`` removes its temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from p2pindex.client import Member
from p2pindex.core.versions import decode_object, encode_context
from p2pindex.errors import DefiniteError, LeaveAbandoned, P2PIndexError, Timeout
from p2pindex.node.handoff import LEAVE_PATIENCE
from p2pindex.security.authority import Authority
from p2pindex.security.certs import Role
from p2pindex.sim.checkers import CheckConfig, MembershipBounds, check_all, failure_report
from p2pindex.sim.history import (
    EventKind,
    FaultEvent,
    History,
    Observation,
    OpType,
    ReplicaState,
    RunMeta,
)
from p2pindex.sim.workloads import Workload, WorkloadOptions, run_churn
from p2pindex.types import Liveness

INSIDE = "P2PINDEX_CHAOS_INSIDE"
"""Set in the re-executed harness; the namespace checks still run, so setting it by hand
outside a namespace only makes the harness refuse to start."""
TABLE = "p2pindex_chaos"
PORT = 7400
FIRST_HOST = 11
GROUP_BASE = 61000
READY_TIMEOUT = 30.0
POLL_INTERVAL = 0.5
LEAVE_TIMEOUT = 2 * LEAVE_PATIENCE + 30.0
"""Longer than a leave may wait for the nodes taking over and then for a listener, so an
abandoned leave is seen as such rather than killed as a slow one."""
REMOVE_TIMEOUT = 30.0
AUTHORITY_DIR = "authority"
ADMIN_CREDENTIALS = "admin.cred"
SHAPES = (
    "halves",
    "isolate",
    "bridge",
    "ring",
    "one_way",
    "lossy",
    "kill",
    "pause",
    "long_pause",
)
LOSSY_PERCENT = 30
"""A lossy spell drops this share of every packet the nodes send (datagrams and TCP)."""


class HarnessError(Exception):
    """The cluster could not be run (not a finding about the system under test)."""


@dataclass(frozen=True, slots=True)
class ChaosOptions:
    duration: float = 60.0
    seed: int = 1
    nodes: int = 5
    n_replicas: int = 3
    fault_gap: float = 2.0
    """Longest healthy gap between two faults (seconds); faults hold 2-5 s."""
    quiesce: float = 20.0
    clients: int = 5
    request_timeout: float = 2.0
    convergence_bound: float | None = None
    """Seconds after the heal by which every key's replicas must agree; by default 60, or
    the quiesce plus 30 when that is longer: replicas are sampled once, after the quiesce
    and the final reads, so a shorter bound would fail every key of a long quiesce."""
    detect_within: float = 20.0
    short_pause: float = 0.8
    """Pauses up to this long are inside the envelope: SWIM must not declare a death."""
    long_pause: float = 6.0
    settle: float = 10.0
    churn: bool = False
    """Also let nodes join, leave and be removed (at most nodes + 2, at least N + 1)."""
    churn_interval: float = 15.0
    workdir: str | None = None
    faults: tuple[str, ...] = SHAPES
    """The fault kinds the nemesis takes turns with (a subset of SHAPES)."""

    @property
    def agreement_bound(self) -> float:
        if self.convergence_bound is not None:
            return self.convergence_bound
        return max(60.0, self.quiesce + 30.0)

    def bounds(self) -> MembershipBounds:
        return MembershipBounds(
            detect_within=self.detect_within,
            max_pause=self.short_pause,
            max_loss=0.0,
            max_delay=0.0,
            settle=self.settle,
        )


def missing_requirements() -> list[str]:
    """Why the harness cannot run here (empty when it can)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("must run as root (network namespaces and nftables)")
    for tool in ("unshare", "nft", "ip"):
        if shutil.which(tool) is None:
            missing.append(f"{tool} is not installed")
    return missing


def _run(*command: str, stdin: str | None = None) -> str:
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise HarnessError(f"{' '.join(command)} failed: {result.stderr.strip()}")
    return result.stdout


def prepare_namespace() -> None:
    """Refuse to go on unless loopback is all there is, then bring it up (checked first, so
    nothing is touched outside a fresh namespace)."""
    links = [line.split(":")[1].strip() for line in _run("ip", "-o", "link", "show").splitlines()]
    if links != ["lo"]:
        raise HarnessError(f"not an isolated namespace: interfaces {links}")
    for family in ("-4", "-6"):
        if _run("ip", family, "route", "show", "default").strip():
            raise HarnessError("not an isolated namespace: it has a default route")
    _run("ip", "link", "set", "lo", "up")


# --- partitions -------------------------------------------------------------------------------


class Firewall:
    """The namespace's own nftables table; links are (source, destination) node names."""

    def __init__(self, hosts: dict[str, str], groups: dict[str, int]) -> None:
        self._hosts = hosts
        self._groups = groups
        self._links: set[tuple[str, str]] = set()
        self._loss = 0
        _run("nft", "add", "table", "inet", TABLE)
        self._apply()

    def cut(self, links: Sequence[tuple[str, str]]) -> None:
        self._links.update(links)
        self._apply()

    def lose(self, percent: int) -> None:
        """Drop ``percent`` of every packet any node sends, until the heal."""
        self._loss = percent
        self._apply()

    def heal(self) -> None:
        self._links.clear()
        self._loss = 0
        self._apply()

    def _apply(self) -> None:
        """Replace every rule in one nft transaction, so no half-applied grudge exists."""
        inbound = [
            f"ip saddr {self._hosts[a]} ip daddr {self._hosts[b]} drop"
            for a, b in sorted(self._links)
        ]
        outbound = [
            f"meta l4proto tcp meta skgid {self._groups[a]} ip daddr {self._hosts[b]} drop"
            for a, b in sorted(self._links)
        ]
        if self._loss:
            groups = ", ".join(str(group) for group in sorted(set(self._groups.values())))
            outbound.append(f"meta skgid {{ {groups} }} numgen random mod 100 < {self._loss} drop")
        script = "\n".join(
            [
                f"flush table inet {TABLE}",
                f"table inet {TABLE} {{",
                "  chain input { type filter hook input priority 0; policy accept;",
                *(f"    {rule}" for rule in inbound),
                "  }",
                "  chain output { type filter hook output priority 0; policy accept;",
                *(f"    {rule}" for rule in outbound),
                "  }",
                "}",
            ]
        )
        _run("nft", "-f", "-", stdin=script + "\n")

    def close(self) -> None:
        subprocess.run(["nft", "delete", "table", "inet", TABLE], capture_output=True, check=False)


def partition_links(shape: str, nodes: list[str]) -> list[tuple[str, str]]:
    """Directed links to cut for a partition ``shape`` over ``nodes`` (already shuffled)."""
    n = len(nodes)

    def between(left: list[str], right: list[str]) -> list[tuple[str, str]]:
        return [(a, b) for a in left for b in right] + [(b, a) for a in left for b in right]

    if shape == "halves":
        return between(nodes[: n // 2], nodes[n // 2 :])
    if shape == "isolate":
        return between(nodes[:1], nodes[1:])
    if shape == "bridge":
        middle = n // 2
        return between(nodes[:middle], nodes[middle + 1 :])
    if shape == "ring":
        # Each node keeps its ``reach`` nearest neighbours on each side: itself plus them is a
        # majority, and no two nodes keep the same majority (Jepsen's majorities-ring).
        reach = max(1, (n // 2 + 1) // 2)
        cut = [
            (a, b)
            for i, a in enumerate(nodes)
            for j, b in enumerate(nodes)
            if min((i - j) % n, (j - i) % n) > reach
        ]
        return cut or between(nodes[:1], nodes[1:])
    if shape == "one_way":
        return [(nodes[0], b) for b in nodes[1:]]
    raise ValueError(f"unknown partition shape {shape!r}")


# --- node processes ---------------------------------------------------------------------------


@dataclass(slots=True)
class NodeProcess:
    name: str
    host: str
    group: int
    data_dir: Path
    seeds: list[str]
    n_replicas: int
    process: subprocess.Popen[bytes] | None = None
    node_id: str = ""
    starts: int = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{PORT}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "p2pindex",
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            self.address,
            "--n-replicas",
            str(self.n_replicas),
            *(arg for seed in self.seeds for arg in ("--seed", seed)),
        ]

    async def start(self) -> None:
        """Start (or restart) the node and wait for its ready line."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        out = self.data_dir / f"stdout.{self.starts}"
        with out.open("wb") as stdout, (self.data_dir / "stderr.log").open("ab") as stderr:
            self.process = subprocess.Popen(
                self.command(), stdout=stdout, stderr=stderr, group=self.group, extra_groups=[]
            )
        with trio.move_on_after(READY_TIMEOUT):
            while True:
                for line in out.read_text().splitlines():
                    if line.startswith("ready "):
                        fields = dict(part.split("=", 1) for part in line.split()[1:])
                        self.node_id = fields["node_id"]
                        return
                if self.process.poll() is not None:
                    break
                await trio.sleep(0.05)
        tail = (self.data_dir / "stderr.log").read_text(errors="replace")[-2000:]
        self.kill()
        raise HarnessError(f"{self.name} did not become ready:\n{tail}")

    def signal(self, signum: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signum)

    def kill(self) -> None:
        """SIGKILL by pid and reap; a paused process dies too."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()


@dataclass(slots=True)
class Cluster:
    """The node processes, what the nemesis did to them, and the churn operations."""

    workdir: Path
    history: History
    n_replicas: int
    authority: Authority
    """Certifies every node the harness adds, as `p2pindex cluster certify` would."""
    nodes: list[NodeProcess] = field(default_factory=list)
    hosts: dict[str, str] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    paused: set[str] = field(default_factory=set)
    gone: set[str] = field(default_factory=set)
    """Nodes that left or were removed: never restarted, never faulted again."""
    starting: set[str] = field(default_factory=set)
    """Nodes joining or restarting, not yet ready: faults and churn wait for them (a leave
    sent to a port not open yet is refused, a crash there fails the start)."""
    admin: Any = None
    """A connected client for leave and remove (set once the cluster runs)."""

    def add_node(self) -> NodeProcess:
        number = len(self.nodes)
        if FIRST_HOST + number > 254:
            raise HarnessError("no loopback address left for another node")
        seeds = [node.address for node in self.nodes if node.name not in self.gone][:2]
        node = NodeProcess(
            name=f"n{number + 1}",
            host=f"127.0.0.{FIRST_HOST + number}",
            group=GROUP_BASE + number,
            data_dir=self.workdir / f"n{number + 1}",
            seeds=seeds,
            n_replicas=self.n_replicas,
        )
        self.authority.provision(node.data_dir)
        self.nodes.append(node)
        self.hosts[node.name] = node.host
        self.groups[node.name] = node.group
        return node

    def by_name(self, name: str) -> NodeProcess:
        return next(node for node in self.nodes if node.name == name)

    def names(self) -> list[str]:
        """Nodes in the cluster (up or not), but for those still starting."""
        return [
            node.name
            for node in self.nodes
            if node.name not in self.gone and node.name not in self.starting
        ]

    def members(self) -> list[str]:
        """Nodes in the cluster and running: what churn may act on."""
        return [n for n in self.names() if n not in self.down and n not in self.paused]

    def record(
        self,
        kind: EventKind,
        nodes: Sequence[str] = (),
        *,
        links: Sequence[tuple[str, str]] = (),
        amount: float = 0.0,
        detail: str = "",
    ) -> None:
        now = trio.current_time()
        self.history.append(FaultEvent(now, kind, tuple(nodes), tuple(links), amount, detail))

    def crash(self, name: str) -> None:
        self.record(EventKind.CRASH, [name])
        self.by_name(name).kill()
        self.down.add(name)

    async def restart(self, name: str) -> None:
        if name in self.gone:
            self.down.discard(name)
            return
        async with self._starting(name):
            await self.by_name(name).start()
        self.down.discard(name)  # only now may churn act on it
        self.record(EventKind.RESTART, [name])

    @contextlib.asynccontextmanager
    async def _starting(self, name: str) -> AsyncIterator[None]:
        self.starting.add(name)
        try:
            yield
        finally:
            self.starting.discard(name)

    def pause(self, name: str, hold: float) -> None:
        self.record(EventKind.PAUSE, [name], amount=hold)
        self.by_name(name).signal(signal.SIGSTOP)
        self.paused.add(name)

    def resume(self, name: str) -> None:
        self.by_name(name).signal(signal.SIGCONT)
        self.paused.discard(name)
        self.record(EventKind.RESUME, [name])

    # ClusterControl, for ``run_churn`` (which records these changes itself).

    async def join(self) -> str:
        node = self.add_node()
        async with self._starting(node.name):
            await node.start()
        return node.name

    async def leave(self, name: str) -> None:
        """Ask ``name`` to leave and wait for its process to exit. A node that abandons
        its leave (one taking over stayed out of reach) serves on: LeaveAbandoned, so the
        churn records no leave; one still leaving after LEAVE_TIMEOUT is killed."""
        node = self.by_name(name)
        self.gone.add(name)
        try:
            await self.admin.leave(node.address)
        except DefiniteError:
            self.gone.discard(name)  # refused or never sent: it serves on, faults go on
            raise
        with trio.move_on_after(LEAVE_TIMEOUT):
            while node.process is not None and node.process.poll() is None:
                if await self._leave_abandoned(node.address):
                    self.gone.discard(name)
                    raise LeaveAbandoned(f"{name} abandoned its leave and serves on")
                await trio.sleep(POLL_INTERVAL)
        node.kill()

    async def _leave_abandoned(self, address: str) -> bool:
        try:
            status = await self.admin.status(address)
        except (P2PIndexError, OSError):
            return False  # exiting, or busy: the process check decides
        return bool(status.leave_abandoned)

    async def remove(self, name: str) -> None:
        """Kill ``name`` and remove it as an operator would: ask a running member once it
        sees the node down (one that still looks alive is refused), and ask again after an
        unknown outcome (removing is idempotent) until that member no longer places keys on
        it. Sending the request straight after the kill got it refused, or sent it to the
        dead node itself, and left a dead member in the ring for good."""
        node = self.by_name(name)
        self.gone.add(name)
        node.kill()
        with trio.move_on_after(REMOVE_TIMEOUT):
            while True:
                view = await self._seen_by_a_running_member(node.node_id)
                if view is not None:
                    address, entry = view
                    if entry is None or not entry.in_ring:
                        return
                    if entry.liveness != Liveness.ALIVE.value:
                        with contextlib.suppress(P2PIndexError, OSError):
                            await self.admin.remove(node.node_id, address)
                await trio.sleep(POLL_INTERVAL)
        raise Timeout(f"{name} was still in the ring {REMOVE_TIMEOUT:g}s after it was killed")

    async def _seen_by_a_running_member(self, node_id: str) -> tuple[str, Member | None] | None:
        """(address of a running member that answered, its entry for ``node_id``)."""
        for name in self.members():
            address = self.by_name(name).address
            try:
                reply = await self.admin.members(address)
            except (P2PIndexError, OSError):
                continue
            return address, next((m for m in reply if m.node_id == node_id), None)
        return None

    def kill_all(self) -> None:
        for node in self.nodes:
            node.kill()


# --- the run ----------------------------------------------------------------------------------


async def nemesis(
    cluster: Cluster, firewall: Firewall, rng: random.Random, options: ChaosOptions, until: float
) -> Counter[str]:
    """A fault every few seconds, every kind in turn (shuffled), each healed before the next."""
    done: Counter[str] = Counter()
    order = list(options.faults)
    for number in itertools.count():
        if number % len(order) == 0:
            rng.shuffle(order)
        hold = rng.uniform(2.0, 5.0)
        if trio.current_time() + hold >= until:
            return done
        shape = order[number % len(order)]
        nodes = cluster.names()
        rng.shuffle(nodes)
        undo: Callable[[], Awaitable[None]]
        if shape == "kill":
            victim = nodes[0]
            cluster.crash(victim)

            async def undo(victim: str = victim) -> None:
                await cluster.restart(victim)

        elif shape in ("pause", "long_pause"):
            victim = nodes[0]
            hold = options.short_pause * 0.9 if shape == "pause" else options.long_pause
            cluster.pause(victim, hold)

            async def undo(victim: str = victim) -> None:
                cluster.resume(victim)

        elif shape == "lossy":
            firewall.lose(LOSSY_PERCENT)
            cluster.record(EventKind.LOSS, amount=LOSSY_PERCENT / 100, detail="every node")

            async def undo() -> None:
                firewall.heal()
                cluster.record(EventKind.HEAL)

        else:
            links = partition_links(shape, nodes)
            firewall.cut(links)
            cluster.record(EventKind.PARTITION, links=tuple(links), detail=shape)

            async def undo() -> None:
                firewall.heal()
                cluster.record(EventKind.HEAL)

        done[shape] += 1
        await trio.sleep(hold)
        await undo()
        await trio.sleep(rng.uniform(0.5, options.fault_gap))
    return done


async def poll_membership(cluster: Cluster, client: Any, history: History) -> None:
    """Record every change in each node's view of the others (runs until cancelled)."""
    last: dict[tuple[str, str], Liveness] = {}
    while True:
        names = {node.node_id: node.name for node in cluster.nodes}
        for node in cluster.nodes:
            if node.name not in cluster.members():
                continue
            reply = None
            with trio.move_on_after(1.0):
                try:
                    reply = await client.members(node.address)
                except (P2PIndexError, OSError):
                    reply = None
            if reply is None:
                continue
            now = trio.current_time()
            for member in reply:
                subject = names.get(member.node_id, member.node_id[:12])
                liveness = Liveness(member.liveness)
                if subject != node.name and last.get((node.name, subject)) is not liveness:
                    last[(node.name, subject)] = liveness
                    history.append(Observation(now, node.name, subject, liveness))
        await trio.sleep(POLL_INTERVAL)


async def sample_replicas(cluster: Cluster, owners: dict[str, tuple[str, ...]]) -> Counter[int]:
    """With every node stopped, read each owner's copy of each key from its data file.
    Returns how many keys are held by how many of the cluster's nodes (owners or not):
    once faults heal, extra copies are dropped and every key is back to N."""
    from p2pindex.node.runtime import DATA_FILE
    from p2pindex.storage.sqlite import SqliteStorage

    cluster.kill_all()
    now = trio.current_time()
    by_id = {node.node_id: node for node in cluster.nodes}
    holders: Counter[str] = Counter()
    for node in cluster.nodes:
        if node.name in cluster.gone:
            continue
        keys = [key for key, ids in owners.items() if node.node_id in ids]
        storage = await SqliteStorage.open(node.data_dir / DATA_FILE)
        try:
            holders.update(key for key in owners if storage.get(key.encode()) is not None)
            for key in keys:
                raw = storage.get(key.encode())
                values: tuple[bytes, ...] = ()
                clock = b""
                if raw is not None:
                    obj = decode_object(raw)
                    values, clock = tuple(obj.values), encode_context(obj.clock)
                cluster.history.append(ReplicaState(now, 0, node.name, key, values, clock))
        finally:
            await storage.aclose()
    missing = {i for ids in owners.values() for i in ids} - by_id.keys()
    if missing:
        raise HarnessError(f"keys are owned by unknown nodes {sorted(missing)}")
    return Counter(holders[key] for key in owners)


async def run_inside(options: ChaosOptions) -> int:
    prepare_namespace()
    workdir = Path(options.workdir or tempfile.mkdtemp(prefix="p2pindex-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    # "replicas" is the name the checkers read (the scenario options spell it so).
    history = History(RunMeta(options.seed, {**asdict(options), "replicas": options.n_replicas}))
    authority = Authority.load_or_init(workdir / AUTHORITY_DIR)
    cluster = Cluster(workdir, history, options.n_replicas, authority)
    for _ in range(options.nodes):
        cluster.add_node()
    firewall = Firewall(cluster.hosts, cluster.groups)
    print(f"chaos: seed={options.seed} workdir={workdir} options={json.dumps(asdict(options))}")
    try:
        faults, unread = await _exercise(cluster, firewall, options)
    except BaseExceptionGroup as group:
        harness, other = group.split(HarnessError)
        if other is not None or harness is None:
            raise
        print(f"chaos: harness error: {harness.exceptions[0]}", file=sys.stderr)
        return 3
    except HarnessError as exc:
        print(f"chaos: harness error: {exc}", file=sys.stderr)
        return 3
    finally:
        cluster.kill_all()
        firewall.close()
    config = CheckConfig(convergence_bound=options.agreement_bound, membership=options.bounds())
    violations = check_all(history, config)
    _summary(history, faults, unread, len(violations))
    if options.workdir is None and not violations:
        shutil.rmtree(workdir)
        return 0
    path = workdir / "history.jsonl"
    history.save(path)
    print(f"chaos: node data and the history are kept in {workdir}")
    if violations:
        print(failure_report(history, violations))
        return 1
    return 0


async def _exercise(
    cluster: Cluster, firewall: Firewall, options: ChaosOptions
) -> tuple[Counter[str], list[str]]:
    """Start the nodes, run workload and nemesis, heal, read everything, sample replicas."""
    import p2pindex

    history = cluster.history
    rng = random.Random(options.seed)
    addresses = [n.address for n in cluster.nodes]
    credentials = cluster.workdir / ADMIN_CREDENTIALS
    cluster.authority.credentials(Role.ADMIN).save(credentials)
    for node in list(cluster.nodes):
        await node.start()
    await _wait_for_members(cluster, addresses, credentials)
    print(f"chaos: {len(addresses)} nodes up: {' '.join(addresses)}", flush=True)
    faults: Counter[str] = Counter()
    timeout = options.request_timeout
    async with (
        p2pindex.connect(addresses, timeout=timeout, credentials=credentials) as db,
        p2pindex.connect(addresses, timeout=timeout, credentials=credentials) as watcher,
    ):
        workload = Workload(
            history,
            random.Random(rng.getrandbits(64)),
            WorkloadOptions(processes=options.clients, timeout=options.request_timeout),
        )
        async with trio.open_nursery() as watching:
            watching.start_soon(poll_membership, cluster, watcher, history)
            until = trio.current_time() + options.duration

            async def inject() -> None:
                faults.update(await nemesis(cluster, firewall, rng, options, until))

            async with trio.open_nursery() as running:
                running.start_soon(workload.run, {"client": db}, options.duration)
                running.start_soon(inject)
                if options.churn:
                    cluster.admin = watcher
                    running.start_soon(
                        partial(
                            run_churn,
                            cluster,
                            history,
                            random.Random(rng.getrandbits(64)),
                            duration=options.duration,
                            interval=options.churn_interval,
                            min_members=options.n_replicas + 1,
                            max_members=options.nodes + 2,
                        )
                    )
            await _heal_everything(cluster, firewall)
            await trio.sleep(options.quiesce)
            unread = await workload.final_reads({"client": db}, attempts=10)
            watching.cancel_scope.cancel()
        await db.members()
        keys = history.keys()
        owners = {key: db.preference_list(key.encode()) for key in keys}
    copies = await sample_replicas(cluster, owners)
    held = ", ".join(f"{count} key(s) on {n} node(s)" for n, count in sorted(copies.items()))
    print(f"chaos: copies {options.quiesce:g} s after the heal: {held or 'no keys'}", flush=True)
    print(f"chaos: replicas must agree within {options.agreement_bound:g} s of the heal")
    return faults, unread


async def _wait_for_members(cluster: Cluster, addresses: list[str], credentials: Path) -> None:
    import p2pindex

    wanted = len(cluster.nodes)
    with trio.move_on_after(READY_TIMEOUT):
        async with p2pindex.connect(addresses, timeout=2.0, credentials=credentials) as db:
            while True:
                views = []
                for node in cluster.nodes:
                    try:
                        reply = await db.members(node.address)
                    except P2PIndexError:
                        break
                    views.append(sum(m.liveness == "alive" for m in reply))
                if views and min(views) >= wanted:
                    return
                await trio.sleep(0.2)
    raise HarnessError(f"the {wanted} nodes did not all see each other alive in time")


async def _heal_everything(cluster: Cluster, firewall: Firewall) -> None:
    firewall.heal()
    cluster.record(EventKind.HEAL)
    for name in sorted(cluster.paused):
        cluster.resume(name)
    for name in sorted(cluster.down):
        await cluster.restart(name)


def _summary(history: History, faults: Counter[str], unread: list[str], violations: int) -> None:
    outcomes = Counter(op.type.value for op in history.ops if op.type is not OpType.INVOKE)
    print(
        f"chaos: {sum(outcomes.values())} ops "
        f"({', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()))}); "
        f"faults: {', '.join(f'{k} {v}' for k, v in sorted(faults.items())) or 'none'}; "
        f"keys {len(history.keys())}, never read at the end {len(unread)}; "
        f"membership changes {len(history.observations)}; "
        f"replica samples {len(history.replicas)}"
    )
    print(f"chaos: {violations} violation(s)")


def parse_args(argv: Sequence[str]) -> ChaosOptions:
    parser = argparse.ArgumentParser(
        prog="python -m p2pindex.chaos", description=__doc__.split("\n\n")[0]
    )
    defaults = ChaosOptions()
    parser.add_argument("--duration", type=float, default=defaults.duration)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--nodes", type=int, default=defaults.nodes)
    parser.add_argument("--n-replicas", type=int, default=defaults.n_replicas)
    parser.add_argument(
        "--quiesce",
        type=float,
        default=defaults.quiesce,
        help="seconds between the heal and the final reads and replica sample",
    )
    parser.add_argument(
        "--convergence-bound",
        type=float,
        help="seconds after the heal by which replicas must agree"
        " (default 60, or the quiesce plus 30 when longer)",
    )
    parser.add_argument("--clients", type=int, default=defaults.clients)
    parser.add_argument("--churn", action="store_true", help="nodes also join, leave, are removed")
    parser.add_argument(
        "--faults",
        default=",".join(SHAPES),
        help=f"comma-separated fault kinds to take turns with (default all: {','.join(SHAPES)})",
    )
    parser.add_argument("--workdir", help="keep node data and the history here")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.quiesce < 0:
        parser.error("--duration must be positive and --quiesce non-negative")
    if args.convergence_bound is not None and args.convergence_bound <= args.quiesce:
        parser.error(
            f"--convergence-bound {args.convergence_bound:g} is not past --quiesce"
            f" {args.quiesce:g}: replicas are sampled only after the quiesce"
        )
    if not 3 <= args.nodes <= 200 or not 1 <= args.n_replicas <= args.nodes:
        parser.error("need 3 <= --nodes <= 200 and 1 <= --n-replicas <= --nodes")
    if args.clients < 1:
        parser.error("--clients must be at least 1")
    faults = tuple(dict.fromkeys(kind.strip() for kind in args.faults.split(",") if kind.strip()))
    unknown = [kind for kind in faults if kind not in SHAPES]
    if unknown or not faults:
        parser.error(
            f"--faults: {'unknown kind ' + ', '.join(unknown) if unknown else 'no kind given'};"
            f" choose from {', '.join(SHAPES)}"
        )
    return ChaosOptions(
        duration=args.duration,
        seed=args.seed,
        nodes=args.nodes,
        n_replicas=args.n_replicas,
        quiesce=args.quiesce,
        convergence_bound=args.convergence_bound,
        clients=args.clients,
        churn=args.churn,
        workdir=args.workdir,
        faults=faults,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    options = parse_args(argv)
    if os.environ.get(INSIDE) == "1":
        try:
            return trio.run(run_inside, options)
        except HarnessError as exc:
            print(f"chaos: harness error: {exc}", file=sys.stderr)
            return 3
    missing = missing_requirements()
    if missing:
        print("chaos: cannot run: " + "; ".join(missing), file=sys.stderr)
        return 2
    command = [
        "unshare",
        "--net",
        "--pid",
        "--fork",
        "--kill-child",
        "--",
        sys.executable,
        "-m",
        "p2pindex.chaos",
        *argv,
    ]
    return subprocess.run(command, env={**os.environ, INSIDE: "1"}, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())

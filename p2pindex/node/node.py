"""The node: wires storage, membership, the ring, peers and the coordinator together.

Everything it touches from the outside world comes in through seams — a Transport, a
Storage, trio's clock, a wall clock and a seeded Random — so the same class runs as a real
process (``p2pindex serve``) and inside the deterministic simulation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping

import trio

from p2pindex import errors
from p2pindex.config import NodeConfig
from p2pindex.core.batching import fitting_prefix
from p2pindex.core.ring import Ring
from p2pindex.core.swim import Member, MemberChanged, Swim, SwimConfig
from p2pindex.net.base import Transport
from p2pindex.net.channel import BatchHandler, NodeLoad, RequestHandler, RpcChannel, Traffic
from p2pindex.net.secure.manager import SecurityManager
from p2pindex.net.secure.session import SecureStream
from p2pindex.node import admin, leaving, restart_meta
from p2pindex.node.admission import Admission
from p2pindex.node.antientropy import AntiEntropy, request_arcs
from p2pindex.node.client_batch import serve_one_batch
from p2pindex.node.cluster_view import ClusterView
from p2pindex.node.coordinator import Coordinator
from p2pindex.node.eventlog import EventLog, log_member_change
from p2pindex.node.fast_path import data_fast_path, with_client_batches
from p2pindex.node.gained import GainedRanges
from p2pindex.node.handoff import OwnershipHandoff
from p2pindex.node.hints import HintedHandoff
from p2pindex.node.identity import NodeIdentity
from p2pindex.node.load import LoadMeter
from p2pindex.node.membership import MembershipDriver
from p2pindex.node.monitor import IndexMonitor
from p2pindex.node.peers import PeerPool
from p2pindex.node.push_pull import PushPullExchange
from p2pindex.node.query import QueryService, query_mac_key
from p2pindex.node.reaper import TombstoneReaper, load_markers
from p2pindex.node.removals import Removals
from p2pindex.node.replace import prepare_replacement
from p2pindex.node.replica import (
    REPLICA_REQUESTS,
    IndexManager,
    ReplicaService,
    Versioning,
    decode_incoming,
)
from p2pindex.node.request_metrics import OPERATIONS, RequestMetrics
from p2pindex.node.restart_meta import RING_MEMBERS_META
from p2pindex.node.stats import StatisticsStore
from p2pindex.node.trace import RequestTrace, new_request_id, tracing
from p2pindex.security.access import Peer, PeerKind
from p2pindex.storage.base import Storage
from p2pindex.types import Address, Liveness, NodeState
from p2pindex.version import __version__
from p2pindex.wire.errors import reply_for_error
from p2pindex.wire.messages import (
    BatchRequest,
    DeleteReply,
    DeleteRequest,
    DigestRequest,
    ErrorReply,
    GetReply,
    GetRequest,
    Hello,
    IndexScan,
    KeyDigestRequest,
    Message,
    PushPull,
    PushPullReply,
    PutReply,
    PutRequest,
    QueryRequest,
    RangeScan,
    RangeScanReply,
    RecordsRequest,
    ReplicaAck,
    ReplicaWriteBatch,
)

log = logging.getLogger(__name__)
events = EventLog(log, trio.current_time)

HEALTH_CHECK_INTERVAL = 5.0
"""How often a DEGRADED node retries its storage to see whether it recovered."""
JOIN_WAIT = 10.0
POOR_HEALTH = 6
"""Lifeguard local-health score (0 = healthy) at which the node warns that its own probes
keep failing. It is a warning, not DEGRADED: a lossy network raises every node's score at
once, and taking each out of the data path would take the whole cluster down with them,
while a node that is merely slow is already avoided by load-aware routing."""
UNREACHABLE_GRACE = 3.0
"""Seconds a peer that refused a connection is skipped, before SWIM has an opinion."""
MAX_SCAN_BATCH = 4096
MAX_SCAN_ARCS = 1024


class Node:
    def __init__(
        self,
        config: NodeConfig,
        *,
        transport: Transport,
        storage: Storage,
        identity: NodeIdentity,
        rng: random.Random,
        wall_clock: Callable[[], float],
        swim_config: SwimConfig | None = None,
        security: SecurityManager | None = None,
        versioning: Versioning | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.node_id = identity.node_id
        self.storage = storage
        self.stats = StatisticsStore()
        self.traffic = Traffic()
        """Connections, frames and bytes of the binary protocol (``/metrics`` reads them)."""
        self.load = LoadMeter()
        self.request_metrics = RequestMetrics(self.stats, on_latency=self.load.record)
        self.security = security
        """None: no authentication (tests, `serve --insecure`, `simulate --insecure`)."""
        self._admission = Admission(config.admission, self.stats, trio.current_time)
        if security is not None:
            security.use_statistics(self.stats)
            security.gate = self._admission
            transport = security.wrap(transport, config.admission.max_handshakes)
        self._transport = transport
        self._rng = rng
        self._wall_clock = wall_clock
        self._swim_config = swim_config or SwimConfig.default()
        self._versioning = versioning
        """The version rules (None: core.versions); the simulator plants wrong ones."""
        self.view = ClusterView(self.node_id, config.advertised)
        self.state_reason = ""
        self.poor_health: int | None = None
        """The local-health score while it is at or above POOR_HEALTH (status warns)."""
        self._ring_members_saved = b""
        """The ring members as last saved: a rebuild that changes nothing saved writes nothing."""
        self.removals = Removals(
            self.view,
            storage,
            self.stats,
            cluster=config.cluster,
            save_meta=self._spawn_save_meta,
            rebuild_ring=self._rebuild_ring,
            gain_from=self._gain_from,
        )
        self._swim: Swim | None = None
        self._driver: MembershipDriver | None = None
        self._nursery: trio.Nursery | None = None
        self._index: IndexManager | None = None
        self._coordinator: Coordinator | None = None
        self._query: QueryService | None = None
        self._peers: PeerPool | None = None
        self._push_pull: PushPullExchange | None = None
        self._hints: HintedHandoff | None = None
        self._replica: ReplicaService | None = None
        self.handoff: OwnershipHandoff | None = None
        self._gained: GainedRanges | None = None
        self.antientropy: AntiEntropy | None = None
        self.reaper: TombstoneReaper | None = None
        self.monitor = IndexMonitor(self)
        self.leaving = False
        """Set once a leave (or drain) starts: the node stops coordinating requests (it
        relays them to the key's other replicas), hands its ranges over, then leaves."""
        self._seeds: tuple[Address, ...] = ()  # config.seeds minus its own address
        self.replaced_by: dict[str, str] = {}  # dead members a `serve --replace` stands in for
        self.stopped = trio.Event()
        """Set: ``run`` ends with a clean shutdown (after a leave, or a stop that keeps the
        membership: the node is down until it starts again, as itself)."""
        self.running = trio.Event()
        """Set once every part is up, before the join wait: status and health may answer."""
        self.held_bytes = NodeLoad(config.limits.node_in_flight)
        """Request and reply bytes held for every connection (``net.channel``), and the
        bodies of HTTP requests (``http.server``): one budget for both protocols."""

    # --- lifecycle --------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled (a crash) or until ``leave`` completes (a graceful exit)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            epoch, issued = await self._storage_epoch()
            self._index = IndexManager(
                self.storage,
                f"{self.node_id}.{epoch}",
                self.config.limits,
                self.stats,
                fresh_actor=self._fresh_actor,
                versioning=self._versioning,
                issued=issued,
            )
            reaped_at = load_markers(self.storage, self._index)
            incarnation = await self._next_incarnation()
            self.removals.load()
            bound = await nursery.start(self._transport.serve, self._handle_stream)
            self.address = self.config.advertise or bound
            self.view.address_holder[self.address] = self.node_id
            hello = Hello(self.node_id, str(self.address), self.config.cluster)
            self._peers = PeerPool(
                nursery, self._transport, self.config.limits, hello, self.stats, self.traffic
            )
            if self.security is not None:
                self.security.attach(nursery, self._peers.request, self.view.live_addresses)
            push_pull = self._push_pull = PushPullExchange(
                self._peers,
                self.security,
                lambda: self.view.members,
                self._swim_config.probe_interval,
            )
            self._coordinator = Coordinator(
                self.node_id,
                self,
                self._index,
                self._peers,
                self.config,
                self.stats,
                nursery.start_soon,
            )
            self._query = QueryService(
                self.node_id,
                self,
                self.storage,
                self._peers,
                self.config,
                self.stats,
                query_mac_key(bytes(self.identity.signing_key)),
            )
            self._hints = HintedHandoff(
                self,
                self.storage,
                self._peers,
                self.stats,
                self._wall_clock,
                max_bytes=self.config.hint_max_bytes_per_target,
                max_age=self.config.hint_max_age,
                departures=self.view,
                n_replicas=self.config.n_replicas,
            )
            self._replica = ReplicaService(
                self._index,
                self._hints,
                self.stats,
                degraded=self._write_refusal,
                storage_failed=self.storage_failed,
                unreadable=self._read_refusal,
            )
            self.handoff = OwnershipHandoff(
                self,
                self.storage,
                self._peers,
                self._apply_records,
                self.stats,
                self.config.n_replicas,
            )
            self._gained = GainedRanges(
                self.view, self.handoff, self.storage, self.stats, self.config.n_replicas
            )
            self.antientropy = AntiEntropy(
                self,
                self.storage,
                self._peers,
                self._apply_records,
                self.stats,
                random.Random(self._rng.getrandbits(64)),
                read_records=self._index.records,
                n_replicas=self.config.n_replicas,
                interval=self.config.anti_entropy_interval or 0.0,
                max_frame=self.config.limits.max_frame,
            )
            if self.config.tombstone_grace is not None:
                self.reaper = TombstoneReaper(
                    self,
                    self._index,
                    self.storage,
                    self._peers,
                    self.stats,
                    self._wall_clock,
                    n_replicas=self.config.n_replicas,
                    grace=self.config.tombstone_grace,
                    reaped_at=reaped_at,
                )
            self._seeds = self._seeds_without_self(bound)
            if self.config.replace is not None:
                await prepare_replacement(
                    self.view, self.config.replace, self._seeds, self._peers, self.storage
                )
                self.removals.persist()
            await self.handoff.drop_copies_if_it_left()
            if self._seeds and not self.handoff.already_synced():
                self.state = NodeState.SYNCING
                self.state_reason = "waiting for a seed or a known member to answer"
            restored = self._load_ring_members()
            seen_down = (
                []
                if restored
                else await restart_meta.down_ring_members(self._seeds, self.peers, self.node_id)
            )
            claims = self.security.claims if self.security is not None else None
            self._swim = Swim(
                self._swim_config,
                self.node_id,
                self.address,
                incarnation,
                self._rng,
                trio.current_time(),
                state=self.state,
                sealer=self.security.sealer if self.security is not None else None,
                claims=claims,
                tokens_of=self.view.token_sources().get(self.node_id),
            )
            # Down members stay in the ring (restart_meta.down_ring_members says why): those
            # saved before a restart, or for a node joining afresh those a seed lists.
            self._swim.restore([*restored, *seen_down], trio.current_time())
            self.view.members = {m.node_id: m for m in self._swim.members()}
            self._rebuild_ring()
            self._driver = MembershipDriver(
                self._swim,
                self._transport,
                push_pull.exchange,
                self._on_member_change,
                claims=claims,
                on_round_trip=self.stats.histogram("swim.probe_rtt").observe,
                on_removed=lambda: admin.stop_as_removed(self, "and refuses its connections"),
            )
            push_pull.start_push_pull = self._driver.start_push_pull
            await nursery.start(self._driver.run)
            if self._seeds or restored:
                # Members known before a restart confirm membership too (seeds may be down).
                known = [m.address for m in restored if m.address not in self._seeds]
                self._swim.join([*self._seeds, *known], trio.current_time())
            else:
                self._swim.join([], trio.current_time())  # the first node: nothing to confirm
            self._driver.notify()
            nursery.start_soon(self._hints.run)
            if self.config.anti_entropy_interval is not None:
                nursery.start_soon(self.antientropy.run)
            if self.reaper is not None:
                nursery.start_soon(self.reaper.run)
            nursery.start_soon(self._settle_ownership)
            await self._gained.resume(nursery)
            nursery.start_soon(self._housekeeping)
            if self.state is NodeState.DEGRADED:  # storage failed while starting
                nursery.start_soon(self._recover_storage)
            self.running.set()
            await self._wait_joined()
            log.info(
                "node %s listening on %s, %s%s (version %s, N=%d, %d member(s) in the ring)",
                self.node_id,
                self.address,
                self.state.value,
                f": {self.state_reason}" if self.state_reason else "",
                __version__,
                self.config.n_replicas,
                len(self.ring.nodes),
            )
            task_status.started(self.address)
            await self.stopped.wait()
            with contextlib.suppress(errors.StorageFailure):
                # The epoch in use now (a failed commit retires one while running), saved
                # before the clean mark: the next start may only keep an epoch that is saved.
                await self.storage.set_meta("actor_epoch", self._current_epoch().encode())
                await self.storage.set_meta("actor_issued", str(self._index.issued).encode())
                await self.storage.set_meta("clean_shutdown", b"1")
            log.info("node %s stopped (clean shutdown)", self.node_id)
            nursery.cancel_scope.cancel()

    async def leave(self, timeout: float = 5.0) -> bool:
        """Graceful exit: hand our data to the nodes that replace us, announce `left`, stop.

        Returns False when the leave was abandoned (``node/leaving.py``): the node is then
        a serving member again, and has said why in the log and in ``status``."""
        self.leaving = True
        log.info("node %s is leaving: handing its keys over", self.node_id)
        handoff, hints, written = self.handoff, self._hints, self._index
        if handoff and hints and written and len(self.ring.nodes) > 1:  # noqa: SIM102
            if not await leaving.hand_over(handoff, hints, written, self.view, self.stats):
                self.leaving = False  # abandoned: a serving member again
                return False
        if self._driver is not None:
            await self._driver.leave(timeout)
        self.stopped.set()
        return True

    def _seeds_without_self(self, bound: Address) -> tuple[Address, ...]:
        """The configured seeds minus this node's own addresses.

        Every node of a cluster takes the same seed list, so no node is special: one that
        lost its disk and restarts with its usual command line joins the others through them
        instead of forming a cluster of its own. Its own entry would only make it wait for
        itself, so it is dropped (a list naming nobody else starts a new cluster)."""
        own = {bound, self.address, self.config.listen, self.config.advertised}
        return tuple(seed for seed in self.config.seeds if seed not in own)

    async def _wait_joined(self) -> None:
        """Report ready once a seed answered, so the first request sees the cluster; if none
        answers within JOIN_WAIT, start anyway (retrying in the background) and say so,
        rather than hang a deployment whose seeds start later."""
        if self.membership_confirmed:
            return
        with trio.move_on_after(JOIN_WAIT):
            while not self.membership_confirmed and not self.stopped.is_set():
                await trio.sleep(0.02)
            return
        log.warning(
            "no seed or known member answered within %gs; still trying in the background, and "
            "refusing reads and writes (not_ready) until one does",
            JOIN_WAIT,
        )

    async def _settle_ownership(self) -> None:
        """A joining node pulls its ranges (SYNCING), then serves reads (ACTIVE)."""
        assert self.handoff is not None
        if self.state is not NodeState.SYNCING:
            await self.handoff.mark_synced()
            return
        while len(self.ring.nodes) < 2:
            await trio.sleep(0.1)
        self.set_state(NodeState.SYNCING, "receiving the data of its ranges")
        await trio.sleep(self._swim_config.gossip_interval * 5)
        await self.handoff.pull_ranges(from_every_replica=self.view.replacing() is not None)
        if self.antientropy is not None and self.config.anti_entropy_interval is not None:
            await self.antientropy.catch_up()
        self.set_state(NodeState.ACTIVE)

    def set_state(self, state: NodeState, reason: str = "") -> None:
        if state is self.state and reason == self.state_reason:
            return
        events.info(
            "state",
            "node %s is now %s%s",
            self.node_id,
            state.value,
            f": {reason}" if reason else "",
        )
        self.state = state
        self.state_reason = reason
        self.stats.incr(f"state.{state.value}")
        if self._swim is not None and self._driver is not None:
            self._swim.set_local_state(state, trio.current_time())
            self._driver.notify()

    def storage_failed(self, error: errors.StorageFailure) -> None:
        """Failing storage makes the node DEGRADED: it stops taking writes and says why."""
        events.error("storage", "storage error: %s", error)
        if self.state is NodeState.DEGRADED:
            return
        self.set_state(NodeState.DEGRADED, f"storage failing: {error}")
        assert self._nursery is not None
        self._nursery.start_soon(self._recover_storage)

    async def _recover_storage(self) -> None:
        while self.state is NodeState.DEGRADED:
            await trio.sleep(HEALTH_CHECK_INTERVAL)
            try:
                await self.storage.set_meta("health", str(self._wall_clock()).encode())
            except errors.StorageFailure:
                continue
            self.set_state(NodeState.ACTIVE)

    # --- cluster view (used by the coordinator and hinted handoff) -------------------------

    @property
    def state(self) -> NodeState:
        return self.view.state

    @state.setter
    def state(self, state: NodeState) -> None:
        self.view.state = state

    @property
    def address(self) -> Address:
        return self.view.address

    @address.setter
    def address(self, address: Address) -> None:
        self.view.address = address

    @property
    def ring(self) -> Ring:
        return self.view.ring

    def address_of(self, node_id: str) -> Address:
        return self.view.address_of(node_id)

    def usable(self, node_id: str) -> bool:
        return self.view.usable(node_id, trio.current_time())

    def reachable_ring_members(self) -> int:
        """Itself and the ring's members it would route a request to: what readiness and the
        status warnings count against a quorum, so the two never disagree."""
        now = trio.current_time()
        return sum(1 for m in self.ring.nodes if m == self.node_id or self.view.usable(m, now))

    def holds_copies(self, node_id: str) -> bool:
        return self.view.holds_copies(node_id, trio.current_time())

    @property
    def membership_confirmed(self) -> bool:
        """Whether this process has exchanged membership with a live member (or needs none).
        Until then its ring is only what it restored from disk or itself: a node that crashed
        soon after joining may have saved three members of nine, and a write it coordinated
        on that ring could be acknowledged at ONE by non-replicas and read by nobody."""
        return self._driver is not None and self._driver.joined

    def readable(self, node_id: str, key: bytes | None = None) -> bool:
        return self.view.readable(node_id, trio.current_time(), key)

    def serves_reads(self, node_id: str, key: bytes | None = None) -> bool:
        return self.view.serves_reads(node_id, trio.current_time(), key)

    async def keep_hint(self, target: str, key: bytes, record: bytes) -> None:
        """Hand a write this node coordinated as a fallback to hinted handoff."""
        assert self._hints is not None
        await self._hints.keep(target, key, record)

    def note_unreachable(self, node_id: str) -> None:
        """Data-path evidence: a refused connection skips the peer for a short grace period."""
        self.view.unreachable_until[node_id] = trio.current_time() + UNREACHABLE_GRACE

    def note_behind(self, node_id: str) -> None:
        """Data-path evidence: ``node_id`` missed a write, so anti-entropy visits it next."""
        if self.antientropy is not None:
            self.antientropy.mark_behind(node_id)

    def members(self) -> list[Member]:
        return sorted(self.view.members.values(), key=lambda m: m.node_id)

    def accuser(self, node_id: str) -> str | None:
        """The member whose accusation made ``node_id`` suspect or dead in this node's view
        (None while alive). Read from the view, not the SWIM table: the table can be a
        change ahead of the view until the driver hands the change on, and then the two
        would describe different verdicts."""
        return self.view.accusers.get(node_id)

    def membership_statistics(self) -> dict[str, int]:
        """The SWIM engine's counters (probes, refused input such as ``bad_claim``)."""
        return self._swim.statistics() if self._swim is not None else {}

    def _on_member_change(self, change: MemberChanged) -> None:
        member = change.member
        self.view.members[member.node_id] = member
        if change.accuser is None:
            self.view.accusers.pop(member.node_id, None)
        else:
            self.view.accusers[member.node_id] = change.accuser
        log_member_change(events, change, self.node_id, member.node_id in self.removals)
        if member.liveness is Liveness.ALIVE:
            if member.address != self.address:
                self.view.address_holder[member.address] = member.node_id
            if self.security is not None:
                self.security.note_member(member.node_id, member.address)
            self.view.unreachable_until.pop(member.node_id, None)
            self.view.dead_since.pop(member.node_id, None)
            previous = change.previous
            if previous is not None and previous.liveness is not Liveness.ALIVE:
                self.note_behind(member.node_id)  # back from suspicion or death
        elif member.liveness is Liveness.DEAD:
            self.view.dead_since.setdefault(member.node_id, trio.current_time())
        admin.note_change(self, change.previous, member)
        self.stats.incr(f"membership.{member.liveness.value}")
        self._rebuild_ring()

    def _rebuild_ring(self) -> None:
        before = len(self.view.ring.nodes)
        if self.view.rebuild_ring():
            after = len(self.view.ring.nodes)
            if after < self.config.n_replicas <= before:
                events.warning(
                    "ring",
                    "the ring has %d member(s), fewer than N=%d: every member holds every key",
                    after,
                    self.config.n_replicas,
                )
            self.stats.incr("ring.rebuilds")
            self._spawn_persist_ring_members()

    def _gain_from(self, node_id: str, before: Ring) -> None:
        """Pull the ranges this node gained when ``node_id`` left the ring (``before``)."""
        if self._nursery is not None and self._gained is not None:
            arcs = self._gained.begin(node_id, before)
            self._nursery.start_soon(self._gained.gain, node_id, arcs)

    def spawn(self, task: Callable[[], Awaitable[object]]) -> None:
        """Run ``task`` in the node's nursery (the node is running)."""
        assert self._nursery is not None
        self._nursery.start_soon(task)

    @property
    def peers(self) -> PeerPool:
        assert self._peers is not None
        return self._peers

    def _load_ring_members(self) -> list[Member]:
        raw = self.storage.get_meta(RING_MEMBERS_META)
        if not raw:
            return []
        self._ring_members_saved = raw
        return restart_meta.ring_members(raw, self.node_id, self.removals)

    def _spawn_persist_ring_members(self) -> None:
        doc = restart_meta.ring_members_doc(self.view.members, self.ring, self.node_id)
        if doc != self._ring_members_saved:
            self._ring_members_saved = doc
            self._spawn_save_meta(RING_MEMBERS_META, doc)

    def _spawn_save_meta(self, name: str, value: bytes) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._save_meta, name, value)

    async def _save_meta(self, name: str, value: bytes) -> None:
        """Best effort: a full disk must not take the node down; the next change retries."""
        try:
            await self.storage.set_meta(name, value)
        except errors.StorageFailure as exc:
            self.stats.incr("storage.meta_failures")
            log.warning("could not save %s: %s", name, exc)

    async def _housekeeping(self) -> None:
        """Periodic local checks: auto-removal of long-dead members, local health."""
        assert self._swim is not None
        while True:
            await trio.sleep(1.0)
            self.stats.set_gauge("load.held_bytes", self.held_bytes.held)  # net.channel.NodeLoad
            limit = self.config.remove_dead_after
            if limit is not None:
                now = trio.current_time()
                for node_id, since in list(self.view.dead_since.items()):
                    if now - since >= limit and node_id not in self.removals:
                        log.warning("removing %s: dead for %.0fs", node_id, now - since)
                        self.removals.remove(node_id)
            self._watch_local_health(self._swim.local_health())

    def _watch_local_health(self, score: int) -> None:
        """Log when the local-health score crosses POOR_HEALTH, either way."""
        if score >= POOR_HEALTH and self.poor_health is None:
            events.warning(
                "health",
                "local health is poor (score %d): this node's probes of its peers keep "
                "failing, so its network or CPU may be impaired; it keeps serving",
                score,
            )
        elif score < POOR_HEALTH and self.poor_health is not None:
            events.info("health", "local health recovered (score %d)", score)
        self.poor_health = score if score >= POOR_HEALTH else None

    # --- connections and dispatch ----------------------------------------------------------

    async def _handle_stream(self, stream: trio.abc.Stream, peer: Address) -> None:
        handler: RequestHandler = self._dispatch
        node_peer = True
        authorize = None
        if self.security is not None:
            handler = self.security.guard(stream, self._dispatch)
            assert isinstance(stream, SecureStream)  # guard() refuses any other stream
            node_peer = stream.peer.kind is PeerKind.NODE
            if not node_peer:  # what guard() does for a client's every request
                authorize = functools.partial(self.security.authorize, stream.peer)
        fast_path = None
        if self._coordinator is not None and self._replica is not None:  # else still starting
            fast_path = with_client_batches(
                self.request_metrics.timed(
                    data_fast_path(
                        self._coordinator, self._replica, node_peer=node_peer, authorize=authorize
                    )
                ),
                self.config.limits,
                self._count_bad_input,
            )
        client = None
        if isinstance(stream, SecureStream) and not node_peer:
            client = stream.peer.credential.public_key
        member = node_peer and self.security is not None  # insecure: anyone is a "node"
        refusal = self._admission.connect(client, node=member)
        if refusal is not None:
            log.debug("refused a connection from %s: %s", peer, refusal)
            await trio.aclose_forcefully(stream)
            return
        channel = RpcChannel(
            stream,
            self.config.limits,
            handler=handler,
            name=f"from {peer}",
            on_bad_input=self._count_bad_input,
            fast_path=fast_path,
            node_load=self.held_bytes,
            refuse_when_overloaded=not node_peer or self.security is None,
            on_event=self.stats.incr,
            throttle=None if client is None else self._admission.throttle(client),
            traffic=self.traffic,
        )
        try:
            await channel.run()
        finally:
            self._admission.disconnect(client, node=member, broke_protocol=channel.broke_protocol)

    async def serve_client(self, message: Message, peer: Peer | None) -> Message:
        """One client request that arrived outside a binary session (the HTTP API).

        The same authorisation a client session's guard applies, then the same dispatch:
        there is one copy of request handling whichever protocol a client speaks."""
        self.authorize_client(message, peer)
        if type(message) not in OPERATIONS:
            return await self._dispatch(message)
        started = time.perf_counter()
        try:
            reply = await self._dispatch(message)
        except errors.P2PIndexError as exc:
            self.request_metrics.observe(message, time.perf_counter() - started, exc.code)
            raise
        code = reply.code if isinstance(reply, ErrorReply) else None
        self.request_metrics.observe(message, time.perf_counter() - started, code)
        return reply

    def client_rate_refusal(self, client: bytes) -> str | None:
        """Count a request of client key ``client`` that arrived by another protocol (the
        HTTP API) against the key's rate, as a binary session's does; why it is refused."""
        return self._admission.take(client)

    def authorize_client(self, message: Message, peer: Peer | None) -> None:
        """Raise PermissionDenied unless ``peer`` may send ``message`` (as a session's guard)."""
        if self.security is not None:
            if peer is None:
                raise errors.PermissionDenied("this node needs client credentials")
            self.security.authorize(peer, message)

    def client_batch_handlers(self) -> Mapping[type[Message], BatchHandler]:
        """The batch handlers a binary client connection's data path uses (timed), for
        requests that arrive by another protocol; authorise each first (authorize_client)."""
        assert self._coordinator is not None and self._replica is not None
        fast_path = data_fast_path(self._coordinator, self._replica, node_peer=False)
        return self.request_metrics.timed(fast_path).batch

    def ring_known(self) -> bool:
        """Whether this node sees enough members to place N replicas of every key."""
        return len(self.ring.nodes) >= self.config.n_replicas

    def _count_bad_input(self, reason: str) -> None:
        self.stats.incr("rejected.bad_input")
        log.debug("rejected input: %s", reason)

    async def _dispatch(self, message: Message) -> Message:
        assert self._coordinator is not None and self._index is not None
        if isinstance(message, PutRequest | DeleteRequest | GetRequest) and message.trace:
            return await self._traced(message)
        if isinstance(message, PutRequest | DeleteRequest):
            return await self._coordinator.put(message)
        if isinstance(message, GetRequest):
            return await self._coordinator.get(message)
        if isinstance(message, BatchRequest):
            # Outside a connection's data path (see client_batch.serve_one_batch).
            return await serve_one_batch(
                message, self._coordinator, self.config.limits, self._count_bad_input
            )
        if isinstance(message, REPLICA_REQUESTS):
            assert self._replica is not None
            return await self._replica.serve(message)
        if isinstance(message, ReplicaWriteBatch):
            return await self._replica_write_batch(message)
        if isinstance(message, RangeScan):
            return self._range_scan(message)
        if isinstance(message, QueryRequest | IndexScan):
            assert self._query is not None
            if isinstance(message, IndexScan):
                return self._query.scan(message)
            return await self.request_metrics.timed_query(message, self._query.query)
        if isinstance(message, DigestRequest | KeyDigestRequest | RecordsRequest):
            assert self.antientropy is not None
            return self.antientropy.serve(message)
        if isinstance(message, PushPull):
            if self._swim is None or self._push_pull is None:  # still asking a seed
                raise errors.NotReady(f"node {self.node_id} is starting and has no membership yet")
            reply = self._swim.push_pull_respond(message.state, self.address, trio.current_time())
            if self._driver is not None:
                self._driver.notify()
            return PushPullReply(reply, self._push_pull.floor())
        return await admin.serve_admin(self, message)

    async def _traced(self, message: PutRequest | DeleteRequest | GetRequest) -> Message:
        """Serve a request that asked for the coordinator's steps, and answer them with it.

        A failure is answered as the ErrorReply it would have been, with the steps that led
        to it: that is when an operator most wants to see them. Steps are timed by trio's
        clock, so a simulated cluster shows simulated time.
        """
        trace = RequestTrace(new_request_id(), clock=trio.current_time)
        untraced = dataclasses.replace(message, trace=False)
        started = time.perf_counter()
        with tracing(trace):
            try:
                reply = await self._dispatch(untraced)
            except errors.P2PIndexError as exc:
                reply = reply_for_error(exc)
        # The batched data path times the requests it serves; this one is timed here.
        code = reply.code if isinstance(reply, ErrorReply) else None
        self.request_metrics.observe(message, time.perf_counter() - started, code)
        if isinstance(reply, PutReply | GetReply | DeleteReply | ErrorReply):
            return dataclasses.replace(reply, trace=trace.doc())
        return reply

    def _write_refusal(self) -> str | None:
        if self.state is NodeState.DEGRADED:
            return f"node {self.node_id} is degraded and takes no writes"
        if self.view.handing_over:
            return f"node {self.node_id} is leaving and has handed its ranges over"
        return None

    def _read_refusal(self, keys: list[bytes]) -> str | None:
        if self.view.state is NodeState.SYNCING:
            return f"node {self.node_id} is still receiving its ranges (SYNCING)"
        if self.view.gaining and self._gained is not None:
            return self._gained.refusal(keys)
        return None

    def scan_refusal(self, runs: list[tuple[int, int]]) -> str | None:
        if self.view.state is NodeState.SYNCING:
            return f"node {self.node_id} is still receiving its ranges and answers no scans yet"
        if self.view.gaining and self._gained is not None:
            return self._gained.scan_refusal(runs)
        return None

    async def _replica_write_batch(self, message: ReplicaWriteBatch) -> Message:
        await self._apply_records(message.items)
        return ReplicaAck()

    async def _apply_records(self, records: list[tuple[bytes, bytes]]) -> None:
        assert self._index is not None
        items = [(key, record, decode_incoming(record, self.stats)) for key, record in records]
        try:
            await self._index.apply_many(items)
        except errors.StorageFailure as exc:
            self.storage_failed(exc)
            raise
        self.stats.incr("replica.batch_items", len(items))

    def _range_scan(self, message: RangeScan) -> Message:
        arcs = request_arcs(message.start, message.end, MAX_SCAN_ARCS)
        limit = max(1, min(message.limit, MAX_SCAN_BATCH))
        items: list[tuple[bytes, bytes]] = []
        after = message.after
        room = self.config.limits.max_frame // 2
        for position, (start, end) in enumerate(arcs):
            found = self.storage.scan_range(start, end, after, limit - len(items))
            kept = fitting_prefix(found, room)  # one record at least: the scan goes on
            room -= sum(len(key) + len(record) for key, record in kept)
            items += kept
            if len(kept) < len(found) or (room <= 0 and kept):  # a frame's worth: stop here
                return RangeScanReply(items, position)
            if len(items) == limit:  # this arc may hold more: the next scan continues it
                return RangeScanReply(items, position)
            after = None
        return RangeScanReply(items, len(arcs))

    # --- persistent node facts --------------------------------------------------------------

    def _fresh_actor(self) -> str:
        """A new version actor for this node, used from the next write on."""
        return f"{self.node_id}.{self._rng.randbytes(4).hex()}"

    def _current_epoch(self) -> str:
        assert self._index is not None
        return self._index.actor.removeprefix(f"{self.node_id}.")

    async def _storage_epoch(self) -> tuple[str, int]:
        epoch, issued, failure = await restart_meta.storage_epoch(self.storage, self._rng)
        if failure is not None:
            self.state = NodeState.DEGRADED
            self.state_reason = failure
        return epoch, issued

    async def _next_incarnation(self) -> int:
        incarnation, failure = await restart_meta.next_incarnation(self.storage, self._wall_clock)
        if failure is not None:
            self.state = NodeState.DEGRADED
            self.state_reason = failure
        return incarnation

"""A lean virtual-time simulator for many SWIM cores: the harness behind simulations/membership_*.

It drives real ``Swim`` engines (the production state machine, bytes and all) through a heapq
event loop, with per-link latency, uniform loss, partitions, node stalls, crashes and
restarts, and byte counters. No trio and no threads: a 1,000-node cluster runs far faster
than real time, and every run is reproduced exactly from its seed.

With ``signed=True`` every node runs with the production security pieces: a certified
Ed25519 key (its node id derives from it), a ``DatagramSealer`` that signs and checks every
datagram, and ``Claims`` that sign and check every membership record, all against one
cluster authority and a wall clock that follows virtual time. Datagram sizes and what gets
dropped are then exactly those of a secure cluster; only the CPU cost is paid for real.

A stalled node processes nothing; when the stall ends it wakes like a frozen process does:
its overdue timer fires first, then it reads the datagrams and streams that queued up, all
at the wake-up time.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from nacl.signing import SigningKey

from p2pindex.core.swim import Member, MemberChanged, Swim, SwimConfig
from p2pindex.core.swim.messages import Alive
from p2pindex.core.swim.outputs import drain
from p2pindex.errors import ProtocolError
from p2pindex.security.certs import (
    TrustSet,
    cluster_id_of,
    issue_node_certificate,
    issue_revocations,
    node_id_of,
)
from p2pindex.security.claims import Claims
from p2pindex.security.counting import Tally
from p2pindex.security.datagrams import DatagramSealer
from p2pindex.security.directory import CertificateDirectory
from p2pindex.security.trust import TrustState
from p2pindex.types import Address, Liveness, NodeState

UDP_IP_HEADER = 28
"""IPv4 + UDP header bytes, added when reporting bandwidth on the wire."""

_TIMER, _DELIVER, _SERVE, _REPLY, _WAKE, _CALL = range(6)

WALL_CLOCK_START = 1_800_000_000.0
"""The wall clock (for certificates and datagram timestamps) at virtual time 0."""
CERTIFICATE_LIFETIME = 30 * 24 * 3600

Observer = Callable[[float, "SimNode", MemberChanged], None]


@dataclass(eq=False)
class SimNode:
    index: int
    node_id: str
    address: Address
    swim: Swim
    config: SwimConfig
    up: bool = True
    stalled_until: float = 0.0
    backlog: list[tuple[int, tuple[object, ...]]] = field(default_factory=list)
    timer_at: float | None = None
    base_latency: float = 0.001
    udp_out: int = 0
    udp_in: int = 0
    tcp_out: int = 0
    tcp_in: int = 0
    datagrams_out: int = 0
    datagrams_in: int = 0
    incarnation: int = 1
    group: int = 0
    stall_on_probe: float = 0.0
    """A stall of this length starts right after the node's next probe ping (0: none armed)."""
    probes_seen: int = 0
    signing_key: SigningKey | None = None
    security: Tally = field(default_factory=Tally)
    """The node's security counters (``swim.*`` from its sealer, ``claims.*`` from its
    claims), kept across restarts."""
    outputs: _NodeOutputs | None = None


class SimAuthority:
    """One cluster authority for a signed simulation: node keys, certificates, revocations.

    Every node consults one shared certificate directory (each real node would hold its own
    copy with the same content); keys derive from the seed, so runs stay reproducible.
    """

    def __init__(self, seed: int, wall_clock: Callable[[], float]) -> None:
        self._seed = seed
        self.wall_clock = wall_clock
        self.key = self.derive_key("authority")
        public = bytes(self.key.verify_key)
        self.trust = TrustSet(cluster_id_of(public), frozenset({public}))
        self.state = TrustState(self.trust)
        self.directory = CertificateDirectory(self.state, wall_clock)
        self._serial = 0
        self._revoked: set[str] = set()
        self._claims: list[Claims] = []

    def derive_key(self, name: str) -> SigningKey:
        return SigningKey(hashlib.blake2b(f"{self._seed}/key/{name}".encode()).digest()[:32])

    def certify(self, signing_key: SigningKey) -> str:
        """Certify ``signing_key`` for this cluster; its node id."""
        self._serial += 1
        public = bytes(signing_key.verify_key)
        blob = issue_node_certificate(
            self.key,
            self.trust.cluster_id,
            public,
            issued=int(self.wall_clock()) - 60,
            lifetime=CERTIFICATE_LIFETIME,
            serial=self._serial,
        )
        self.directory.add_raw(blob)
        return node_id_of(public)

    def revoke(self, node_id: str) -> None:
        self._revoked.add(node_id)
        document = issue_revocations(
            self.key,
            self.trust.cluster_id,
            version=len(self._revoked),
            issued=int(self.wall_clock()),
            node_ids=sorted(self._revoked),
        )
        self.state.offer(document, "the simulation")
        for claims in self._claims:
            claims.forget_verified()

    def sealer(self, signing_key: SigningKey, counts: Tally) -> DatagramSealer:
        return DatagramSealer(
            signing_key, self.trust.cluster_id, self.directory, self.wall_clock, counts
        )

    def claims(self, signing_key: SigningKey, counts: Tally) -> Claims:
        node_id = node_id_of(bytes(signing_key.verify_key))
        claims = Claims(signing_key, node_id, self.trust.cluster_id, self.directory, counts)
        self._claims.append(claims)
        return claims


class SwimSimulation:
    def __init__(
        self,
        *,
        seed: int = 0,
        latency: tuple[float, float] = (0.0002, 0.002),
        loss: float = 0.0,
        connect_timeout: float = 1.0,
        signed: bool = False,
    ) -> None:
        self.rng = random.Random(seed)
        self._seed = seed
        self.now = 0.0
        self.latency = latency
        self.loss = loss
        self.connect_timeout = connect_timeout
        self.nodes: list[SimNode] = []
        self.by_address: dict[Address, SimNode] = {}
        self.partitioned = False
        self.observers: list[Observer] = []
        self.taps: list[Callable[[SimNode, bytes, Address], None]] = []
        """Called with every datagram a node is handed (receiver, bytes, source): capture."""
        self.max_datagram = 0
        self.events_processed = 0
        self._heap: list[tuple[float, int, int, tuple[object, ...]]] = []
        self._counter = 0
        self.authority = SimAuthority(seed, self.wall_clock) if signed else None

    def wall_clock(self) -> float:
        return WALL_CLOCK_START + self.now

    # --- building the cluster ----------------------------------------------------------------

    def add_node(
        self,
        config: SwimConfig,
        *,
        node_id: str | None = None,
        seeds: Sequence[Address] = (),
        incarnation: int = 1,
    ) -> SimNode:
        index = len(self.nodes)
        signing_key = None
        if self.authority is not None:
            if node_id is not None:
                raise ValueError("a signed simulation derives node ids from node keys")
            signing_key = self.authority.derive_key(f"node/{index}")
            node_id = self.authority.certify(signing_key)
        node_id = node_id or hashlib.blake2b(f"{self._seed}/{index}".encode()).hexdigest()[:64]
        address = Address(f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}", 7000)
        counts = Tally()
        swim = self._make_swim(config, node_id, address, incarnation, index, signing_key, counts)
        node = SimNode(
            index,
            node_id,
            address,
            swim,
            config,
            incarnation=incarnation,
            signing_key=signing_key,
            security=counts,
        )
        node.base_latency = self.rng.uniform(*self.latency) / 2
        self.nodes.append(node)
        self.by_address[address] = node
        if seeds:
            swim.join(seeds, self.now)
        self._flush(node)
        return node

    def build(self, config: SwimConfig, n: int) -> list[SimNode]:
        """``n`` nodes that already know each other (as after a long-settled join); signed
        nodes hold each other's signed alive records, as if verified while they settled."""
        nodes = [self.add_node(config) for _ in range(n)]
        members: list[Member | Alive] = [
            x.swim.own_record()
            if self.authority is not None
            else Member(x.node_id, x.address, x.incarnation, Liveness.ALIVE, NodeState.ACTIVE)
            for x in nodes
        ]
        for node in nodes:
            node.swim.restore(members, self.now)
            self._flush(node)
        return nodes

    def _make_swim(
        self,
        config: SwimConfig,
        node_id: str,
        address: Address,
        incarnation: int,
        salt: int,
        signing_key: SigningKey | None,
        counts: Tally,
    ) -> Swim:
        rng = random.Random(f"{self._seed}/{node_id}/{incarnation}/{salt}")
        sealer = claims = None
        if self.authority is not None and signing_key is not None:
            sealer = self.authority.sealer(signing_key, counts)
            claims = self.authority.claims(signing_key, counts)
        return Swim(
            config, node_id, address, incarnation, rng, self.now, sealer=sealer, claims=claims
        )

    # --- faults ------------------------------------------------------------------------------

    def crash(self, node: SimNode) -> None:
        node.up = False
        node.backlog.clear()
        node.timer_at = None

    def restart(
        self,
        node: SimNode,
        *,
        incarnation: int,
        seeds: Sequence[Address],
        new_address: bool = False,
        config: SwimConfig | None = None,
    ) -> None:
        """Start a fresh engine with the same identity (optionally at a new address)."""
        if new_address:
            del self.by_address[node.address]
            index = len(self.by_address) + 1_000_000 + node.index
            node.address = Address(f"10.{128 + (index >> 16 & 127)}.{index >> 8 & 255}.1", 7001)
            self.by_address[node.address] = node
        node.config = config or node.config
        node.incarnation = incarnation
        node.swim = self._make_swim(
            node.config,
            node.node_id,
            node.address,
            incarnation,
            self._counter,
            node.signing_key,
            node.security,
        )
        node.up = True
        node.stalled_until = 0.0
        node.backlog.clear()
        node.timer_at = None
        node.swim.join(seeds, self.now)
        self._flush(node)

    def stall(self, node: SimNode, duration: float) -> None:
        if not node.up:
            return
        until = max(node.stalled_until, self.now + duration)
        node.stalled_until = until
        self._push(until, _WAKE, (node,))

    def flush(self, node: SimNode) -> None:
        """Send what ``node``'s engine produced after a call from outside the loop
        (set_local_state, leave), as the runtime driver does."""
        if node.up:
            self._flush(node)

    def stall_after_next_probe(self, node: SimNode, duration: float) -> None:
        """Freeze ``node`` right after it sends its next probe, while the ack is in flight:
        the way a CPU-starved process loses the processor between sending and receiving."""
        if node.up:
            node.stall_on_probe = duration
            node.probes_seen = node.swim.statistics().get("probes", 0)

    def partition(self, groups: Iterable[Iterable[SimNode]] | None) -> None:
        """Only nodes of the same group can talk; None heals everything."""
        for node in self.nodes:
            node.group = 0
        self.partitioned = groups is not None
        if groups is not None:
            for number, group in enumerate(groups, start=1):
                for node in group:
                    node.group = number

    def at(self, when: float, action: Callable[[], None]) -> None:
        self._push(when, _CALL, (action,))

    def inject(self, target: SimNode, data: bytes, source: Address) -> None:
        """Deliver raw bytes to ``target`` now, as if sent from ``source`` (an attacker on
        the network): no loss, no partition, no latency."""
        self._push(self.now, _DELIVER, (target, target.address, data, source))

    # --- the event loop ----------------------------------------------------------------------

    def run_until(self, until: float, *, stop: Callable[[], bool] | None = None) -> None:
        heap = self._heap
        while heap and heap[0][0] <= until:
            when, _, kind, args = heapq.heappop(heap)
            self.now = when
            self.events_processed += 1
            if kind == _TIMER:
                self._on_timer(args[0], when)  # type: ignore[arg-type]
            elif kind == _DELIVER:
                self._on_deliver(*args)  # type: ignore[arg-type]
            elif kind == _SERVE:
                self._on_serve(*args)  # type: ignore[arg-type]
            elif kind == _REPLY:
                self._on_reply(*args)  # type: ignore[arg-type]
            elif kind == _WAKE:
                self._on_wake(args[0])  # type: ignore[arg-type]
            else:
                args[0]()  # type: ignore[operator]
            if stop is not None and stop():
                return
        self.now = max(self.now, until)

    def _push(self, when: float, kind: int, args: tuple[object, ...]) -> None:
        self._counter += 1
        heapq.heappush(self._heap, (when, self._counter, kind, args))

    def _busy(self, node: SimNode) -> bool:
        return node.stalled_until > self.now

    def _on_timer(self, node: SimNode, when: float) -> None:
        if not node.up or node.timer_at != when:
            return
        node.timer_at = None
        if self._busy(node):
            return
        node.swim.handle_timer(when)
        self._flush(node)
        if node.stall_on_probe and node.swim.statistics().get("probes", 0) > node.probes_seen:
            self.stall(node, node.stall_on_probe)
            node.stall_on_probe = 0.0

    def _on_deliver(self, node: SimNode, address: Address, data: bytes, source: Address) -> None:
        if not node.up or node.address != address:
            return
        if self._busy(node):
            node.backlog.append((_DELIVER, (node, address, data, source)))
            return
        node.udp_in += len(data)
        node.datagrams_in += 1
        for tap in self.taps:
            tap(node, data, source)
        node.swim.receive_datagram(data, source, self.now)
        self._flush(node)

    def _on_serve(
        self, server: SimNode, address: Address, client: SimNode, swim: Swim, payload: bytes
    ) -> None:
        if not server.up or server.address != address or server.group != client.group:
            self._push(self.now + self.connect_timeout, _REPLY, (client, swim, address, None))
            return
        if self._busy(server):
            server.backlog.append((_SERVE, (server, address, client, swim, payload)))
            return
        server.tcp_in += len(payload)
        try:
            reply: bytes | None = server.swim.push_pull_respond(payload, client.address, self.now)
        except ProtocolError:
            reply = None
        if reply is not None:
            server.tcp_out += len(reply)
        self._flush(server)
        delay = self._delay(server, client)
        self._push(self.now + delay, _REPLY, (client, swim, address, reply))

    def _on_reply(self, client: SimNode, swim: Swim, address: Address, reply: bytes | None) -> None:
        if not client.up or client.swim is not swim:
            return
        if self._busy(client):
            client.backlog.append((_REPLY, (client, swim, address, reply)))
            return
        if reply is not None:
            client.tcp_in += len(reply)
        follow_up = swim.push_pull_complete(address, reply, self.now)
        if follow_up is not None:
            self._start_stream(client, address, follow_up)
        self._flush(client)

    def _on_wake(self, node: SimNode) -> None:
        if not node.up or self._busy(node):
            return
        node.swim.handle_timer(self.now)
        self._flush(node)
        backlog, node.backlog = node.backlog, []
        for kind, args in backlog:
            if kind == _DELIVER:
                self._on_deliver(*args)  # type: ignore[arg-type]
            elif kind == _SERVE:
                self._on_serve(*args)  # type: ignore[arg-type]
            else:
                self._on_reply(*args)  # type: ignore[arg-type]

    def _delay(self, src: SimNode, dst: SimNode) -> float:
        return (src.base_latency + dst.base_latency) * self.rng.uniform(0.9, 1.1)

    def _start_stream(self, client: SimNode, address: Address, payload: bytes) -> None:
        client.tcp_out += len(payload)
        server = self.by_address.get(address)
        if server is None:
            self._push(
                self.now + self.connect_timeout, _REPLY, (client, client.swim, address, None)
            )
            return
        delay = self._delay(client, server)
        self._push(self.now + delay, _SERVE, (server, address, client, client.swim, payload))

    def _flush(self, node: SimNode) -> None:
        outputs = node.outputs
        if outputs is None:
            outputs = node.outputs = _NodeOutputs(self, node)
        drain(node.swim, outputs)
        deadline = node.swim.next_deadline()
        if deadline is not None and (node.timer_at is None or deadline < node.timer_at):
            node.timer_at = max(deadline, self.now)
            self._push(node.timer_at, _TIMER, (node,))

    def _send(self, node: SimNode, address: Address, data: bytes) -> None:
        size = len(data)
        node.udp_out += size
        node.datagrams_out += 1
        if size > self.max_datagram:
            self.max_datagram = size
        target = self.by_address.get(address)
        rng = self.rng
        if target is None or (self.loss and rng.random() < self.loss):
            return
        if self.partitioned and target.group != node.group:
            return
        delay = (node.base_latency + target.base_latency) * rng.uniform(0.9, 1.1)
        self._push(self.now + delay, _DELIVER, (target, address, data, node.address))


class _NodeOutputs:
    """One node's outputs in the simulation (see ``core.swim.outputs``)."""

    __slots__ = ("_node", "_sim")

    def __init__(self, sim: SwimSimulation, node: SimNode) -> None:
        self._sim = sim
        self._node = node

    def send_datagram(self, address: Address, data: bytes) -> None:
        self._sim._send(self._node, address, data)

    def start_push_pull(self, address: Address, join: bool) -> None:
        node = self._node
        self._sim._start_stream(node, address, node.swim.push_pull_request(join))

    def member_changed(self, event: MemberChanged) -> None:
        sim = self._sim
        for observer in sim.observers:
            observer(sim.now, self._node, event)

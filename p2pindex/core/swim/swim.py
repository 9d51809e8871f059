"""The SWIM + Lifeguard protocol engine: a pure state machine driven by bytes, time and a seed.

Inputs are datagrams, timer calls and push-pull payloads, each with ``now``; outputs are
datagrams to send, push-pull exchanges to start and membership events, drained by whoever
runs the engine (the trio driver in production, the virtual-time simulator in tests).
Nothing here reads a clock or touches a socket, so a thousand engines can run in one
process from a seed and behave exactly as they would on a network.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter, deque
from collections.abc import Iterable, Sequence

from p2pindex.errors import ConfigError
from p2pindex.types import Address, Liveness, NodeState

from .awareness import Awareness
from .broadcast import BroadcastQueue
from .claims import Claim, ClaimSigner
from .codec import (
    HEADER_SLACK,
    MAX_SEQ,
    DecodeError,
    Sealer,
    assemble,
    datagram_prefix,
    decode_datagram,
    encode_control,
    encode_record,
    valid_node_id,
)
from .config import HARD_MAX_DATAGRAM, SwimConfig
from .messages import (
    Ack,
    Alive,
    Dead,
    Nack,
    Ping,
    PingReq,
    Record,
    Suspect,
)
from .push_pull import Exchange, PushPullSide
from .state import LIVE, Member, MemberChanged, MemberTable
from .suspicion import Suspicion

ALIVE = Liveness.ALIVE
SUSPECT = Liveness.SUSPECT
DEAD = Liveness.DEAD
LEFT = Liveness.LEFT

MAX_ROUND_TRIPS = 1024
"""Probe round trips held until a driver takes them (``probe_round_trips``)."""


class _Probe:
    __slots__ = (
        "deadline",
        "direct",
        "expected_nacks",
        "nackers",
        "relays",
        "sent_at",
        "seq",
        "target",
    )

    def __init__(
        self, target: str, seq: int, sent_at: float, timeout_at: float, deadline: float
    ) -> None:
        self.target = target
        self.seq = seq
        self.sent_at = sent_at
        """The ``now`` the ping went out with: an ack's ``now`` minus this is the round trip."""
        self.direct: float | None = timeout_at
        """When to give up on the direct ping and ask relays (None once asked)."""
        self.deadline = deadline
        self.relays: set[str] = set()
        self.expected_nacks = 0
        self.nackers: set[str] = set()


class _Relay:
    __slots__ = ("deadline", "requester", "requester_seq", "target")

    def __init__(self, requester: Address, requester_seq: int, target: str, deadline: float):
        self.requester = requester
        self.requester_seq = requester_seq
        self.target = target
        self.deadline = deadline


class Swim(PushPullSide):
    def __init__(
        self,
        config: SwimConfig,
        node_id: str,
        address: Address,
        incarnation: int,
        rng: random.Random,
        now: float,
        state: NodeState = NodeState.ACTIVE,
        sealer: Sealer | None = None,
        claims: ClaimSigner | None = None,
        tokens_of: str | None = None,
    ) -> None:
        if not valid_node_id(node_id):
            raise ConfigError(f"bad node id {node_id!r}")
        if not isinstance(incarnation, int) or not 0 <= incarnation < 1 << 63:
            raise ConfigError(f"bad incarnation {incarnation!r}")
        self._cfg = config
        self.node_id = node_id
        self.address = address
        self._inc = incarnation
        self._state = state
        self._tokens_of = tokens_of
        self._rng = rng
        self._sealer = sealer
        self._claims = claims
        self._overhead = sealer.overhead if sealer is not None else 0
        self._lifeguard = config.lifeguard
        self._table = MemberTable(node_id, config.push_pull_buckets)
        self._awareness = Awareness(config.awareness_max)
        self._queue = BroadcastQueue()
        self._out: list[tuple[Address, bytes]] = []
        self._pp_out: list[tuple[Address, bool]] = []
        self._events: deque[MemberChanged] = deque()
        self._stats: Counter[str] = Counter()
        self._round_trips: list[float] = []
        self._seq = rng.randrange(MAX_SEQ)
        self._prefix_cache: tuple[int, bytes] = (-1, b"")

        self._probe_order: list[str] = []
        self._probe_index = 0
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self._dead_probes: dict[int, tuple[str, float]] = {}
        self._suspicions: dict[str, Suspicion] = {}
        self._suspicion_heap: list[tuple[float, str]] = []
        self._reap_heap: list[tuple[float, str]] = []
        self._recent_dead: list[tuple[float, str]] = []
        self._correct_sender = False

        self._next_probe: float | None = now + rng.uniform(0, config.probe_interval)
        self._next_gossip: float | None = None
        self._next_push_pull: float | None = None
        if config.push_pull_interval > 0:
            self._next_push_pull = now + rng.uniform(0, config.push_pull_interval)
        self._next_dead_probe: float | None = None

        self._seeds: tuple[Address, ...] = ()
        self._joined = False
        self._join_retry_at: float | None = None
        self._join_backoff = config.join_retry_initial
        self._exchanges: dict[Address, Exchange] = {}

        self._leaving_since: float | None = None
        self._leave_seqs: set[int] = set()
        self._leave_acks = 0
        self._leave_targets = 0
        self._leave_timed_out = False

        self._table.put(node_id, self._self_alive(), None, now)

    # --- queries -----------------------------------------------------------------------------

    @property
    def incarnation(self) -> int:
        return self._inc

    @property
    def joined(self) -> bool:
        return self._joined

    def members(self) -> list[Member]:
        return [entry.member for entry in self._table.entries.values()]

    def member(self, node_id: str) -> Member | None:
        entry = self._table.get(node_id)
        return entry.member if entry is not None else None

    def local_health(self) -> int:
        return self._awareness.score

    def statistics(self) -> dict[str, int]:
        stats = dict(self._stats)
        stats["members"] = len(self._table)
        stats["live_members"] = len(self._table.live)
        stats["local_health"] = self._awareness.score
        stats["broadcast_queue"] = len(self._queue)
        return stats

    # --- outputs -----------------------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[Address, bytes]]:
        out, self._out = self._out, []
        return out

    def probe_round_trips(self) -> list[float]:
        """Seconds from each probe's ping to its ack (direct or through a relay) since the
        last call, computed from the ``now`` values passed in: the driver that measures time
        turns them into a histogram. At most ``MAX_ROUND_TRIPS`` wait for a driver that
        never asks (the simulator); later ones are counted as ``round_trips_dropped``."""
        out, self._round_trips = self._round_trips, []
        return out

    def push_pulls_to_start(self) -> list[tuple[Address, bool]]:
        out, self._pp_out = self._pp_out, []
        return out

    def next_event(self) -> MemberChanged | None:
        return self._events.popleft() if self._events else None

    def next_deadline(self) -> float | None:
        best = self._next_probe
        for t in (
            self._next_gossip,
            self._next_push_pull,
            self._next_dead_probe,
            self._join_retry_at,
        ):
            if t is not None and (best is None or t < best):
                best = t
        probe = self._probe
        if probe is not None:
            t = probe.direct if probe.direct is not None else probe.deadline
            if best is None or t < best:
                best = t
        for relay in self._relays.values():
            if best is None or relay.deadline < best:
                best = relay.deadline
        for _, expiry in self._dead_probes.values():
            if best is None or expiry < best:
                best = expiry
        heap = self._suspicion_heap
        while heap:
            deadline, node_id = heap[0]
            suspicion = self._suspicions.get(node_id)
            if suspicion is not None and suspicion.deadline == deadline:
                if best is None or deadline < best:
                    best = deadline
                break
            heapq.heappop(heap)
        if self._reap_heap and (best is None or self._reap_heap[0][0] < best):
            best = self._reap_heap[0][0]
        if self._leaving_since is not None and not self._leave_done():
            t = self._leaving_since + self._cfg.leave_timeout
            if best is None or t < best:
                best = t
        return best

    # --- inputs: lifecycle -------------------------------------------------------------------

    def join(self, seeds: Sequence[Address], now: float) -> None:
        """Push-pull with every seed; retried with backoff until one exchange succeeds."""
        self._seeds = tuple(s for s in seeds if s != self.address)
        if not self._seeds:
            self._joined = True
            return
        self._join_attempt(now)

    def own_record(self) -> Alive:
        """This node's current alive claim (signed when claims are on), as others store it."""
        return self._table.entries[self.node_id].alive

    def restore(self, members: Iterable[Member | Alive], now: float) -> None:
        """Load members known from elsewhere (a saved snapshot, a test fixture) without
        gossiping them: they enter as alive at their incarnation and are probed as usual.
        The caller vouches for them (they come from this node's own keeping), so nothing is
        verified here. An ``Alive`` record is kept as it is, signature and all, and relays
        as such; a bare ``Member`` enters unsigned, so peers that check claims drop it."""
        for member in members:
            node_id = member.node_id
            if node_id == self.node_id or node_id in self._table.entries:
                continue
            if len(self._table) >= self._cfg.max_members:
                break
            if isinstance(member, Alive):
                alive = member
            else:
                alive = Alive(
                    node_id,
                    member.incarnation,
                    member.address,
                    member.state,
                    None,
                    member.tokens_of,
                )
            self._set(node_id, alive, None, now)
            self._add_probe_candidate(node_id)

    def leave(self, now: float) -> None:
        if self._leaving_since is not None:
            return
        self._leaving_since = now
        self._stats["leaves"] += 1
        record = self._signed(Dead(self.node_id, self._inc, self.node_id))
        self._set(self.node_id, self._table.entries[self.node_id].alive, record, now)
        payload = encode_record(record)
        self._broadcast(self.node_id, payload, now)
        targets = self._table.sample_live(self._rng, self._cfg.leave_fanout, set())
        self._leave_targets = len(targets)
        for target in targets:
            seq = self._next_seq()
            self._leave_seqs.add(seq)
            entry = self._table.entries[target]
            ping = encode_control(Ping(seq, target))
            self._send(entry.member.address, [ping, payload])
        self._probe = None
        self._next_probe = None
        self._next_push_pull = None
        self._next_dead_probe = None
        self._join_retry_at = None

    def leave_complete(self, now: float) -> bool:
        """True once someone acknowledged our leave, or the bounded wait is over."""
        if self._leaving_since is None:
            return False
        return self._leave_done() or now >= self._leaving_since + self._cfg.leave_timeout

    def set_local_state(self, state: NodeState, now: float) -> None:
        if self._leaving_since is not None or state == self._state:
            return
        self._state = state
        self._inc += 1
        self._publish_self(now)

    def report_data_path(self, node_id: str, ok: bool, now: float) -> None:
        """A data-path reply works as an ack of a running probe; a failure is only counted."""
        self._stats["data_path_ok" if ok else "data_path_failed"] += 1
        probe = self._probe
        if ok and probe is not None and probe.target == node_id:
            self._probe_succeeded()

    # --- inputs: timers ----------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        due = self.next_deadline()
        if due is None or now < due:
            return
        cfg = self._cfg
        if self._lifeguard and cfg.stall_guard and now - due > cfg.stall_threshold:
            self._stalled(now)
        self._probe_timers(now)
        self._expire_waits(now)
        self._expire_suspicions(now)
        self._periodic_timers(now)
        leaving = self._leaving_since
        if leaving is not None and now >= leaving + cfg.leave_timeout:
            # The bounded wait is over: the deadline must not stay due, or a driver that
            # sleeps until the next deadline is woken at once, forever.
            self._leave_timed_out = True

    def _probe_timers(self, now: float) -> None:
        probe = self._probe
        if probe is not None and probe.direct is not None and now >= probe.direct:
            self._probe_indirect(now)
        if probe is not None and now >= probe.deadline and self._probe is probe:
            self._probe_failed(now)

    def _expire_waits(self, now: float) -> None:
        """Relayed probes nobody answered (a nack to the requester) and old dead probes."""
        if self._relays:
            for seq, relay in list(self._relays.items()):
                if now >= relay.deadline:
                    del self._relays[seq]
                    if self._lifeguard:
                        self._stats["nacks_sent"] += 1
                        self._send(relay.requester, [encode_control(Nack(relay.requester_seq))])
        if self._dead_probes:
            for seq, (_, expiry) in list(self._dead_probes.items()):
                if now >= expiry:
                    del self._dead_probes[seq]

    def _expire_suspicions(self, now: float) -> None:
        heap = self._suspicion_heap
        while heap and heap[0][0] <= now:
            deadline, node_id = heapq.heappop(heap)
            suspicion = self._suspicions.get(node_id)
            if suspicion is not None and suspicion.deadline == deadline:
                self._suspicion_expired(node_id, suspicion, now)

    def _periodic_timers(self, now: float) -> None:
        if self._next_probe is not None and now >= self._next_probe:
            self._start_probe(now)
        if self._next_gossip is not None and now >= self._next_gossip:
            self._gossip(now)
        if self._next_push_pull is not None and now >= self._next_push_pull:
            self._periodic_push_pull(now)
        if self._next_dead_probe is not None and now >= self._next_dead_probe:
            self._probe_dead(now)
        if self._join_retry_at is not None and now >= self._join_retry_at:
            self._join_retry_at = None
            self._join_attempt(now)
        while self._reap_heap and self._reap_heap[0][0] <= now:
            _, node_id = heapq.heappop(self._reap_heap)
            self._reap(node_id, now)

    # --- inputs: datagrams -------------------------------------------------------------------

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        stats = self._stats
        stats["datagrams_in"] += 1
        stats["bytes_in"] += len(data)
        if len(data) > HARD_MAX_DATAGRAM:
            stats["bad_oversized"] += 1
            return
        payload = data if self._sealer is None else self._sealer.open(data, source)
        if payload is None:
            stats["bad_unsealed"] += 1
            return
        try:
            datagram, unknown = decode_datagram(payload)
        except DecodeError as exc:
            stats["bad_" + exc.reason] += 1
            return
        if unknown:
            stats["bad_unknown_message"] += unknown
        sender = datagram.sender
        if sender == self.node_id:
            stats["bad_self_sender"] += 1
            return
        entry = self._table.get(sender)
        if (
            entry is not None
            and entry.member.liveness in LIVE
            and entry.member.address != source
            and datagram.incarnation <= entry.member.incarnation
        ):
            stats["bad_sender_mismatch"] += 1
            return
        self._correct_sender = False
        for record in datagram.records:
            if self._verified(record):
                self._merge(record, now)
        corrected = False
        for message in datagram.controls:
            if type(message) is Ping:
                corrected |= self._on_ping(message, sender, source)
            elif type(message) is Ack:
                self._on_ack(message.seq, sender, now)
            elif type(message) is Nack:
                self._on_nack(message.seq, sender)
            else:
                self._on_ping_req(message, source, now)
        if self._correct_sender and not corrected:
            # The sender holds old news about us (a suspicion we refuted, or an accusation
            # we just refuted): tell it directly. Gossip alone may not reach it before its
            # suspicion runs out; a refutation's few transmissions go to random members.
            self._stats["corrections_sent"] += 1
            self._send(source, list(self._table.entries[self.node_id].encoded))

    def receive_records(self, records: Iterable[Record], now: float) -> None:
        """Records that reached this node another way (held back until their signer's
        certificate arrived): checked and merged as if they had come in a datagram."""
        for record in records:
            if self._verified(record):
                self._merge(record, now)

    def _on_ping(self, ping: Ping, sender: str, source: Address) -> bool:
        """Ack ``ping``; True when the ack carries our own record (the sender had old news).

        The buddy system works both ways: a member we suspect that pings us gets our
        suspicion with the ack, so it can refute even if it is not our probe target soon."""
        if ping.target != self.node_id:
            self._stats["bad_wrong_target"] += 1
            return False
        self._stats["acks_sent"] += 1
        parts = [encode_control(Ack(ping.seq))]
        if self._correct_sender:
            parts.extend(self._table.entries[self.node_id].encoded)
        if self._lifeguard:
            entry = self._table.get(sender)
            if entry is not None and isinstance(entry.status, Suspect):
                parts.append(entry.encoded[-1])
        self._send(source, parts)
        return self._correct_sender

    def _on_ping_req(self, request: PingReq, source: Address, now: float) -> None:
        if request.target == self.node_id:
            self._stats["bad_self_target"] += 1
            return
        self._stats["relays"] += 1
        seq = self._next_seq()
        deadline = now + self._cfg.indirect_timeout
        self._relays[seq] = _Relay(source, request.seq, request.target, deadline)
        self._send(request.address, [encode_control(Ping(seq, request.target))])

    def _on_ack(self, seq: int, sender: str, now: float) -> None:
        probe = self._probe
        if (
            probe is not None
            and probe.seq == seq
            and (sender == probe.target or sender in probe.relays)
        ):
            self._stats["acks"] += 1
            if len(self._round_trips) < MAX_ROUND_TRIPS:
                self._round_trips.append(now - probe.sent_at)
            else:
                self._stats["round_trips_dropped"] += 1
            self._probe_succeeded()
            return
        relay = self._relays.get(seq)
        if relay is not None and sender == relay.target:
            del self._relays[seq]
            self._send(relay.requester, [encode_control(Ack(relay.requester_seq))])
            return
        dead_probe = self._dead_probes.get(seq)
        if dead_probe is not None and dead_probe[0] == sender:
            del self._dead_probes[seq]
            self._stats["dead_probe_acks"] += 1
            entry = self._table.get(sender)
            if entry is not None:
                self._start_exchange(entry.member.address, False)
            return
        if seq in self._leave_seqs:
            self._leave_seqs.discard(seq)
            self._leave_acks += 1
            return
        self._stats["bad_unexpected_ack"] += 1

    def _on_nack(self, seq: int, sender: str) -> None:
        probe = self._probe
        if probe is not None and probe.seq == seq and sender in probe.relays:
            probe.nackers.add(sender)
            self._stats["nacks"] += 1
        else:
            self._stats["bad_unexpected_nack"] += 1

    # --- probing -----------------------------------------------------------------------------

    def _scaled(self, seconds: float) -> float:
        return self._awareness.scale(seconds) if self._lifeguard else seconds

    def _probe_timeout(self) -> float:
        timeout = self._cfg.probe_timeout
        return self._scaled(timeout) if self._cfg.scale_probe_timeout else timeout

    def _next_target(self) -> str | None:
        entries = self._table.entries
        for _ in range(2):
            order = self._probe_order
            while self._probe_index < len(order):
                candidate = order[self._probe_index]
                self._probe_index += 1
                entry = entries.get(candidate)
                if entry is not None and entry.member.liveness in LIVE:
                    return candidate
            order = list(self._table.live.items)
            self._rng.shuffle(order)
            self._probe_order = order
            self._probe_index = 0
            if not order:
                return None
        return None

    def _add_probe_candidate(self, node_id: str) -> None:
        """New members go in at a random place so detection bounds hold (memberlist)."""
        order = self._probe_order
        order.append(node_id)
        j = self._rng.randrange(len(order))
        order[j], order[-1] = order[-1], order[j]

    def _start_probe(self, now: float) -> None:
        if self._probe is not None:
            self._next_probe = self._probe.deadline
            return
        interval = self._scaled(self._cfg.probe_interval)
        self._next_probe = now + interval
        target = self._next_target()
        if target is None:
            return
        entry = self._table.entries[target]
        seq = self._next_seq()
        parts = [encode_control(Ping(seq, target))]
        if self._lifeguard and isinstance(entry.status, Suspect):
            parts.append(entry.encoded[-1])
        self._stats["probes"] += 1
        self._probe = _Probe(target, seq, now, now + self._probe_timeout(), now + interval)
        self._send(entry.member.address, parts)

    def _probe_indirect(self, now: float) -> None:
        probe = self._probe
        assert probe is not None
        probe.direct = None
        entry = self._table.get(probe.target)
        if entry is None or entry.member.liveness not in LIVE:
            self._probe = None
            return
        relays = self._table.sample_live(self._rng, self._cfg.indirect_checks, {probe.target})
        probe.relays = set(relays)
        probe.expected_nacks = len(relays) if self._lifeguard else 0
        request = encode_control(PingReq(probe.seq, probe.target, entry.member.address))
        for relay in relays:
            self._stats["ping_reqs"] += 1
            self._send(self._table.entries[relay].member.address, [request])

    def _probe_succeeded(self) -> None:
        self._probe = None
        if self._lifeguard:
            self._awareness.apply(-1)

    def _probe_failed(self, now: float) -> None:
        probe = self._probe
        assert probe is not None
        self._probe = None
        self._stats["probe_failures"] += 1
        if self._lifeguard:
            if probe.expected_nacks:
                self._awareness.apply(probe.expected_nacks - len(probe.nackers))
            else:
                self._awareness.apply(1)
        entry = self._table.get(probe.target)
        if entry is not None and entry.member.liveness in LIVE:
            self._stats["suspicions"] += 1
            accusation = Suspect(probe.target, entry.member.incarnation, self.node_id)
            self._merge(self._signed(accusation), now)

    def _stalled(self, now: float) -> None:
        """Our own timer fired late: verdicts that fell due while we were frozen wait for the
        backlog (which may hold the very acks and refutations they need) instead of firing."""
        self._stats["stalls"] += 1
        self._awareness.apply(1)
        grace = now + self._probe_timeout()
        probe = self._probe
        if probe is not None:
            if probe.direct is not None and probe.direct <= now:
                probe.direct = grace
                probe.deadline = max(probe.deadline, grace + self._probe_timeout())
            elif probe.deadline <= now:
                probe.deadline = grace
        for relay in self._relays.values():
            if relay.deadline <= now:
                relay.deadline = grace
        for node_id, suspicion in self._suspicions.items():
            if suspicion.deadline <= now:
                suspicion.postpone(grace)
                heapq.heappush(self._suspicion_heap, (suspicion.deadline, node_id))

    def _probe_dead(self, now: float) -> None:
        """Ping one random dead member, telling it it is thought dead, so that a member cut
        off by a partition hears of it once the partition heals and refutes."""
        self._next_dead_probe = None
        dead = self._table.dead.items
        if not dead or not self._cfg.dead_probe_interval:
            return
        self._next_dead_probe = now + self._cfg.dead_probe_interval
        target = dead[self._rng.randrange(len(dead))]
        entry = self._table.entries[target]
        seq = self._next_seq()
        self._dead_probes[seq] = (target, now + self._cfg.probe_interval)
        self._stats["dead_probes"] += 1
        self._send(entry.member.address, [encode_control(Ping(seq, target)), entry.encoded[-1]])

    # --- membership rules --------------------------------------------------------------------

    def _merge(self, record: Record, now: float, stream: bool = False) -> None:
        """Apply one record by SWIM's rules; ``stream`` marks push-pull (a remote death is
        only a suspicion here, so the subject gets a chance to refute)."""
        node_id = record.node_id
        if node_id == self.node_id:
            self._about_self(record, now)
            return
        stats = self._stats
        entry = self._table.get(node_id)
        if type(record) is Alive:
            if entry is None:
                if len(self._table) >= self._cfg.max_members:
                    stats["bad_table_full"] += 1
                    return
            elif record.incarnation <= entry.member.incarnation:
                stats["stale_records"] += 1
                return
            revived = entry is None or entry.member.liveness not in LIVE
            self._suspicions.pop(node_id, None)
            self._set(node_id, record, None, now)
            self._broadcast(node_id, encode_record(record), now)
            if revived:
                self._add_probe_candidate(node_id)
            return
        if entry is None:
            stats["bad_unknown_member"] += 1
            return
        current = entry.member
        incarnation = record.incarnation
        if incarnation < current.incarnation:
            stats["stale_records"] += 1
            return
        if type(record) is Suspect:
            if current.liveness is SUSPECT and incarnation == current.incarnation:
                suspicion = self._suspicions.get(node_id)
                if self._lifeguard and suspicion is not None and suspicion.confirm(record.accuser):
                    stats["confirmations"] += 1
                    heapq.heappush(self._suspicion_heap, (suspicion.deadline, node_id))
                    self._broadcast(node_id, encode_record(record), now)
                else:
                    stats["stale_records"] += 1
                return
            if incarnation == current.incarnation and current.liveness is not ALIVE:
                stats["stale_records"] += 1
                return
            self._set(node_id, entry.alive, record, now)
            self._start_suspicion(node_id, record.accuser, incarnation, now)
            self._broadcast(node_id, encode_record(record), now)
            return
        liveness = record.liveness
        if incarnation == current.incarnation and (
            current.liveness is LEFT or (current.liveness is DEAD and liveness is DEAD)
        ):
            stats["stale_records"] += 1
            return
        if stream and liveness is DEAD and current.liveness in LIVE:
            self._merge(self._signed(Suspect(node_id, incarnation, self.node_id)), now)
            return
        self._suspicions.pop(node_id, None)
        self._set(node_id, entry.alive, record, now)
        self._broadcast(node_id, encode_record(record), now)

    def _about_self(self, record: Record, now: float) -> None:
        if self._leaving_since is not None:
            return
        if type(record) is Alive:
            if record.incarnation > self._inc or (
                record.incarnation == self._inc
                and (
                    record.address != self.address
                    or record.state != self._state
                    or record.tokens_of != self._tokens_of
                )
            ):
                self._stats["bad_impersonation"] += 1
                self._refute(record.incarnation, now)
            return
        if record.incarnation < self._inc:
            self._stats["stale_accusations"] += 1
            self._correct_sender = True
            return
        self._refute(record.incarnation, now)

    def _refute(self, accused: int, now: float) -> None:
        """Only we raise our incarnation: past any claim about us, then tell everyone."""
        self._stats["refutations"] += 1
        self._inc = max(self._inc, accused) + 1
        if self._lifeguard:
            self._awareness.apply(1)
        self._publish_self(now)
        self._correct_sender = True

    def _publish_self(self, now: float) -> None:
        record = self._self_alive()
        self._set(self.node_id, record, None, now)
        self._broadcast(self.node_id, encode_record(record), now)

    def _self_alive(self) -> Alive:
        return self._signed(
            Alive(self.node_id, self._inc, self.address, self._state, None, self._tokens_of)
        )

    def _signed(self, record: Claim) -> Claim:
        """A claim this node makes, signed when claims are on."""
        return self._claims.sign(record) if self._claims is not None else record

    def _verified(self, record: Record) -> bool:
        """Whether a received record may be merged: its maker's signature checks out (or
        claims are off). Relays keep records byte for byte, so the signature travels along."""
        if self._claims is None or self._claims.verify(record):
            return True
        self._stats["bad_claim"] += 1
        return False

    def _set(self, node_id: str, alive: Alive, status: Suspect | Dead | None, now: float) -> None:
        change = self._table.put(node_id, alive, status, now)
        if change is None:
            return
        self._events.append(change)
        liveness = change.member.liveness
        if liveness in LIVE:
            return
        if liveness is DEAD:
            self._stats["dead_recorded"] += 1
            self._recent_dead.append((now, node_id))
            if self._next_dead_probe is None and self._cfg.dead_probe_interval > 0:
                interval = self._cfg.dead_probe_interval
                self._next_dead_probe = now + self._rng.uniform(0, interval)
        else:
            self._stats["left_recorded"] += 1
        heapq.heappush(self._reap_heap, (now + self._cfg.dead_record_ttl, node_id))

    def _start_suspicion(self, node_id: str, accuser: str, incarnation: int, now: float) -> None:
        cfg = self._cfg
        n = self._table.estimate()
        minimum = cfg.suspicion_min(n)
        if self._lifeguard:
            k = cfg.suspicion_confirmations if n - 2 >= cfg.suspicion_confirmations else 0
            maximum = cfg.suspicion_max(n)
        else:
            k, maximum = 0, minimum
        suspicion = Suspicion(accuser, incarnation, now, k, minimum, maximum)
        self._suspicions[node_id] = suspicion
        heapq.heappush(self._suspicion_heap, (suspicion.deadline, node_id))

    def _suspicion_expired(self, node_id: str, suspicion: Suspicion, now: float) -> None:
        del self._suspicions[node_id]
        entry = self._table.get(node_id)
        if entry is None or entry.member.liveness is not SUSPECT:
            return
        if entry.member.incarnation != suspicion.incarnation:
            return
        self._stats["deaths"] += 1
        self._merge(self._signed(Dead(node_id, suspicion.incarnation, self.node_id)), now)

    def _reap(self, node_id: str, now: float) -> None:
        entry = self._table.get(node_id)
        if entry is None or entry.member.liveness in LIVE or node_id == self.node_id:
            return
        if entry.changed_at + self._cfg.dead_record_ttl > now:
            return
        self._table.remove(node_id)
        self._queue.discard(node_id)
        self._stats["reaped"] += 1

    # --- dissemination -----------------------------------------------------------------------

    def _broadcast(self, node_id: str, payload: bytes, now: float) -> None:
        self._queue.put(node_id, payload)
        if self._next_gossip is None:
            self._next_gossip = now + self._rng.uniform(0, self._cfg.gossip_interval)

    def _gossip_targets(self, now: float) -> list[str]:
        """Random live members, plus members dead for less than gossip_to_dead_time."""
        recent = self._recent_dead
        horizon = now - self._cfg.gossip_to_dead_time
        if recent and recent[0][0] < horizon:
            self._recent_dead = recent = [(t, i) for t, i in recent if t >= horizon]
        live = self._table.live.items
        total = len(live) + len(recent)
        k = min(self._cfg.gossip_nodes, total)
        chosen: list[str] = []
        for index in self._rng.sample(range(total), k) if total else ():
            node_id = live[index] if index < len(live) else recent[index - len(live)][1]
            if node_id not in chosen:
                chosen.append(node_id)
        return chosen

    def _gossip(self, now: float) -> None:
        self._next_gossip = None
        for target in self._gossip_targets(now):
            if not self._queue:
                break
            entry = self._table.get(target)
            if entry is None:
                continue
            self._stats["gossip_datagrams"] += 1
            self._send(entry.member.address, [])
        if self._queue:
            self._next_gossip = now + self._cfg.gossip_interval

    def _send(self, address: Address, parts: list[bytes]) -> None:
        """Send ``parts`` topped up with queued updates, never over the datagram budget."""
        inc, prefix = self._prefix_cache
        if inc != self._inc:
            prefix = datagram_prefix(self.node_id, self._inc)
            self._prefix_cache = (self._inc, prefix)
        budget = self._cfg.max_datagram - self._overhead - HEADER_SLACK - len(prefix)
        budget -= sum(len(p) for p in parts)
        if self._queue:
            limit = self._cfg.retransmit_limit(self._table.estimate())
            parts = parts + self._queue.take(budget, limit)
        if not parts:
            return
        payload = assemble(prefix, 3, parts)
        data = self._sealer.seal(payload) if self._sealer is not None else payload
        if len(data) > HARD_MAX_DATAGRAM:
            self._stats["oversize_dropped"] += 1
            return
        self._stats["datagrams_out"] += 1
        self._stats["bytes_out"] += len(data)
        self._out.append((address, data))

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & MAX_SEQ
        return self._seq

    def _leave_done(self) -> bool:
        return self._leave_acks > 0 or self._leave_targets == 0 or self._leave_timed_out

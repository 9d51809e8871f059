"""A simulated network: the nodes' Transport seam backed by virtual time and injected faults.

One :class:`SimNetwork` carries every stream and datagram of a simulation. A single delivery
task (:meth:`SimNetwork.run`) owns a heap of timed deliveries, so every message is delivered at
a virtual time drawn from the seed and the order of events is a function of the seed alone.

The model, kept close to what TCP and UDP do on a real network:

* **Hosts.** Each endpoint is a host named by its address's host part (``n1``, ``c2``...).
  Faults name hosts; ports only select the listener.
* **Partitions** are sets of blocked *directed* links ``(src, dst)``, so halves, bridges,
  rings and one-way cuts are all just link sets. Several partitions may be active at once;
  a link is blocked while any of them blocks it.
* **Streams** are reliable and ordered. Each chunk is delivered after a delay sampled from the
  link's distribution, never before an earlier chunk. A connect across a blocked link fails with
  ``OSError(EHOSTUNREACH)`` after a round trip; a connect to a host with no listener fails with
  ``ConnectionRefusedError``. An established stream whose data cannot get through (forward
  link blocked) or whose acknowledgements cannot come back (reverse link blocked) stalls, and
  if that lasts ``stream_break_after`` seconds its sender's side breaks like a TCP
  retransmission timeout. Data that later reaches a side that is closed, broken or crashed
  resets the sender's side (an RST). Loss, duplication and reordering never apply to streams.
* **Datagrams** are lost, duplicated and reordered (a random extra delay) at the configured
  rates, dropped when their link is blocked at delivery time, and dropped when the receiver's
  inbox (a socket buffer) is full or the receiver is down.
* **Pause** (SIGSTOP) freezes a host at its I/O boundary: its transport calls block until it
  resumes, while deliveries to it keep queueing in its buffers. The node's own timers still
  fire during the pause, but whatever they try to send or receive waits; this is the one
  difference from a real stopped process, whose timers would fire only after it resumes.
* **Slow host**: every message to or from it takes an extra sampled delay.
* **Crash** closes a host's listener, inbox and connections as the kernel does for a killed
  process: peers read end-of-file after the data already in flight, and data sent to the dead
  side resets its sender.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import math
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

import trio

from p2pindex.net.base import StreamHandler
from p2pindex.sim.determinism import Trace
from p2pindex.types import Address

MAX_DATAGRAM: Final = 65_507
"""The largest UDP payload over IPv4; a larger send fails as it would on a socket."""
DEFAULT_RECEIVE_SIZE: Final = 65_536
EPHEMERAL_PORTS: Final = 40_000

Link = tuple[str, str]
"""A directed link between two hosts: (source, destination)."""


class DelayKind(Enum):
    CONSTANT = "constant"
    UNIFORM = "uniform"
    EXPONENTIAL = "exponential"
    LOGNORMAL = "lognormal"
    PARETO = "pareto"


@dataclass(frozen=True, slots=True)
class Delay:
    """A one-way delay distribution in seconds, never below ``minimum``.

    ``mean`` is the distribution's mean (its median for lognormal); ``shape`` is the lognormal
    sigma or the Pareto alpha. Samples are capped at ``cap`` so one draw cannot stall a run.
    """

    kind: DelayKind = DelayKind.EXPONENTIAL
    minimum: float = 0.0005
    mean: float = 0.002
    shape: float = 1.5
    cap: float = 10.0

    def __post_init__(self) -> None:
        if self.minimum < 0 or self.mean < self.minimum:
            raise ValueError(
                f"delay needs 0 <= minimum <= mean, got minimum={self.minimum} mean={self.mean}"
            )
        if self.kind is DelayKind.PARETO and self.shape <= 1:
            raise ValueError(f"pareto delay needs shape (alpha) > 1, got {self.shape}")
        if self.kind is DelayKind.LOGNORMAL and self.shape <= 0:
            raise ValueError(f"lognormal delay needs shape (sigma) > 0, got {self.shape}")
        if self.cap < self.mean:
            raise ValueError(f"delay cap {self.cap} is below its mean {self.mean}")

    def sample(self, rng: random.Random) -> float:
        spread = self.mean - self.minimum
        if self.kind is DelayKind.CONSTANT or spread == 0:
            value = self.mean
        elif self.kind is DelayKind.UNIFORM:
            value = self.minimum + rng.random() * 2 * spread
        elif self.kind is DelayKind.EXPONENTIAL:
            value = self.minimum + rng.expovariate(1 / spread)
        elif self.kind is DelayKind.LOGNORMAL:
            value = self.minimum + spread * rng.lognormvariate(0.0, self.shape)
        else:
            value = self.minimum + spread * (self.shape - 1) * (rng.paretovariate(self.shape) - 1)
        return min(value, self.cap)


DEFAULT_DELAY: Final = Delay()


@dataclass(frozen=True, slots=True)
class DatagramFaults:
    """Loss, duplication and reordering rates for datagrams on some links."""

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.05
    """Upper bound of the extra uniform delay given to a reordered datagram (seconds)."""

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"datagram {name} rate must be within 0..1, not {value}")
        if self.reorder_delay < 0:
            raise ValueError("reorder_delay must not be negative")


@dataclass(slots=True)
class _Overlay:
    """One active network fault: what it changes and which hosts' links it touches."""

    blocked: frozenset[Link] = frozenset()
    datagrams: DatagramFaults | None = None
    delay: Delay | None = None
    hosts: frozenset[str] | None = None
    """None: every link. Otherwise only links with an endpoint among these hosts."""

    def touches(self, src: str, dst: str) -> bool:
        return self.hosts is None or src in self.hosts or dst in self.hosts


class _Side(Enum):
    OPEN = "open"
    CLOSED = "closed"
    BROKEN = "broken"
    DEAD = "dead"


class _Pipe:
    """One direction of a connection: chunks in flight, then bytes waiting to be read."""

    __slots__ = (
        "buffer",
        "conn",
        "direction",
        "dst",
        "eof",
        "last_at",
        "pending",
        "reader_busy",
        "scheduled",
        "src",
        "trouble_since",
        "unacked",
        "waiter",
    )

    def __init__(self, conn: _Connection, direction: int, src: str, dst: str) -> None:
        self.conn = conn
        self.direction = direction
        self.src = src
        self.dst = dst
        self.pending: deque[tuple[float, bytes | None]] = deque()
        self.buffer = bytearray()
        self.eof = False
        self.last_at = 0.0
        self.scheduled = False
        self.trouble_since: float | None = None
        self.unacked = False
        self.waiter: trio.Event | None = None
        self.reader_busy = False

    def wake(self) -> None:
        if self.waiter is not None:
            self.waiter.set()
            self.waiter = None


class _Connection:
    __slots__ = ("hosts", "ident", "pipes", "sides")

    def __init__(self, ident: int, client: str, server: str) -> None:
        self.ident = ident
        self.hosts = (client, server)
        self.sides = [_Side.OPEN, _Side.OPEN]
        self.pipes = (_Pipe(self, 0, client, server), _Pipe(self, 1, server, client))


class _Host:
    """A machine on the network; it outlives the node processes that run on it."""

    __slots__ = (
        "conns",
        "inbox",
        "listener",
        "name",
        "paused",
        "resumed",
        "slow",
        "transport",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.paused = False
        self.resumed = trio.Event()
        self.resumed.set()
        self.slow: Delay | None = None
        self.transport: SimTransport | None = None
        self.listener: tuple[int, trio.MemorySendChannel[tuple[SimStream, Address]]] | None = None
        self.inbox: trio.MemorySendChannel[tuple[bytes, Address]] | None = None
        self.conns: dict[_Connection, None] = {}

    async def wait_running(self) -> None:
        while self.paused:
            await self.resumed.wait()


class SimNetwork:
    """Every host, link and message of one simulation, driven by one delivery task."""

    def __init__(
        self,
        rng: random.Random,
        trace: Trace,
        *,
        delay: Delay = DEFAULT_DELAY,
        datagrams: DatagramFaults | None = None,
        stream_break_after: float = 15.0,
        inbox_limit: int = 4096,
        tick: float = 0.001,
    ) -> None:
        if tick < 0:
            raise ValueError("tick must not be negative")
        if stream_break_after <= 0:
            raise ValueError("stream_break_after must be positive")
        if inbox_limit < 1:
            raise ValueError("inbox_limit must be at least 1")
        self._rng = rng
        self.trace = trace
        self.base_delay = delay
        self.base_datagrams = datagrams or DatagramFaults()
        self.stream_break_after = stream_break_after
        self.inbox_limit = inbox_limit
        self.tick = tick
        self.stats: Counter[str] = Counter()
        self._hosts: dict[str, _Host] = {}
        self._overlays: dict[str, _Overlay] = {}
        self._delay_overlays: list[_Overlay] = []
        self._slow: dict[str, Delay] = {}
        self._blocked: frozenset[Link] = frozenset()
        self._troubled: dict[_Pipe, None] = {}
        self._heap: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self._seq = itertools.count()
        self._conn_ids = itertools.count(1)
        self._sleep_scope: trio.CancelScope | None = None
        self._now = 0.0
        """Virtual time of the deliveries being made (valid inside delivery callbacks)."""

    # ----------------------------------------------------------------- endpoints

    def transport_for(self, address: Address) -> SimTransport:
        """A fresh Transport bound to ``address`` (a new process on that host).

        The host's previous transport, if any, must have been shut down with :meth:`crash`.
        """
        host = self._host(address.host)
        if host.transport is not None:
            raise ValueError(f"host {address.host} already has a running transport")
        send, receive = trio.open_memory_channel[tuple[bytes, Address]](self.inbox_limit)
        transport = SimTransport(self, host, address, receive)
        host.transport = transport
        host.inbox = send
        return transport

    def hosts(self) -> list[str]:
        return list(self._hosts)

    def is_up(self, host: str) -> bool:
        """True while a transport (a running process) is bound on ``host``."""
        entry = self._hosts.get(host)
        return entry is not None and entry.transport is not None

    def crash(self, host: str) -> None:
        """The process on ``host`` died: drop its sockets as the kernel would (no goodbye)."""
        entry = self._hosts.get(host)
        if entry is None or entry.transport is None:
            raise ValueError(f"host {host} has no running transport to crash")
        entry.transport.alive = False
        entry.transport = None
        entry.listener = None
        if entry.inbox is not None:
            entry.inbox.close()
            entry.inbox = None
        for conn in list(entry.conns):
            for side, name in enumerate(conn.hosts):
                if name == host and conn.sides[side] is _Side.OPEN:
                    conn.sides[side] = _Side.DEAD
                    self._send_chunk(conn.pipes[side], None)
                    conn.pipes[1 - side].buffer.clear()
                    conn.pipes[1 - side].wake()
        self.trace.event("crash", host)

    # ----------------------------------------------------------------- faults

    def block(self, fault_id: str, links: Iterable[Link]) -> None:
        """Start a partition: messages on these directed links stop getting through."""
        self._add_overlay(fault_id, _Overlay(blocked=frozenset(links)))

    def set_datagram_faults(
        self, fault_id: str, faults: DatagramFaults, hosts: Iterable[str] | None = None
    ) -> None:
        """Apply loss/duplication/reordering to datagrams on links touching ``hosts`` (or all)."""
        self._add_overlay(
            fault_id, _Overlay(datagrams=faults, hosts=_host_set(hosts) if hosts else None)
        )

    def set_delay(self, fault_id: str, delay: Delay, hosts: Iterable[str] | None = None) -> None:
        """Override the delay distribution on links touching ``hosts`` (or all links)."""
        self._add_overlay(
            fault_id, _Overlay(delay=delay, hosts=_host_set(hosts) if hosts else None)
        )

    def clear(self, fault_id: str) -> None:
        """End a fault started with block/set_datagram_faults/set_delay."""
        if fault_id not in self._overlays:
            raise KeyError(f"no active network fault {fault_id!r}")
        overlay = self._overlays.pop(fault_id)
        self._delay_overlays = [o for o in self._overlays.values() if o.delay]
        self.trace.event("heal", fault_id)
        if overlay.blocked:
            self._recompute_blocked()
            self._on_links_changed()

    def active_faults(self) -> list[str]:
        return list(self._overlays)

    def is_blocked(self, src: str, dst: str) -> bool:
        return (src, dst) in self._blocked

    def set_slow(self, host: str, extra: Delay | None) -> None:
        """Add ``extra`` delay to every message to or from ``host``; None ends it."""
        self._host(host).slow = extra
        if extra is None:
            self._slow.pop(host, None)
        else:
            self._slow[host] = extra
        self.trace.event("slow", f"{host} {extra}")

    def pause(self, host: str) -> None:
        entry = self._host(host)
        if entry.paused:
            raise ValueError(f"host {host} is already paused")
        entry.paused = True
        entry.resumed = trio.Event()
        self.trace.event("pause", host)

    def resume(self, host: str) -> None:
        entry = self._host(host)
        if not entry.paused:
            raise ValueError(f"host {host} is not paused")
        entry.paused = False
        entry.resumed.set()
        self.trace.event("resume", host)

    def is_paused(self, host: str) -> bool:
        entry = self._hosts.get(host)
        return entry is not None and entry.paused

    async def wait_running(self, host: str) -> None:
        """Block while ``host`` is paused (used by the simulated disk as well)."""
        await self._host(host).wait_running()

    # ----------------------------------------------------------------- delivery loop

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver every message at its time; runs until cancelled."""
        task_status.started()
        heap = self._heap
        while True:
            now = self._now = trio.current_time()
            while heap and heap[0][0] <= now:
                _, _, callback, argument = heapq.heappop(heap)
                callback(argument)
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as scope:
                self._sleep_scope = scope
                await trio.sleep_forever()
            self._sleep_scope = None

    def _arrival(self, at: float) -> float:
        """Round a delivery time up to the network's tick.

        Messages that arrive within one tick are delivered together, so the nodes handle them
        in the same scheduler passes; this is what keeps a run cheap (one trio pass costs as
        much as a small message), at the price of a delay resolution of one tick.
        """
        tick = self.tick
        return math.ceil(at / tick) * tick if tick else at

    def _schedule(self, at: float, callback: Callable[[Any], None], argument: Any) -> None:
        heapq.heappush(self._heap, (at, next(self._seq), callback, argument))
        scope = self._sleep_scope
        if scope is not None and at < scope.deadline:
            scope.deadline = at

    # ----------------------------------------------------------------- internals

    def _host(self, name: str) -> _Host:
        entry = self._hosts.get(name)
        if entry is None:
            entry = self._hosts[name] = _Host(name)
        return entry

    def _add_overlay(self, fault_id: str, overlay: _Overlay) -> None:
        if fault_id in self._overlays:
            raise ValueError(f"network fault {fault_id!r} is already active")
        self._overlays[fault_id] = overlay
        self._delay_overlays = [o for o in self._overlays.values() if o.delay]
        detail = f"{fault_id} blocked={sorted(overlay.blocked)} datagrams={overlay.datagrams}"
        self.trace.event("fault", f"{detail} delay={overlay.delay} hosts={_sorted(overlay.hosts)}")
        if overlay.blocked:
            self._recompute_blocked()

    def _recompute_blocked(self) -> None:
        blocked: set[Link] = set()
        for overlay in self._overlays.values():
            blocked |= overlay.blocked
        self._blocked = frozenset(blocked)

    def _delay(self, src: str, dst: str) -> float:
        rng = self._rng
        if self._delay_overlays:
            chosen = [o.delay for o in self._delay_overlays if o.delay and o.touches(src, dst)]
            value = max(d.sample(rng) for d in chosen) if chosen else self.base_delay.sample(rng)
        else:
            value = self.base_delay.sample(rng)
        if self._slow:
            for name in (src, dst):
                extra = self._slow.get(name)
                if extra is not None:
                    value += extra.sample(rng)
        return value

    def _datagram_faults(self, src: str, dst: str) -> DatagramFaults:
        active = [
            o.datagrams for o in self._overlays.values() if o.datagrams and o.touches(src, dst)
        ]
        if not active:
            return self.base_datagrams
        active.append(self.base_datagrams)
        keep = 1.0
        for faults in active:
            keep *= 1.0 - faults.loss
        return DatagramFaults(
            loss=1.0 - keep,
            duplicate=max(f.duplicate for f in active),
            reorder=max(f.reorder for f in active),
            reorder_delay=max(f.reorder_delay for f in active),
        )

    # datagrams

    def _send_datagram(self, src: Address, dst: Address, data: bytes) -> None:
        faults = self._datagram_faults(src.host, dst.host)
        rng = self._rng
        if faults.loss and rng.random() < faults.loss:
            self.stats["datagram_lost"] += 1
            self.trace.event("drop", f"loss {src.host}>{dst.host} {len(data)}")
            return
        copies = 2 if faults.duplicate and rng.random() < faults.duplicate else 1
        if copies == 2:
            self.stats["datagram_duplicated"] += 1
        now = trio.current_time()
        for _ in range(copies):
            at = now + self._delay(src.host, dst.host)
            if faults.reorder and rng.random() < faults.reorder:
                at += rng.random() * faults.reorder_delay
                self.stats["datagram_reordered"] += 1
            self._schedule(self._arrival(at), self._deliver_datagram, (src, dst, data))

    def _deliver_datagram(self, item: tuple[Address, Address, bytes]) -> None:
        src, dst, data = item
        route = f"{src.host}>{dst.host} {len(data)}"
        if (src.host, dst.host) in self._blocked:
            self.stats["datagram_partitioned"] += 1
            self.trace.at(self._now, "drop", f"partition {route}")
            return
        host = self._hosts.get(dst.host)
        inbox = host.inbox if host is not None else None
        if inbox is None or host is None or host.transport is None:
            self.stats["datagram_no_receiver"] += 1
            self.trace.at(self._now, "drop", f"down {route}")
            return
        if host.transport.address.port != dst.port:
            self.stats["datagram_no_receiver"] += 1
            self.trace.at(self._now, "drop", f"port {route}")
            return
        try:
            inbox.send_nowait((data, src))
        except trio.WouldBlock:
            self.stats["datagram_overflow"] += 1
            self.trace.at(self._now, "drop", f"overflow {route}")
            return
        self.stats["datagram_delivered"] += 1
        self.trace.at(self._now, "dgram", route, data)

    # streams

    async def _connect(self, client: SimTransport, address: Address) -> SimStream:
        src, dst = client.address.host, address.host
        await trio.sleep(self._delay(src, dst) + self._delay(dst, src))
        if not client.alive:
            raise OSError(errno.EBADF, "transport was shut down")
        if (src, dst) in self._blocked or (dst, src) in self._blocked:
            self.stats["connect_unreachable"] += 1
            self.trace.event("connect", f"{src}>{dst} unreachable")
            raise OSError(errno.EHOSTUNREACH, f"{address} is unreachable")
        server = self._hosts.get(dst)
        listener = server.listener if server is not None else None
        if server is None or listener is None or listener[0] != address.port:
            self.stats["connect_refused"] += 1
            self.trace.event("connect", f"{src}>{dst} refused")
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"{address} refused the connection")
        conn = _Connection(next(self._conn_ids), src, dst)
        client_host = self._host(src)
        client_host.conns[conn] = None
        server.conns[conn] = None
        peer = Address(src, client.next_ephemeral_port())
        listener[1].send_nowait((SimStream(self, conn, 1, address, peer), peer))
        self.stats["connect_ok"] += 1
        self.trace.event("connect", f"{src}>{dst} #{conn.ident}")
        return SimStream(self, conn, 0, peer, address)

    def _send_chunk(self, pipe: _Pipe, data: bytes | None) -> None:
        """Queue ``data`` (None: end of stream) behind everything already sent on ``pipe``."""
        at = max(self._arrival(trio.current_time() + self._delay(pipe.src, pipe.dst)), pipe.last_at)
        pipe.last_at = at
        pipe.pending.append((at, data))
        if not pipe.scheduled and pipe.trouble_since is None:
            pipe.scheduled = True
            self._schedule(at, self._deliver_pipe, pipe)

    def _deliver_pipe(self, pipe: _Pipe) -> None:
        pipe.scheduled = False
        conn = pipe.conn
        now = self._now
        if (pipe.src, pipe.dst) in self._blocked:
            self._start_trouble(pipe, now)
            return
        receiver = 1 - pipe.direction
        while pipe.pending and pipe.pending[0][0] <= now:
            _, data = pipe.pending.popleft()
            if conn.sides[receiver] is not _Side.OPEN:
                if data is not None:
                    self._reset(pipe)
                    return
                continue
            if data is None:
                pipe.eof = True
                self.trace.at(now, "eof", f"{pipe.src}>{pipe.dst} #{conn.ident}")
            else:
                pipe.buffer += data
                self.stats["stream_chunks"] += 1
                self.trace.at(
                    now, "chunk", f"{pipe.src}>{pipe.dst} #{conn.ident} {len(data)}", data
                )
            pipe.wake()
        if (pipe.dst, pipe.src) in self._blocked:
            pipe.unacked = True
            self._start_trouble(pipe, now)
        if pipe.pending:
            pipe.scheduled = True
            self._schedule(pipe.pending[0][0], self._deliver_pipe, pipe)

    def _start_trouble(self, pipe: _Pipe, now: float) -> None:
        if pipe.trouble_since is None:
            pipe.trouble_since = now
            self._troubled[pipe] = None
            self._schedule(now + self.stream_break_after, self._check_break, (pipe, now))

    def _check_break(self, item: tuple[_Pipe, float]) -> None:
        pipe, since = item
        if pipe.trouble_since != since:
            return
        conn = pipe.conn
        sender = pipe.direction
        self._troubled.pop(pipe, None)
        pipe.trouble_since = None
        pipe.pending.clear()
        self.stats["stream_timeouts"] += 1
        self.trace.at(self._now, "timeout", f"{pipe.src}>{pipe.dst} #{conn.ident}")
        if conn.sides[sender] is _Side.OPEN:
            conn.sides[sender] = _Side.BROKEN
            conn.pipes[1 - sender].wake()

    def _reset(self, pipe: _Pipe) -> None:
        """Data reached a side that is gone: the kernel answers RST and the sender breaks."""
        conn = pipe.conn
        pipe.pending.clear()
        self._troubled.pop(pipe, None)
        pipe.trouble_since = None
        sender = pipe.direction
        self.stats["stream_resets"] += 1
        self.trace.event("reset", f"{pipe.dst}>{pipe.src} #{conn.ident}")
        if conn.sides[sender] is _Side.OPEN:
            conn.sides[sender] = _Side.BROKEN
            conn.pipes[1 - sender].wake()

    def _on_links_changed(self) -> None:
        now = trio.current_time()
        for pipe in list(self._troubled):
            forward = (pipe.src, pipe.dst) in self._blocked
            backward = (pipe.dst, pipe.src) in self._blocked
            if forward or (pipe.unacked and backward):
                continue
            del self._troubled[pipe]
            pipe.trouble_since = None
            pipe.unacked = False
            if pipe.pending and not pipe.scheduled:
                resend = self._arrival(now + self._delay(pipe.src, pipe.dst))
                pipe.pending = deque((max(at, resend), data) for at, data in pipe.pending)
                pipe.last_at = max(pipe.last_at, resend)
                pipe.scheduled = True
                self._schedule(pipe.pending[0][0], self._deliver_pipe, pipe)

    def _forget(self, conn: _Connection) -> None:
        if all(side is not _Side.OPEN for side in conn.sides):
            for name in conn.hosts:
                entry = self._hosts.get(name)
                if entry is not None:
                    entry.conns.pop(conn, None)


def _host_set(hosts: Iterable[str]) -> frozenset[str]:
    return frozenset(hosts)


def _sorted(hosts: frozenset[str] | None) -> list[str] | None:
    return None if hosts is None else sorted(hosts)


class SimStream(trio.abc.Stream):
    """One end of a simulated TCP connection."""

    def __init__(
        self, network: SimNetwork, conn: _Connection, side: int, local: Address, peer: Address
    ) -> None:
        self._network = network
        self._conn = conn
        self._side = side
        self._host = network._host(conn.hosts[side])
        self.local_address = local
        self.peer_address = peer
        self._sending = False

    def _check_open(self) -> None:
        state = self._conn.sides[self._side]
        if state is _Side.CLOSED:
            raise trio.ClosedResourceError("stream was closed")
        if state is _Side.BROKEN:
            raise trio.BrokenResourceError("connection timed out or was reset")
        if state is _Side.DEAD:
            raise trio.BrokenResourceError("the process owning this stream crashed")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            self._check_open()
            await trio.lowlevel.checkpoint_if_cancelled()
            await self._host.wait_running()
            self._check_open()
            if data:
                self._network._send_chunk(self._conn.pipes[self._side], bytes(data))
            # No scheduling point after the copy (a real socket's send yields once more): a
            # simulated send is instantaneous, and that extra scheduler pass for every chunk
            # and datagram was a seventh of a run's scheduler work. Cancellation is still
            # checked above, and every caller waits elsewhere (for data to send or receive).
        finally:
            self._sending = False

    def send_nowait(self, data: bytes) -> bool:
        """``send_all`` without the task: a simulated send never blocks a running host."""
        if self._sending or self._host.paused or self._conn.sides[self._side] is not _Side.OPEN:
            return False
        if data:
            self._network._send_chunk(self._conn.pipes[self._side], bytes(data))
        return True

    async def wait_send_all_might_not_block(self) -> None:
        self._check_open()
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        pipe = self._conn.pipes[1 - self._side]
        if pipe.reader_busy:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        pipe.reader_busy = True
        try:
            # One checkpoint per call, as trio requires: waiting for data is one, so only a
            # call that finds data ready yields separately (a reader usually has to wait, and
            # a second scheduler pass per message is a large share of a simulation's cost).
            waited = False
            while True:
                await self._host.wait_running()
                self._check_open()
                if pipe.buffer or pipe.eof:
                    if not waited:
                        await trio.lowlevel.checkpoint()
                        waited = True
                        continue
                    if not pipe.buffer:
                        return b""
                    size = max_bytes or DEFAULT_RECEIVE_SIZE
                    chunk = bytes(pipe.buffer[:size])
                    del pipe.buffer[:size]
                    return chunk
                waiter = pipe.waiter = trio.Event()
                await waiter.wait()
                waited = True
        finally:
            pipe.reader_busy = False

    async def aclose(self) -> None:
        conn = self._conn
        if conn.sides[self._side] is _Side.OPEN:
            conn.sides[self._side] = _Side.CLOSED
            self._network._send_chunk(conn.pipes[self._side], None)
            conn.pipes[1 - self._side].buffer.clear()
            conn.pipes[1 - self._side].wake()
        elif conn.sides[self._side] is not _Side.CLOSED:
            conn.sides[self._side] = _Side.CLOSED
        self._network._forget(conn)
        await trio.lowlevel.checkpoint()


class SimTransport:
    """The Transport seam of one process on one simulated host."""

    def __init__(
        self,
        network: SimNetwork,
        host: _Host,
        address: Address,
        inbox: trio.MemoryReceiveChannel[tuple[bytes, Address]],
    ) -> None:
        self._network = network
        self._host = host
        self.address = address
        self.alive = True
        self._inbox = inbox
        self._ports = itertools.count(EPHEMERAL_PORTS)

    @property
    def local_address(self) -> Address:
        return self.address

    def next_ephemeral_port(self) -> int:
        return next(self._ports)

    async def connect(self, address: Address) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self.alive:
            raise OSError(errno.EBADF, "transport was shut down")
        await self._host.wait_running()
        return await self._network._connect(self, address)

    async def serve(
        self,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        # A process killed while starting is cancelled, as ``connect`` is: the kill, not a
        # shut socket, is what stops it (delete-heavy seed 108 counted a node crashed
        # during its restart as one that died of an unhandled error).
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self.alive:
            raise OSError(errno.EBADF, "transport was shut down")
        if self._host.listener is not None:
            raise OSError(errno.EADDRINUSE, f"{self.address} is already listening")
        send, receive = trio.open_memory_channel[tuple[SimStream, Address]](math.inf)
        listener = (self.address.port, send)
        self._host.listener = listener
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(self.address)
                async with receive:
                    async for stream, peer in receive:
                        await self._host.wait_running()
                        nursery.start_soon(_serve_one, handler, stream, peer)
        finally:
            if self._host.listener is listener:
                self._host.listener = None

    async def send_datagram(self, address: Address, data: bytes) -> None:
        if len(data) > MAX_DATAGRAM:
            raise OSError(errno.EMSGSIZE, f"datagram of {len(data)} bytes is too large")
        await trio.lowlevel.checkpoint_if_cancelled()
        await self._host.wait_running()
        if self.alive:
            self._network._send_datagram(self.address, address, bytes(data))
        # Like SimStream.send_all: no scheduling point after an instantaneous send.

    async def receive_datagram(self) -> tuple[bytes, Address]:
        await self._host.wait_running()
        try:
            item = await self._inbox.receive()
        except trio.EndOfChannel:
            raise trio.ClosedResourceError("transport was shut down") from None
        await self._host.wait_running()
        return item


async def _serve_one(handler: StreamHandler, stream: SimStream, peer: Address) -> None:
    """Run one connection's handler; a peer that vanished mid-handler is not an error."""
    try:
        await handler(stream, peer)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await stream.aclose()

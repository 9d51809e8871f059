"""The trio driver of the SWIM core: sockets, one timer and push-pull streams around ``Swim``.

All protocol decisions live in the sans-IO core; this module only moves bytes and time:
it feeds received datagrams and ``trio.current_time()`` in, sends what comes out, runs
push-pull exchanges through the node's RPC ``exchange`` and hands membership events to the
node. Using trio's clock means a test under ``MockClock`` runs the protocol in virtual time.

With security on, the core signs its own membership claims and checks everyone's through
``claims``; the driver's one part in that is to hand back the claims that were held for a
signer's certificate once the security manager has fetched it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable

import trio

from p2pindex.core.swim import MemberChanged, Swim
from p2pindex.core.swim.outputs import drain
from p2pindex.errors import MemberRemoved, P2PIndexError
from p2pindex.net.base import Transport
from p2pindex.node.eventlog import EventLog
from p2pindex.security.claims import Claims
from p2pindex.types import Address

log = logging.getLogger(__name__)
events = EventLog(log, trio.current_time, burst=3)
"""Join attempts repeat every few seconds while no seed answers; a few lines a minute say
why (a refusal carries the seed's reason, such as a removed node told how to come back)."""

Exchange = Callable[[Address, bytes, bool], Awaitable[bytes]]

HELD_CLAIMS_POLL = 0.1
"""While claims are held for a certificate being fetched, the timer loop looks this often
whether it arrived. Otherwise it sleeps until the core's next deadline: every other way the
core gets work (a datagram, a push-pull, the node's own calls) wakes it through ``notify``,
and in a simulation of many nodes a loop that woke every node ten times a second for
nothing cost a tenth of the CPU."""


class MembershipDriver:
    def __init__(
        self,
        swim: Swim,
        transport: Transport,
        exchange: Exchange,
        on_change: Callable[[MemberChanged], None],
        *,
        exchange_timeout: float = 10.0,
        claims: Claims | None = None,
        on_round_trip: Callable[[float], None] | None = None,
        on_removed: Callable[[], None] | None = None,
    ) -> None:
        self._swim = swim
        self._on_removed = on_removed
        """Called when a member refuses this node's connection because it was removed."""
        self._on_round_trip = on_round_trip
        """Gets each probe's round trip (seconds, trio time): the core computes them from
        the ``now`` values this driver passes in, and never reads a clock itself."""
        self._transport = transport
        self._exchange = exchange
        self._on_change = on_change
        self._exchange_timeout = exchange_timeout
        self._claims = claims
        self._wakeup = trio.Event()
        self._wake_at = math.inf
        self._nursery: trio.Nursery | None = None
        self._outgoing: list[tuple[Address, bytes]] = []
        self._incarnation_seen = swim.incarnation
        self._refuted_seen = 0
        self.joined = False
        """True once the core joined and every member change up to then reached the node.
        The core counts as joined the moment an exchange is merged, but its member events
        reach ``on_change`` only at the next flush; in between the node's ring is the one
        it restored, which may lack most of the cluster."""

    def notify(self) -> None:
        """Tell the driver the core was called from outside, so its outputs go out now."""
        self._wakeup.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._receive_loop)
            task_status.started()
            await self._timer_loop()

    async def leave(self, timeout: float) -> None:
        """Announce a graceful leave and return once it is acknowledged (or ``timeout``)."""
        swim = self._swim
        swim.leave(trio.current_time())
        self.notify()
        with trio.move_on_after(timeout):
            while not swim.leave_complete(trio.current_time()):
                await self._flush()
                await trio.sleep(0.01)
        await self._flush()

    async def _receive_loop(self) -> None:
        swim = self._swim
        while True:
            data, source = await self._transport.receive_datagram()
            swim.receive_datagram(data, source, trio.current_time())
            await self._flush()
            # Most datagrams (acks, gossip) leave the next deadline where it was; the timer
            # loop only needs waking when one moved it closer.
            if self._wake_target() < self._wake_at:
                self._wakeup.set()

    def _wake_target(self) -> float:
        """When the timer loop has work next: the core's deadline, or soon if claims wait."""
        deadline = self._swim.next_deadline()
        wake_at = math.inf if deadline is None else deadline
        if self._claims is not None and self._claims.holding:
            wake_at = min(wake_at, trio.current_time() + HELD_CLAIMS_POLL)
        return wake_at

    async def _timer_loop(self) -> None:
        swim = self._swim
        while True:
            self._wake_at = wake_at = self._wake_target()
            with trio.move_on_at(wake_at):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            now = trio.current_time()
            if self._claims is not None:
                held = self._claims.take_verifiable()
                if held:
                    swim.receive_records(held, now)
            deadline = swim.next_deadline()
            if deadline is not None and now >= deadline:
                swim.handle_timer(now)
            await self._flush()

    async def _flush(self) -> None:
        self._outgoing = []
        drain(self._swim, self)
        round_trips = self._swim.probe_round_trips()
        if self._on_round_trip is not None:
            for seconds in round_trips:
                self._on_round_trip(seconds)
        self.joined = self._swim.joined
        if self._swim.incarnation != self._incarnation_seen:
            self._note_refutation()
        for address, data in self._outgoing:
            await self._transport.send_datagram(address, data)

    def _note_refutation(self) -> None:
        """Say in this node's own log that others took it for suspect or dead: otherwise
        only their logs tell, and an operator reading this one sees nothing of it."""
        self._incarnation_seen = self._swim.incarnation
        refuted = self._swim.statistics().get("refutations", 0)
        if refuted > self._refuted_seen:
            self._refuted_seen = refuted
            events.warning(
                "refuted",
                "other members suspected this node or declared it dead (was it paused, "
                "starved of CPU or cut off?); it refuted them at incarnation %d",
                self._swim.incarnation,
            )

    # --- Outputs (called by drain) ----------------------------------------------------------

    def send_datagram(self, address: Address, data: bytes) -> None:
        """Collected, then sent by ``_flush`` once the push-pulls and events are handed on."""
        self._outgoing.append((address, data))

    def start_push_pull(self, address: Address, join: bool) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._push_pull, address, join)

    def member_changed(self, event: MemberChanged) -> None:
        self._on_change(event)

    async def _push_pull(self, address: Address, join: bool) -> None:
        """One exchange: request, reply, and at most one follow-up while the core asks."""
        swim = self._swim
        payload: bytes | None = swim.push_pull_request(join)
        while payload is not None:
            reply: bytes | None
            try:
                with trio.fail_after(self._exchange_timeout):
                    reply = await self._exchange(address, payload, join)
            except (OSError, trio.TooSlowError, P2PIndexError) as exc:
                # A refused connection is an OSError caused by the member's error reply.
                removed = isinstance(exc.__cause__, MemberRemoved)
                if removed and self._on_removed is not None:
                    self._on_removed()
                if join:
                    # A seed that is down is routine (info); one that refuses us says why,
                    # such as a removed node told how to come back (warning).
                    reason = str(exc) or "no answer in time"
                    emit = events.warning if "refused" in reason else events.info
                    emit("join", "joining through %s failed: %s", address, reason)
                else:
                    log.debug("push-pull with %s failed: %s", address, exc)
                reply = None
            payload = swim.push_pull_complete(address, reply, trio.current_time())
        self._wakeup.set()

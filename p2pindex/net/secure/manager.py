"""SecurityManager: a node's identity, trust, revocations, counters and audit log in one place.

It is what the node plugs in when security is on: a ``Transport`` wrapper that runs the
handshake on every connection, a ``Sealer`` for SWIM datagrams, a request guard that
authorises every message of a session, and a background task that fetches the certificates
of members it cannot verify yet, spreads revocation lists and reloads the trust and
certificate files when an operator replaces them (rotation without a restart).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, Self

import trio
from nacl.signing import SigningKey

from p2pindex.config import MAX_HANDSHAKES
from p2pindex.core.ratelimit import TokenBucket
from p2pindex.errors import ConfigError, P2PIndexError
from p2pindex.net.secure.handshake import (
    DEFAULT_TIMEOUT,
    Accepted,
    LocalParty,
    RandomBytes,
    secure_client,
    secure_server,
)
from p2pindex.net.secure.session import SecureStream
from p2pindex.net.secure.transport import SecureTransport
from p2pindex.security.access import ADMIN_MESSAGES, Peer, PeerKind, authorize
from p2pindex.security.audit import AuditLog
from p2pindex.security.certs import (
    NodeCertificate,
    RevocationList,
    TrustSet,
    node_id_of,
    open_document,
    verify_node_certificate,
    verify_revocations,
    when,
)
from p2pindex.security.claims import Claims
from p2pindex.security.counting import Counts, Tally
from p2pindex.security.datagrams import DatagramSealer
from p2pindex.security.directory import MAX_WANTED, CertificateDirectory
from p2pindex.security.errors import (
    AccessDenied,
    ConnectionRefused,
    CredentialRejected,
    HandshakeFailed,
)
from p2pindex.security.keys import write_file_atomically
from p2pindex.security.trust import TrustState
from p2pindex.types import Address
from p2pindex.wire.messages import (
    CertificateReply,
    CertificateRequest,
    Message,
    OkReply,
    PushPull,
    RevocationPush,
)

if TYPE_CHECKING:
    from p2pindex.net.base import Transport
    from p2pindex.security.authority import Authority
    from p2pindex.security.files import SecurityFiles

log = logging.getLogger(__name__)

MAINTENANCE_INTERVAL = 0.5
GOSSIP_INTERVAL = 10.0
"""A node offers its revocation list to one random member this often (anti-entropy)."""
RELOAD_INTERVAL = 2.0
FETCH_RETRY = 2.0
FETCH_ATTEMPTS = 5
"""Tries per unknown id; an id nobody can vouch for (a forger's invention) is then dropped."""
MAX_CERTIFICATES_PER_REPLY = 10_000
RELAY_FANOUT = 3
EXPIRY_WARNING = 7 * 24 * 3600

LOG_BURST = 20
LOG_RATE = 1.0
"""Node-log lines a second about refused handshakes and broken sessions, after a burst of
``LOG_BURST``. Each refusal is still counted in `status` and audited (the audit log has a
budget of its own); a flood of garbage connections must not also cost the node a formatted
log line and a write to its log each (a fifth of what refusing one cost), nor fill the disk.
The next line written says how many were left out."""

_NOTEWORTHY = ADMIN_MESSAGES | {RevocationPush, CertificateRequest}
"""What a node peer sends that the guard handles or audits; the rest goes straight through
(nodes may send anything, so the hot replica path pays for no authorisation)."""

Request = Callable[[Address, Message, float], Awaitable[Message]]
Dispatch = Callable[[Message], Awaitable[Message]]
LiveMembers = Callable[[], list[tuple[str, Address]]]


class Gate(Protocol):
    """What the node decides about a client whose credential checked out, before the node's
    own cryptography is spent on it (``node.admission``)."""

    def screen(self, client: bytes) -> ConnectionRefused | None:
        """Why client key ``client`` is refused anyway, or None: admitted, and a place is held
        for its session (so handshakes that pass together cannot overrun a limit) until the
        session is counted or ``release`` gives it back."""

    def release(self, client: bytes) -> None:
        """The handshake ``screen`` admitted ended without a session."""


class SecurityManager:
    def __init__(
        self,
        signing_key: SigningKey,
        certificate: bytes,
        trust: TrustSet,
        *,
        revocations: bytes | None = None,
        wall_clock: Callable[[], float] = time.time,
        audit: AuditLog | None = None,
        files: SecurityFiles | None = None,
        handshake_timeout: float = DEFAULT_TIMEOUT,
        rng: random.Random | None = None,
        random_bytes: RandomBytes = os.urandom,
    ) -> None:
        self._wall_clock = wall_clock
        self.node_id = node_id_of(bytes(signing_key.verify_key))
        self.state = TrustState(trust)
        own = self._check_own_certificate(certificate, signing_key, trust)
        if revocations is not None:
            self.state.revocations = verify_revocations(revocations, trust, "the saved list")
        try:
            self.state.check_node(own)
        except CredentialRejected as exc:
            raise ConfigError(f"this node cannot join: {exc}") from None
        self.certificate = own
        self.stats: Counts = Tally()
        self.audit = audit or AuditLog(None, wall_clock)
        self.files = files
        self.handshake_timeout = handshake_timeout
        self.local = LocalParty(signing_key, certificate, PeerKind.NODE, random_bytes)
        self.directory = CertificateDirectory(self.state, wall_clock)
        self.directory.add(own)
        self.sealer = DatagramSealer(
            signing_key, trust.cluster_id, self.directory, wall_clock, self
        )
        self.claims = Claims(
            signing_key,
            self.node_id,
            trust.cluster_id,
            self.directory,
            self,
            locate=self.note_member,
        )
        self._sessions: weakref.WeakSet[SecureStream] = weakref.WeakSet()
        self._rng = rng or random.Random()
        self._addresses: dict[str, Address] = {}
        self._attempts: dict[str, tuple[int, float]] = {}
        """Unknown node id -> (fetch attempts so far, time of the last one)."""
        self._wake = trio.Event()
        self._request: Request | None = None
        self._members: LiveMembers | None = None
        self._nursery: trio.Nursery | None = None
        self._mtimes = self._file_times()
        self.state.on_revocations(self._revocations_adopted)
        self._log_budget = TokenBucket(LOG_RATE, LOG_BURST, wall_clock())
        self.gate: Gate | None = None
        """Set by the node: refuses clients at their limits or for their conduct, before
        the node's own cryptography, and holds the places of those it admits."""
        self.log_suppressed = 0
        """Lines about refusals left out of the node log since the last one written."""

    @classmethod
    def issued_by(cls, authority: Authority, node_key: SigningKey, **options: Any) -> Self:
        """A manager for a node with no data directory (in-process clusters), certified by
        ``authority`` on the spot."""
        return cls(
            node_key,
            authority.certify(bytes(node_key.verify_key)),
            authority.trust,
            revocations=authority.revocations(),
            **options,
        )

    # --- construction ----------------------------------------------------------------------

    def _check_own_certificate(
        self, blob: bytes, key: SigningKey, trust: TrustSet
    ) -> NodeCertificate:
        try:
            own = verify_node_certificate(blob, trust, self._wall_clock(), "this node")
        except CredentialRejected as exc:
            raise ConfigError(f"this node's certificate is not usable: {exc}") from None
        if own.public_key != bytes(key.verify_key):
            raise ConfigError(
                f"the certificate is for node {own.node_id}, but this node's key is "
                f"{self.node_id}: certify this data directory's key"
            )
        if own.expires - self._wall_clock() < EXPIRY_WARNING:
            log.warning("this node's certificate expires at %s; renew it", when(own.expires))
        return own

    # --- counting and auditing -------------------------------------------------------------

    def incr(self, name: str, amount: int = 1) -> None:
        """Every security counter is named ``security.*`` in the node's statistics."""
        self.stats.incr(f"security.{name}", amount)

    def use_statistics(self, stats: Counts) -> None:
        """Count into the node's StatisticsStore from now on (moving what was counted)."""
        if isinstance(self.stats, Tally):
            for name, value in self.stats.values.items():
                stats.incr(name, value)
        self.stats = stats

    def _session_failed(self, peer: Peer, reason: str, detail: str) -> None:
        self.incr(f"session.{reason}")
        self.audit.record("session_failed", peer=peer.describe(), reason=reason, detail=detail)
        self._log_limited(logging.WARNING, "session with %s broken: %s", peer.name, detail)

    def _log_limited(self, level: int, message: str, *args: object) -> None:
        """Log a refusal within the log budget (``LOG_RATE``), else only count it as left out."""
        if not log.isEnabledFor(level):
            return
        if not self._log_budget.take(self._wall_clock()):
            self.log_suppressed += 1
            return
        if self.log_suppressed:
            message += " (%d similar lines left out before this one)"
            args = (*args, self.log_suppressed)
            self.log_suppressed = 0
        log.log(level, message, *args)

    # --- the transport seam ----------------------------------------------------------------

    def wrap(self, transport: Transport, max_handshakes: int = MAX_HANDSHAKES) -> SecureTransport:
        return SecureTransport(transport, self, max_handshakes)

    async def accept(self, stream: trio.abc.Stream, address: Address) -> SecureStream | None:
        """Run the responder's handshake; None (counted, audited, logged) when refused."""
        gate = self.gate
        held: bytes | None = None
        """The client key whose place ``gate`` holds for this handshake: given back unless
        the handshake ends in a session (which then carries it to the node's count)."""

        def screen(client: bytes) -> ConnectionRefused | None:
            nonlocal held
            assert gate is not None
            refusal = gate.screen(client)
            if refusal is None:
                held = client
            return refusal

        accepted = None
        try:
            accepted = await secure_server(
                stream,
                self.local,
                self.state,
                self._wall_clock,
                timeout=self.handshake_timeout,
                on_failure=self._session_failed,
                screen=None if gate is None else screen,
            )
        except CredentialRejected as exc:
            self._refused("refused", address, exc)
            return None
        except HandshakeFailed as exc:
            self._refused("failed", address, exc)
            return None
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.incr("handshake.failed.broken")
            log.debug("handshake with %s broke: %s", address, exc)
            return None
        finally:
            if accepted is None and held is not None:
                assert gate is not None
                gate.release(held)
        return self._admitted(accepted)

    async def connect(
        self, stream: trio.abc.Stream, address: Address, expect_node: str | None = None
    ) -> SecureStream:
        """Run the initiator's handshake; OSError (the peer cannot be used) when it fails."""
        try:
            accepted = await secure_client(
                stream,
                self.local,
                self.state,
                self._wall_clock,
                timeout=self.handshake_timeout,
                expect_node=expect_node,
                on_failure=self._session_failed,
            )
        except (CredentialRejected, HandshakeFailed) as exc:
            self._refused("outbound", address, exc)
            await trio.aclose_forcefully(stream)
            raise OSError(f"secure handshake with {address} failed: {exc}") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.incr("handshake.outbound.broken")
            await trio.aclose_forcefully(stream)
            raise OSError(f"secure handshake with {address} broke: {exc}") from None
        return self._admitted(accepted)

    def handshake_evicted(self, address: Address, limit: int | None) -> None:
        """A connection still in its handshake was closed to make room for a newer one."""
        self.incr("handshake.evicted")
        self._log_limited(
            logging.INFO,
            "closed the connection from %s before its handshake completed: %s connections "
            "were in their handshake (admission.max_handshakes), and it had waited longest",
            address,
            limit,
        )

    def _admitted(self, accepted: Accepted) -> SecureStream:
        stream, peer = accepted.stream, accepted.peer
        self.incr(f"handshake.accepted.{peer.kind.value}")
        if isinstance(peer.credential, NodeCertificate):
            self.directory.add(peer.credential)
        self._sessions.add(stream)
        return stream

    def _refused(
        self, side: str, address: Address, error: CredentialRejected | HandshakeFailed
    ) -> None:
        self.incr(f"handshake.{side}.{error.reason}")
        self.audit.record(
            f"handshake_{side}", address=str(address), reason=error.reason, detail=str(error)
        )
        # A connection closed before its first byte is what TCP health checks and port scans
        # do, and what a node's own join probe does when another seed answered first: counted
        # and audited, but only worth a line when debugging.
        quiet = error.reason == "closed_before_hello"
        level = logging.DEBUG if quiet else logging.INFO
        self._log_limited(level, "handshake with %s %s: %s", address, side, error)

    # --- requests --------------------------------------------------------------------------

    def guard(self, stream: trio.abc.Stream, dispatch: Dispatch) -> Dispatch:
        """A request handler for ``stream``'s session: authorise, audit, then ``dispatch``."""
        if not isinstance(stream, SecureStream):
            raise TypeError("guard() needs a stream accepted by this manager")
        peer = stream.peer
        authorize = self.authorize

        async def handle(message: Message) -> Message:
            if type(message) is PushPull and peer.node_id is not None:
                floor = message.datagram_sequence
                if floor is not None:  # the session says whose it is, not the message
                    self.sealer.learn(peer.node_id, floor)
            if peer.kind is PeerKind.CLIENT or type(message) in _NOTEWORTHY:
                authorize(peer, message)
                if isinstance(message, RevocationPush):
                    return await self._revocation_push(peer, message)
                if isinstance(message, CertificateRequest):
                    return self._certificates(message)
            return await dispatch(message)

        return handle

    def authorize(self, peer: Peer, message: Message) -> None:
        """Raise AccessDenied (counted and audited) unless ``peer`` may send ``message``."""
        try:
            authorize(peer, message, self._wall_clock())
        except AccessDenied as exc:
            self.incr(f"denied.{exc.reason}")
            self.audit.record(
                "denied",
                peer=peer.describe(),
                message=type(message).__name__,
                reason=exc.reason,
                detail=str(exc),
            )
            raise
        if type(message) in ADMIN_MESSAGES:
            self.incr("admin_operations")
            self.audit.record(
                "admin", peer=peer.describe(), message=type(message).__name__, **_summary(message)
            )

    def _certificates(self, request: CertificateRequest) -> Message:
        ids = request.node_ids or None
        found = self.directory.certificates(ids)[:MAX_CERTIFICATES_PER_REPLY]
        return CertificateReply([certificate.raw for certificate in found])

    # --- revocations -----------------------------------------------------------------------

    def adopt(self, blob: bytes, source: str) -> bool:
        """Adopt a revocation list if it is valid and newer (raises CredentialRejected)."""
        try:
            return self.state.offer(blob, source)
        except CredentialRejected as exc:
            self.incr(f"revocations.rejected.{exc.reason}")
            self.audit.record("revocations_rejected", source=source, detail=str(exc))
            raise

    def _revocations_adopted(self, revocations: RevocationList) -> None:
        self.incr("revocations.adopted")
        self.audit.record(
            "revocations_adopted",
            version=revocations.version,
            nodes=sorted(revocations.node_ids),
            serials=sorted(revocations.serials),
        )
        log.warning(
            "adopted revocation list version %d (%d nodes, %d serials)",
            revocations.version,
            len(revocations.node_ids),
            len(revocations.serials),
        )
        if revocations.revokes_node(self.node_id, self.certificate.serial):
            log.error("this node's own certificate is revoked: the cluster will refuse it")
        self.claims.forget_verified()
        for node_id in revocations.node_ids:
            self.sealer.forget(node_id)
        for stream in list(self._sessions):
            credential = stream.peer.credential
            peer_id = stream.peer.node_id
            if (peer_id is not None and peer_id in revocations.node_ids) or (
                credential.serial in revocations.serials
            ):
                self._cut(stream, f"{stream.peer.name} was revoked")
        if self.files is not None and self.files.revocations is not None:
            try:
                write_file_atomically(self.files.revocations, revocations.raw)
            except OSError as exc:
                log.error("cannot save the revocation list: %s", exc)

    def _cut(self, stream: SecureStream, reason: str) -> None:
        """Close a session now (in the background when the node runs, else at its next use)."""
        self.incr("sessions_cut")
        self._sessions.discard(stream)
        if self._nursery is not None:
            self._nursery.start_soon(stream.abort, reason)
        else:
            stream.mark_broken(reason)

    async def _revocation_push(self, peer: Peer, push: RevocationPush) -> Message:
        adopted = self.adopt(push.document, peer.name)
        version = self.state.revocation_version
        if not adopted:
            return OkReply(f"already at revocation list version {version}")
        revoked = self.state.revocations.node_ids if self.state.revocations else frozenset()
        members = [(i, a) for i, a in self._live_members() if i not in revoked]
        if push.relayed:
            targets = self._rng.sample(members, min(RELAY_FANOUT, len(members)))
            if self._nursery is not None:
                self._nursery.start_soon(self._push_to, targets, push.document)
            return OkReply(f"adopted revocation list version {version}")
        reached = await self._push_to(members, push.document)
        return OkReply(
            f"adopted revocation list version {version}; passed on to {reached} of "
            f"{len(members)} live members"
        )

    async def _push_to(self, members: list[tuple[str, Address]], document: bytes) -> int:
        request = self._request
        if request is None:
            return 0
        reached = 0

        async def push(address: Address) -> None:
            nonlocal reached
            try:
                await request(address, RevocationPush(document, relayed=True), 5.0)
                reached += 1
            except (OSError, P2PIndexError) as exc:
                log.info("could not pass the revocation list to %s: %s", address, exc)

        async with trio.open_nursery() as nursery:
            for _, address in members:
                nursery.start_soon(push, address)
        return reached

    # --- learning certificates -------------------------------------------------------------

    def note_member(self, node_id: str, address: Address) -> None:
        """A member exists at ``address``: fetch its certificate if we lack it."""
        self._addresses[node_id] = address
        if node_id != self.node_id and self.directory.get(node_id) is None:
            self._attempts.pop(node_id, None)
            self.directory.want(node_id)
            self._wake.set()

    def _live_members(self) -> list[tuple[str, Address]]:
        if self._members is None:
            return []
        return [(i, a) for i, a in self._members() if i != self.node_id]

    def _due_for_fetch(self, now: float) -> list[str]:
        due: list[str] = []
        for node_id in list(self.directory.wanted):
            attempts, last = self._attempts.get(node_id, (0, -FETCH_RETRY))
            if attempts >= FETCH_ATTEMPTS:
                del self.directory.wanted[node_id]
            elif now - last >= FETCH_RETRY and len(due) < 256:
                due.append(node_id)
        if len(self._attempts) > 4 * MAX_WANTED:
            self._attempts.clear()
        for node_id in due:
            attempts, _ = self._attempts.get(node_id, (0, 0.0))
            self._attempts[node_id] = (attempts + 1, now)
        return due

    async def _fetch_wanted(self) -> None:
        request = self._request
        wanted = self._due_for_fetch(trio.current_time())
        if request is None or not wanted:
            return
        known = [(i, a) for i, a in self._live_members() if self.directory.get(i) is not None]
        if known:
            _, address = self._rng.choice(known)
            await self._ask(request, address, wanted)
        for node_id in wanted:
            its_address = self._addresses.get(node_id)
            if self.directory.get(node_id) is None and its_address is not None:
                await self._ask(request, its_address, [node_id])

    async def _ask(self, request: Request, address: Address, node_ids: list[str]) -> None:
        """Ask ``address`` for certificates; connecting there also yields its own."""
        try:
            reply = await request(address, CertificateRequest(node_ids), 2.0)
        except (OSError, P2PIndexError) as exc:
            log.debug("certificate request to %s failed: %s", address, exc)
            return
        if not isinstance(reply, CertificateReply):
            return
        for blob in reply.certificates:
            try:
                self.directory.add_raw(blob)
                self.incr("certificates.learned")
            except CredentialRejected as exc:
                self.incr(f"certificates.rejected.{exc.reason}")

    # --- background work -------------------------------------------------------------------

    def attach(self, nursery: trio.Nursery, request: Request, members: LiveMembers) -> None:
        """Start the background work, given how to reach peers and who is alive."""
        self._request = request
        self._members = members
        self._nursery = nursery
        nursery.start_soon(self._maintain)

    async def _maintain(self) -> None:
        next_gossip = trio.current_time() + GOSSIP_INTERVAL * self._rng.random()
        next_reload = trio.current_time() + RELOAD_INTERVAL
        while True:
            with trio.move_on_after(MAINTENANCE_INTERVAL):
                await self._wake.wait()
            self._wake = trio.Event()
            await self._fetch_wanted()
            now = trio.current_time()
            if now >= next_gossip:
                next_gossip = now + GOSSIP_INTERVAL
                await self._gossip_revocations()
            if now >= next_reload:
                next_reload = now + RELOAD_INTERVAL
                self.reload_if_changed()
                self._cut_expired()

    def _cut_expired(self) -> None:
        """Sessions outlive nothing they were opened with: an expired credential ends one."""
        now = self._wall_clock()
        for stream in list(self._sessions):
            credential = stream.peer.credential
            if credential.expires <= now:
                self._cut(stream, f"the credential of {stream.peer.name} expired")

    async def _gossip_revocations(self) -> None:
        revocations = self.state.revocations
        members = self._live_members()
        if revocations is not None and members:
            await self._push_to([self._rng.choice(members)], revocations.raw)

    def _file_times(self) -> tuple[float, float]:
        if self.files is None:
            return (0.0, 0.0)
        times = []
        for path in (self.files.trust, self.files.certificate):
            try:
                times.append(path.stat().st_mtime)
            except OSError:
                times.append(0.0)
        return (times[0], times[1])

    def reload_if_changed(self) -> bool:
        """Re-read the trust and certificate files if they changed; keep the old ones (and
        log why) when the new ones are unusable. Sessions opened with credentials the new
        trust set refuses are closed; they reconnect with the new certificates."""
        if self.files is None:
            return False
        mtimes = self._file_times()
        if mtimes == self._mtimes:
            return False
        self._mtimes = mtimes
        try:
            trust = TrustSet.load(self.files.trust)
            if trust.cluster_id != self.state.trust.cluster_id:
                raise ConfigError(f"{self.files.trust} is for another cluster ({trust.cluster})")
            blob = self.files.certificate.read_bytes()
            own = self._check_own_certificate(blob, self.local.signing_key, trust)
        except (ConfigError, OSError) as exc:
            self.incr("reload_failed")
            log.error("keeping the current trust and certificate: %s", exc)
            return False
        self.state.trust = trust
        self.local = dataclasses.replace(self.local, credential=blob)
        self.certificate = own
        self.directory.forget_invalid()
        self.directory.add(own)
        self.claims.forget_verified()
        for stream in list(self._sessions):
            try:
                open_document(stream.peer.credential.raw, trust)
            except CredentialRejected as exc:
                self._cut(stream, f"trust changed: {exc}")
        self.incr("reloads")
        self.audit.record("reloaded", authorities=len(trust.authorities), serial=own.serial)
        log.warning("reloaded trust (%d authorities) and certificate", len(trust.authorities))
        return True


def _summary(message: Message) -> dict[str, object]:
    """An admin message's fields for the audit log (byte strings by size only)."""
    out: dict[str, object] = {}
    for field in dataclasses.fields(message):
        value = getattr(message, field.name)
        out[field.name] = f"<{len(value)} bytes>" if isinstance(value, bytes) else value
    return out

"""Signed SWIM datagrams: the ``Sealer`` the membership core calls on every datagram.

    sealed = VERSION (1 byte) | sequence (8 bytes) | Ed25519 signature (64 bytes) | payload

The signature covers a domain label, the cluster id, the sequence and the payload, and is
checked against the certified key of the node the payload names as its sender — so a
datagram cannot be forged, altered, moved to another cluster or attributed to someone else.
The sequence is the sender's wall clock in microseconds, forced to grow by at least one per
datagram: it survives restarts without being stored (the clock moved on) and doubles as a
timestamp. A receiver drops a datagram whose sequence it has seen or that lies behind the
sender's newest by more than ``REORDER_WINDOW`` (replays), and, from a sender it keeps no
window for yet, one whose timestamp is more than ``MAX_CLOCK_SKEW`` away from its own clock
(old captures replayed to a receiver that restarted and forgot its windows). Every drop is
counted by reason.

A sender whose clock was stepped back and that then restarted sends sequences below what its
receivers saw before; judged by sequence alone, it would be mute to them until its clock
caught up, and declared dead meanwhile. Its restart gave it a higher SWIM incarnation (inside
the signed payload), so a datagram that fails the sequence check but carries a newer
incarnation than any seen starts the sender's window over, and from then on datagrams of
older incarnations are refused: they can only be replays.

Clocks further apart than ``MAX_CLOCK_SKEW`` (a node whose NTP broke, a VM resumed hours
late) would still make a member mute to every receiver that restarted after it: the first
datagram is judged by the clocks, and no window ever opens. So a push-pull, which runs over
an authenticated TCP session with fresh handshake nonces, carries its sender's current
sequence: the receiver opens the sender's window there (``learn``) and needs no clock. A
receiver that refuses a datagram as stale asks the node to run such an exchange with its
sender (``on_stale``), so two members with distant clocks hear each other within one round
trip rather than never.

Checking a signature costs tens of microseconds, so a flood of forged datagrams would buy
an attacker a node's CPU. Datagrams from a source address that has sent a valid, fresh one
(``MAX_PROVEN`` are remembered) are always checked; the rest share a budget of
``UNPROVEN_RATE`` checks a second, beyond which they are dropped unchecked and counted as
``swim.throttled``. Members' addresses prove themselves with their first datagram; a member
that is new to this node and unlucky enough to arrive during a flood is still heard through
its authenticated push-pull, and by datagram once the budget refills.
"""

from __future__ import annotations

from collections.abc import Callable

from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey

from p2pindex.core.newest import put_newest
from p2pindex.core.ratelimit import TokenBucket
from p2pindex.security.counting import Counts, Tally
from p2pindex.security.directory import CertificateDirectory, Verdict
from p2pindex.types import Address

VERSION = 1
SIGNATURE_BYTES = 64
HEADER_BYTES = 1 + 8 + SIGNATURE_BYTES
DOMAIN = b"p2pindex/swim/v1\x00"
MAX_CLOCK_SKEW = 120.0
"""Seconds a datagram's timestamp may differ from the receiver's clock (keep NTP running)."""
REORDER_WINDOW = 5_000_000
"""Microseconds behind a sender's newest datagram within which late arrivals still count."""
_MAX_REMEMBERED = 4096
UNPROVEN_RATE = 200.0
"""Signature checks a second of datagrams from addresses no valid one came from: a few
times what joining members send, a few percent of a core for an attacker's flood."""
UNPROVEN_BURST = 400
MAX_PROVEN = 4096
"""Source addresses remembered as having sent a valid datagram (the oldest go first)."""
_MICRO = 1_000_000


class _ReplayWindow:
    """Sequences seen from one sender recently; anything older than ``floor`` is refused."""

    __slots__ = ("floor", "highest", "incarnation", "oldest_incarnation", "seen")

    def __init__(self, oldest_incarnation: int = 0) -> None:
        self.highest = 0
        self.floor = 0
        self.seen: set[int] = set()
        self.incarnation = oldest_incarnation
        """The newest SWIM incarnation the sender's datagrams carried."""
        self.oldest_incarnation = oldest_incarnation
        """Datagrams of an earlier incarnation are refused (the window restarted past it)."""

    def accept(self, sequence: int) -> bool:
        if sequence <= self.floor or sequence in self.seen:
            return False
        if sequence <= self.highest - REORDER_WINDOW:
            return False
        self.seen.add(sequence)
        if sequence > self.highest:
            self.highest = sequence
        if len(self.seen) > _MAX_REMEMBERED:
            horizon = self.highest - REORDER_WINDOW
            kept = {s for s in self.seen if s > horizon}
            if len(kept) > _MAX_REMEMBERED // 2:
                self.floor = sorted(kept)[len(kept) // 2]
                kept = {s for s in kept if s > self.floor}
            self.seen = kept
        return True


def origin_of(payload: bytes) -> tuple[str, int] | None:
    """The sender id and incarnation a SWIM payload names (its second and third items),
    without decoding the rest.

    The payload is ``[version, sender, incarnation, ...]``; node ids travel as CBOR byte
    strings (hex ids) or text strings, incarnations as unsigned integers. Anything else is
    None: the core would refuse it too.
    """
    if not payload:
        return None
    head = payload[0]
    if 0x80 <= head <= 0x97:
        position = 1
    elif head == 0x98:
        position = 2
    elif head == 0x99:
        position = 3
    else:
        return None
    if payload[position : position + 1] != b"\x01":
        return None
    position += 1
    if position >= len(payload):
        return None
    initial = payload[position]
    major, info = initial >> 5, initial & 0x1F
    if major not in (2, 3):
        return None
    position += 1
    if info < 24:
        length = info
    elif info == 24 and position < len(payload):
        length = payload[position]
        position += 1
    else:
        return None
    raw = payload[position : position + length]
    if len(raw) != length or length == 0:
        return None
    if major == 2:
        sender = raw.hex()
    else:
        try:
            sender = raw.decode()
        except UnicodeDecodeError:
            return None
    incarnation = _uint_at(payload, position + length)
    return None if incarnation is None else (sender, incarnation)


def _uint_at(data: bytes, position: int) -> int | None:
    """The CBOR unsigned integer at ``position``, or None."""
    if position >= len(data):
        return None
    initial = data[position]
    if initial >> 5 != 0:
        return None
    info = initial & 0x1F
    if info < 24:
        return info
    width = {24: 1, 25: 2, 26: 4, 27: 8}.get(info)
    raw = data[position + 1 : position + 1 + width] if width else b""
    if not width or len(raw) != width:
        return None
    return int.from_bytes(raw, "big")


class DatagramSealer:
    """Signs what this node sends and verifies what it receives (``core.swim.Sealer``)."""

    def __init__(
        self,
        signing_key: SigningKey,
        cluster_id: bytes,
        directory: CertificateDirectory,
        wall_clock: Callable[[], float],
        counts: Counts | None = None,
    ) -> None:
        _, self._secret = crypto_sign_seed_keypair(bytes(signing_key))
        self._domain = DOMAIN + cluster_id
        self._directory = directory
        self._wall_clock = wall_clock
        self.counts: Counts = counts if counts is not None else Tally()
        self._sequence = 0
        self._windows: dict[str, _ReplayWindow] = {}
        self._proven: dict[Address, None] = {}
        """Source addresses a valid datagram came from, oldest first."""
        self._unproven = TokenBucket(UNPROVEN_RATE, UNPROVEN_BURST, wall_clock())
        self.on_stale: Callable[[str], None] | None = None
        """Told the sender of every datagram refused as stale (the clocks disagree and no
        window is open): an authenticated exchange with it can open one (``learn``)."""

    @property
    def overhead(self) -> int:
        return HEADER_BYTES

    def seal(self, payload: bytes) -> bytes:
        sequence = max(self._sequence + 1, int(self._wall_clock() * _MICRO))
        self._sequence = sequence
        head = sequence.to_bytes(8, "big")
        signed = crypto_sign(self._domain + head + payload, self._secret)
        return bytes((VERSION,)) + head + signed[:SIGNATURE_BYTES] + payload

    def open(self, data: bytes, source: Address) -> bytes | None:
        incr = self.counts.incr
        if len(data) <= HEADER_BYTES or data[0] != VERSION:
            incr("swim.malformed")
            return None
        head = data[1:9]
        signature = data[9:HEADER_BYTES]
        payload = data[HEADER_BYTES:]
        origin = origin_of(payload)
        if origin is None:
            incr("swim.malformed")
            return None
        sender, incarnation = origin
        verdict, certificate = self._directory.lookup(sender)
        if verdict is not Verdict.OK or certificate is None:
            incr(f"swim.{verdict.value}_sender")
            return None
        proven = source in self._proven
        if not proven and not self._unproven.take(self._wall_clock()):
            incr("swim.throttled")
            return None
        try:
            crypto_sign_open(signature + self._domain + head + payload, certificate.public_key)
        except BadSignatureError:
            incr("swim.bad_signature")
            return None
        sequence = int.from_bytes(head, "big")
        window = self._windows.get(sender)
        if window is None:
            # Only a sender this receiver keeps no window for (it restarted and forgot them)
            # is judged by the clocks: once a window exists it refuses every replay, and two
            # clocks that drift apart later must not make a member mute.
            if abs(sequence / _MICRO - self._wall_clock()) > MAX_CLOCK_SKEW:
                incr("swim.stale")
                if self.on_stale is not None:
                    self.on_stale(sender)
                return None
            window = self._windows[sender] = _ReplayWindow()
        if incarnation < window.oldest_incarnation:
            incr("swim.replayed")
            return None
        if not window.accept(sequence):
            if incarnation <= window.incarnation:
                incr("swim.replayed")
                return None
            # A newer incarnation behind the sender's old sequences: it restarted with its
            # clock stepped back. Start its window over from here (see the module docstring).
            incr("swim.window_restarts")
            window = self._windows[sender] = _ReplayWindow(incarnation)
            window.accept(sequence)
        window.incarnation = max(window.incarnation, incarnation)
        incr("swim.accepted")
        if not proven:  # signed, fresh and not a replay: its address has proved itself
            put_newest(self._proven, source, None, MAX_PROVEN)
        return payload

    def sequence_floor(self) -> int:
        """A sequence every datagram this node seals from now on exceeds: what it tells a
        peer over an authenticated session, so the peer needs no clock to judge them."""
        self._sequence = max(self._sequence, int(self._wall_clock() * _MICRO))
        return self._sequence

    def learn(self, sender: str, floor: int) -> None:
        """Open ``sender``'s window at ``floor`` (from ``sequence_floor``, received over an
        authenticated session) unless one is open: its datagrams from then on are judged
        by sequence, not by how far its clock is from this one."""
        if sender in self._windows or floor <= 0:
            return
        window = self._windows[sender] = _ReplayWindow()
        window.highest = floor
        self.counts.incr("swim.window_learned")

    def forget(self, node_id: str) -> None:
        """Drop a sender's replay window (it left for good or was revoked)."""
        self._windows.pop(node_id, None)

"""An encrypted, authenticated session over any trio stream, after the handshake set its keys.

Every ``send_all`` becomes sealed records (XSalsa20-Poly1305, ``crypto_secretbox``) of at
most ``RECORD_PLAINTEXT`` bytes, each ``[4-byte length][ciphertext + 16-byte tag]``. The
nonce is the record's position in the stream (a 64-bit counter each side keeps and never
sends), so a record that is forged, altered, dropped, replayed or moved fails to open: order
and uniqueness are enforced by construction, not by bookkeeping. The two directions use
different keys, so their counters never collide.

The RPC channel already coalesces every queued frame into one ``send_all``, so the crypto
cost is paid per batch, not per message (figures: README, Measuring).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, NoReturn

import trio
from nacl.bindings import crypto_secretbox_easy, crypto_secretbox_open_easy
from nacl.exceptions import CryptoError

from p2pindex.net.base import ImmediateSend, immediate_send
from p2pindex.net.tcp_stream import MAX_READ
from p2pindex.security.access import Peer

RECORD_PLAINTEXT = 256 * 1024
TAG_BYTES = 16
MAX_RECORD = RECORD_PLAINTEXT + TAG_BYTES
_HEADER = struct.Struct(">I")
_NONCE = struct.Struct(">Q16x")
"""A record's nonce: its 64-bit position in the stream, zero-padded to 24 bytes."""

FailureReporter = Callable[[Peer, str, str], None]
"""Called once with (peer, reason, detail) when the session breaks because of bad input."""


class SessionBroken(trio.BrokenResourceError):
    """The peer sent a record that failed authentication, or cut one short."""


class SecureStream(trio.abc.Stream):
    def __init__(
        self,
        inner: trio.abc.Stream,
        send_key: bytes,
        receive_key: bytes,
        peer: Peer,
        *,
        buffered: bytes = b"",
        on_failure: FailureReporter | None = None,
    ) -> None:
        self._inner = inner
        self._send_key = send_key
        self._receive_key = receive_key
        self.peer = peer
        self._send_counter = 0
        self._receive_counter = 0
        self._pending = bytes(buffered)
        """Received bytes not yet opened, from ``_offset`` on."""
        self._offset = 0
        self._plain = b""
        self._on_failure = on_failure
        self._broken: str | None = None
        self._sending = False

    # --- trio.abc.Stream -------------------------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._broken is not None:
            self._raise_closed()
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this session")
        data = bytes(data)
        if len(data) <= RECORD_PLAINTEXT:
            out = self._seal(data)
        else:
            out = b"".join(
                self._seal(data[start : start + RECORD_PLAINTEXT])
                for start in range(0, len(data), RECORD_PLAINTEXT)
            )
        self._sending = True
        try:
            await self._inner.send_all(out)
        finally:
            self._sending = False
        if self._broken is not None:
            self._raise_closed()

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._broken is not None:
            self._raise_closed()
        plain = self._plain
        while not plain:
            record = self._next_record()
            if record is not None:
                plain = self._open(record)
                continue
            data = await self._inner.receive_some(MAX_READ)
            if self._broken is not None:
                self._raise_closed()
            if not data:
                held = len(self._pending) - self._offset
                if held:
                    self._fail("truncated_record", f"stream ended inside a record ({held} bytes)")
                return b""
            if self._offset < len(self._pending):
                data = self._pending[self._offset :] + data
            self._pending, self._offset = bytes(data), 0
        if max_bytes is None or max_bytes >= len(plain):
            self._plain = b""
            return plain
        self._plain = plain[max_bytes:]
        return plain[:max_bytes]

    async def aclose(self) -> None:
        self._broken = self._broken or "closed"
        await self._inner.aclose()

    # --- control ---------------------------------------------------------------------------

    async def abort(self, reason: str) -> None:
        """End the session now (its peer was revoked): closing the underlying stream makes
        pending sends and receives fail, and every later call raises."""
        self.mark_broken(reason)
        await trio.aclose_forcefully(self._inner)

    @property
    def closed_reason(self) -> str | None:
        """Why the session ended (None while it is open)."""
        return self._broken

    def mark_broken(self, reason: str) -> None:
        """Refuse every later send and receive (when no task can close the stream now)."""
        if self._broken is None:
            self._broken = reason

    # --- internals -------------------------------------------------------------------------

    def _raise_closed(self) -> NoReturn:
        raise trio.ClosedResourceError(f"session closed: {self._broken}")

    def _seal(self, chunk: bytes) -> bytes:
        sealed = crypto_secretbox_easy(chunk, _NONCE.pack(self._send_counter), self._send_key)
        self._send_counter += 1
        return _HEADER.pack(len(sealed)) + sealed

    def _next_record(self) -> bytes | None:
        pending, offset = self._pending, self._offset
        if len(pending) - offset < _HEADER.size:
            return None
        (length,) = _HEADER.unpack_from(pending, offset)
        if not TAG_BYTES <= length <= MAX_RECORD:
            self._fail("bad_record", f"record length {length} is out of range")
        end = offset + _HEADER.size + length
        if len(pending) < end:
            return None
        self._offset = end
        return pending[offset + _HEADER.size : end]

    def _open(self, record: bytes) -> bytes:
        try:
            plain = crypto_secretbox_open_easy(
                record, _NONCE.pack(self._receive_counter), self._receive_key
            )
        except CryptoError:
            self._fail(
                "bad_record",
                f"record {self._receive_counter} failed authentication "
                "(forged, altered, replayed or reordered)",
            )
        self._receive_counter += 1
        return plain

    def _fail(self, reason: str, detail: str) -> NoReturn:
        if self._broken is None:
            self._broken = reason
            if self._on_failure is not None:
                self._on_failure(self.peer, reason, detail)
        raise SessionBroken(f"{self.peer.name}: {detail}")


class ImmediateSecureStream(SecureStream):
    """A session over a stream that can take bytes without waiting (``ImmediateSend``, the
    simulated network's) can too, so the RPC channel keeps its direct path under security.
    Streams without it (TCP) get a plain ``SecureStream``: a ``send_nowait`` that always
    declined would cost the channel its coalescing of queued frames."""

    def __init__(self, inner: ImmediateSend, *args: Any, **options: Any) -> None:
        super().__init__(inner, *args, **options)  # type: ignore[arg-type]
        self._inner_send_nowait = inner.send_nowait

    def send_nowait(self, data: bytes) -> bool:
        if self._broken is not None or self._sending or len(data) > RECORD_PLAINTEXT:
            return False
        # The counter moves only once the record is out: a declined record was never seen,
        # so sealing other bytes under the same nonce later reveals nothing.
        sealed = crypto_secretbox_easy(data, _NONCE.pack(self._send_counter), self._send_key)
        if not self._inner_send_nowait(_HEADER.pack(len(sealed)) + sealed):
            return False
        self._send_counter += 1
        return True


def session_class(inner: trio.abc.Stream) -> type[SecureStream]:
    """What kind of session runs over ``inner`` (one that sends at once if ``inner`` can)."""
    return SecureStream if immediate_send(inner) is None else ImmediateSecureStream

"""The mutually authenticated handshake that opens every TCP connection when security is on.

    initiator                                            responder
    hello {kind, ephemeral X25519 key, nonce,
           credential, revocation list}          ->
                                                 <-  hello {the same, a node certificate}
                                                     + Ed25519 signature over the transcript
    Ed25519 signature over the transcript        ->
                                                 <-  ok   (or, at any step, a refusal saying why)

The transcript is both hellos, so each signature binds the signer's long-term key to both
ephemeral keys: nobody in the middle can substitute a key, and replaying an old handshake
gives keys nobody holds. Session keys (one per direction) come from BLAKE2b keyed with the
X25519 shared secret over the transcript hash. The responder checks the initiator's
credential as soon as the first hello arrives, so most refusals cost it no signature and
reach the initiator as a clear message, not as a dropped connection.

Every handshake message starts with ``MAGIC``; read as a plain frame's length it exceeds any
frame limit, so a plain peer and a secure one recognise each other at the first four bytes and
answer with an error the other side understands.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

import cbor2
import trio
from nacl.bindings import crypto_scalarmult, crypto_scalarmult_base
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from p2pindex.config import Limits
from p2pindex.core import strict_cbor
from p2pindex.errors import PermissionDenied, ProtocolError
from p2pindex.net.secure.session import FailureReporter, SecureStream, session_class
from p2pindex.security.access import Peer, PeerKind
from p2pindex.security.certs import verify_capability, verify_node_certificate
from p2pindex.security.errors import ConnectionRefused, CredentialRejected, HandshakeFailed
from p2pindex.security.trust import TrustState
from p2pindex.wire.codec import FrameDecoder, encode_frame
from p2pindex.wire.messages import ErrorReply

MAGIC = b"P2PS"
VERSION = 1
MAX_MESSAGE = 256 * 1024
"""A hello holds a certificate and a revocation list; nothing legitimate comes near this."""
DEFAULT_TIMEOUT = 5.0
_PLAIN_FRAME_LIMIT = 64 * 1024
"""Largest plain frame read from an unauthenticated peer, only to answer it with an error."""
_HEADER = struct.Struct(">4sI")
_SERVER_LABEL = b"p2pindex/handshake/v1/responder\x00"
_CLIENT_LABEL = b"p2pindex/handshake/v1/initiator\x00"
_KINDS = {kind.value: kind for kind in PeerKind}

Clock = Callable[[], float]
Screen = Callable[[bytes], ConnectionRefused | None]
"""Given a client's verified public key: why the node refuses it anyway (a connection limit,
its recent conduct), or None. Asked before the responder spends its own cryptography on it."""
RandomBytes = Callable[[int], bytes]
"""Where a handshake's ephemeral keys and nonces come from: ``os.urandom`` in a process; the
simulator passes a stream seeded from the run's seed, so a run's bytes repeat exactly."""


@dataclass(frozen=True, slots=True)
class LocalParty:
    """What this side presents: its key, its signed credential and what kind of party it is,
    and the randomness its handshakes draw on."""

    signing_key: SigningKey
    credential: bytes
    kind: PeerKind
    random_bytes: RandomBytes = field(default=os.urandom, compare=False)


@dataclass(frozen=True, slots=True)
class Accepted:
    stream: SecureStream
    peer: Peer


@dataclass(frozen=True, slots=True)
class _Hello:
    kind: PeerKind
    ephemeral: bytes
    credential: bytes
    revocations: bytes | None


def _frame(message: dict[str, object]) -> bytes:
    body = cbor2.dumps(message, canonical=True)
    return _HEADER.pack(MAGIC, len(body)) + body


class _Reader:
    """Exact reads over a stream, keeping whatever arrives past the handshake."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._received = False

    async def exactly(self, count: int) -> bytes:
        while len(self._buffer) < count:
            data = await self._stream.receive_some(max(count - len(self._buffer), 4096))
            if not data:
                if not self._buffer and not self._received:
                    raise HandshakeFailed(
                        "closed_before_hello",
                        "the peer closed the connection without sending anything (a port "
                        "check or an abandoned connection attempt)",
                    )
                raise HandshakeFailed(
                    "truncated",
                    f"truncated handshake: the peer closed the connection after "
                    f"{len(self._buffer)} of {count} expected bytes",
                )
            self._buffer += data
            self._received = True
        out = bytes(self._buffer[:count])
        del self._buffer[:count]
        return out

    def leftover(self) -> bytes:
        return bytes(self._buffer)

    async def body(self, header: bytes) -> bytes:
        magic, length = _HEADER.unpack(header)
        if magic != MAGIC:
            raise HandshakeFailed("malformed", "malformed handshake: a message lacks the marker")
        if length > MAX_MESSAGE:
            raise HandshakeFailed("malformed", f"handshake message of {length} bytes is too large")
        return await self.exactly(length)

    async def message(self) -> dict[str, object]:
        return _decode(await self.body(await self.exactly(_HEADER.size)))


def _decode(body: bytes) -> dict[str, object]:
    try:
        value = strict_cbor.loads(body)
    except strict_cbor.MalformedCbor as exc:
        raise HandshakeFailed("malformed", f"malformed handshake message: {exc}") from None
    if type(value) is not dict or not all(type(key) is str for key in value):
        raise HandshakeFailed("malformed", "malformed handshake message: not a map")
    return value


def _hello(message: dict[str, object]) -> _Hello:
    version = message.get("v")
    if version != VERSION or type(version) is not int:
        raise HandshakeFailed("version", f"handshake version {version!r} is not {VERSION}")
    kind_name = message.get("kind")
    kind = _KINDS.get(kind_name) if type(kind_name) is str else None
    ephemeral = message.get("eph")
    nonce = message.get("nonce")
    credential = message.get("cred")
    revocations = message.get("rev")
    if (
        kind is None
        or type(ephemeral) is not bytes
        or len(ephemeral) != 32
        or type(nonce) is not bytes
        or len(nonce) != 32
        or type(credential) is not bytes
        or not (revocations is None or type(revocations) is bytes)
    ):
        raise HandshakeFailed("malformed", "malformed handshake hello")
    return _Hello(kind, ephemeral, credential, revocations)


def _refusal(message: dict[str, object], who: str) -> CredentialRejected | None:
    if "refuse" not in message:
        return None
    text = message.get("message")
    detail = f"{who} refused the connection: " + (
        text[:500] if type(text) is str else "no reason given"
    )
    reason = message["refuse"]
    if type(reason) is str and reason in ConnectionRefused.REASONS:
        return ConnectionRefused(reason, detail)
    return CredentialRejected("refused_by_peer", detail)


async def _refuse(stream: trio.abc.Stream, error: CredentialRejected | HandshakeFailed) -> None:
    """Tell the peer why before closing; best effort, since it may be gone already."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        await stream.send_all(_frame({"refuse": error.reason, "message": str(error)}))


def _admit(hello: _Hello, state: TrustState, now: float, who: str) -> Peer:
    """Check the credential in ``hello``; raises CredentialRejected saying what is wrong."""
    if hello.revocations is not None:
        state.offer(hello.revocations, who)
    if hello.kind is PeerKind.NODE:
        certificate = verify_node_certificate(hello.credential, state.trust, now, who, state.open)
        state.check_node(certificate)
        return Peer(PeerKind.NODE, certificate)
    capability = verify_capability(hello.credential, state.trust, now, who, state.open)
    state.check_capability(capability)
    return Peer(PeerKind.CLIENT, capability)


def _ephemeral(random_bytes: RandomBytes) -> tuple[bytes, bytes]:
    secret = random_bytes(32)
    return secret, crypto_scalarmult_base(secret)


def _keys(secret: bytes, peer_public: bytes, transcript: bytes) -> tuple[bytes, bytes]:
    """(initiator->responder key, responder->initiator key)."""
    shared = crypto_scalarmult(secret, peer_public)
    if not any(shared):
        raise CredentialRejected("bad_key_exchange", "the peer's ephemeral key is degenerate")
    forward = hashlib.blake2b(transcript, key=shared, digest_size=32, person=b"p2pindex i->r")
    backward = hashlib.blake2b(transcript, key=shared, digest_size=32, person=b"p2pindex r->i")
    return forward.digest(), backward.digest()


def _transcript(first: bytes, second: bytes) -> bytes:
    digest = hashlib.blake2b(digest_size=32, person=b"p2pindex hs v1")
    digest.update(len(first).to_bytes(4, "big") + first)
    digest.update(second)
    return digest.digest()


def _check_signature(peer: Peer, label: bytes, transcript: bytes, signature: object) -> None:
    if type(signature) is not bytes or len(signature) != 64:
        raise HandshakeFailed("malformed", "malformed handshake signature")
    try:
        VerifyKey(peer.credential.public_key).verify(label + transcript, signature)
    except BadSignatureError:
        raise CredentialRejected(
            "bad_handshake_signature",
            f"{peer.name} does not hold the key of the credential it presented",
        ) from None


def _hello_fields(local: LocalParty, public: bytes, state: TrustState) -> dict[str, object]:
    revocations = state.revocations
    return {
        "v": VERSION,
        "kind": local.kind.value,
        "eph": public,
        "nonce": local.random_bytes(32),
        "cred": local.credential,
        "rev": revocations.raw if revocations is not None else None,
    }


# --- responder -------------------------------------------------------------------------------


async def secure_server(
    stream: trio.abc.Stream,
    local: LocalParty,
    state: TrustState,
    clock: Clock,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    on_failure: FailureReporter | None = None,
    screen: Screen | None = None,
) -> Accepted:
    """Run the responder's side; raises CredentialRejected (the peer was refused and told
    why) or HandshakeFailed (truncated, malformed, timed out, or a plain-protocol peer).
    ``screen`` may refuse a client whose credential is good (see ``Screen``)."""
    with trio.move_on_after(timeout):
        return await _serve(stream, local, state, clock, on_failure, screen)
    raise HandshakeFailed("timeout", f"the handshake did not complete within {timeout:g}s")


async def _serve(
    stream: trio.abc.Stream,
    local: LocalParty,
    state: TrustState,
    clock: Clock,
    on_failure: FailureReporter | None,
    screen: Screen | None,
) -> Accepted:
    reader = _Reader(stream)
    header = await reader.exactly(_HEADER.size)
    if header[:4] != MAGIC:
        await _answer_plain_peer(stream, reader, header)
    first = await reader.body(header)
    try:
        hello = _hello(_decode(first))
        peer = _admit(hello, state, clock(), f"the connecting {hello.kind.value}")
        if screen is not None and peer.kind is PeerKind.CLIENT:
            refusal = screen(peer.credential.public_key)
            if refusal is not None:
                raise refusal
    except (CredentialRejected, HandshakeFailed) as exc:
        await _refuse(stream, exc)
        raise
    secret, public = _ephemeral(local.random_bytes)
    body = cbor2.dumps(_hello_fields(local, public, state), canonical=True)
    transcript = _transcript(first, body)
    signature = local.signing_key.sign(_SERVER_LABEL + transcript).signature
    await stream.send_all(_frame({"body": body, "sig": signature}))
    finish = await reader.message()
    refused = _refusal(finish, peer.name)
    if refused is not None:
        raise refused
    try:
        _check_signature(peer, _CLIENT_LABEL, transcript, finish.get("sig"))
        forward, backward = _keys(secret, hello.ephemeral, transcript)
    except (CredentialRejected, HandshakeFailed) as exc:
        await _refuse(stream, exc)
        raise
    await stream.send_all(_frame({"ok": True}))
    secured = session_class(stream)(
        stream, backward, forward, peer, buffered=reader.leftover(), on_failure=on_failure
    )
    return Accepted(secured, peer)


async def _answer_plain_peer(stream: trio.abc.Stream, reader: _Reader, header: bytes) -> NoReturn:
    """A peer that speaks the plain protocol gets its first request answered with
    PermissionDenied (so a client without credentials sees why), then the connection ends."""
    (length,) = struct.unpack_from(">I", header)
    message = (
        "this node requires authenticated connections: use client credentials "
        "(p2pindex token issue) or a node certificate (p2pindex cluster certify)"
    )
    if 4 <= length <= _PLAIN_FRAME_LIMIT:
        with contextlib.suppress(HandshakeFailed, ProtocolError):
            frame = header + await reader.exactly(length - 4)
            decoded = FrameDecoder(Limits()).feed(frame)
            if decoded:
                reply = ErrorReply(PermissionDenied.code, message)
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.send_all(encode_frame(reply, decoded[0].request_id))
    raise HandshakeFailed("not_secure", "the peer spoke the plain protocol without authenticating")


# --- initiator -------------------------------------------------------------------------------


async def secure_client(
    stream: trio.abc.Stream,
    local: LocalParty,
    state: TrustState,
    clock: Clock,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    expect_node: str | None = None,
    on_failure: FailureReporter | None = None,
) -> Accepted:
    """Run the initiator's side; the responder must present a valid node certificate (of
    ``expect_node`` when given). Raises CredentialRejected or HandshakeFailed."""
    with trio.move_on_after(timeout):
        return await _initiate(stream, local, state, clock, expect_node, on_failure)
    raise HandshakeFailed("timeout", f"the handshake did not complete within {timeout:g}s")


async def _initiate(
    stream: trio.abc.Stream,
    local: LocalParty,
    state: TrustState,
    clock: Clock,
    expect_node: str | None,
    on_failure: FailureReporter | None,
) -> Accepted:
    secret, public = _ephemeral(local.random_bytes)
    first = cbor2.dumps(_hello_fields(local, public, state), canonical=True)
    await stream.send_all(_HEADER.pack(MAGIC, len(first)) + first)
    reader = _Reader(stream)
    header = await reader.exactly(_HEADER.size)
    if header[:4] != MAGIC:
        raise HandshakeFailed(
            "not_secure",
            "the node answered without the secure handshake (is it running with --insecure?)",
        )
    reply = _decode(await reader.body(header))
    refused = _refusal(reply, "the node")
    if refused is not None:
        raise refused
    body, signature = reply.get("body"), reply.get("sig")
    try:
        if type(body) is not bytes:
            raise HandshakeFailed("malformed", "malformed handshake reply")
        hello = _hello(_decode(body))
        if hello.kind is not PeerKind.NODE:
            raise CredentialRejected("wrong_document", "the responder is not a node")
        peer = _admit(hello, state, clock(), "the node")
        if expect_node is not None and peer.node_id != expect_node:
            raise CredentialRejected(
                "wrong_node", f"expected node {expect_node} but {peer.name} answered"
            )
        transcript = _transcript(first, body)
        _check_signature(peer, _SERVER_LABEL, transcript, signature)
        forward, backward = _keys(secret, hello.ephemeral, transcript)
    except (CredentialRejected, HandshakeFailed) as exc:
        await _refuse(stream, exc)
        raise
    signature = local.signing_key.sign(_CLIENT_LABEL + transcript).signature
    await stream.send_all(_frame({"sig": signature}))
    final = await reader.message()
    refused = _refusal(final, peer.name)
    if refused is not None:
        raise refused
    if final.get("ok") is not True:
        raise HandshakeFailed("malformed", "malformed handshake confirmation")
    secured = session_class(stream)(
        stream, forward, backward, peer, buffered=reader.leftover(), on_failure=on_failure
    )
    return Accepted(secured, peer)

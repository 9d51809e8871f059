"""Every decoder that reads bytes from outside, as fuzz targets.

A target takes one input of bytes and runs it through the real decoder (and, where the
decoder is part of a state machine, through that machine: SWIM datagrams go into a real
``Swim`` with a real sealer and claims). A target may raise only the errors the decoder
promises for bad input (``expected``); anything else, or a hang, is a crash. Each target has
seeds (valid inputs) for the mutating fuzzer in ``simulations/fuzz.py`` and the short
hypothesis runs in ``tests/fuzz``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cbor2
from nacl.signing import SigningKey

from p2pindex.config import Limits
from p2pindex.core import versions
from p2pindex.core.swim import Swim, SwimConfig
from p2pindex.core.swim.codec import DecodeError, assemble, datagram_prefix, encode_record
from p2pindex.core.swim.messages import Alive
from p2pindex.core.versions import VersionVector
from p2pindex.errors import ConfigError, P2PIndexError, ProtocolError
from p2pindex.net.secure import handshake
from p2pindex.net.secure.session import SecureStream, SessionBroken
from p2pindex.security.certs import (
    Role,
    TrustSet,
    cluster_id_of,
    issue_capability,
    issue_node_certificate,
    issue_revocations,
    node_id_of,
    open_document,
    verify_capability,
    verify_node_certificate,
    verify_revocations,
)
from p2pindex.security.claims import Claims
from p2pindex.security.counting import Tally
from p2pindex.security.credentials import ClientCredentials
from p2pindex.security.datagrams import DatagramSealer
from p2pindex.security.directory import CertificateDirectory
from p2pindex.security.errors import CredentialRejected, HandshakeFailed
from p2pindex.security.trust import TrustState
from p2pindex.sim.scenario import scenario_from_dict
from p2pindex.types import Address, NodeState
from p2pindex.wire.codec import MESSAGE_TYPES, FrameDecoder, encode_frame
from p2pindex.wire.messages import Message

T0 = 1_800_000_000
AUTHORITY = SigningKey(bytes([1]) * 32)
CLUSTER = cluster_id_of(bytes(AUTHORITY.verify_key))
TRUST = TrustSet(CLUSTER, frozenset({bytes(AUTHORITY.verify_key)}))
ALICE, BOB = SigningKey(bytes([10]) * 32), SigningKey(bytes([11]) * 32)
LIMITS = Limits()


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], object]
    expected: tuple[type[BaseException], ...]
    seeds: tuple[bytes, ...]


# --- sample messages of every schema -----------------------------------------------------------


def _sample_value(name: str, annotation: object) -> object:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is bytes:
        return b"key" if "key" in name else b"\x00\x01value"
    if annotation is str:
        return "quorum" if name == "consistency" else "n1"
    if annotation is bool:
        return False
    if annotation is int:
        return 1
    if origin in (typing.Union, types.UnionType):
        if type(None) in args:
            return None
        return _sample_value(name, args[0])
    if origin is list:
        return [_sample_value(name, args[0])]
    if origin is tuple:
        return tuple(_sample_value(name, arg) for arg in args)
    if origin is dict or annotation is dict:
        return {"a": 1}
    return None


def sample_messages() -> list[Message]:
    """One valid instance of every message type (what the mutators start from)."""
    samples = []
    for cls in sorted(MESSAGE_TYPES.values(), key=lambda c: c.TYPE):
        hints = typing.get_type_hints(cls)
        fields = {f.name: _sample_value(f.name, hints[f.name]) for f in dataclasses.fields(cls)}
        try:
            samples.append(cls(**fields))
        except (TypeError, ValueError):
            continue
    return samples


def _frames(data: bytes) -> None:
    decoder = FrameDecoder(LIMITS)
    decoder.feed(data)
    decoder.eof()


def _schema(data: bytes) -> None:
    """The bytes as a CBOR value placed where a message's fields go, for every type: reaches
    the schema checks directly instead of through a mutated frame header."""
    try:
        fields = cbor2.loads(data)
    except Exception:
        return
    for type_code in MESSAGE_TYPES:
        payload = cbor2.dumps([1, type_code, 7, fields])
        decoder = FrameDecoder(LIMITS)
        decoder.feed(len(payload).to_bytes(4, "big") + payload)


# --- handshakes, sessions ------------------------------------------------------------------


def _handshake(data: bytes) -> None:
    message = handshake._decode(data)
    handshake._refusal(message, "fuzz")
    handshake._hello(message)


_KEY = bytes(range(32))


def _session(data: bytes) -> None:
    stream = SecureStream(
        None,  # type: ignore[arg-type]  # records are opened without touching the stream
        _KEY,
        _KEY,
        types.SimpleNamespace(name="fuzz"),  # type: ignore[arg-type]
    )
    stream._pending = data
    while (record := stream._next_record()) is not None:
        stream._open(record)


def _session_seeds() -> tuple[bytes, ...]:
    sender = SecureStream(None, _KEY, _KEY, types.SimpleNamespace(name="s"))  # type: ignore[arg-type]
    return (sender._seal(b"hello") + sender._seal(b"x" * 100), sender._seal(b""))


# --- SWIM datagrams, push-pull and claims, through a real core ----------------------------


def _certificate(key: SigningKey) -> bytes:
    return issue_node_certificate(
        AUTHORITY, CLUSTER, bytes(key.verify_key), issued=T0, lifetime=86400 * 365
    )


class _Swim:
    def __init__(self) -> None:
        clock = lambda: float(T0 + 10)  # noqa: E731
        directory = CertificateDirectory(TrustState(TRUST), clock)
        for key in (ALICE, BOB):
            directory.add_raw(_certificate(key))
        bob = node_id_of(bytes(BOB.verify_key))
        self.sealer = DatagramSealer(BOB, CLUSTER, directory, clock, Tally())
        self.alice = DatagramSealer(ALICE, CLUSTER, directory, clock, Tally())
        claims = Claims(BOB, bob, CLUSTER, directory)
        self.swim = Swim(
            SwimConfig.default(),
            bob,
            Address("127.0.0.2", 7000),
            1,
            random.Random(1),
            0.0,
            sealer=self.sealer,
            claims=claims,
        )
        self.plain = Swim(
            SwimConfig.default(), "bob", Address("127.0.0.2", 7000), 1, random.Random(2), 0.0
        )


_SWIM: _Swim | None = None


def _world() -> _Swim:
    global _SWIM
    if _SWIM is None:
        _SWIM = _Swim()
    return _SWIM


def _payload(sender: str) -> bytes:
    alive = Alive(sender, 5, Address("127.0.0.1", 7000), NodeState.ACTIVE)
    return assemble(datagram_prefix(sender, 5), 3, [encode_record(alive)])


def _datagram(data: bytes) -> None:
    world = _world()
    world.plain.receive_datagram(data, Address("127.0.0.1", 7000), 1.0)
    world.swim.receive_datagram(data, Address("127.0.0.1", 7000), 1.0)
    # The same bytes as a payload signed by a certified member: reaches the decoder and the
    # claims check behind the signature.
    world.swim.receive_datagram(world.alice.seal(data), Address("127.0.0.1", 7000), 1.0)


def _datagram_seeds() -> tuple[bytes, ...]:
    alice = node_id_of(bytes(ALICE.verify_key))
    return (_payload(alice), _payload("alice"), _world().alice.seal(_payload(alice)))


def _push_pull(data: bytes) -> None:
    world = _world()
    world.plain.push_pull_respond(data, Address("127.0.0.1", 7000), 1.0)


def _push_pull_seeds() -> tuple[bytes, ...]:
    other = Swim(SwimConfig.default(), "alice", Address("127.0.0.1", 7000), 1, random.Random(3), 0)
    return (other.push_pull_request(True), other.push_pull_request(False))


# --- versions ----------------------------------------------------------------------------------


def _context(data: bytes) -> None:
    context = versions.decode_context(data)
    versions.update(None, context, "n1.e1", b"v")


def _record(data: bytes) -> None:
    obj = versions.decode_object(data)
    versions.update(obj, obj.context, "n1.e1", None)
    versions.merge(obj, obj)


def _version_seeds() -> tuple[bytes, ...]:
    obj = versions.update(None, VersionVector({"n1.e1": 3, "n2.e1": 9}), "n1.e1", b"v")
    obj = versions.merge(obj, versions.update(None, VersionVector(), "n3.e1", None))
    return (versions.encode_context(obj.context), versions.encode_object(obj))


# --- certificates, credentials, trust and scenario files --------------------------------------


def _certificates(data: bytes) -> None:
    now = T0 + 10
    open_document(data, TRUST)
    for verify in (verify_node_certificate, verify_capability):
        with contextlib.suppress(CredentialRejected):
            verify(data, TRUST, now, "fuzz")
    verify_revocations(data, TRUST, "fuzz")


def _certificate_seeds() -> tuple[bytes, ...]:
    key = bytes(ALICE.verify_key)
    return (
        _certificate(ALICE),
        issue_capability(AUTHORITY, CLUSTER, key, Role.WRITE, prefix=b"a/", issued=T0, lifetime=9),
        issue_revocations(AUTHORITY, CLUSTER, version=2, issued=T0, node_ids=["x"], serials=[4]),
    )


class _Files:
    """Files written under one private directory (credentials must be mode 0600)."""

    directory: Path | None = None

    @classmethod
    def path(cls, name: str) -> Path:
        if cls.directory is None:
            import tempfile

            cls.directory = Path(tempfile.mkdtemp(prefix="p2pindex-fuzz-"))
        return cls.directory / name


def _credentials(data: bytes) -> None:
    path = _Files.path("client.cred")
    path.write_bytes(data)
    path.chmod(0o600)
    ClientCredentials.load(path)


def _credential_seeds() -> tuple[bytes, ...]:
    capability = issue_capability(
        AUTHORITY, CLUSTER, bytes(ALICE.verify_key), Role.READ, issued=T0, lifetime=60
    )
    doc = ClientCredentials(ALICE, capability, TRUST).to_json()
    return (doc.encode(), json.dumps({"format": "x", "key": "00"}).encode())


def _trust(data: bytes) -> None:
    TrustSet.from_json(data.decode("utf-8", "replace"), "fuzz")


def _scenario(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return
    scenario_from_dict(document, source="fuzz")


def _scenario_seeds() -> tuple[bytes, ...]:
    root = Path(__file__).resolve().parents[2] / "p2pindex" / "sim" / "scenarios"
    return tuple(path.read_bytes() for path in sorted(root.glob("*.toml"))[:6])


def targets() -> list[Target]:
    frames = tuple(encode_frame(m, 3) for m in sample_messages())
    fields = tuple(cbor2.dumps(cbor2.loads(f[4:])[3]) for f in frames)
    certificate_errors = (CredentialRejected,)
    return [
        Target("frames", _frames, (ProtocolError,), (*frames, b"".join(frames[:6]))),
        Target("schemas", _schema, (ProtocolError,), fields),
        Target("handshake", _handshake, (HandshakeFailed,), _handshake_seeds()),
        Target("session", _session, (SessionBroken,), _session_seeds()),
        Target("swim_datagram", _datagram, (), _datagram_seeds()),
        Target("swim_push_pull", _push_pull, (DecodeError, P2PIndexError), _push_pull_seeds()),
        Target("context", _context, (ValueError,), _version_seeds()[:1]),
        Target("record", _record, (ValueError,), _version_seeds()[1:]),
        Target("certificates", _certificates, certificate_errors, _certificate_seeds()),
        Target("credentials", _credentials, (ConfigError,), _credential_seeds()),
        Target("trust", _trust, (ConfigError,), (TRUST.to_json().encode(),)),
        Target("scenario", _scenario, (ConfigError,), _scenario_seeds()),
    ]


def _handshake_seeds() -> tuple[bytes, ...]:
    hello = {
        "v": handshake.VERSION,
        "kind": "node",
        "eph": bytes(32),
        "nonce": bytes(32),
        "cred": _certificate(ALICE),
        "rev": None,
    }
    refusal = {"refuse": "x", "message": "no"}
    return (cbor2.dumps(hello, canonical=True), cbor2.dumps(refusal, canonical=True))

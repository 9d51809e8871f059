"""A client's credentials: its key, the capability the authority issued for it, and the
authority keys it checks nodes against — one file, so a client needs one option (or
``P2PINDEX_CREDENTIALS``) to talk to a secure cluster.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import trio
from nacl.signing import SigningKey

from p2pindex.errors import ConfigError
from p2pindex.net.tcp_stream import connect_tcp
from p2pindex.security.access import PeerKind
from p2pindex.security.certs import ClientCapability, TrustSet, verify_capability
from p2pindex.security.errors import CredentialRejected, HandshakeFailed
from p2pindex.security.handshake import DEFAULT_TIMEOUT, LocalParty, secure_client
from p2pindex.security.keys import write_file_atomically
from p2pindex.security.trust import TrustState
from p2pindex.types import Address

CREDENTIALS_FORMAT = "p2pindex-credentials/1"
CREDENTIALS_ENV = "P2PINDEX_CREDENTIALS"


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    signing_key: SigningKey
    capability: bytes
    trust: TrustSet

    def check(self, now: float) -> ClientCapability:
        """The capability, if it is one this cluster's authority issued and still valid."""
        try:
            capability = verify_capability(self.capability, self.trust, now, "these credentials")
        except CredentialRejected as exc:
            raise ConfigError(f"unusable client credentials: {exc}") from None
        if capability.public_key != bytes(self.signing_key.verify_key):
            raise ConfigError("the capability was issued for another client key")
        return capability

    def to_json(self) -> str:
        doc = {
            "format": CREDENTIALS_FORMAT,
            "key": bytes(self.signing_key).hex(),
            "capability": base64.b64encode(self.capability).decode(),
            "trust": json.loads(self.trust.to_json()),
        }
        return json.dumps(doc, indent=2) + "\n"

    def save(self, path: Path) -> None:
        """Written with mode 0600: the file holds the client's private key."""
        write_file_atomically(path, self.to_json().encode(), 0o600)

    @classmethod
    def load(cls, path: Path | str) -> ClientCredentials:
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read credentials {path}: {exc.strerror}") from None
        except ValueError:
            raise ConfigError(
                f"{path} is not a p2pindex credentials file (it is not JSON); "
                "make one with `p2pindex token issue`"
            ) from None
        if not isinstance(doc, dict) or doc.get("format") != CREDENTIALS_FORMAT:
            raise ConfigError(f"{path} is not a p2pindex credentials file")
        if path.stat().st_mode & 0o077:
            raise ConfigError(f"{path} is readable by other users; run chmod 600 {path}")
        bad = f"{path} is not a valid credentials file"
        try:
            key = SigningKey(bytes.fromhex(doc["key"]))
            capability = base64.b64decode(doc["capability"], validate=True)
            trust = TrustSet.from_json(json.dumps(doc["trust"]), str(path))
        except KeyError as exc:
            raise ConfigError(f"{bad}: the {exc.args[0]!r} field is missing") from None
        except (ValueError, TypeError):
            raise ConfigError(
                f"{bad}: its key must be 32 bytes of hex and its capability base64"
            ) from None
        return cls(key, capability, trust)

    @classmethod
    def from_environment(cls) -> ClientCredentials | None:
        path = os.environ.get(CREDENTIALS_ENV)
        return cls.load(path) if path else None


class Connector(Protocol):
    """Anything that opens streams to addresses (a Transport's ``connect``)."""

    async def connect(self, address: Address) -> trio.abc.Stream: ...


class SecureConnector:
    """Opens client connections: TCP, then the initiator's handshake with the credentials.

    Refusals raise PermissionDenied (CredentialRejected) with the node's reason; a node that
    does not speak the secure protocol raises ProtocolError (HandshakeFailed); an unreachable
    node raises OSError, as a plain connection would.
    """

    def __init__(
        self,
        credentials: ClientCredentials,
        *,
        transport: Connector | None = None,
        connect_timeout: float = 2.0,
        handshake_timeout: float = DEFAULT_TIMEOUT,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        credentials.check(wall_clock())
        self._local = LocalParty(credentials.signing_key, credentials.capability, PeerKind.CLIENT)
        self._state = TrustState(credentials.trust)
        self._transport = transport
        self._connect_timeout = connect_timeout
        self._handshake_timeout = handshake_timeout
        self._wall_clock = wall_clock

    async def connect(self, address: Address) -> trio.abc.Stream:
        stream = await self._open(address)
        try:
            accepted = await secure_client(
                stream,
                self._local,
                self._state,
                self._wall_clock,
                timeout=self._handshake_timeout,
            )
        except (CredentialRejected, HandshakeFailed):
            await trio.aclose_forcefully(stream)
            raise
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            await trio.aclose_forcefully(stream)
            raise OSError(f"the connection to {address} broke in the handshake: {exc}") from None
        return accepted.stream

    async def _open(self, address: Address) -> trio.abc.Stream:
        if self._transport is not None:
            return await self._transport.connect(address)
        return await connect_tcp(address, self._connect_timeout)


def client_connector(
    credentials: ClientCredentials | str | Path | None,
    transport: Connector | None,
    *,
    connect_timeout: float,
    handshake_timeout: float = DEFAULT_TIMEOUT,
) -> Connector | None:
    """How a client opens connections: through the handshake when it has credentials
    (given, or named by $P2PINDEX_CREDENTIALS), else plainly over ``transport`` (None: TCP)."""
    if isinstance(credentials, str | Path):
        credentials = ClientCredentials.load(credentials)
    credentials = credentials or ClientCredentials.from_environment()
    if credentials is None:
        return transport
    return SecureConnector(
        credentials,
        transport=transport,
        connect_timeout=connect_timeout,
        handshake_timeout=handshake_timeout,
    )

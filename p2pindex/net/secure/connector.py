"""How a client opens connections to a secure cluster: TCP (or any Transport's ``connect``),
then the initiator's handshake with the client's credentials.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import trio

from p2pindex.net.secure.handshake import (
    DEFAULT_TIMEOUT,
    LocalParty,
    RandomBytes,
    secure_client,
)
from p2pindex.net.tcp_stream import connect_tcp
from p2pindex.security.access import PeerKind
from p2pindex.security.credentials import ClientCredentials
from p2pindex.security.errors import CredentialRejected, HandshakeFailed
from p2pindex.security.trust import TrustState
from p2pindex.types import Address


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
        random_bytes: RandomBytes = os.urandom,
    ) -> None:
        credentials.check(wall_clock())
        self._local = LocalParty(
            credentials.signing_key, credentials.capability, PeerKind.CLIENT, random_bytes
        )
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

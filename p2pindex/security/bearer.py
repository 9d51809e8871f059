"""Bearer tokens: a client capability that any HTTP client can carry in one header.

A session client proves it holds the private key its capability names; an HTTP client
cannot run that handshake, so a bearer token carries a 32-byte secret instead, and the
capability inside it is issued for ``SHA-256(domain || secret)`` rather than a signing key.
Whoever holds the token may use it (that is what "bearer" means), and nobody else can: a
capability seen on the wire or in a log is useless without the secret, and no one can find
a signing key whose public key is that hash, so a bearer capability cannot open a session.

Roles, key prefix, expiry and revocation (by serial) are the capability's own, checked by
the same code as every other client's. An expired token is refused saying when it expired
and the command that issues its replacement (same role and prefix): an HTTP client cannot
renew a token, so its user needs to know whom to ask for what.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import shlex

from p2pindex.core.newest import put_newest
from p2pindex.security.authority import Authority
from p2pindex.security.certs import (
    ClientCapability,
    Role,
    TrustSet,
    check_validity,
    open_document,
    when,
)
from p2pindex.security.errors import CredentialRejected
from p2pindex.security.trust import TrustState

TOKEN_PREFIX = "p2pb1."
"""Marks the format (and its version), so a token pasted into the wrong place is recognised."""
SECRET_BYTES = 32
MAX_TOKEN_CHARS = 4096
_DOMAIN = b"p2pindex bearer token v1\x00"
CACHE_SIZE = 1024
"""Tokens whose signature was verified recently; a hit skips the 40 us Ed25519 check."""


def bearer_key(secret: bytes) -> bytes:
    """The 32 bytes a bearer capability is issued for (in place of a client public key)."""
    return hashlib.sha256(_DOMAIN + secret).digest()


def new_secret() -> bytes:
    return os.urandom(SECRET_BYTES)


def encode_token(secret: bytes, capability: bytes) -> str:
    raw = base64.urlsafe_b64encode(secret + capability).rstrip(b"=")
    return TOKEN_PREFIX + raw.decode()


def issue_bearer(authority: Authority, role: Role, prefix: bytes, lifetime: int) -> str:
    """A new bearer token with the given capabilities (the authority signs it)."""
    secret = new_secret()
    return encode_token(secret, authority.capability(bearer_key(secret), role, prefix, lifetime))


def decode_token(token: str) -> tuple[bytes, bytes]:
    """(secret, capability blob); raises CredentialRejected("malformed") for anything else."""
    if len(token) > MAX_TOKEN_CHARS or not token.startswith(TOKEN_PREFIX):
        raise CredentialRejected("malformed", "the bearer token is not a p2pindex token")
    body = token[len(TOKEN_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise CredentialRejected("malformed", "the bearer token is not valid base64url") from None
    if len(raw) <= SECRET_BYTES:
        raise CredentialRejected("malformed", "the bearer token is truncated")
    return raw[:SECRET_BYTES], raw[SECRET_BYTES:]


class BearerVerifier:
    """Turns a presented token into the capability it grants, or says why not.

    Signature checks are cached per token (bounded); expiry and revocation are checked on
    every use, so a revocation list adopted a moment ago refuses the very next request.
    """

    def __init__(self, state: TrustState) -> None:
        self._state = state
        self._verified: dict[str, ClientCapability] = {}
        self._verified_under: TrustSet | None = None
        """The trust set the cache was filled under; a rotation empties it."""

    @property
    def trust(self) -> TrustSet:
        return self._state.trust

    def verify(self, token: str, now: float) -> ClientCapability:
        if self._verified_under is not self._state.trust:
            self._verified.clear()
            self._verified_under = self._state.trust
        capability = self._verified.get(token)
        if capability is None:
            capability = self._open(token)
            put_newest(self._verified, token, capability, CACHE_SIZE)
        try:
            check_validity(capability, now)
        except CredentialRejected as exc:
            if exc.reason != "expired":
                raise
            raise CredentialRejected("expired", expired_message(capability, now)) from None
        self._state.check_capability(capability)
        return capability

    def _open(self, token: str) -> ClientCapability:
        """The capability a token carries, its signature and secret checked (its times are
        checked on every use, by ``verify``). The secret comes before expiry: whoever holds
        an expired capability without its secret learns nothing about renewing it."""
        secret, blob = decode_token(token)
        capability = open_document(blob, self._state.trust, "client capability")
        if not isinstance(capability, ClientCapability):
            raise CredentialRejected(
                "wrong_document", "the bearer token carries no client capability"
            )
        if not hmac.compare_digest(capability.public_key, bearer_key(secret)):
            raise CredentialRejected(
                "bad_secret", "the bearer token's secret does not match its capability"
            )
        return capability


def renewal_command(capability: ClientCapability) -> str:
    """The command an operator runs to issue a token like ``capability`` (same role and
    prefix), with the authority directory and output file left for them to fill in."""
    words = ["p2pindex", "token", "issue", "--authority", "DIR", "--role"]
    words.append(capability.role.value)
    if capability.prefix:
        try:
            words += ["--prefix", shlex.quote(capability.prefix.decode("utf-8"))]
        except UnicodeDecodeError:  # the CLI takes UTF-8 only: the operator must choose
            words += ["--prefix", "PREFIX"]
    return " ".join([*words, "--bearer", "--out", "FILE"])


def expired_message(capability: ClientCapability, now: float) -> str:
    return (
        f"the bearer token expired at {when(capability.expires)} (now {when(int(now))}); "
        f"ask an operator of this cluster for a new one: `{renewal_command(capability)}`"
    )

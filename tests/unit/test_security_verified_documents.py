"""A node remembers the credentials it verified, so a client that reconnects does not cost
it another Ed25519 verification; what changes with time (expiry, revocation, rotation) is
still checked on every handshake."""

from __future__ import annotations

import pytest
from nacl.signing import SigningKey

import p2pindex.security.trust as trust_module
from p2pindex.security.certs import (
    Role,
    TrustSet,
    issue_capability,
    issue_revocations,
    verify_capability,
)
from p2pindex.security.errors import CredentialRejected
from p2pindex.security.trust import OPENED_MAX, TrustState
from tests.unit.test_security_handshake import (
    AUTHORITY,
    OTHER,
    TRUST,
    client_party,
    handshake,
    now,
    server_manager,
)


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every document the trust state really verified (its cache's misses)."""
    calls: list[bytes] = []
    real = trust_module.open_document

    def counting(blob, trust, what="document"):  # type: ignore[no-untyped-def]
        calls.append(blob)
        return real(blob, trust, what)

    monkeypatch.setattr(trust_module, "open_document", counting)
    return calls


def capability(seed: int, lifetime: int = 3600) -> bytes:
    key = SigningKey(bytes([seed]) * 32)
    issued = int(now()) - 100
    return issue_capability(
        AUTHORITY, TRUST.cluster_id, bytes(key.verify_key), Role.WRITE, issued=issued,
        lifetime=lifetime, serial=seed,
    )  # fmt: skip


async def test_a_client_that_reconnects_is_verified_once_and_still_admitted(opened) -> None:
    manager = server_manager()
    party = client_party(40)
    for _ in range(3):
        _, server, error, _ = await handshake(party, manager)
        assert error is None and server is not None and server.peer.kind.value == "client"
    assert opened.count(party.credential) == 1
    assert manager.stats["security.handshake.accepted.client"] == 3


async def test_a_revocation_refuses_a_credential_verified_before(opened) -> None:
    manager = server_manager()
    party = client_party(41)
    _, server, error, _ = await handshake(party, manager)
    assert error is None and server is not None
    serial = server.peer.credential.serial
    manager.adopt(
        issue_revocations(AUTHORITY, TRUST.cluster_id, version=3, issued=0, serials=[serial]),
        "test",
    )
    _, server, error, _ = await handshake(party, manager)
    assert server is None and "revoked" in str(error)
    assert manager.stats["security.handshake.refused.revoked"] == 1


def test_expiry_is_checked_on_every_use_of_a_remembered_credential(opened) -> None:
    state = TrustState(TRUST)
    blob = capability(42, lifetime=200)  # issued 100 s ago, expires in 100 s
    verify_capability(blob, state.trust, now(), "the client", state.open)
    with pytest.raises(CredentialRejected, match="expired"):
        verify_capability(blob, state.trust, now() + 200, "the client", state.open)
    assert opened == [blob]


def test_a_new_trust_set_forgets_what_the_old_one_verified(opened) -> None:
    state = TrustState(TRUST)
    blob = capability(43)
    verify_capability(blob, state.trust, now(), "the client", state.open)
    other = bytes(OTHER.verify_key)
    state.trust = TrustSet(TRUST.cluster_id, frozenset({other}))  # AUTHORITY retired
    with pytest.raises(CredentialRejected, match="does not list"):
        verify_capability(blob, state.trust, now(), "the client", state.open)
    assert opened == [blob, blob]


def test_only_verified_documents_are_kept_and_at_most_opened_max(opened) -> None:
    state = TrustState(TRUST)
    forged = bytearray(capability(44))
    forged[-1] ^= 1
    for _ in range(2):
        with pytest.raises(CredentialRejected, match="does not verify"):
            verify_capability(bytes(forged), state.trust, now(), "the client", state.open)
    assert len(opened) == 2  # a refusal is never remembered
    first = capability(1)
    blobs = [first] + [capability(50 + i % 200, lifetime=3600 + i) for i in range(OPENED_MAX)]
    for blob in blobs:
        state.open(blob, state.trust, "client capability")
    assert len(state._opened) == OPENED_MAX and first not in state._opened

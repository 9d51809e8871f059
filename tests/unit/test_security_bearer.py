"""Bearer tokens: only the holder of the secret can use the capability inside."""

from __future__ import annotations

import time

import pytest

from p2pindex.security.authority import Authority
from p2pindex.security.bearer import (
    BearerVerifier,
    decode_token,
    encode_token,
    issue_bearer,
    new_secret,
)
from p2pindex.security.certs import Role, when
from p2pindex.security.errors import CredentialRejected
from p2pindex.security.trust import TrustState


@pytest.fixture(scope="module")
def authority(tmp_path_factory) -> Authority:
    return Authority.init(tmp_path_factory.mktemp("authority"))


def test_a_token_grants_its_role_and_prefix(authority):
    token = issue_bearer(authority, Role.WRITE, b"app/", 3600)
    capability = BearerVerifier(TrustState(authority.trust)).verify(token, time.time())
    assert (capability.role, capability.prefix) == (Role.WRITE, b"app/")


def test_a_capability_with_another_secret_is_refused(authority):
    _, capability = decode_token(issue_bearer(authority, Role.ADMIN, b"", 3600))
    forged = encode_token(new_secret(), capability)
    with pytest.raises(CredentialRejected) as refused:
        BearerVerifier(TrustState(authority.trust)).verify(forged, time.time())
    assert refused.value.reason == "bad_secret"


def test_a_session_clients_capability_is_no_bearer_token(authority):
    credentials = authority.credentials(Role.ADMIN)
    stolen = encode_token(bytes(credentials.signing_key)[:32], credentials.capability)
    with pytest.raises(CredentialRejected) as refused:
        BearerVerifier(TrustState(authority.trust)).verify(stolen, time.time())
    assert refused.value.reason == "bad_secret"


@pytest.mark.parametrize("token", ["", "p2pb1.", "p2pb1.%%%", "xyz", "p2pb1." + "A" * 10_000])
def test_malformed_tokens_are_refused_with_a_reason(authority, token):
    with pytest.raises(CredentialRejected) as refused:
        BearerVerifier(TrustState(authority.trust)).verify(token, time.time())
    assert refused.value.reason == "malformed"


def test_expiry_is_checked_on_every_use_even_when_cached(authority):
    verifier = BearerVerifier(TrustState(authority.trust))
    token = issue_bearer(authority, Role.READ, b"", 60)
    verifier.verify(token, time.time())
    with pytest.raises(CredentialRejected) as refused:
        verifier.verify(token, time.time() + 120)
    assert refused.value.reason == "expired"


def test_an_expired_token_says_when_and_names_the_command_that_renews_it(authority):
    verifier = BearerVerifier(TrustState(authority.trust))
    token = issue_bearer(authority, Role.WRITE, b"app/", 60)
    expires = verifier.verify(token, time.time()).expires
    with pytest.raises(CredentialRejected) as refused:
        verifier.verify(token, expires + 5)
    assert refused.value.reason == "expired"
    message = str(refused.value)
    assert f"expired at {when(expires)}" in message
    assert "`p2pindex token issue --authority DIR --role write --prefix app/ --bearer" in message


def test_an_expired_capability_without_its_secret_learns_nothing_of_renewal(authority):
    _, capability = decode_token(issue_bearer(authority, Role.ADMIN, b"", 60))
    forged = encode_token(new_secret(), capability)
    with pytest.raises(CredentialRejected) as refused:
        BearerVerifier(TrustState(authority.trust)).verify(forged, time.time() + 120)
    assert refused.value.reason == "bad_secret"
    assert "token issue" not in str(refused.value)

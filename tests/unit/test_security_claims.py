"""Membership claims signed by whoever makes them stay verifiable however far they travel."""

from __future__ import annotations

import dataclasses
import random

import cbor2
import pytest
from nacl.signing import SigningKey

from p2pindex.core.swim.codec import decode_record, encode_record
from p2pindex.core.swim.messages import Alive, Dead, Suspect
from p2pindex.security.certs import (
    TrustSet,
    cluster_id_of,
    issue_node_certificate,
    issue_revocations,
    node_id_of,
)
from p2pindex.security.claims import Claims, signer_of
from p2pindex.security.counting import Tally
from p2pindex.security.directory import CertificateDirectory
from p2pindex.security.trust import TrustState
from p2pindex.types import Address, NodeState

T0 = 1_800_000_000.0
AUTHORITY = SigningKey(bytes([1]) * 32)
TRUST = TrustSet(
    cluster_id_of(bytes(AUTHORITY.verify_key)), frozenset({bytes(AUTHORITY.verify_key)})
)
KEYS = {name: SigningKey(bytes([seed]) * 32) for name, seed in (("a", 10), ("b", 11), ("m", 12))}
IDS = {name: node_id_of(bytes(k.verify_key)) for name, k in KEYS.items()}
A, B, M = IDS["a"], IDS["b"], IDS["m"]
WHERE = Address("10.0.0.1", 7000)


def setup() -> tuple[dict[str, Claims], TrustState, Tally]:
    state = TrustState(TRUST)
    directory = CertificateDirectory(state, lambda: T0)
    for signing_key in KEYS.values():
        public = bytes(signing_key.verify_key)
        directory.add_raw(
            issue_node_certificate(
                AUTHORITY, TRUST.cluster_id, public, issued=int(T0), lifetime=3600
            )
        )
    counts = Tally()
    claims = {
        name: Claims(KEYS[name], IDS[name], TRUST.cluster_id, directory, counts) for name in KEYS
    }
    return claims, state, counts


def relay(record: object) -> object:
    """What a record looks like after a hop: encoded, sent, decoded."""
    return decode_record(cbor2.loads(encode_record(record)))


def test_signers_are_the_subject_or_the_accuser() -> None:
    assert signer_of(Alive(A, 1, WHERE, NodeState.ACTIVE)) == A
    assert signer_of(Suspect(A, 1, B)) == B
    assert signer_of(Dead(A, 1, B)) == B
    assert signer_of(Dead(A, 1, A)) == A


def test_claims_verify_after_any_number_of_hops() -> None:
    claims, _, counts = setup()
    records = [
        claims["a"].sign(Alive(A, 7, WHERE, NodeState.ACTIVE)),
        claims["a"].sign(Dead(A, 7, A)),
        claims["b"].sign(Suspect(A, 7, B)),
        claims["b"].sign(Dead(A, 7, B)),
    ]
    for record in records:
        hopped = record
        for _ in range(5):
            hopped = relay(hopped)
        assert hopped == record
        assert claims["m"].verify(hopped)
    assert sum(counts.values.values()) == 0


def test_a_node_cannot_sign_for_another() -> None:
    claims, _, _ = setup()
    with pytest.raises(ValueError, match="cannot sign"):
        claims["m"].sign(Alive(A, 9, WHERE, NodeState.ACTIVE))


def test_forged_claims_are_refused() -> None:
    """Mallory signs with her own key claims that are Alice's or Bob's to make."""
    claims, _, counts = setup()
    own = claims["m"].sign(Suspect(A, 3, M))
    forged = [
        dataclasses.replace(own, accuser=B),
        Alive(A, 99, Address("6.6.6.6", 1), NodeState.ACTIVE, own.signature),
        Dead(A, 3, A, own.signature),
    ]
    for record in forged:
        assert not claims["b"].verify(relay(record))
    assert counts["claims.bad_signature"] == 3


def test_altered_claims_are_refused() -> None:
    claims, _, counts = setup()
    alive = claims["a"].sign(Alive(A, 5, WHERE, NodeState.ACTIVE))
    altered = [
        dataclasses.replace(alive, incarnation=6),
        dataclasses.replace(alive, address=Address("10.0.0.9", 7000)),
        dataclasses.replace(alive, state=NodeState.DEGRADED),
    ]
    for record in altered:
        assert not claims["b"].verify(record)
    assert counts["claims.bad_signature"] == 3


def test_unsigned_unknown_and_revoked_signers_are_refused() -> None:
    claims, state, counts = setup()
    assert not claims["b"].verify(Alive(A, 1, WHERE, NodeState.ACTIVE))
    stranger = SigningKey(bytes([99]) * 32)
    stranger_id = node_id_of(bytes(stranger.verify_key))
    record = Suspect(A, 1, stranger_id, bytes(64))
    assert not claims["b"].verify(record)
    good = claims["m"].sign(Suspect(A, 1, M))
    assert claims["b"].verify(good)
    state.offer(issue_revocations(AUTHORITY, TRUST.cluster_id, version=1, issued=0, node_ids=[M]))
    claims["b"].forget_verified()
    assert not claims["b"].verify(good)
    assert counts["claims.unsigned"] == 1
    assert counts["claims.uncertified_signer"] == 1
    assert counts["claims.revoked_signer"] == 1


def test_a_thousand_forged_claims_none_accepted() -> None:
    claims, _, counts = setup()
    rng = random.Random(5)
    for incarnation in range(1000):
        record = Alive(A, incarnation, WHERE, NodeState.ACTIVE, rng.randbytes(64))
        assert not claims["b"].verify(record)
    assert counts["claims.bad_signature"] == 1000


def test_a_replacements_token_claim_is_signed_with_its_record() -> None:
    """Only the node itself can say whose tokens it holds: a relay that adds, changes or
    drops ``tokens_of`` breaks the signature."""
    claims, _, counts = setup()
    record = claims["a"].sign(Alive(A, 4, WHERE, NodeState.SYNCING, tokens_of=B))
    assert claims["m"].verify(relay(record))
    for forged in (
        dataclasses.replace(record, tokens_of=M),
        dataclasses.replace(record, tokens_of=None),
    ):
        assert not claims["m"].verify(relay(forged))
    plain = claims["a"].sign(Alive(A, 5, WHERE, NodeState.ACTIVE))
    assert not claims["m"].verify(dataclasses.replace(plain, tokens_of=B))
    assert counts["claims.bad_signature"] == 3

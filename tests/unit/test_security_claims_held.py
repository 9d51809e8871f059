"""Claims refused only because the signer's certificate is not known yet are held, located
and handed back once the certificate arrives; nothing else is."""

from __future__ import annotations

import dataclasses

from nacl.signing import SigningKey

from p2pindex.core.swim.messages import Alive, Suspect
from p2pindex.security.certs import (
    TrustSet,
    cluster_id_of,
    issue_node_certificate,
    node_id_of,
)
from p2pindex.security.claims import _WAITING_LIMIT, Claims
from p2pindex.security.counting import Tally
from p2pindex.security.directory import CertificateDirectory
from p2pindex.security.trust import TrustState
from p2pindex.types import Address, NodeState

T0 = 1_800_000_000.0
AUTHORITY = SigningKey(bytes([1]) * 32)
TRUST = TrustSet(
    cluster_id_of(bytes(AUTHORITY.verify_key)), frozenset({bytes(AUTHORITY.verify_key)})
)
OLD, NEW = SigningKey(bytes([20]) * 32), SigningKey(bytes([21]) * 32)
OLD_ID, NEW_ID = (node_id_of(bytes(k.verify_key)) for k in (OLD, NEW))
WHERE = Address("10.0.0.21", 7000)


def certificate(key: SigningKey) -> bytes:
    public = bytes(key.verify_key)
    return issue_node_certificate(AUTHORITY, TRUST.cluster_id, public, issued=int(T0), lifetime=60)


def setup() -> tuple[CertificateDirectory, Claims, Claims, Tally, list[tuple[str, Address]]]:
    directory = CertificateDirectory(TrustState(TRUST), lambda: T0)
    directory.add_raw(certificate(OLD))
    located: list[tuple[str, Address]] = []
    counts = Tally()

    def locate(node_id: str, address: Address) -> None:
        located.append((node_id, address))

    here = Claims(OLD, OLD_ID, TRUST.cluster_id, directory, counts, locate=locate)
    newcomer = Claims(NEW, NEW_ID, TRUST.cluster_id, directory, Tally())
    return directory, here, newcomer, counts, located


def test_a_newcomers_claims_are_held_until_its_certificate_arrives() -> None:
    directory, here, newcomer, counts, located = setup()
    alive = newcomer.sign(Alive(NEW_ID, 4, WHERE, NodeState.ACTIVE))
    accusation = newcomer.sign(Suspect(OLD_ID, 1, NEW_ID))
    assert not here.verify(alive) and not here.verify(accusation)
    assert counts["claims.uncertified_signer"] == 2
    assert located == [(NEW_ID, WHERE)]  # an alive record says where its signer lives
    assert here.take_verifiable() == []
    directory.add_raw(certificate(NEW))
    assert here.take_verifiable() == [alive, accusation]
    assert here.verify(alive) and here.verify(accusation)
    assert here.take_verifiable() == []
    assert counts["claims.retried"] == 2


def test_records_refused_for_other_reasons_are_not_held() -> None:
    directory, here, newcomer, _, located = setup()
    forged = newcomer.sign(Alive(NEW_ID, 4, WHERE, NodeState.ACTIVE))
    directory.add_raw(certificate(NEW))
    assert not here.verify(dataclasses.replace(forged, incarnation=5))
    assert not here.verify(Suspect(OLD_ID, 1, NEW_ID))
    directory.add_raw(certificate(SigningKey(bytes([22]) * 32)))
    assert here.take_verifiable() == []
    assert located == []


def test_the_held_records_are_bounded_and_the_oldest_go_first() -> None:
    directory, here, _, _, _ = setup()
    strangers = [SigningKey(i.to_bytes(32, "big")) for i in range(100, 101 + _WAITING_LIMIT)]
    records = []
    for key in strangers:
        records.append(Suspect(OLD_ID, 1, node_id_of(bytes(key.verify_key)), bytes(64)))
        assert not here.verify(records[-1])
    directory.add_raw(certificate(strangers[0]))
    directory.add_raw(certificate(strangers[-1]))
    assert here.take_verifiable() == [records[-1]]

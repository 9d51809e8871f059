"""Signed membership in the simulated network: honest clusters lose nothing, and at least
1,000 injected forgeries of each kind (claims and whole datagrams) are all refused and counted."""

from __future__ import annotations

import dataclasses
from collections import Counter

from nacl.signing import SigningKey

from p2pindex.core.swim import SwimConfig
from p2pindex.core.swim.codec import assemble, datagram_prefix, encode_control, encode_record
from p2pindex.core.swim.messages import Alive, Dead, Ping, Record, Suspect
from p2pindex.security.certs import node_id_of
from p2pindex.security.claims import claim_bytes
from p2pindex.security.counting import Tally
from p2pindex.sim.swim_sim import SimAuthority, SimNode, SwimSimulation
from p2pindex.types import Address, Liveness, NodeState

CFG = SwimConfig.default()
PER_KIND = 1000


def views_of(nodes: list[SimNode], subject: SimNode) -> set[tuple[Liveness, int]]:
    return {
        (m.liveness, m.incarnation)
        for n in nodes
        if n is not subject
        for m in [n.swim.member(subject.node_id)]
        if m is not None
    }


def drops(nodes: list[SimNode]) -> Counter[str]:
    total: Counter[str] = Counter()
    for node in nodes:
        total.update({k: v for k, v in node.security.values.items() if k != "swim.accepted"})
    return total


def test_a_signed_cluster_detects_a_crash_and_drops_nothing_honest() -> None:
    sim = SwimSimulation(seed=11, signed=True, loss=0.01)
    nodes = sim.build(CFG, 12)
    sim.run_until(5.0)
    victim = nodes[5]
    sim.crash(victim)
    sim.run_until(40.0)
    live = [n for n in nodes if n.up]
    assert views_of(live, victim) == {(Liveness.DEAD, 1)}
    sim.restart(victim, incarnation=9, seeds=[nodes[0].address])
    sim.run_until(60.0)
    assert views_of(nodes, victim) == {(Liveness.ALIVE, 9)}
    assert drops(nodes) == Counter()
    assert all(n.security["swim.accepted"] > 0 for n in nodes)
    assert all(n.swim.statistics().get("bad_claim", 0) == 0 for n in nodes)
    assert sim.max_datagram <= 1200


def test_a_revoked_member_is_cut_off_and_declared_dead_by_the_others() -> None:
    sim = SwimSimulation(seed=12, signed=True)
    nodes = sim.build(CFG, 10)
    sim.run_until(5.0)
    revoked = nodes[3]
    assert sim.authority is not None
    sim.authority.revoke(revoked.node_id)
    sim.run_until(60.0)
    others = [n for n in nodes if n is not revoked]
    assert {lv for lv, _ in views_of(others, revoked)} == {Liveness.DEAD}
    refused = drops(others)
    assert refused["swim.revoked_sender"] > 0
    assert set(refused) <= {"swim.revoked_sender", "claims.revoked_signer"}


def sign_as(key: SigningKey, cluster_id: bytes, record: Record) -> Record:
    """``record`` signed with any key at all (a forger's view of signing)."""
    signature = key.sign(claim_bytes(cluster_id, record)).signature
    return dataclasses.replace(record, signature=signature)


def test_a_thousand_of_each_forgery_are_refused_counted_and_change_nothing() -> None:
    sim = SwimSimulation(seed=13, signed=True)
    nodes = sim.build(CFG, 16)
    authority = sim.authority
    assert isinstance(authority, SimAuthority)
    cluster = authority.trust.cluster_id
    target, victim, honest = nodes[0], nodes[1], nodes[2]

    captured: list[tuple[SimNode, bytes, Address]] = []

    def capture(node: SimNode, data: bytes, source: Address) -> None:
        if len(captured) < PER_KIND:
            captured.append((node, data, source))

    sim.taps.append(capture)
    sim.run_until(40.0)
    sim.taps.clear()
    assert len(captured) == PER_KIND

    mallory_key = authority.derive_key("mallory")  # a certified member turned forger
    mallory = authority.certify(mallory_key)
    revoked_key = authority.derive_key("revoked")
    revoked = authority.certify(revoked_key)
    authority.revoke(revoked)
    outsider_key = authority.derive_key("outsider")  # never certified
    outsider = node_id_of(bytes(outsider_key.verify_key))
    where = Address("10.66.0.1", 7000)
    sealers = {
        name: authority.sealer(key, Tally())
        for name, key in (("m", mallory_key), ("r", revoked_key), ("u", outsider_key))
    }
    inc = victim.incarnation
    own = victim.swim.own_record()

    def claims_of(kind: str, i: int) -> Record:
        later = inc + 1 + i
        if kind == "forged alive":
            record: Record = Alive(victim.node_id, later, where, NodeState.ACTIVE)
            return sign_as(mallory_key, cluster, record)
        if kind == "forged suspect":
            return sign_as(mallory_key, cluster, Suspect(victim.node_id, later, honest.node_id))
        if kind == "forged dead":
            return sign_as(mallory_key, cluster, Dead(victim.node_id, later, honest.node_id))
        if kind == "forged leave":
            return sign_as(mallory_key, cluster, Dead(victim.node_id, later, victim.node_id))
        if kind == "altered":
            assert isinstance(own, Alive)
            return dataclasses.replace(own, incarnation=later)
        if kind == "revoked signer":
            return sign_as(revoked_key, cluster, Suspect(victim.node_id, later, revoked))
        assert kind == "uncertified signer"
        return sign_as(outsider_key, cluster, Suspect(victim.node_id, later, outsider))

    def payload(sender: str, *parts: bytes) -> bytes:
        return assemble(datagram_prefix(sender, 1), 3, list(parts))

    claim_kinds = {
        "forged alive": "claims.bad_signature",
        "forged suspect": "claims.bad_signature",
        "forged dead": "claims.bad_signature",
        "forged leave": "claims.bad_signature",
        "altered": "claims.bad_signature",
        "revoked signer": "claims.revoked_signer",
        "uncertified signer": "claims.uncertified_signer",
    }
    before = {n.node_id: Counter(n.security.values) for n in nodes}
    views_before = views_of(nodes, victim)
    for kind in claim_kinds:
        for i in range(PER_KIND):
            record = encode_record(claims_of(kind, i))
            sim.inject(target, sealers["m"].seal(payload(mallory, record)), where)
    ping = encode_control(Ping(1, target.node_id))
    datagram_kinds: dict[str, list[tuple[SimNode, bytes]]] = {
        "swim.bad_signature": [
            (target, sealers["m"].seal(payload(honest.node_id, ping))) for _ in range(PER_KIND)
        ]
        + [(node, data[:-1] + bytes([data[-1] ^ 1])) for node, data, _ in captured],
        "swim.replayed": [(node, data) for node, data, _ in captured],
        "swim.revoked_sender": [
            (target, sealers["r"].seal(payload(revoked, ping))) for _ in range(PER_KIND)
        ],
        "swim.uncertified_sender": [
            (target, sealers["u"].seal(payload(outsider, ping))) for _ in range(PER_KIND)
        ],
    }
    for datagrams in datagram_kinds.values():
        for node, data in datagrams:
            sim.inject(node, data, where)
    sim.run_until(50.0)

    delta: Counter[str] = Counter()
    for node in nodes:
        delta.update(Counter(node.security.values) - before[node.node_id])
    delta.pop("swim.accepted", None)
    expected: Counter[str] = Counter()
    for reason in claim_kinds.values():
        expected[reason] += PER_KIND
    for reason, datagrams in datagram_kinds.items():
        expected[reason] += len(datagrams)
    assert delta == expected
    assert target.swim.statistics()["bad_claim"] == len(claim_kinds) * PER_KIND
    assert views_of(nodes, victim) == views_before == {(Liveness.ALIVE, inc)}
    assert victim.swim.incarnation == inc
    for node in nodes:
        ids = {m.node_id for m in node.swim.members()}
        assert not ids & {mallory, revoked, outsider}
        assert node.swim.statistics().get("refutations", 0) == 0

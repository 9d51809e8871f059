"""The SWIM core's claim hook, fed by hand with a fake signer: what it signs, what it checks."""

from __future__ import annotations

import dataclasses
import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pindex.core.swim import Member, Swim, SwimConfig
from p2pindex.core.swim.codec import (
    assemble,
    datagram_prefix,
    decode_datagram,
    encode_push_pull,
    encode_record,
)
from p2pindex.core.swim.messages import Alive, Dead, PushPullRequest, Record, Suspect
from p2pindex.errors import ProtocolError
from p2pindex.types import Address, Liveness, NodeState

CFG = SwimConfig.default()


def addr(i: int) -> Address:
    return Address(f"10.0.0.{i}", 7000)


def signer(record: Record) -> str:
    return record.node_id if type(record) is Alive else record.accuser


def tag(key_owner: str, record: Record) -> bytes:
    """A fake signature: keyed by whoever signs, over the record without its signature."""
    unsigned = encode_record(dataclasses.replace(record, signature=None))
    return hashlib.blake2b(unsigned, key=key_owner.encode(), digest_size=64).digest()


def signed_by(key_owner: str, record: Record) -> Record:
    return dataclasses.replace(record, signature=tag(key_owner, record))


class FakeClaims:
    """Stands in for ``security.claims.Claims``: same contract, a keyed hash for Ed25519."""

    def __init__(self, node_id: str, known: set[str]) -> None:
        self.node_id = node_id
        self.known = known
        self.signed: list[Record] = []

    def sign(self, record):
        assert signer(record) == self.node_id, "the core may only sign its own claims"
        self.signed.append(record)
        return signed_by(self.node_id, record)

    def verify(self, record: Record) -> bool:
        who = signer(record)
        return who in self.known and record.signature == tag(who, record)


EVERYONE = {f"n{i}" for i in range(10)}


def make(node_id: str = "n0", inc: int = 1, known: set[str] = EVERYONE) -> Swim:
    index = int(node_id[1:])
    claims = FakeClaims(node_id, set(known))
    return Swim(CFG, node_id, addr(index), inc, random.Random(index), 0.0, claims=claims)


def know(swim: Swim, *indices: int, inc: int = 1) -> None:
    records = [signed_by(f"n{i}", Alive(f"n{i}", inc, addr(i), NodeState.ACTIVE)) for i in indices]
    swim.restore(records, 0.0)
    swim.datagrams_to_send()
    while swim.next_event():
        pass


def dg(sender: str, *records: Record) -> bytes:
    return assemble(datagram_prefix(sender, 1), 3, [encode_record(r) for r in records])


def records_sent(swim: Swim) -> list[Record]:
    return [r for _, d in swim.datagrams_to_send() for r in decode_datagram(d)[0].records]


def gossip_until(swim: Swim, now: float, until: float) -> list[Record]:
    """Run timers to ``until``, returning every record the engine sent meanwhile."""
    out = records_sent(swim)
    while True:
        deadline = swim.next_deadline()
        if deadline is None or deadline > until:
            return out
        now = max(now, deadline)
        swim.handle_timer(now)
        out += records_sent(swim)


def verifies(record: Record) -> bool:
    return record.signature == tag(signer(record), record)


def snapshot(swim: Swim) -> list[Member]:
    return sorted(swim.members(), key=lambda m: m.node_id)


# --- what the core signs -----------------------------------------------------------------------


def test_the_own_alive_record_is_signed_and_resigned_with_every_change() -> None:
    swim = make("n0")
    assert verifies(swim.own_record()) and swim.own_record().incarnation == 1
    swim.set_local_state(NodeState.DEGRADED, 0.0)
    record = swim.own_record()
    assert record.incarnation == 2 and record.state is NodeState.DEGRADED and verifies(record)


def test_a_refutation_is_signed_by_the_subject() -> None:
    swim = make("n0", inc=5)
    know(swim, 1)
    swim.receive_datagram(dg("n1", signed_by("n1", Suspect("n0", 7, "n1"))), addr(1), 0.0)
    refutation = [r for r in records_sent(swim) + gossip_until(swim, 0.0, 1.0) if r.node_id == "n0"]
    assert swim.incarnation == 8
    assert refutation and all(type(r) is Alive and verifies(r) for r in refutation)


def test_a_leave_is_signed_by_the_leaver() -> None:
    swim = make("n0")
    know(swim, 1, 2)
    swim.leave(0.0)
    leaves = [r for r in records_sent(swim) if type(r) is Dead]
    assert leaves and all(r == signed_by("n0", Dead("n0", 1, "n0")) for r in leaves)
    assert swim.member("n0").liveness is Liveness.LEFT


def test_suspicions_and_deaths_this_node_raises_are_signed_by_it() -> None:
    swim = make("n0")
    know(swim, 1)
    sent = gossip_until(swim, 0.0, CFG.suspicion_max(2) + 5.0)
    suspect = [r for r in sent if type(r) is Suspect and r.node_id == "n1"]
    dead = [r for r in sent if type(r) is Dead and r.node_id == "n1"]
    assert suspect and dead
    assert all(r.accuser == "n0" and verifies(r) for r in suspect + dead)
    assert swim.member("n1").liveness is Liveness.DEAD


def test_a_death_heard_in_push_pull_becomes_a_suspicion_signed_here() -> None:
    swim = make("n0")
    know(swim, 1, 2)
    death = signed_by("n2", Dead("n1", 1, "n2"))
    request = PushPullRequest("n2", False, None, ())
    swim.push_pull_respond(encode_push_pull(request, [encode_record(death)]), addr(2), 0.0)
    assert swim.member("n1").liveness is Liveness.SUSPECT
    sent = gossip_until(swim, 0.0, 1.0)
    assert signed_by("n0", Suspect("n1", 1, "n0")) in sent


def test_relays_pass_records_on_with_their_makers_signature() -> None:
    swim = make("n0")
    know(swim, 1, 2, 3, 4)
    accusation = signed_by("n2", Suspect("n1", 1, "n2"))
    swim.receive_datagram(dg("n3", accusation), addr(3), 0.0)
    sent = gossip_until(swim, 0.0, 1.0)
    relayed = [r for r in sent if r.node_id == "n1"]
    assert relayed and all(r == accusation for r in relayed)


def test_without_claims_records_travel_unsigned() -> None:
    swim = Swim(CFG, "n0", addr(0), 1, random.Random(0), 0.0)
    swim.restore([Member("n1", addr(1), 1, Liveness.ALIVE, NodeState.ACTIVE)], 0.0)
    swim.receive_datagram(dg("n1", Suspect("n2", 1, "n1")), addr(1), 0.0)
    swim.leave(1.0)
    assert swim.own_record().signature is None
    assert all(r.signature is None for r in records_sent(swim))
    assert "bad_claim" not in swim.statistics()


# --- what the core refuses ---------------------------------------------------------------------

ALIVE_N1 = Alive("n1", 1, addr(1), NodeState.ACTIVE)

FORGERIES: dict[str, Record] = {
    "alive for another node": signed_by("n3", Alive("n1", 9, addr(3), NodeState.ACTIVE)),
    "suspect naming another accuser": signed_by("n3", Suspect("n1", 1, "n2")),
    "dead naming another accuser": signed_by("n3", Dead("n1", 1, "n2")),
    "leave for another node": signed_by("n3", Dead("n1", 1, "n1")),
    "altered incarnation": dataclasses.replace(signed_by("n1", ALIVE_N1), incarnation=9),
    "altered address": dataclasses.replace(signed_by("n1", ALIVE_N1), address=addr(3)),
    "altered state": dataclasses.replace(signed_by("n1", ALIVE_N1), state=NodeState.DEGRADED),
    "unsigned": Suspect("n1", 1, "n3"),
    "truncated signature": dataclasses.replace(
        signed_by("n3", Suspect("n1", 1, "n3")), signature=b"x"
    ),
    "signer not certified": signed_by("n42", Suspect("n1", 1, "n42")),
    "accusation of this node": signed_by("n3", Suspect("n0", 1, "n2")),
    "impersonation of this node": signed_by("n3", Alive("n0", 7, addr(3), NodeState.ACTIVE)),
}


@pytest.mark.parametrize("kind", list(FORGERIES))
def test_unverifiable_records_in_datagrams_are_dropped_and_counted(kind: str) -> None:
    swim = make("n0")
    know(swim, 1, 2, 3)
    before = snapshot(swim)
    swim.receive_datagram(dg("n3", FORGERIES[kind]), addr(3), 0.0)
    assert snapshot(swim) == before
    assert swim.incarnation == 1
    stats = swim.statistics()
    assert stats["bad_claim"] == 1
    assert stats["broadcast_queue"] == 0
    assert gossip_until(swim, 0.0, 0.5) == []


@pytest.mark.parametrize("kind", list(FORGERIES))
def test_unverifiable_records_in_push_pull_are_dropped_and_counted(kind: str) -> None:
    swim = make("n0")
    know(swim, 1, 2, 3)
    before = snapshot(swim)
    request = PushPullRequest("n3", False, None, ())
    swim.push_pull_respond(
        encode_push_pull(request, [encode_record(FORGERIES[kind])]), addr(3), 0.0
    )
    assert snapshot(swim) == before
    assert swim.statistics()["bad_claim"] == 1


def test_the_datagram_still_delivers_its_good_records_and_controls() -> None:
    swim = make("n0")
    know(swim, 1, 2, 3)
    good = signed_by("n2", Suspect("n1", 1, "n2"))
    swim.receive_datagram(dg("n3", FORGERIES["alive for another node"], good), addr(3), 0.0)
    assert swim.member("n1").liveness is Liveness.SUSPECT
    assert swim.statistics()["bad_claim"] == 1


def test_records_held_for_a_missing_certificate_merge_once_it_arrives() -> None:
    swim = make("n0", known=EVERYONE - {"n5"})
    know(swim, 1)
    newcomer = signed_by("n5", Alive("n5", 3, addr(5), NodeState.ACTIVE))
    swim.receive_datagram(dg("n1", newcomer), addr(1), 0.0)
    assert swim.member("n5") is None and swim.statistics()["bad_claim"] == 1
    swim._claims.known.add("n5")
    swim.receive_records([newcomer, FORGERIES["alive for another node"]], 1.0)
    assert swim.member("n5") == Member("n5", addr(5), 3, Liveness.ALIVE, NodeState.ACTIVE)
    assert swim.statistics()["bad_claim"] == 2
    assert newcomer in gossip_until(swim, 1.0, 2.0)


def test_a_bad_push_pull_is_still_refused_whole() -> None:
    swim = make("n0")
    with pytest.raises(ProtocolError):
        swim.push_pull_respond(b"\x00garbage", addr(1), 0.0)


RECORDS = st.one_of(
    st.builds(
        Alive,
        st.sampled_from(["n0", "n1", "n2"]),
        st.integers(0, 20),
        st.sampled_from([addr(1), addr(2), addr(9)]),
        st.sampled_from(list(NodeState)),
    ),
    st.builds(Suspect, st.sampled_from(["n0", "n1", "n2"]), st.integers(0, 20), st.just("n2")),
    st.builds(Dead, st.sampled_from(["n0", "n1", "n2"]), st.integers(0, 20), st.just("n2")),
)


@settings(max_examples=100, deadline=None)
@given(records=st.lists(RECORDS, min_size=1, max_size=20), forger=st.sampled_from(["n3", "n4"]))
def test_no_sequence_of_forged_claims_changes_anything(records: list[Record], forger: str) -> None:
    """Whatever a member (n3, n4) signs with its own key about others, nobody's view moves."""
    swim = make("n0")
    know(swim, 1, 2, 3, 4)
    before = snapshot(swim)
    forged = [signed_by(forger, r) for r in records]
    for index, record in enumerate(forged):
        swim.receive_datagram(dg(forger, record), addr(int(forger[1:])), float(index))
    swim.push_pull_respond(
        encode_push_pull(PushPullRequest(forger, False, None, ()), map(encode_record, forged)),
        addr(3),
        30.0,
    )
    assert snapshot(swim) == before
    assert swim.incarnation == 1
    assert swim.statistics()["bad_claim"] == 2 * len(forged)

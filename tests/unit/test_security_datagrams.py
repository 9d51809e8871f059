"""Signed SWIM datagrams: forged, altered, replayed, revoked and uncertified datagrams are
never accepted, and every one is counted — through the real SWIM core."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from p2pindex.core.swim import HARD_MAX_DATAGRAM, Swim, SwimConfig
from p2pindex.core.swim.codec import (
    assemble,
    datagram_prefix,
    encode_control,
    encode_record,
)
from p2pindex.core.swim.messages import Alive, Ping
from p2pindex.security.certs import (
    TrustSet,
    cluster_id_of,
    issue_node_certificate,
    issue_revocations,
    node_id_of,
)
from p2pindex.security.counting import Tally
from p2pindex.security.datagrams import (
    HEADER_BYTES,
    MAX_CLOCK_SKEW,
    REORDER_WINDOW,
    UNPROVEN_BURST,
    UNPROVEN_RATE,
    DatagramSealer,
    origin_of,
)
from p2pindex.security.directory import CertificateDirectory
from p2pindex.security.trust import TrustState
from p2pindex.types import Address, NodeState

INJECTED = 1000
T0 = 1_800_000_000.0
AUTHORITY = SigningKey(bytes([1]) * 32)
TRUST = TrustSet(
    cluster_id_of(bytes(AUTHORITY.verify_key)), frozenset({bytes(AUTHORITY.verify_key)})
)
OTHER_AUTHORITY = SigningKey(bytes([2]) * 32)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def key(seed: int) -> SigningKey:
    return SigningKey(bytes([seed]) * 32)


def node_id(signing_key: SigningKey) -> str:
    return node_id_of(bytes(signing_key.verify_key))


def certificate(signing_key: SigningKey, authority: SigningKey = AUTHORITY) -> bytes:
    cluster = cluster_id_of(bytes(authority.verify_key))
    return issue_node_certificate(
        authority, cluster, bytes(signing_key.verify_key), issued=int(T0), lifetime=86400
    )


ALICE, BOB, MALLORY, REVOKED, OUTSIDER = key(10), key(11), key(12), key(13), key(14)
ALICE_AT = Address("10.0.0.1", 7000)


class World:
    """Bob receives; Alice, Mallory and a revoked node are certified; an outsider is not."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.state = TrustState(TRUST)
        self.directory = CertificateDirectory(self.state, self.clock)
        for member in (ALICE, BOB, MALLORY, REVOKED):
            self.directory.add_raw(certificate(member))
        revocations = issue_revocations(
            AUTHORITY, TRUST.cluster_id, version=1, issued=int(T0), node_ids=[node_id(REVOKED)]
        )
        self.state.offer(revocations)
        self.counts = Tally()
        self.bob = DatagramSealer(BOB, TRUST.cluster_id, self.directory, self.clock, self.counts)
        self.swim = Swim(
            SwimConfig.default(),
            node_id(BOB),
            Address("10.0.0.2", 7000),
            1,
            random.Random(1),
            0.0,
            sealer=self.bob,
        )

    def sealer(self, signer: SigningKey) -> DatagramSealer:
        """A sealer with ``signer``'s key (its own directory: what it believes is irrelevant)."""
        return DatagramSealer(signer, TRUST.cluster_id, self.directory, self.clock, Tally())

    def deliver(self, data: bytes, source: Address = ALICE_AT) -> None:
        self.swim.receive_datagram(data, source, 1.0)

    def dropped(self) -> int:
        values = self.counts.values
        return sum(v for k, v in values.items() if k != "swim.accepted")


def payload(sender: str, seq: int) -> bytes:
    alive = Alive(sender, 5, Address("10.0.0.1", 7000), NodeState.ACTIVE)
    parts = [encode_control(Ping(seq & 0xFFFF, node_id(BOB))), encode_record(alive)]
    return assemble(datagram_prefix(sender, 5), 3, parts)


def test_sealed_datagrams_round_trip_through_the_swim_core() -> None:
    world = World()
    alice = world.sealer(ALICE)
    for seq in range(50):
        world.deliver(alice.seal(payload(node_id(ALICE), seq)))
    assert world.counts["swim.accepted"] == 50
    assert world.swim.statistics().get("bad_unsealed", 0) == 0
    assert world.swim.member(node_id(ALICE)) is not None
    assert alice.overhead == HEADER_BYTES == 73


def test_forged_datagrams_are_never_accepted() -> None:
    """Mallory (a certified member) signs datagrams that claim to come from Alice."""
    world = World()
    mallory = world.sealer(MALLORY)
    for seq in range(INJECTED):
        world.deliver(mallory.seal(payload(node_id(ALICE), seq)))
    report(world, "forged")
    assert world.counts["swim.accepted"] == 0
    assert world.counts["swim.bad_signature"] + world.counts["swim.throttled"] == INJECTED
    assert world.swim.statistics()["bad_unsealed"] == INJECTED
    assert world.swim.member(node_id(ALICE)) is None


def test_a_flood_of_forged_datagrams_buys_a_bounded_number_of_signature_checks() -> None:
    """Checking a signature costs tens of microseconds: a flood from an address that never
    sent a valid datagram gets the unproven budget, and a member heard before keeps being
    heard throughout."""
    world = World()
    alice, mallory = world.sealer(ALICE), world.sealer(MALLORY)
    alice_at, attacker_at = ALICE_AT, Address("10.0.0.66", 4444)
    world.deliver(alice.seal(payload(node_id(ALICE), 0)), alice_at)
    for _second in range(3):
        for seq in range(INJECTED):
            world.deliver(mallory.seal(payload(node_id(ALICE), seq)), attacker_at)
            if seq % 100 == 0:
                world.deliver(alice.seal(payload(node_id(ALICE), seq)), alice_at)
        world.clock.now += 1.0
    report(world, "flooded")
    checked = world.counts["swim.bad_signature"]
    assert checked <= UNPROVEN_BURST + 2 * UNPROVEN_RATE + 1
    assert checked + world.counts["swim.throttled"] == 3 * INJECTED
    assert world.counts["swim.accepted"] == 1 + 3 * INJECTED // 100  # every one of Alice's
    # A member new to this node, from a new address, is heard once the budget refills.
    world.clock.now += UNPROVEN_BURST / UNPROVEN_RATE
    world.deliver(mallory.seal(payload(node_id(MALLORY), 1)), Address("10.0.0.3", 7000))
    assert world.counts["swim.accepted"] == 2 + 3 * INJECTED // 100


def test_altered_datagrams_are_never_accepted() -> None:
    world = World()
    alice = world.sealer(ALICE)
    rng = random.Random(7)
    for seq in range(INJECTED):
        sealed = bytearray(alice.seal(payload(node_id(ALICE), seq)))
        index = rng.randrange(len(sealed))
        sealed[index] ^= rng.randrange(1, 256)
        world.deliver(bytes(sealed))
    report(world, "altered")
    assert world.counts["swim.accepted"] == 0
    assert world.dropped() == INJECTED
    assert world.swim.statistics()["bad_unsealed"] == INJECTED


def test_replayed_datagrams_are_never_accepted() -> None:
    world = World()
    alice = world.sealer(ALICE)
    captured = [alice.seal(payload(node_id(ALICE), seq)) for seq in range(INJECTED)]
    for data in captured:
        world.deliver(data)
    assert world.counts["swim.accepted"] == INJECTED
    rng = random.Random(3)
    for data in rng.sample(captured, len(captured)):
        world.deliver(data)
    report(world, "replayed")
    assert world.counts["swim.accepted"] == INJECTED
    assert world.counts["swim.replayed"] == INJECTED


def test_revoked_senders_are_never_accepted() -> None:
    world = World()
    revoked = world.sealer(REVOKED)
    for seq in range(INJECTED):
        world.deliver(revoked.seal(payload(node_id(REVOKED), seq)))
    report(world, "revoked")
    assert world.counts["swim.accepted"] == 0
    assert world.counts["swim.revoked_sender"] == INJECTED
    assert world.swim.member(node_id(REVOKED)) is None


def test_uncertified_senders_are_never_accepted() -> None:
    """An outsider with no certificate, and a node certified by another cluster's authority."""
    world = World()
    foreign = key(15)
    for signer in (OUTSIDER, foreign):
        sealer = world.sealer(signer)
        for seq in range(INJECTED // 2):
            world.deliver(sealer.seal(payload(node_id(signer), seq)))
    report(world, "uncertified")
    assert world.counts["swim.accepted"] == 0
    assert world.counts["swim.uncertified_sender"] == INJECTED
    assert node_id(OUTSIDER) in world.directory.wanted


def report(world: World, kind: str) -> None:
    accepted = world.counts["swim.accepted"]
    print(f"\n{kind}: injected {INJECTED}, dropped {world.dropped()}, accepted so far {accepted}")


def test_a_datagram_outside_the_clock_window_is_stale() -> None:
    world = World()
    old = world.sealer(ALICE).seal(payload(node_id(ALICE), 1))
    world.clock.now += MAX_CLOCK_SKEW + 1
    world.deliver(old)
    ahead = Clock()
    ahead.now = world.clock.now + MAX_CLOCK_SKEW + 1
    future = DatagramSealer(ALICE, TRUST.cluster_id, world.directory, ahead, Tally())
    world.deliver(future.seal(payload(node_id(ALICE), 2)))
    assert world.counts["swim.stale"] == 2
    world.deliver(world.sealer(ALICE).seal(payload(node_id(ALICE), 3)))
    assert world.counts["swim.accepted"] == 1


def test_reordering_within_the_window_is_tolerated_once() -> None:
    world = World()
    alice = world.sealer(ALICE)
    early = alice.seal(payload(node_id(ALICE), 1))
    world.clock.now += 1.0
    late = alice.seal(payload(node_id(ALICE), 2))
    world.deliver(late)
    world.deliver(early)
    world.deliver(early)
    assert world.counts["swim.accepted"] == 2 and world.counts["swim.replayed"] == 1
    ancient = alice.seal(payload(node_id(ALICE), 3))
    world.clock.now += REORDER_WINDOW / 1e6 + 1
    world.deliver(alice.seal(payload(node_id(ALICE), 4)))
    world.deliver(ancient)
    assert world.counts["swim.replayed"] == 2


def test_sequences_grow_even_when_the_clock_stands_still() -> None:
    world = World()
    alice = world.sealer(ALICE)
    heads = [alice.seal(b"\x83\x01\x41\x00\x01")[1:9] for _ in range(100)]
    sequences = [int.from_bytes(h, "big") for h in heads]
    assert sequences == sorted(set(sequences))
    assert sequences[0] == int(T0 * 1e6)


def test_malformed_datagrams_are_counted() -> None:
    world = World()
    for data in (b"", b"\x01", bytes(HEADER_BYTES + 5), b"\x02" + bytes(100)):
        world.deliver(data)
    assert world.counts["swim.malformed"] == 4


@settings(max_examples=200, deadline=None)
@given(
    sender=st.one_of(
        st.binary(min_size=1, max_size=32).map(bytes.hex),
        st.text(min_size=1, max_size=40).filter(lambda t: len(t.encode()) <= 64),
    ),
    messages=st.integers(0, 300),
)
def test_the_sender_read_from_the_bytes_is_what_the_codec_wrote(sender: str, messages: int) -> None:
    data = assemble(datagram_prefix(sender, 9), 3, [b"\x80"] * messages)
    assert origin_of(data) == (sender, 9)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_the_origin_reader_never_fails_on_garbage(data: bytes) -> None:
    result = origin_of(data)
    assert result is None or (isinstance(result[0], str) and isinstance(result[1], int))


def test_signed_swim_cores_talk_and_stay_under_the_datagram_limit() -> None:
    clock = Clock()
    state = TrustState(TRUST)
    directory = CertificateDirectory(state, clock)
    keys = [key(30 + i) for i in range(4)]
    for member in keys:
        directory.add_raw(certificate(member))
    cores = []
    for index, member in enumerate(keys):
        sealer = DatagramSealer(member, TRUST.cluster_id, directory, clock, Tally())
        core = Swim(
            SwimConfig.default(),
            node_id(member),
            Address(f"10.0.0.{index}", 7000),
            1,
            random.Random(index),
            0.0,
            sealer=sealer,
        )
        cores.append(core)
    by_address = {core.address: core for core in cores}
    everyone = [member for core in cores for member in core.members()]
    for core in cores:
        core.restore(everyone, 0.0)
    now = 0.0
    while now < 20.0:
        now += 0.05
        clock.now = T0 + now
        for core in cores:
            core.handle_timer(now)
            for address, data in core.datagrams_to_send():
                assert len(data) <= HARD_MAX_DATAGRAM
                by_address[address].receive_datagram(data, core.address, now)
    for core in cores:
        assert core.statistics().get("bad_unsealed", 0) == 0
        assert len([m for m in core.members() if m.liveness.value == "alive"]) == 4


def incarnation_payload(sender: str, incarnation: int, seq: int) -> bytes:
    alive = Alive(sender, incarnation, Address("10.0.0.1", 7000), NodeState.ACTIVE)
    parts = [encode_control(Ping(seq & 0xFFFF, node_id(BOB))), encode_record(alive)]
    return assemble(datagram_prefix(sender, incarnation), 3, parts)


def test_a_sender_restarted_with_its_clock_stepped_back_is_heard_at_once() -> None:
    """ci seed 11022 (secure): a node's clock ran 28 s ahead, it crashed, and restarted with
    the right time; every receiver refused its datagrams as replays for half a minute and
    declared it dead. Its restart raised its incarnation, which restarts the window."""
    world = World()
    ahead = Clock()
    ahead.now = world.clock.now + 30.0
    before = DatagramSealer(ALICE, TRUST.cluster_id, world.directory, ahead, Tally())
    old = before.seal(incarnation_payload(node_id(ALICE), 5, 1))
    world.deliver(before.seal(incarnation_payload(node_id(ALICE), 5, 2)))
    restarted = world.sealer(ALICE)  # a new process, its clock 30 s behind the old one
    same_incarnation = restarted.seal(incarnation_payload(node_id(ALICE), 5, 3))
    world.deliver(same_incarnation)
    assert world.counts["swim.replayed"] == 1  # without a restart sign, it looks like a replay
    fresh = restarted.seal(incarnation_payload(node_id(ALICE), 6, 4))
    world.deliver(fresh)
    world.deliver(restarted.seal(incarnation_payload(node_id(ALICE), 6, 5)))
    assert world.counts["swim.window_restarts"] == 1
    assert world.counts["swim.accepted"] == 3
    world.deliver(old)  # a capture from before the restart
    world.deliver(fresh)  # a replay of the new incarnation's datagram
    assert world.counts["swim.replayed"] == 3
    assert world.counts["swim.accepted"] == 3


@settings(max_examples=200, deadline=None)
@given(
    sender=st.binary(min_size=1, max_size=32).map(bytes.hex), incarnation=st.integers(0, 2**64 - 1)
)
def test_the_origin_read_from_the_bytes_is_what_the_codec_wrote(
    sender: str, incarnation: int
) -> None:
    from p2pindex.security.datagrams import origin_of

    data = assemble(datagram_prefix(sender, incarnation), 3, [b"\x80"])
    assert origin_of(data) == (sender, incarnation)


def test_a_sender_whose_clock_drifts_far_after_it_was_heard_stays_heard() -> None:
    """ci seed 12328 (secure): a node's clock jumped until it was over two minutes ahead of
    the others; every datagram it sent was refused as stale and its replicas stopped
    converging. The clock check is for senders a receiver keeps no window for."""
    world = World()
    drifting = Clock()
    drifting.now = world.clock.now
    alice = DatagramSealer(ALICE, TRUST.cluster_id, world.directory, drifting, Tally())
    world.deliver(alice.seal(incarnation_payload(node_id(ALICE), 5, 1)))
    drifting.now += MAX_CLOCK_SKEW + 30
    world.deliver(alice.seal(incarnation_payload(node_id(ALICE), 5, 2)))
    assert world.counts["swim.accepted"] == 2 and world.counts["swim.stale"] == 0
    fresh = World()  # a receiver that restarted: it has no window for alice
    fresh.clock.now = world.clock.now
    fresh.deliver(alice.seal(incarnation_payload(node_id(ALICE), 5, 3)))
    assert fresh.counts["swim.stale"] == 1


def test_a_sequence_learned_over_a_session_opens_the_window_whatever_the_clocks() -> None:
    """delete-heavy seed 1 (secure, 30 simulated minutes): clock jumps left n1 three minutes
    behind the others; once it restarted it refused all their datagrams as stale and they
    its, and it was declared dead though it was up. A push-pull (an authenticated session)
    carries each side's sequence floor; the receiver opens the window there."""
    world = World()
    behind = Clock()
    behind.now = world.clock.now - 3 * MAX_CLOCK_SKEW
    alice = DatagramSealer(ALICE, TRUST.cluster_id, world.directory, behind, Tally())
    captured = alice.seal(incarnation_payload(node_id(ALICE), 5, 1))
    for _ in range(REORDER_WINDOW // 1_000_000 + 1):
        behind.now += 1.0
        alice.seal(incarnation_payload(node_id(ALICE), 5, 2))
    stale: list[str] = []
    world.bob.on_stale = stale.append
    world.deliver(alice.seal(incarnation_payload(node_id(ALICE), 5, 3)))
    assert world.counts["swim.stale"] == 1 and stale == [node_id(ALICE)]

    world.bob.learn(node_id(ALICE), alice.sequence_floor())
    assert world.counts["swim.window_learned"] == 1
    for seq in range(4, 10):
        world.deliver(alice.seal(incarnation_payload(node_id(ALICE), 5, seq)))
    assert world.counts["swim.accepted"] == 6
    world.deliver(captured)  # sealed before the floor, beyond the reorder window: a replay
    assert world.counts["swim.replayed"] == 1 and world.counts["swim.accepted"] == 6

    # A window already open is the receiver's own evidence: a learned floor does not move it.
    world.bob.learn(node_id(ALICE), 1)
    assert world.counts["swim.window_learned"] == 1
    world.deliver(alice.seal(incarnation_payload(node_id(ALICE), 5, 10)))
    assert world.counts["swim.accepted"] == 7


def test_the_sequence_floor_is_below_every_later_datagram() -> None:
    world = World()
    clock = Clock()
    alice = DatagramSealer(ALICE, TRUST.cluster_id, world.directory, clock, Tally())
    floor = alice.sequence_floor()
    assert floor == int(clock.now * 1_000_000)
    clock.now -= 60  # stepped back: sequences still grow past the floor it gave out
    later = alice.seal(incarnation_payload(node_id(ALICE), 5, 1))
    assert int.from_bytes(later[1:9], "big") > floor
    assert alice.sequence_floor() >= int.from_bytes(later[1:9], "big")

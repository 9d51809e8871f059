"""Properties of the SWIM engine under arbitrary input: incarnations, refutation, packet size."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pindex.core.swim import HARD_MAX_DATAGRAM, Member, Swim, SwimConfig
from p2pindex.core.swim.codec import (
    assemble,
    datagram_prefix,
    decode_datagram,
    encode_control,
    encode_record,
)
from p2pindex.core.swim.messages import Ack, Alive, Dead, Ping, Suspect
from p2pindex.types import Address, Liveness, NodeState

CFG = SwimConfig.default()
IDS = ["n0", "n1", "n2", "n3", "n4"]


def addr(i: int) -> Address:
    return Address(f"10.0.0.{i}", 7000)


def dg(sender: str, inc: int, *parts: bytes) -> bytes:
    return assemble(datagram_prefix(sender, inc), 3, list(parts))


ids = st.sampled_from(IDS)
incs = st.integers(min_value=0, max_value=12)
records = st.one_of(
    st.builds(
        Alive,
        ids,
        incs,
        st.sampled_from([addr(i) for i in range(6)]),
        st.sampled_from(NodeState),
    ),
    st.builds(Suspect, ids, incs, ids),
    st.builds(Dead, ids, incs, ids),
)
steps = st.lists(
    st.tuples(st.sampled_from(IDS[1:]), records, st.floats(min_value=0, max_value=3)),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(steps, st.booleans())
def test_incarnations_never_go_down_and_only_we_raise_ours(script, lifeguard) -> None:
    cfg = SwimConfig.default() if lifeguard else SwimConfig.default().plain_swim()
    swim = Swim(cfg, "n0", addr(0), 3, random.Random(0), 0.0)
    swim.restore(
        [Member(i, addr(int(i[1])), 1, Liveness.ALIVE, NodeState.ACTIVE) for i in IDS[1:]], 0.0
    )
    seen: dict[str, int] = {m.node_id: m.incarnation for m in swim.members()}
    now = 0.0
    for sender, record, delay in script:
        now += delay
        own_before = swim.incarnation
        source = swim.member(sender).address
        swim.receive_datagram(dg(sender, 12, encode_record(record)), source, now)
        deadline = swim.next_deadline()
        if deadline is not None and deadline <= now:
            swim.handle_timer(now)
        swim.datagrams_to_send()
        for member in swim.members():
            assert member.incarnation >= seen.get(member.node_id, 0)
            seen[member.node_id] = member.incarnation
        me = swim.member("n0")
        assert me.liveness is Liveness.ALIVE and me.incarnation == swim.incarnation
        if record.node_id == "n0":
            accusation = not isinstance(record, Alive)
            if accusation and record.incarnation >= own_before:
                assert swim.incarnation == max(own_before, record.incarnation) + 1
            elif isinstance(record, Alive) and record.incarnation > own_before:
                assert swim.incarnation == record.incarnation + 1
        else:
            assert swim.incarnation == own_before


long_ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=128)
hosts = st.text(alphabet="abcdefghijklmnopqrstuvwxyz.", min_size=1, max_size=255)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(long_ids, hosts, st.integers(0, 2**63)), min_size=1, max_size=300),
    st.integers(min_value=0, max_value=64),
    st.randoms(use_true_random=False),
)
def test_no_datagram_is_ever_larger_than_1200_bytes(members, sealer_overhead, rnd) -> None:
    class Padding:
        overhead = sealer_overhead

        def seal(self, payload: bytes) -> bytes:
            return bytes(sealer_overhead) + payload

        def open(self, data: bytes, source: Address) -> bytes | None:
            return data[sealer_overhead:]

    me = "m" * 128
    swim = Swim(CFG, me, Address("h" * 255, 1), 2**62, rnd, 0.0, sealer=Padding())
    sender = members[0][0]
    for node_id, host, inc in members:
        if node_id == me:
            continue
        record = Alive(node_id, inc, Address(host, 65535), NodeState.DEGRADED, b"s" * 64)
        data = dg(sender, 0, encode_record(record))
        if len(data) <= HARD_MAX_DATAGRAM:
            swim.receive_datagram(bytes(sealer_overhead) + data, Address(host, 65535), 0.0)
    now = 0.0
    for _ in range(30):
        deadline = swim.next_deadline()
        if deadline is None:
            break
        now = deadline
        swim.handle_timer(now)
        for address, data in swim.datagrams_to_send():
            assert len(data) <= HARD_MAX_DATAGRAM
            datagram, _ = decode_datagram(data[sealer_overhead:])
            for control in datagram.controls:
                if isinstance(control, Ping):
                    reply = dg(control.target, 0, encode_control(Ack(control.seq)))
                    swim.receive_datagram(bytes(sealer_overhead) + reply, address, now)
    for _, data in swim.datagrams_to_send():
        assert len(data) <= HARD_MAX_DATAGRAM
    assert swim.statistics().get("oversize_dropped", 0) == 0

"""The SWIM wire format: round trips, compact ids, and strict rejection of bad bytes."""

from __future__ import annotations

import dataclasses

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pindex.core.swim.codec import (
    DecodeError,
    assemble,
    datagram_prefix,
    decode_datagram,
    decode_push_pull,
    decode_record,
    encode_control,
    encode_push_pull,
    encode_record,
)
from p2pindex.core.swim.messages import (
    Ack,
    Alive,
    Dead,
    Nack,
    Ping,
    PingReq,
    PushPullDone,
    PushPullPush,
    PushPullReply,
    PushPullRequest,
    Suspect,
)
from p2pindex.types import Address, Liveness, NodeState

HEX_ID = "ab" * 32

node_ids = st.one_of(
    st.text(alphabet="0123456789abcdef", min_size=2, max_size=64).filter(lambda s: len(s) % 2 == 0),
    st.text(min_size=1, max_size=40),
)
incarnations = st.integers(min_value=0, max_value=(1 << 64) - 1)
addresses = st.builds(
    Address,
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-", min_size=1, max_size=40),
    st.integers(min_value=0, max_value=65535),
)
signatures = st.none() | st.binary(max_size=64)
records = st.one_of(
    st.builds(Alive, node_ids, incarnations, addresses, st.sampled_from(NodeState), signatures),
    st.builds(
        Alive,
        node_ids,
        incarnations,
        addresses,
        st.sampled_from(NodeState),
        signatures,
        st.none() | node_ids,
    ),
    st.builds(Suspect, node_ids, incarnations, node_ids, signatures),
    st.builds(Dead, node_ids, incarnations, node_ids, signatures),
)
seqs = st.integers(min_value=0, max_value=(1 << 32) - 1)
controls = st.one_of(
    st.builds(Ping, seqs, node_ids),
    st.builds(PingReq, seqs, node_ids, addresses),
    st.builds(Ack, seqs),
    st.builds(Nack, seqs),
)


def datagram(sender: str, incarnation: int, parts: list[bytes]) -> bytes:
    return assemble(datagram_prefix(sender, incarnation), 3, parts)


@given(st.lists(records, max_size=5), st.lists(controls, max_size=5), node_ids, incarnations)
def test_datagram_round_trip(recs, ctrls, sender, incarnation) -> None:
    parts = [encode_record(r) for r in recs] + [encode_control(c) for c in ctrls]
    decoded, unknown = decode_datagram(datagram(sender, incarnation, parts))
    assert unknown == 0
    assert decoded.sender == sender
    assert decoded.incarnation == incarnation
    assert list(decoded.records) == recs
    assert list(decoded.controls) == ctrls


def test_hex_ids_travel_as_bytes() -> None:
    compact = encode_record(Suspect(HEX_ID, 1, HEX_ID))
    assert len(compact) < 80
    assert decode_record(cbor2.loads(compact)) == Suspect(HEX_ID, 1, HEX_ID)
    assert Dead(HEX_ID, 1, HEX_ID).liveness is Liveness.LEFT
    assert Dead(HEX_ID, 1, "other").liveness is Liveness.DEAD


@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_decode_error(data: bytes) -> None:
    try:
        decode_datagram(data)
    except DecodeError as exc:
        assert exc.reason in {"malformed", "truncated", "version"}


@given(st.lists(records, min_size=1, max_size=4), st.data())
def test_every_truncation_is_rejected(recs, data) -> None:
    whole = datagram("sender", 3, [encode_record(r) for r in recs])
    cut = data.draw(st.integers(min_value=0, max_value=len(whole) - 1))
    with pytest.raises(DecodeError):
        decode_datagram(whole[:cut])


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "truncated"),
        (datagram("a", 1, [])[:-1], "truncated"),
        (datagram("a", 1, []) + b"\x00", "malformed"),
        (cbor2.dumps([2, "a", 1]), "version"),
        (cbor2.dumps({"a": 1}), "malformed"),
        (cbor2.dumps([1, "", 1]), "malformed"),
        (cbor2.dumps([1, "a", -1]), "malformed"),
        (cbor2.dumps([1, "a", True]), "malformed"),
        (cbor2.dumps([1, "a", 1, [10, 1]]), "malformed"),
        (cbor2.dumps([1, "a", 1, [12, 1 << 40]]), "malformed"),
        (cbor2.dumps([1, "a", 1, [1, "x", 1, "h", 70000, 0]]), "malformed"),
        (cbor2.dumps([1, "a", 1, [1, "x", 1, "h", 7000, 9]]), "malformed"),
        (cbor2.dumps([1, "a", 1, [2, "x", 1, "y", b"s" * 200]]), "malformed"),
        (cbor2.dumps([1, "a", 1, "not a message"]), "malformed"),
        (b"\x9b\x00\x00\x00\x01\x00\x00\x00\x00", "truncated"),
        (b"\x81" * 1000 + b"\x00", "malformed"),
        (cbor2.dumps([1, cbor2.CBORTag(258, ["a"]), 1]), "malformed"),  # a tag (set)
        (cbor2.dumps([1, "a", cbor2.CBORTag(2, b"\x01")]), "malformed"),  # a bignum tag
        (b"\x9f\x01aa\x01\xff", "malformed"),  # an indefinite-length array
    ],
)
def test_bad_datagrams_are_named(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_datagram(data)
    assert info.value.reason == reason


def test_unknown_message_kinds_are_skipped_and_counted() -> None:
    data = cbor2.dumps([1, "a", 1, [99, "future"], [12, 5]])
    decoded, unknown = decode_datagram(data)
    assert unknown == 1
    assert decoded.controls == (Ack(5),)


@given(st.lists(records, max_size=6), st.booleans(), st.none() | st.binary(max_size=64))
def test_push_pull_round_trip(recs, join, digest) -> None:
    encoded = [encode_record(r) for r in recs]
    buckets = None if digest is None else digest[: len(digest) // 8 * 8]
    request = decode_push_pull(
        encode_push_pull(PushPullRequest("me", join, buckets, ()), encoded), 1 << 20, 100
    )
    assert request == PushPullRequest("me", join, buckets, tuple(recs))
    reply = decode_push_pull(encode_push_pull(PushPullReply((1, 5), ()), encoded), 1 << 20, 100)
    assert reply == PushPullReply((1, 5), tuple(recs))
    push = decode_push_pull(encode_push_pull(PushPullPush("me", ()), encoded), 1 << 20, 100)
    assert push == PushPullPush("me", tuple(recs))
    assert decode_push_pull(encode_push_pull(PushPullDone()), 100, 1) == PushPullDone()


def test_push_pull_limits() -> None:
    many = [encode_record(Suspect("x", i, "y")) for i in range(5)]
    payload = encode_push_pull(PushPullPush("me", ()), many)
    with pytest.raises(DecodeError) as info:
        decode_push_pull(payload, len(payload) - 1, 100)
    assert info.value.reason == "oversized"
    with pytest.raises(DecodeError):
        decode_push_pull(payload, 1 << 20, 4)
    with pytest.raises(DecodeError):
        decode_push_pull(cbor2.dumps([20, 1, "me", True, b"\x00" * 7, []]), 1 << 20, 4)


def test_an_alive_record_without_tokens_of_encodes_as_before() -> None:
    """Records of nodes that replaced nobody keep their bytes (and so their signatures)."""
    plain = Alive(HEX_ID, 3, Address("10.0.0.1", 7000), NodeState.ACTIVE, b"s" * 64)
    item = cbor2.loads(encode_record(plain))
    assert len(item) == 7 and item[1:5] == [bytes.fromhex(HEX_ID), 3, "10.0.0.1", 7000]
    assert item[6] == b"s" * 64
    claimed = dataclasses.replace(plain, tokens_of="cd" * 32)
    assert decode_record(cbor2.loads(encode_record(claimed))) == claimed
    unsigned = dataclasses.replace(claimed, signature=None)
    assert decode_record(cbor2.loads(encode_record(unsigned))) == unsigned


@pytest.mark.parametrize("bad", [7, "", b"", [1], b"x" * 65])
def test_a_bad_tokens_of_is_refused(bad: object) -> None:
    item = cbor2.loads(encode_record(Alive(HEX_ID, 3, Address("h", 1), NodeState.ACTIVE)))
    with pytest.raises(DecodeError):
        decode_record([*item, None, bad])

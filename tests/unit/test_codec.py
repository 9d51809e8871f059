"""The frame codec: round trips, stream splitting, and the documented outcome for bad input.

Stream-level breakage must raise ProtocolError (the connection closes); a readable envelope
around an invalid message must yield ``Decoded(request_id, None, reason)`` (the request gets
an ErrorReply, the connection stays).
"""

from __future__ import annotations

import dataclasses
import itertools
import struct
import typing
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pindex.config import KIB, Limits
from p2pindex.errors import MessageTooLarge, ProtocolError
from p2pindex.wire import messages
from p2pindex.wire.codec import MAX_REQUEST_ID, MESSAGE_TYPES, Decoded, FrameDecoder, encode_frame
from p2pindex.wire.messages import (
    PROTOCOL_VERSION,
    ErrorReply,
    GetReply,
    Hello,
    MembersReply,
    Message,
    OkReply,
    PutRequest,
    RangeScan,
    ReplicaAck,
    ReplicaReadReply,
    ReplicaWrite,
    ReplicaWriteBatch,
    StatusReply,
)

SMALL = Limits(max_frame=64 + 16 + 4 * KIB, max_key=16, max_value=64)
"""Tiny limits so size rules can be hit with small frames."""

PUT_FIELDS: dict[str, object] = {
    "key": b"k",
    "value": b"v",
    "context": None,
    "consistency": "quorum",
    "timeout_ms": 500,
}


def raw_frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def envelope_frame(type_code: object, fields: object, request_id: object = 7) -> bytes:
    return raw_frame(cbor2.dumps([PROTOCOL_VERSION, type_code, request_id, fields]))


def decode_one(frame: bytes, limits: Limits = SMALL) -> Decoded:
    decoder = FrameDecoder(limits)
    (decoded,) = decoder.feed(frame)
    assert decoder.buffered == 0
    return decoded


def rejected(frame: bytes, limits: Limits = SMALL) -> str:
    """Feed a frame whose envelope is fine but whose message is not; return the reason."""
    decoded = decode_one(frame, limits)
    assert decoded.message is None
    assert decoded.error
    return decoded.error


# --- hypothesis strategies derived from the annotations -------------------------------------

TOKEN_FIELDS = {"start", "end"}


def document_values() -> st.SearchStrategy[object]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats(allow_nan=False)
        | st.text(max_size=10)
        | st.binary(max_size=10)
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=12,
    )


def strategy_for(field: str, annotation: Any) -> st.SearchStrategy[object]:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if field == "consistency":
        return st.sampled_from(["one", "quorum", "all"]) | st.integers(1, 2**63 - 1)
    if annotation is bytes:
        return st.binary(max_size=40)
    if annotation is str:
        return st.text(max_size=30)
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return st.integers(0, 2**64 - 1 if field in TOKEN_FIELDS else 2**63 - 1)
    if type(None) in args:
        (inner,) = [arg for arg in args if arg is not type(None)]
        return st.none() | strategy_for(field, inner)
    if origin is list:
        return st.lists(strategy_for(field, args[0]), max_size=5)
    if origin is tuple:
        return st.tuples(*(strategy_for(field, arg) for arg in args))
    if origin is dict:
        return st.dictionaries(st.text(max_size=8), document_values(), max_size=5)
    raise AssertionError(f"no strategy for {field}: {annotation!r}")


def message_strategy(cls: type[Message]) -> st.SearchStrategy[Message]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: strategy_for(f.name, hints[f.name]) for f in dataclasses.fields(cls)}
    return st.builds(cls, **fields)


any_message = st.sampled_from(sorted(MESSAGE_TYPES.values(), key=lambda c: c.TYPE)).flatmap(
    message_strategy
)


# --- registry and round trips ---------------------------------------------------------------


def test_registry_holds_every_message_class_once() -> None:
    classes = {
        obj
        for obj in vars(messages).values()
        if isinstance(obj, type) and issubclass(obj, Message) and obj is not Message
    }
    assert set(MESSAGE_TYPES.values()) == classes
    assert all(code == cls.TYPE for code, cls in MESSAGE_TYPES.items())


@settings(max_examples=400, deadline=None)
@given(message=any_message, request_id=st.integers(0, MAX_REQUEST_ID))
def test_every_message_round_trips(message: Message, request_id: int) -> None:
    frame = encode_frame(message, request_id)
    decoded = decode_one(frame, Limits())
    assert decoded == Decoded(request_id, message, None)
    assert type(decoded.message) is type(message)


@settings(max_examples=200, deadline=None)
@given(message=any_message)
def test_encoding_is_canonical_cbor(message: Message) -> None:
    payload = encode_frame(message, 1)[4:]
    assert cbor2.dumps(cbor2.loads(payload), canonical=True) == payload


def test_frame_layout_is_length_then_versioned_envelope() -> None:
    frame = encode_frame(OkReply("fine"), 42)
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4
    assert cbor2.loads(frame[4:]) == [PROTOCOL_VERSION, OkReply.TYPE, 42, {"detail": "fine"}]


def test_items_come_back_as_tuples() -> None:
    message = ReplicaWriteBatch([(b"a", b"1"), (b"b", b"2")])
    decoded = decode_one(encode_frame(message, 1))
    assert isinstance(decoded.message, ReplicaWriteBatch)
    assert decoded.message.items == [(b"a", b"1"), (b"b", b"2")]


def test_defaulted_fields_may_be_absent_on_the_wire() -> None:
    decoded = decode_one(envelope_frame(PutRequest.TYPE, PUT_FIELDS))
    assert decoded.message == PutRequest(b"k", b"v", None, "quorum", 500)
    decoded = decode_one(envelope_frame(ErrorReply.TYPE, {"code": "timeout", "message": "m"}))
    assert decoded.message == ErrorReply("timeout", "m", None, None)


# --- splitting ------------------------------------------------------------------------------

STREAM_MESSAGES: list[Message] = [
    PutRequest(b"key", b"value" * 5, b"ctx", 2, 1000, strict=True),
    ReplicaAck(),
    GetReply([b"a", b"bb"], b"c"),
    ReplicaWriteBatch([(b"k", b"r" * 30)]),
]
STREAM = b"".join(encode_frame(m, i) for i, m in enumerate(STREAM_MESSAGES))
EXPECTED = [Decoded(i, m, None) for i, m in enumerate(STREAM_MESSAGES)]


def test_stream_split_at_every_byte_boundary() -> None:
    for cut in range(len(STREAM) + 1):
        decoder = FrameDecoder(SMALL)
        out = decoder.feed(STREAM[:cut]) + decoder.feed(STREAM[cut:])
        assert out == EXPECTED, cut
        decoder.eof()


def test_stream_fed_one_byte_at_a_time() -> None:
    decoder = FrameDecoder(SMALL)
    out: list[Decoded] = []
    for index in range(len(STREAM)):
        out += decoder.feed(STREAM[index : index + 1])
    assert out == EXPECTED
    assert decoder.buffered == 0


@given(cuts=st.lists(st.integers(0, len(STREAM)), max_size=8))
def test_stream_split_into_any_chunks(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    decoder = FrameDecoder(SMALL)
    out: list[Decoded] = []
    for start, end in itertools.pairwise(bounds):
        out += decoder.feed(STREAM[start:end])
    assert out == EXPECTED


def test_an_invalid_message_does_not_disturb_the_frames_around_it() -> None:
    bad = envelope_frame(PutRequest.TYPE, {**PUT_FIELDS, "key": 5}, request_id=3)
    good = encode_frame(ReplicaAck(), 4)
    out = FrameDecoder(SMALL).feed(good + bad + good)
    assert [d.request_id for d in out] == [4, 3, 4]
    assert [d.message for d in out] == [ReplicaAck(), None, ReplicaAck()]


# --- stream breakage: ProtocolError ---------------------------------------------------------


def test_eof_inside_a_frame_reports_truncation() -> None:
    frame = encode_frame(OkReply("x"), 1)
    decoder = FrameDecoder(SMALL)
    assert decoder.feed(frame[:-2]) == []
    with pytest.raises(ProtocolError, match=f"truncated frame: {len(frame) - 2} of {len(frame)}"):
        decoder.eof()


def test_eof_inside_a_header_reports_truncation() -> None:
    decoder = FrameDecoder(SMALL)
    decoder.feed(b"\x00\x00")
    with pytest.raises(ProtocolError, match="truncated frame: 2 of 4 header bytes"):
        decoder.eof()


def test_eof_between_frames_is_clean() -> None:
    decoder = FrameDecoder(SMALL)
    decoder.feed(encode_frame(ReplicaAck(), 1))
    decoder.eof()


def test_oversized_length_is_refused_before_the_payload_arrives() -> None:
    decoder = FrameDecoder(SMALL)
    with pytest.raises(MessageTooLarge, match=f"exceeds max_frame \\({SMALL.max_frame}"):
        decoder.feed(struct.pack(">I", SMALL.max_frame + 1))


def test_frame_of_exactly_max_frame_is_accepted() -> None:
    fields = {"detail": ""}
    base = len(cbor2.dumps([PROTOCOL_VERSION, OkReply.TYPE, 1, fields]))
    padding = SMALL.max_frame - base - 2  # a text longer than 23 chars needs 2 more header bytes
    frame = envelope_frame(OkReply.TYPE, {"detail": "x" * padding}, request_id=1)
    assert len(frame) == 4 + SMALL.max_frame
    assert decode_one(frame).message == OkReply("x" * padding)


def test_oversized_frame_after_good_ones_breaks_the_stream() -> None:
    decoder = FrameDecoder(SMALL)
    with pytest.raises(MessageTooLarge):
        decoder.feed(encode_frame(ReplicaAck(), 1) + struct.pack(">I", 2**32 - 1))


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xff",
        b"\x1c",  # reserved additional information
        b"\x7f\x61a",  # indefinite text without its break
        b"\x61\xff",  # text that is not UTF-8
        b"\x9b" + (2**40).to_bytes(8, "big"),  # claims 2**40 items, holds none
        b"\x5b" + (2**40).to_bytes(8, "big") + b"x",  # claims a 1 TiB byte string
    ],
    ids=["empty", "break", "reserved", "unterminated", "bad-utf8", "huge-array", "huge-bytes"],
)
def test_undecodable_payload_is_a_protocol_error(payload: bytes) -> None:
    with pytest.raises(ProtocolError, match="not valid CBOR"):
        FrameDecoder(SMALL).feed(raw_frame(payload))


def test_trailing_bytes_after_the_envelope_are_a_protocol_error() -> None:
    payload = cbor2.dumps([PROTOCOL_VERSION, ReplicaAck.TYPE, 1, {}])
    with pytest.raises(ProtocolError, match="holds a CBOR item"):
        FrameDecoder(SMALL).feed(raw_frame(payload + b"\x00"))


def test_cbor_item_running_past_its_frame_is_a_protocol_error() -> None:
    payload = cbor2.dumps([PROTOCOL_VERSION, OkReply.TYPE, 1, {"detail": "abcdef"}])
    short = struct.pack(">I", len(payload) - 3) + payload
    with pytest.raises(ProtocolError, match="holds a CBOR item"):
        FrameDecoder(SMALL).feed(short)


@pytest.mark.parametrize(
    ("envelope", "reason"),
    [
        ({"version": 1}, "envelope must be"),
        ([PROTOCOL_VERSION, 24, 1], "envelope must be"),
        ([PROTOCOL_VERSION, 24, 1, {}, 0], "envelope must be"),
        (b"bytes", "envelope must be"),
        ([PROTOCOL_VERSION + 1, 24, 1, {}], "unsupported protocol version 2"),
        (["1", 24, 1, {}], "unsupported protocol version"),
        ([True, 24, 1, {}], "unsupported protocol version True"),
        ([PROTOCOL_VERSION, 24, -1, {}], "request id"),
        ([PROTOCOL_VERSION, 24, 2**63, {}], "request id"),
        ([PROTOCOL_VERSION, 24, "7", {}], "request id"),
        ([PROTOCOL_VERSION, 24, True, {}], "request id"),
        ([PROTOCOL_VERSION, 24, 1.0, {}], "request id"),
        ([PROTOCOL_VERSION, 24, None, {}], "request id"),
    ],
)
def test_unreadable_envelope_is_a_protocol_error(envelope: object, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        FrameDecoder(SMALL).feed(raw_frame(cbor2.dumps(envelope)))


def test_a_broken_stream_stays_broken() -> None:
    decoder = FrameDecoder(SMALL)
    with pytest.raises(ProtocolError):
        decoder.feed(raw_frame(b"\xff"))
    with pytest.raises(ProtocolError, match="already failed"):
        decoder.feed(encode_frame(ReplicaAck(), 1))
    with pytest.raises(ProtocolError, match="already failed"):
        decoder.eof()


@given(data=st.binary(max_size=200))
def test_garbage_bytes_never_raise_anything_but_protocol_error(data: bytes) -> None:
    decoder = FrameDecoder(SMALL)
    try:
        out = decoder.feed(data)
        decoder.eof()
    except ProtocolError:
        return
    assert all(isinstance(d, Decoded) for d in out)


@given(payload=st.binary(max_size=120))
def test_garbage_payloads_never_raise_anything_but_protocol_error(payload: bytes) -> None:
    try:
        out = FrameDecoder(SMALL).feed(raw_frame(payload))
    except ProtocolError:
        return
    assert len(out) == 1


# --- CBOR hazards ---------------------------------------------------------------------------

BUILTIN_TAGS = [0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261]


@pytest.mark.parametrize(
    "tag", [*BUILTIN_TAGS, 6, 24, 32, 99, 1004, 43000, 55799, 2**32, 2**64 - 1]
)
def test_every_tag_is_refused(tag: int) -> None:
    fields = {"key": cbor2.CBORTag(tag, b"k"), "record": b"r"}
    with pytest.raises(ProtocolError, match=f"tag {tag}"):
        FrameDecoder(SMALL).feed(envelope_frame(ReplicaWrite.TYPE, fields))


def test_no_tag_number_up_to_1100_slips_through() -> None:
    """Catches a tag that a cbor2 upgrade starts decoding by itself (e.g. into an int)."""
    for tag in range(1100):
        fields = {"key": b"k", "record": cbor2.CBORTag(tag, b"r")}
        with pytest.raises(ProtocolError, match=f"tag {tag} is not allowed"):
            FrameDecoder(SMALL).feed(envelope_frame(ReplicaWrite.TYPE, fields))


def test_tags_are_refused_in_every_position() -> None:
    shared = cbor2.dumps([PROTOCOL_VERSION, 23, 1, {"status": {"a": [1, 2]}}], value_sharing=True)
    with pytest.raises(ProtocolError, match="tag 28"):
        FrameDecoder(SMALL).feed(raw_frame(shared))
    refs = cbor2.dumps(
        [PROTOCOL_VERSION, 21, 1, {"values": [b"abcdef", b"abcdef"], "context": b""}],
        string_referencing=True,
    )
    with pytest.raises(ProtocolError, match="tag 25"):
        FrameDecoder(SMALL).feed(raw_frame(refs))
    bignum = cbor2.dumps([PROTOCOL_VERSION, 46, 1, {"start": 2**70, "end": 0, "after": None}])
    with pytest.raises(ProtocolError, match="tag 2"):
        FrameDecoder(SMALL).feed(raw_frame(bignum))


def test_deep_nesting_is_a_protocol_error_not_a_recursion_error() -> None:
    nested = b"\x81" * 100_000 + b"\x00"  # [[[...[0]...]]]
    payload = b"\x84\x01\x17\x01\xa1\x66status" + nested  # [1, 23, 1, {"status": nested}]
    with pytest.raises(ProtocolError, match="nesting depth"):
        FrameDecoder(Limits()).feed(raw_frame(payload))


def test_deeply_nested_tags_are_a_protocol_error() -> None:
    payload = b"\x84\x01\x17\x01" + b"\xd8\x63" * 50_000 + b"\x00"
    with pytest.raises(ProtocolError):
        FrameDecoder(Limits()).feed(raw_frame(payload))


def test_reasonable_document_nesting_is_accepted() -> None:
    document: dict[str, object] = {"leaf": 1}
    for _ in range(25):
        document = {"level": [document]}
    decoded = decode_one(encode_frame(StatusReply(document), 1), Limits())
    assert decoded.message == StatusReply(document)


def test_indefinite_length_items_are_refused() -> None:
    payload = b"\x9f\x01\x18\x18\x01\xa0\xff"  # [_ 1, 24, 1, {}]
    with pytest.raises(ProtocolError, match="indefinite"):
        FrameDecoder(SMALL).feed(raw_frame(payload))


def test_duplicate_map_keys_are_refused() -> None:
    payload = b"\x84\x01\x18\x18\x01\xa2\x66detail\x61a\x66detail\x61b"
    with pytest.raises(ProtocolError, match="Duplicate map key"):
        FrameDecoder(SMALL).feed(raw_frame(payload))


# --- invalid messages: Decoded error, stream intact ------------------------------------------


def test_unknown_message_type_names_the_code() -> None:
    decoded = decode_one(envelope_frame(999, {}, request_id=12))
    assert decoded == Decoded(12, None, "unknown message type 999")


@pytest.mark.parametrize("type_code", ["1", 1.0, True, None, [1], 0])
def test_non_integer_or_unassigned_type_code_is_an_unknown_type(type_code: object) -> None:
    assert "unknown message type" in rejected(envelope_frame(type_code, {}))


def test_fields_must_be_a_map() -> None:
    assert rejected(envelope_frame(PutRequest.TYPE, [b"k", b"v"])) == (
        "PutRequest: fields must be a map, got array"
    )


def test_missing_field_is_named() -> None:
    fields = {k: v for k, v in PUT_FIELDS.items() if k != "value"}
    assert rejected(envelope_frame(PutRequest.TYPE, fields)) == "PutRequest: missing field 'value'"


def test_extra_field_is_named() -> None:
    error = rejected(envelope_frame(PutRequest.TYPE, {**PUT_FIELDS, "colour": "red"}))
    assert error == "PutRequest: unexpected field(s) 'colour'"


def test_non_text_field_name_is_an_extra_field() -> None:
    error = rejected(envelope_frame(ReplicaAck.TYPE, {1: 2}))
    assert error == "ReplicaAck: unexpected field(s) 1"


@pytest.mark.parametrize(
    ("cls", "fields", "expected"),
    [
        (PutRequest, {**PUT_FIELDS, "key": "k"}, "PutRequest.key: expected a byte string"),
        (PutRequest, {**PUT_FIELDS, "value": None}, "PutRequest.value: expected a byte string"),
        (PutRequest, {**PUT_FIELDS, "context": 5}, "PutRequest.context: expected a byte string"),
        (PutRequest, {**PUT_FIELDS, "timeout_ms": True}, "timeout_ms: expected an integer, got b"),
        (PutRequest, {**PUT_FIELDS, "timeout_ms": 1.5}, "timeout_ms: expected an integer, got f"),
        (PutRequest, {**PUT_FIELDS, "timeout_ms": float("nan")}, "expected an integer, got float"),
        (PutRequest, {**PUT_FIELDS, "timeout_ms": -1}, "PutRequest.timeout_ms: -1 is outside"),
        (PutRequest, {**PUT_FIELDS, "strict": 1}, "PutRequest.strict: expected a boolean, got i"),
        (PutRequest, {**PUT_FIELDS, "forwarded": None}, "forwarded: expected a boolean, got null"),
        (PutRequest, {**PUT_FIELDS, "consistency": "most"}, "consistency: 'most' is not one of"),
        (PutRequest, {**PUT_FIELDS, "consistency": "QUORUM"}, "consistency: 'QUORUM' is not"),
        (PutRequest, {**PUT_FIELDS, "consistency": 0}, "consistency: 0 is outside 1.."),
        (PutRequest, {**PUT_FIELDS, "consistency": True}, "expected a consistency name or int"),
        (PutRequest, {**PUT_FIELDS, "consistency": b"one"}, "expected a consistency name or int"),
        (GetReply, {"values": b"v", "context": b""}, "GetReply.values: expected an array"),
        (GetReply, {"values": [b"a", 1], "context": b""}, "GetReply.values[1]: expected a byte"),
        (ReplicaWriteBatch, {"items": [[b"k"]]}, "items[0]: expected an array of 2, got an a"),
        (ReplicaWriteBatch, {"items": [[b"k", "r"]]}, "items[0][1]: expected a byte string"),
        (ReplicaWriteBatch, {"items": [b"kr"]}, "items[0]: expected an array of 2, got byte s"),
        (RangeScan, {"start": [-1], "end": [0], "after": None, "limit": 1}, "start[0]: -1 is out"),
        (RangeScan, {"start": [0], "end": [0], "after": None, "limit": -5}, "limit: -5 is outsi"),
        (StatusReply, {"status": [1]}, "StatusReply.status: expected a map, got array"),
        (StatusReply, {"status": {"a": {2: 1}}}, "status['a']: map keys must be text strings"),
        (StatusReply, {"status": {"a": [cbor2.undefined]}}, "status['a'][0]: undefined is not"),
        (MembersReply, {"n_replicas": 3, "vnodes": 8, "members": [1]}, "members[0]: expected a"),
        (Hello, {"node_id": "n", "address": 5, "cluster": "c"}, "Hello.address: expected a text"),
        (ErrorReply, {"code": "x", "message": "m", "alive": False}, "alive: expected an integer"),
        (ReplicaReadReply, {"record": []}, "ReplicaReadReply.record: expected a byte string"),
    ],
)
def test_wrong_field_types_are_named(cls: type[Message], fields: object, expected: str) -> None:
    error = rejected(envelope_frame(cls.TYPE, fields))
    assert expected in error, error


def test_simple_values_are_not_accepted_for_typed_fields() -> None:
    payload = b"\x84\x01\x18\x18\x01\xa1\x66detail\xf0"  # detail: simple(16)
    assert (
        rejected(raw_frame(payload)) == "OkReply.detail: expected a text string, got simple value"
    )


def test_integers_and_booleans_are_not_interchangeable() -> None:
    scan = {"start": [0], "end": [1], "after": None, "limit": 10}
    assert decode_one(envelope_frame(RangeScan.TYPE, scan)).message == RangeScan([0], [1], None, 10)
    assert "expected an integer, got boolean" in rejected(
        envelope_frame(RangeScan.TYPE, {**scan, "limit": True})
    )
    assert "expected a boolean, got integer" in rejected(
        envelope_frame(messages.KeyDigestReply.TYPE, {"items": [], "complete": 0})
    )


def test_ring_tokens_span_unsigned_64_bits() -> None:
    scan = {"start": [2**64 - 1], "end": [0], "after": b"k", "limit": 1}
    assert decode_one(envelope_frame(RangeScan.TYPE, scan)).message == RangeScan(
        [2**64 - 1], [0], b"k", 1
    )


# --- limits ---------------------------------------------------------------------------------


def put_frame(**changes: object) -> bytes:
    return envelope_frame(PutRequest.TYPE, {**PUT_FIELDS, **changes})


def test_key_at_the_limit_is_accepted_and_one_byte_more_is_not() -> None:
    key = b"k" * SMALL.max_key
    assert isinstance(decode_one(put_frame(key=key)).message, PutRequest)
    error = rejected(put_frame(key=key + b"k"))
    assert error == f"PutRequest.key: {SMALL.max_key + 1} bytes exceeds max_key ({SMALL.max_key})"


def test_value_over_max_value_is_refused() -> None:
    value = b"v" * SMALL.max_value
    assert isinstance(decode_one(put_frame(value=value)).message, PutRequest)
    error = rejected(put_frame(value=value + b"v"))
    assert error == "PutRequest.value: 65 bytes exceeds max_value (64)"


def test_context_is_bounded_like_a_value() -> None:
    assert "PutRequest.context: 65 bytes exceeds max_value" in rejected(
        put_frame(context=b"c" * (SMALL.max_value + 1))
    )


def test_get_reply_values_are_bounded_by_max_value() -> None:
    fields = {"values": [b"ok", b"v" * (SMALL.max_value + 1)], "context": b""}
    assert "GetReply.values[1]: 65 bytes exceeds max_value" in rejected(
        envelope_frame(GetReply.TYPE, fields)
    )


def test_keys_inside_items_and_resume_keys_are_bounded_by_max_key() -> None:
    long_key = b"k" * (SMALL.max_key + 1)
    assert "ReplicaWriteBatch.items[0][0]: 17 bytes exceeds max_key" in rejected(
        envelope_frame(ReplicaWriteBatch.TYPE, {"items": [[long_key, b"r"]]})
    )
    scan = {"start": [0], "end": [1], "after": long_key, "limit": 1}
    assert "RangeScan.after: 17 bytes exceeds max_key" in rejected(
        envelope_frame(RangeScan.TYPE, scan)
    )


def test_records_may_outgrow_one_value_because_they_hold_siblings() -> None:
    record = b"r" * (3 * SMALL.max_value)
    decoded = decode_one(envelope_frame(ReplicaWrite.TYPE, {"key": b"k", "record": record}))
    assert decoded.message == ReplicaWrite(b"k", record)
    batch = {"items": [[b"k", record]]}
    assert decode_one(envelope_frame(ReplicaWriteBatch.TYPE, batch)).message == ReplicaWriteBatch(
        [(b"k", record)]
    )


def test_identifiers_are_bounded_but_prose_may_be_longer() -> None:
    long_id = "n" * (4 * KIB + 1)
    hello = {"node_id": long_id, "address": "a:1", "cluster": "c"}
    assert "Hello.node_id: 4097 characters exceeds the limit of 4096" in rejected(
        envelope_frame(Hello.TYPE, hello)
    )
    assert decode_one(encode_frame(ErrorReply("timeout", long_id), 1), Limits()).message == (
        ErrorReply("timeout", long_id)
    )


# --- encoding -------------------------------------------------------------------------------


def test_encode_refuses_a_class_outside_the_registry() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Stray(Message):
        TYPE: typing.ClassVar[int] = 77

    with pytest.raises(TypeError, match="Stray is not a registered protocol message"):
        encode_frame(Stray(), 1)


@pytest.mark.parametrize("request_id", [-1, MAX_REQUEST_ID + 1, True, 1.0, "1"])
def test_encode_refuses_a_bad_request_id(request_id: Any) -> None:
    with pytest.raises(ValueError, match="request id"):
        encode_frame(ReplicaAck(), request_id)


def test_encode_refuses_a_frame_the_peer_would_refuse() -> None:
    message = ReplicaWrite(b"k", b"r" * SMALL.max_frame)
    with pytest.raises(MessageTooLarge, match="ReplicaWrite encodes to"):
        encode_frame(message, 1, max_frame=SMALL.max_frame)
    assert len(encode_frame(message, 1)) > SMALL.max_frame

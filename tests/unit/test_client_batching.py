"""Batch planning (client side) and opening (node side): grouping, splitting, validation."""

from __future__ import annotations

import struct

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pindex.client.batching import FRAME_OVERHEAD, ITEM_OVERHEAD, plan_frames, repeated
from p2pindex.client.results import BatchResult, KeyOutcome
from p2pindex.config import Limits
from p2pindex.errors import InvalidRequest, Timeout, Unavailable
from p2pindex.node.client_batch import open_batch
from p2pindex.wire.codec import FrameDecoder, decode_item, encode_item
from p2pindex.wire.messages import (
    BATCH_VERSION,
    MAX_BATCH_ITEMS,
    BatchRequest,
    DeleteRequest,
    GetReply,
    GetRequest,
    PutRequest,
    StatusRequest,
)

routed_items = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(min_value=0, max_value=5000)),
    max_size=200,
)


@given(routed_items, st.integers(min_value=200, max_value=20000), st.integers(1, 50))
def test_frames_carry_every_item_once_to_its_node_within_the_limits(routed, max_bytes, max_items):
    frames = plan_frames(routed, max_bytes, max_items)
    positions = [p for _dest, group in frames for p in group]
    assert sorted(positions) == list(range(len(routed)))
    for destination, group in frames:
        assert group == sorted(group)
        assert all(routed[p][0] == destination for p in group)
        assert 1 <= len(group) <= max_items
        size = sum(routed[p][1] + ITEM_OVERHEAD for p in group)
        assert len(group) == 1 or size <= max_bytes - FRAME_OVERHEAD


@given(routed_items)
def test_small_items_take_one_frame_per_node(routed):
    frames = plan_frames(routed, 10**9)
    assert len(frames) == len({dest for dest, _size in routed})


def test_a_node_gets_as_few_frames_as_the_count_limit_allows():
    routed = [("a", 10)] * (2 * MAX_BATCH_ITEMS + 1)
    assert [len(group) for _d, group in plan_frames(routed, 10**9)] == [1000, 1000, 1]


def test_an_item_larger_than_a_frame_goes_alone():
    frames = plan_frames([("a", 10), ("a", 10), ("a", 5000), ("a", 10)], 1000)
    assert [group for _d, group in frames] == [[0, 1], [2], [3]]


def test_repeated_keys_are_counted():
    assert repeated([b"a", b"b", b"a", b"c", b"a", b"b"]) == {b"a": 3, b"b": 2}
    assert repeated([b"a", b"b"]) == {}


def test_items_encode_and_decode_like_frames():
    limits = Limits()
    for message in (
        PutRequest(b"k", b"v", None, "quorum", 100),
        PutRequest(b"k", b"v", b"ctx", 2, 100, trace=True),
        GetRequest(b"k", "one", 5),
        DeleteRequest(b"k", None, "all", 5),
        GetReply([b"a", b"b"], b"ctx"),
    ):
        assert decode_item(encode_item(message), limits) == message
    with pytest.raises(ValueError, match="exceeds max_key"):
        decode_item(encode_item(GetRequest(b"k" * 2000, "one", 5)), limits)
    with pytest.raises(ValueError, match="not valid CBOR"):
        decode_item(b"\xff", limits)
    with pytest.raises(ValueError, match="not valid CBOR"):
        decode_item(cbor2.dumps(cbor2.CBORTag(1, 0)), limits)
    with pytest.raises(ValueError, match=r"expected \[type, fields\]"):
        decode_item(cbor2.dumps([1]), limits)
    with pytest.raises(ValueError, match="unexpected field"):
        fields = {"key": b"k", "consistency": "one", "timeout_ms": 1, "extra": 1}
        decode_item(cbor2.dumps([GetRequest.TYPE, fields]), limits)


def test_a_batch_is_opened_item_by_item():
    requests = [
        encode_item(PutRequest(b"a", b"1", None, "all", 10)),
        b"\x00junk",
        encode_item(StatusRequest()),
        encode_item(GetRequest(b"d", "one", 10)),
        encode_item(DeleteRequest(b"d", None, "one", 10)),
        encode_item(GetRequest(b"e", "one", 10, forwarded=True)),
        encode_item(GetRequest(b"f", "one", 10)),
    ]
    items = open_batch(BatchRequest(BATCH_VERSION, requests), Limits())
    assert isinstance(items[0], PutRequest) and isinstance(items[6], GetRequest)
    assert "request 2 of the batch is invalid" in str(items[1])
    assert "StatusRequest" in str(items[2])
    assert items[3] is items[4] and "appears 2 times" in str(items[3])
    assert "relayed" in str(items[5])
    assert all(isinstance(item, InvalidRequest) for item in items[1:6])


def test_a_batch_frame_of_the_wrong_shape_is_an_invalid_message():
    decoder = FrameDecoder(Limits())
    for fields, problem in [
        ({"version": 1, "requests": [5]}, "BatchRequest.requests[0]: expected a byte string"),
        ({"version": 1, "requests": b"x"}, "BatchRequest.requests: expected an array"),
        ({"version": -1, "requests": []}, "BatchRequest.version"),
        ({"requests": []}, "missing field 'version'"),
    ]:
        payload = cbor2.dumps([1, BatchRequest.TYPE, 7, fields])
        (decoded,) = decoder.feed(struct.pack(">I", len(payload)) + payload)
        assert decoded.message is None and decoded.request_id == 7
        assert problem in (decoded.error or ""), decoded.error


def test_a_batch_over_the_count_limit_or_of_another_version_is_refused_whole():
    one = encode_item(GetRequest(b"a", "one", 10))
    with pytest.raises(InvalidRequest, match="over the limit"):
        open_batch(BatchRequest(BATCH_VERSION, [one] * (MAX_BATCH_ITEMS + 1)), Limits())
    with pytest.raises(InvalidRequest, match="version 2"):
        open_batch(BatchRequest(2, [one]), Limits())


def test_a_batch_result_keeps_every_outcome():
    result = BatchResult(
        (
            KeyOutcome(b"a", result=1),
            KeyOutcome(b"b", error=Unavailable(2, 1)),
            KeyOutcome(b"c", error=Timeout("late")),
        )
    )
    assert not result.ok and len(result) == 3
    assert [o.key for o in result.failed] == [b"b", b"c"]
    assert result.results == {b"a": 1}
    assert [o.definite for o in result] == [True, True, False]
    with pytest.raises(Timeout):
        result[2].unwrap()


def test_put_lines_read_like_get_prints_them():
    from p2pindex.cli.kv_many import parse_put_line

    item = parse_put_line(1, '{"key": "k", "value": "AAE=", "encoding": "base64"}')
    assert (item.key, item.value, item.context) == ("k", b"\x00\x01", None)
    assert parse_put_line(2, '{"key": "k", "value": "v", "context": "AQ"}').context == "AQ"
    for line, problem in [
        ("nope", "line 7: not a JSON object"),
        ("[1]", "expected a JSON object"),
        ('{"key": "k"}', 'text "value"'),
        ('{"key": "k", "value": "v", "colour": 1}', "unknown field(s) colour"),
        ('{"key": "k", "value": "*", "encoding": "base64"}', "not valid base64"),
        ('{"key": "k", "value": "v", "context": 5}', "context must be text"),
    ]:
        with pytest.raises(InvalidRequest, match=problem.replace("(", r"\(").replace(")", r"\)")):
            parse_put_line(7, line)

"""Results, contexts and the argument checks of the client's sans-IO core."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pindex.client.requests import (
    check_consistency,
    check_context,
    check_key,
    check_timeout,
    check_value,
    describe_error,
    get_result,
    parse_addresses,
    put_result,
)
from p2pindex.client.results import Context, GetResult, SiblingConflict
from p2pindex.config import Limits
from p2pindex.errors import (
    InvalidArgumentType,
    InvalidRequest,
    P2PIndexError,
    ProtocolError,
    Unavailable,
)
from p2pindex.types import Address, ConsistencyLevel
from p2pindex.wire.messages import ErrorReply, GetReply, OkReply, PutReply


@given(st.binary(max_size=200))
def test_context_text_round_trips(data: bytes) -> None:
    text = str(Context(data))
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert Context.from_str(text) == Context(data)


@pytest.mark.parametrize("text", ["abc$", "a b", "A", "+/=="])
def test_context_rejects_text_that_is_not_urlsafe_base64(text: str) -> None:
    with pytest.raises(ValueError, match="bad context"):
        Context.from_str(text)


def test_get_result_value() -> None:
    assert GetResult([], Context()).value is None
    assert GetResult([b"x"], Context()).value == b"x"
    with pytest.raises(SiblingConflict) as info:
        _ = GetResult([b"x", b"y", b"z"], Context(b"c")).value
    assert info.value.count == 3
    assert ".context" in str(info.value)


def test_keys_values_and_contexts_accept_bytes_and_text() -> None:
    limits = Limits()
    assert check_key("é", limits) == "é".encode()
    assert check_key(bytearray(b"k"), limits) == b"k"
    assert check_value("", limits) == b""
    assert check_context(None) is None
    assert check_context(Context()) is None
    assert check_context(Context(b"\x00")) == b"\x00"
    assert check_context(str(Context(b"\x01\x02"))) == b"\x01\x02"


def test_limits_are_checked_up_front() -> None:
    limits = Limits(max_key=4, max_value=8)
    with pytest.raises(InvalidRequest, match="key '12345' is 5 bytes; the cluster's limit is 4"):
        check_key("12345", limits)
    with pytest.raises(ValueError, match="key 0xff00 is 2 bytes"):
        check_key(b"\xff\x00", Limits(max_key=1, max_value=8))
    with pytest.raises(InvalidRequest, match="value is 9 bytes; the cluster's limit is 8"):
        check_value(b"x" * 9, limits)
    with pytest.raises(InvalidArgumentType, match="value must be bytes or str"):
        check_value(3.5, limits)  # type: ignore[arg-type]


def test_client_refusals_are_the_projects_errors_and_the_builtin_ones() -> None:
    """Code that caught ValueError/TypeError before keeps working; new code can catch ours."""
    refusals = [
        (lambda: check_key("", Limits()), InvalidRequest, ValueError),
        (lambda: check_key(5, Limits()), InvalidArgumentType, TypeError),  # type: ignore[arg-type]
        (lambda: check_consistency("most", None), InvalidRequest, ValueError),
        (lambda: check_consistency(5, 3), InvalidRequest, ValueError),
        (lambda: check_consistency(2.5, None), InvalidArgumentType, TypeError),  # type: ignore[arg-type]
        (lambda: check_timeout(-1), InvalidRequest, ValueError),
        (lambda: check_timeout("5"), InvalidArgumentType, TypeError),  # type: ignore[arg-type]
        (lambda: check_context(3), InvalidArgumentType, TypeError),  # type: ignore[arg-type]
        (lambda: Context.from_str("not base64!"), InvalidRequest, ValueError),
        (lambda: parse_addresses("nowhere"), InvalidRequest, ValueError),
        (lambda: parse_addresses([7400]), InvalidArgumentType, TypeError),  # type: ignore[list-item]
        (lambda: parse_addresses([]), InvalidRequest, ValueError),
    ]
    for refuse, ours, builtin in refusals:
        with pytest.raises(ours) as info:
            refuse()
        assert isinstance(info.value, builtin | P2PIndexError)
        assert isinstance(info.value, builtin)
        assert "Error" not in str(info.value) and "b'" not in str(info.value)


@pytest.mark.parametrize(
    ("given_value", "expected"),
    [
        ("QUORUM", ConsistencyLevel.QUORUM),
        (" one ", ConsistencyLevel.ONE),
        (ConsistencyLevel.ALL, ConsistencyLevel.ALL),
        ("2", 2),
        (3, 3),
    ],
)
def test_consistency_forms(given_value: object, expected: object) -> None:
    assert check_consistency(given_value, 3) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "most", "0", 0, -1, True, 1.5, None])
def test_bad_consistency(bad: object) -> None:
    with pytest.raises(ValueError):
        check_consistency(bad, None)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_bad_timeouts(bad: float) -> None:
    with pytest.raises(ValueError):
        check_timeout(bad)


def test_addresses_are_parsed_and_deduplicated() -> None:
    assert parse_addresses("127.0.0.1:1") == [Address("127.0.0.1", 1)]
    assert parse_addresses(["a:1", Address("a", 1), "[::1]:2"]) == [
        Address("a", 1),
        Address("::1", 2),
    ]


def test_replies_map_to_results_or_errors() -> None:
    assert put_result(PutReply(b"c", "many siblings")).warning == "many siblings"
    assert get_result(GetReply([b"v"], b"c")).context == Context(b"c")
    with pytest.raises(Unavailable):
        put_result(ErrorReply("unavailable", "x", 2, 1))
    with pytest.raises(ProtocolError, match=r"wrong kind of message \(type 24, expected type 21\)"):
        get_result(OkReply())


def test_connect_failures_are_described_by_their_real_reason() -> None:
    refused = ConnectionRefusedError(
        111, "Error connecting to ('127.0.0.1', 1): Connection refused"
    )
    wrapped = OSError("all attempts to connect to 127.0.0.1:1 failed")
    wrapped.__cause__ = ExceptionGroup("all attempts", [refused])
    assert describe_error(wrapped) == "connection refused"
    assert describe_error(socket.gaierror(-2, "Name or service not known")) == (
        "name or service not known"
    )
    assert describe_error(OSError("connecting timed out")) == "connecting timed out"

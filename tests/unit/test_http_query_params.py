"""Reading an HTTP query string into the QueryRequest a binary client would send."""

from __future__ import annotations

import pytest

from p2pindex.client.queries import term_for_wire
from p2pindex.errors import InvalidRequest
from p2pindex.http.queries import listing_request, query_request, reply_document
from p2pindex.wire.messages import QueryReply, QueryRequest


@pytest.mark.parametrize(
    ("query", "term"),
    [
        ("term=420", "420"),
        ("term=int:420", 420),
        ("term=int:-3", -3),
        ("term=420&type=int", 420),
        ("term=text:420&type=int", "420"),
        ("term=text:int:5", "int:5"),
        ("term=a%40b.example", "a@b.example"),
        ("term=two+words", "two words"),
    ],
)
def test_terms_are_text_unless_marked_integer(query, term):
    request = query_request(b"email", query)
    assert request.lo == request.hi == term_for_wire(term, "test")


def test_a_query_is_the_request_the_binary_client_sends():
    request = query_request(
        b"total",
        "lo=int:1&hi=int:9&prefix=a%FF&limit=7&consistency=QUORUM&values=true"
        "&complete_only=1&timeout_ms=250&continuation=AAE",
    )
    assert request == QueryRequest(
        "total",
        term_for_wire(1, "low"),
        term_for_wire(9, "high"),
        b"a\xff",
        7,
        b"\x00\x01",
        "quorum",
        250,
        values=True,
        complete_only=True,
    )
    assert listing_request("") == QueryRequest("", None, None, b"", 100, None, "one", 0)


@pytest.mark.parametrize(
    "query",
    ["term=int:", "term=int:1.5", "term=x&term=y", "limit=-1", "continuation=a.b", "type=int"],
)
def test_unreadable_parameters_are_invalid_requests(query):
    with pytest.raises(InvalidRequest):
        query_request(b"total", query)


def test_the_answer_names_keys_as_text_or_base64():
    reply = QueryReply(
        [(term_for_wire(5, "t"), b"k1"), (term_for_wire("\u00e9", "t"), b"\xff")],
        [[b"v"], []],
        b"\xfb\xff",
        {"complete": False, "uncovered_share": 0.25},
    )
    assert reply_document(reply, terms=False, values=False) == {
        "keys": ["k1", {"key_base64": "/w=="}],
        "continuation": "-_8",
        "complete": False,
        "uncovered": 0.25,
        "coverage": {"complete": False, "uncovered_share": 0.25},
    }
    rows = reply_document(reply, terms=True, values=True)["rows"]
    assert rows == [
        {"key": "k1", "term": 5, "values": ["dg=="]},
        {"key_base64": "/w==", "term": "\u00e9", "values": []},
    ]

"""The optional ``trace`` fields: absent unless set, strictly checked when present, and the
client's and CLI's reading of them (a fake node answers, so every case is exact)."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator

import cbor2
import pytest
from test_client_fakes import FakeCluster, FakeNode, serve_in_thread

from p2pindex.cli import main as cli_main
from p2pindex.cli.trace_view import trace_lines
from p2pindex.client import Trace
from p2pindex.client.requests import get_result, put_result
from p2pindex.config import Limits
from p2pindex.errors import ProtocolError, Unavailable
from p2pindex.wire.codec import FrameDecoder, encode_frame
from p2pindex.wire.messages import (
    PROTOCOL_VERSION,
    DeleteRequest,
    ErrorReply,
    GetReply,
    GetRequest,
    Message,
    PutReply,
    PutRequest,
)

STEPS = {
    "request_id": "r-1",
    "steps": [
        {
            "step": "targets",
            "at_ms": 0.0,
            "took_ms": 0.0,
            "required": 2,
            "nodes": [
                {"node": "aa", "hint_for": None},
                {"node": "bb", "hint_for": None},
                {"node": "cc", "hint_for": "dd"},
            ],
        },
        {"step": "replica_answered", "at_ms": 1.5, "took_ms": 1.5, "node": "bb",
         "reply": "ReplicaReadReply"},
        {"step": "replica_failed", "at_ms": 9.0, "took_ms": 7.5, "node": "cc",
         "error": "cc did not answer within 1s"},
        {"step": "decided", "at_ms": 9.0, "took_ms": 0.0, "outcome": "succeeded",
         "read_repair_to": ["bb"]},
    ],
}  # fmt: skip


def fields_of(frame: bytes) -> dict:
    return cbor2.loads(frame[4:])[3]


def frame_of(type_code: int, fields: dict) -> bytes:
    payload = cbor2.dumps([PROTOCOL_VERSION, type_code, 7, fields])
    return struct.pack(">I", len(payload)) + payload


@pytest.mark.parametrize(
    "message",
    [
        GetRequest(b"k", "one", 0),
        PutRequest(b"k", b"v", None, "all", 10),
        DeleteRequest(b"k", None, "quorum", 0),
        GetReply([b"v"], b"c"),
        PutReply(b"c"),
        ErrorReply("timeout", "late"),
    ],
)
def test_an_unset_trace_leaves_the_frame_as_it_was(message: Message) -> None:
    assert "trace" not in fields_of(encode_frame(message, 1))


def test_a_set_trace_travels_and_comes_back_as_sent() -> None:
    decoder = FrameDecoder(Limits())
    request = GetRequest(b"k", "one", 0, trace=True)
    reply = GetReply([b"v"], b"c", trace=STEPS)
    decoded = decoder.feed(encode_frame(request, 1) + encode_frame(reply, 2))
    assert [d.message for d in decoded] == [request, reply]
    # a reply holding a document is encoded canonically, like any document
    frame = encode_frame(reply, 2)
    assert cbor2.dumps(cbor2.loads(frame[4:]), canonical=True) == frame[4:]


@pytest.mark.parametrize(
    ("type_code", "fields", "reason"),
    [
        (GetRequest.TYPE, {"key": b"k", "consistency": "one", "timeout_ms": 0, "trace": False},
         "travels only when set"),
        (GetRequest.TYPE, {"key": b"k", "consistency": "one", "timeout_ms": 0, "trace": 1},
         "expected a boolean"),
        (GetReply.TYPE, {"values": [], "context": b"", "trace": None}, "travels only when set"),
        (GetReply.TYPE, {"values": [], "context": b"", "trace": [1]}, "GetReply.trace"),
    ],
)  # fmt: skip
def test_a_trace_field_sent_unset_or_of_the_wrong_kind_is_refused(
    type_code: int, fields: dict, reason: str
) -> None:
    (decoded,) = FrameDecoder(Limits()).feed(frame_of(type_code, fields))
    assert decoded.message is None
    assert reason in (decoded.error or "")


def test_the_client_reads_a_trace_only_when_it_asked_for_one() -> None:
    result = get_result(GetReply([b"v"], b"c", trace=STEPS), traced=True)
    assert result.trace is not None
    assert [s.step for s in result.trace.steps] == [
        "targets",
        "replica_answered",
        "replica_failed",
        "decided",
    ]
    assert result.trace.as_document() == STEPS
    with pytest.raises(ProtocolError, match="no trace although"):
        put_result(PutReply(b"c"), traced=True)
    with pytest.raises(ProtocolError, match="nobody asked"):
        put_result(PutReply(b"c", trace=STEPS))
    assert get_result(GetReply([b"v"], b"c")).trace is None


@pytest.mark.parametrize(
    "doc",
    [
        {"steps": []},
        {"request_id": "r", "steps": {}},
        {"request_id": "r", "steps": ["targets"]},
        {"request_id": "r", "steps": [{"step": "x", "at_ms": -1.0, "took_ms": 0.0}]},
        {"request_id": "r", "steps": [{"step": "x", "at_ms": True, "took_ms": 0.0}]},
        {"request_id": "r", "steps": [{"at_ms": 1.0, "took_ms": 0.0}]},
    ],
)
def test_a_malformed_trace_is_a_protocol_error(doc: dict) -> None:
    with pytest.raises(ProtocolError):
        Trace.from_document(doc)


def test_the_text_names_fallbacks_answers_failures_and_the_read_repair() -> None:
    lines = trace_lines(Trace.from_document(STEPS))
    assert lines[0].startswith("trace of request r-1")
    text = "\n".join(lines)
    assert "asked aa, bb, cc (fallback for dd, keeps a hint); 2 must answer" in text
    assert "bb answered (its copy)" in text
    assert "cc failed: cc did not answer within 1s" in text
    assert "decided: succeeded; read repair sent to bb" in text
    assert "    9.000     +7.500" in text


def test_a_round_out_of_time_and_a_read_first_write_say_so() -> None:
    doc = {
        "request_id": "r",
        "steps": [
            {"step": "read_first", "at_ms": 0.1, "took_ms": 0.1, "delete": True},
            {"step": "decided", "at_ms": 9.0, "took_ms": 8.9, "outcome": "timed_out",
             "unanswered": ["bb", "cc"], "acks": 1},
        ],
    }  # fmt: skip
    lines = trace_lines(Trace.from_document(doc))
    assert lines[1].endswith("reads the key first, then writes the delete with its context")
    assert lines[2].endswith(
        "decided: timed out with 1 acknowledgement(s); not answered yet: bb, cc"
    )


def test_an_unknown_step_is_shown_with_its_details() -> None:
    doc = {
        "request_id": "r",
        "steps": [{"step": "new_thing", "at_ms": 1.0, "took_ms": 1.0, "node": "aa", "n": 3}],
    }
    assert trace_lines(Trace.from_document(doc))[1].endswith("new thing aa n=3")


def test_a_refusal_before_any_replica_was_asked_is_a_step_with_its_reason() -> None:
    reason = "3 replicas required but only 2 reachable"
    doc = {
        "request_id": "r",
        "steps": [{"step": "unavailable", "at_ms": 0.2, "took_ms": 0.2, "required": 3,
                   "reason": reason}],
    }  # fmt: skip
    line = trace_lines(Trace.from_document(doc))[1]
    assert line.endswith(f"refused before asking any replica (3 must answer): {reason}")


def test_a_relays_steps_are_shown_indented_under_it() -> None:
    doc = {
        "request_id": "r",
        "steps": [
            {"step": "relayed", "at_ms": 0.1, "took_ms": 0.1, "node": "bb"},
            {"step": "relay_answered", "at_ms": 4.0, "took_ms": 3.9, "node": "bb",
             "steps": STEPS["steps"]},
        ],
    }  # fmt: skip
    lines = trace_lines(Trace.from_document(doc))
    assert lines[1].endswith("relayed to bb, which holds the key")
    assert lines[2].endswith("bb answered the relayed request")
    assert lines[3] == "    steps on bb:"
    assert lines[4].startswith("      ") and lines[4].endswith("2 must answer")
    assert len(lines) == 4 + len(STEPS["steps"])


# --- the command line, against fake nodes -----------------------------------------------------


@pytest.fixture(autouse=True)
def only_client_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_main, "OPTIONAL_COMMANDS", ())


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with serve_in_thread(FakeCluster(1)) as fake:
        yield fake


def answer_with(cluster: FakeCluster, reply_for) -> list[Message]:
    seen: list[Message] = []

    async def behaviour(node: FakeNode, message: Message) -> Message:
        seen.append(message)
        return reply_for(message)

    for node in cluster.nodes:
        node.behaviour = behaviour
    return seen


def test_get_trace_prints_the_value_then_the_steps_on_stderr(
    cluster: FakeCluster, capsys: pytest.CaptureFixture
) -> None:
    seen = answer_with(cluster, lambda m: GetReply([b"v"], b"c", trace=STEPS if m.trace else None))
    assert cli_main.main(["get", "k", "--trace", "--node", cluster.addresses[0]]) == 0
    out, err = capsys.readouterr()
    assert out == "v"
    assert "trace of request r-1" in err and "read repair sent to bb" in err
    assert seen[-1].trace is True
    assert cli_main.main(["get", "k", "--node", cluster.addresses[0]]) == 0
    assert "trace" not in capsys.readouterr().err
    assert seen[-1].trace is False


def test_put_trace_in_json_carries_the_steps_in_the_document(
    cluster: FakeCluster, capsys: pytest.CaptureFixture
) -> None:
    answer_with(cluster, lambda m: PutReply(b"c", trace=STEPS))
    argv = ["put", "k", "v", "--trace", "--format", "json", "--node", cluster.addresses[0]]
    assert cli_main.main(argv) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is True
    assert document["trace"] == STEPS


def test_a_failed_traced_delete_shows_the_steps_then_the_error(
    cluster: FakeCluster, capsys: pytest.CaptureFixture
) -> None:
    failure = ErrorReply(
        Unavailable.code, "2 replicas required but only 1 reachable", 2, 1, trace=STEPS
    )
    answer_with(cluster, lambda m: failure)
    assert cli_main.main(["delete", "k", "--trace", "--node", cluster.addresses[0]]) == 4
    out, err = capsys.readouterr()
    assert out == ""
    assert err.index("trace of request r-1") < err.index("error: ")
    assert cli_main.main(["delete", "k", "--trace", "--format", "json", "--node",
                          cluster.addresses[0]]) == 4  # fmt: skip
    out, err = capsys.readouterr()
    document = json.loads(out)
    assert document["ok"] is False and document["trace"] == STEPS
    assert "unavailable" in document["error"]

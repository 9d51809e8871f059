"""`p2pindex put | get | delete` and the error contract, against in-process fake nodes."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator

import pytest
from test_client_fakes import FakeCluster, FakeNode, closed_port, serve_in_thread

from p2pindex.cli import main as cli_main
from p2pindex.client import Context
from p2pindex.wire.messages import ErrorReply, GetReply, Message, PutRequest


@pytest.fixture(autouse=True)
def only_client_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the client commands; `serve` and `simulate` are tested elsewhere."""
    monkeypatch.setattr(cli_main, "OPTIONAL_COMMANDS", ())


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with serve_in_thread(FakeCluster(3)) as fake:
        yield fake


def run(*argv: str) -> int:
    return cli_main.main(list(argv))


def test_put_then_get_round_trip(cluster: FakeCluster, capsys: pytest.CaptureFixture) -> None:
    node = ["--node", cluster.addresses[0]]
    assert run("put", "greeting", "hello world", *node) == 0
    out, err = capsys.readouterr()
    assert out == "ok: stored 11 bytes\n"
    assert err.startswith("context: ")
    assert run("get", "greeting", *node) == 0
    out, err = capsys.readouterr()
    assert out == "hello world"
    assert Context.from_str(err.removeprefix("context: ").strip()).data.startswith(b"ctx-")


def test_put_reads_the_value_from_stdin(
    cluster: FakeCluster, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\x00binary\xff")))
    assert run("put", "blob", "-", "--node", cluster.addresses[0]) == 0
    puts = [m for node in cluster.nodes for m in node.requests(PutRequest)]
    assert [m.value for m in puts] == [b"\x00binary\xff"]


def test_put_passes_context_consistency_and_timeout(cluster: FakeCluster) -> None:
    context = str(Context(b"\x07\x08"))
    argv = ["put", "k", "v", "--context", context, "--consistency", "ALL", "--timeout", "1.5"]
    assert run(*argv, "--strict", "--node", cluster.addresses[1]) == 0
    (put,) = [m for node in cluster.nodes for m in node.requests(PutRequest)]
    assert (put.context, put.consistency, put.timeout_ms, put.strict) == (
        b"\x07\x08",
        "all",
        1500,
        True,
    )


def test_get_of_a_missing_key_exits_3(cluster: FakeCluster, capsys: pytest.CaptureFixture) -> None:
    assert run("get", "nothing-here", "--node", cluster.addresses[0]) == 3
    out, err = capsys.readouterr()
    assert out == "" and err == "not found: nothing-here\n"


def test_get_json_lists_siblings(cluster: FakeCluster, capsys: pytest.CaptureFixture) -> None:
    async def siblings(node: FakeNode, message: Message) -> Message:
        return GetReply([b"a", b"\xff"], b"ctx")

    for node in cluster.nodes:
        node.behaviour = siblings
    assert run("get", "k", "--format", "json", "--node", cluster.addresses[0]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document == {
        "key": "k",
        "found": True,
        "encoding": "base64",
        "values": ["YQ==", "/w=="],
        "context": str(Context(b"ctx")),
    }


def test_get_text_shows_siblings_and_how_to_resolve(
    cluster: FakeCluster, capsys: pytest.CaptureFixture
) -> None:
    async def siblings(node: FakeNode, message: Message) -> Message:
        return GetReply([b"apples", b"pears"], b"ctx")

    for node in cluster.nodes:
        node.behaviour = siblings
    assert run("get", "cart", "--node", cluster.addresses[0]) == 0
    out, err = capsys.readouterr()
    assert out == "sibling 1: apples\nsibling 2: pears\n"
    assert f"p2pindex put cart MERGED_VALUE --context {Context(b'ctx')}" in err


def test_delete(cluster: FakeCluster, capsys: pytest.CaptureFixture) -> None:
    assert run("delete", "k", "--format", "json", "--node", cluster.addresses[0]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is True and Context.from_str(document["context"]).data.startswith(b"tomb")


@pytest.mark.parametrize(
    ("reply", "code", "text"),
    [
        (
            ErrorReply("unavailable", "3 replicas required but only 2 reachable", 3, 2),
            4,
            "unavailable: 3 replicas",
        ),
        (
            ErrorReply("timeout", "timed out with 1 of 2 required replies", 2, 1),
            5,
            "may or may not",
        ),
        (ErrorReply("invalid_request", "value too large"), 1, "invalid request: value too large"),
    ],
)
def test_cluster_errors_are_one_line_with_their_exit_code(
    cluster: FakeCluster, capsys: pytest.CaptureFixture, reply: ErrorReply, code: int, text: str
) -> None:
    async def fail(node: FakeNode, message: Message) -> Message:
        return reply

    for node in cluster.nodes:
        node.behaviour = fail
    assert run("put", "k", "v", "--node", cluster.addresses[0]) == code
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: ") and text in err
    assert err.count("\n") == 1


def test_unreachable_node_is_one_line_and_exit_4(capsys: pytest.CaptureFixture) -> None:
    address = f"127.0.0.1:{closed_port()}"
    assert run("get", "k", "--node", address) == 4
    _, err = capsys.readouterr()
    assert err.startswith("error: could not reach any node: ") and address in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "text"),
    [
        (["get", "k", "--node", "localhost"], "bad address 'localhost'"),
        (["get", "k", "--node", "127.0.0.1:70000"], "outside 1..65535"),
        (["get", "k", "--consistency", "most"], "bad consistency 'most'"),
        (["put", "k", "v", "--context", "%%%"], "bad context"),
        (["put", "k", "v", "--timeout", "-3"], "positive number of seconds"),
        (["put", "k"], "required: VALUE"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture, argv: list[str], text: str
) -> None:
    with pytest.raises(SystemExit) as info:
        run(*argv)
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: ") and text in err
    assert err.count("\n") == 1


def test_empty_key_is_refused_without_a_traceback(
    cluster: FakeCluster, capsys: pytest.CaptureFixture
) -> None:
    assert run("put", "", "v", "--node", cluster.addresses[0]) == 1
    assert capsys.readouterr().err == "error: invalid request: key must not be empty\n"


def test_node_defaults_to_the_environment(
    cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("P2PINDEX_NODE", f"127.0.0.1:{closed_port()},{cluster.addresses[2]}")
    assert run("put", "k", "v") == 0


def test_the_put_line_says_how_many_siblings_the_key_has_and_how_to_resolve_them():
    from p2pindex.cli.kv import _put_note
    from p2pindex.client.results import PutResult

    assert _put_note("k", PutResult(Context(b"c"))) == ""
    note = _put_note("user:1", PutResult(Context(b"c"), siblings=3))
    assert "3 concurrent values" in note and "--overwrite" in note and "--context" in note
    unseen = _put_note("k", PutResult(Context(b"c"), overwrote=True, unseen_may_remain=True))
    assert "may still hold" in unseen and "--consistency all" in unseen


def _typed(raw: bytes) -> str:
    """How the OS hands Python an argument that is not UTF-8 (surrogate escapes)."""
    return raw.decode("utf-8", "surrogateescape")


def test_argv_keys_and_values_are_the_bytes_typed(
    cluster: FakeCluster, capsys: pytest.CaptureFixture
) -> None:
    """`put $'\\xff' v` used to fail with a raw "'utf-8' codec can't encode" message."""
    node = ["--node", cluster.addresses[0]]
    assert run("put", _typed(b"\xff"), _typed(b"v\xfe"), *node) == 0
    assert run("put", "k", _typed(b"\xff"), *node) == 0
    puts = [m for node in cluster.nodes for m in node.requests(PutRequest)]
    assert sorted((m.key, m.value) for m in puts) == [(b"k", b"\xff"), (b"\xff", b"v\xfe")]
    capsys.readouterr()
    assert run("get", _typed(b"\xfe\xfd"), *node) == 3
    err = capsys.readouterr().err
    assert "codec" not in err and err.startswith("not found: ")


def test_get_adds_a_newline_for_a_terminal_only(
    cluster: FakeCluster, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Piped, the value's bytes are exact (README: a value can be piped into a file
    unchanged); on a terminal a value without a final newline gets one, so the prompt
    does not run on after it."""
    node = ["--node", cluster.addresses[0]]
    assert run("put", "k", "no newline", *node) == 0
    capsys.readouterr()
    assert run("get", "k", *node) == 0
    assert capsys.readouterr().out == "no newline"
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert run("get", "k", *node) == 0
    assert capsys.readouterr().out == "no newline\n"


def test_node_takes_a_comma_separated_list_like_the_environment(
    cluster: FakeCluster, capsys: pytest.CaptureFixture
) -> None:
    down = f"127.0.0.1:{closed_port()}"
    assert run("put", "k", "v", "--node", f"{down},{cluster.addresses[1]}") == 0
    assert run("put", "k2", "v", "--node", f"{down}, {cluster.addresses[1]}", "--node", down) == 0
    puts = [m for node in cluster.nodes for m in node.requests(PutRequest)]
    assert len(puts) == 2


def test_a_bad_entry_in_a_node_list_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        run("get", "k", "--node", "127.0.0.1:7400,nonsense")
    assert exit_.value.code == 2
    assert "nonsense" in capsys.readouterr().err

"""How the command line reads index terms and pages."""

from __future__ import annotations

import argparse
import base64
import json
from collections.abc import Iterator

import pytest
from test_client_fakes import FakeCluster, FakeNode, default_behaviour, serve_in_thread

from p2pindex.cli.main import build_parser
from p2pindex.cli.query import index_arg, index_terms, page_size, term_arg
from p2pindex.core import terms
from p2pindex.wire.messages import Message, PutRequest, QueryReply, QueryRequest


def test_a_term_that_is_an_integer_is_one_and_text_can_be_forced() -> None:
    assert term_arg("420") == 420
    assert term_arg("-3") == -3
    assert term_arg("a@b.example") == "a@b.example"
    assert term_arg("text:420") == "420"
    assert term_arg("int:7") == 7
    with pytest.raises(argparse.ArgumentTypeError, match="not an integer"):
        term_arg("int:seven")


def test_repeated_index_options_group_by_name() -> None:
    pairs = [index_arg("total=420"), index_arg("email=a@b.example"), index_arg("total=7")]
    assert index_terms(pairs) == {"total": [420, 7], "email": ["a@b.example"]}
    assert index_terms(None) is None
    with pytest.raises(argparse.ArgumentTypeError, match="NAME=TERM"):
        index_arg("total")


def test_page_sizes_outside_the_bounds_are_refused() -> None:
    assert page_size("100") == 100
    for bad in ("0", "1001", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            page_size(bad)


def test_the_commands_parse() -> None:
    parser = build_parser()
    args = parser.parse_args(["query", "total", "--range", "100", "500", "--limit", "10"])
    assert (args.index, args.term, args.range, args.limit) == ("total", None, [100, 500], 10)
    args = parser.parse_args(["keys", "--prefix", "user:", "--format", "json"])
    assert (args.prefix, args.format) == ("user:", "json")
    args = parser.parse_args(["put", "k", "v", "--index", "total=420", "--index", "e=x"])
    assert args.index == [("total", 420), ("e", "x")]


@pytest.mark.parametrize(
    "argv", [["query", "total"], ["query", "total", "420", "--range", "1", "2"]]
)
def test_term_or_range_is_a_usage_error_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's table: a bad command line exits 2 (it exited 1), before any request."""
    from p2pindex.cli import main as cli_main

    assert cli_main.main([*argv, "--node", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: give either TERM or --range LO HI") and err.count("\n") == 1


def test_a_negative_integer_term_is_still_a_term() -> None:
    """`--opt -5d` is attached to its option before parsing; a negative TERM is not."""
    from p2pindex.cli.main import attach_dash_values

    parser = build_parser()
    argv = ["query", "total", "-3", "--limit", "5"]
    assert attach_dash_values(parser, argv) == argv
    assert parser.parse_args(argv).term == -3
    assert attach_dash_values(parser, ["query", "t", "--range", "-5", "-1"])[-2:] == ["-5", "-1"]


# --- bytes in and out: nothing lost, nothing ambiguous -------------------------------------


@pytest.fixture
def only_client_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    from p2pindex.cli import main as cli_main

    monkeypatch.setattr(cli_main, "OPTIONAL_COMMANDS", ())


def _typed(raw: bytes) -> str:
    """How the OS hands Python an argument that is not UTF-8 (surrogate escapes)."""
    return raw.decode("utf-8", "surrogateescape")


ROWS = [
    (6, b"y:\xff", [b"\xfe\x00"]),
    (b"6", b"y:\\xff", [b"v"]),
    (b"int:5", b"a", [b"w"]),
    (b"text:x", b"b", [b"x"]),
    (b"-abc", b"c", [b"y"]),
    (b"\xfe", b"d", [b"z"]),
]
"""(term, key, values): the integer 6 and the text "6"; the key bytes b"y:\\xff" and the
four characters `y:\\xff`; text that spells a term form; a term that is not UTF-8."""


@pytest.fixture
def answering() -> Iterator[FakeCluster]:
    """Fake nodes that answer every query with ``ROWS`` (a listing: their keys)."""

    async def answer(node: FakeNode, message: Message) -> Message:
        if not isinstance(message, QueryRequest):
            return await default_behaviour(node, message)
        listing = not message.index
        rows = [(b"" if listing else terms.encode_term(t), key) for t, key, _ in ROWS]
        values = [values for _, _, values in ROWS] if message.values else []
        return QueryReply(rows, values, None, {"complete": True, "uncovered_share": 0.0})

    fake = FakeCluster(3)
    for node in fake.nodes:
        node.behaviour = answer
    with serve_in_thread(fake) as running:
        yield running


def _cli(cluster: FakeCluster, *argv: str) -> int:
    from p2pindex.cli import main as cli_main

    return cli_main.main([*argv, "--node", cluster.addresses[0]])


def _queries(cluster: FakeCluster) -> list[QueryRequest]:
    return [m for node in cluster.nodes for m in node.requests(QueryRequest)]  # type: ignore[misc]


@pytest.mark.usefixtures("only_client_commands")
def test_json_output_tells_bytes_that_are_not_utf8_from_text(
    answering: FakeCluster, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """`keys --format json --values` printed "y:\\\\xff" for both b"y:\\xff" and the text
    `y:\\xff`, and b"\\xfe\\x00" as "\\\\xfe\\u0000": keys and terms now go as the HTTP API
    sends them (``key_base64`` / ``term_base64``), values as `get --format json` does."""
    assert _cli(answering, "keys", "--prefix", "y:", "--format", "json", "--values") == 0
    rows = json.loads(capsysbinary.readouterr().out)["rows"]
    assert rows[:2] == [
        {
            "key_base64": base64.b64encode(b"y:\xff").decode(),
            "encoding": "base64",
            "values": [base64.b64encode(b"\xfe\x00").decode()],
        },
        {"key": "y:\\xff", "encoding": "utf-8", "values": ["v"]},
    ]
    assert _cli(answering, "query", "tag", "--range", "0", "9", "--format", "json") == 0
    rows = json.loads(capsysbinary.readouterr().out)["rows"]
    assert [{k: v for k, v in row.items() if k.startswith("term")} for row in rows] == [
        {"term": 6},
        {"term": "6"},
        {"term": "int:5"},
        {"term": "text:x"},
        {"term": "-abc"},
        {"term_base64": base64.b64encode(b"\xfe").decode()},
    ]
    assert "values" not in rows[0] and "encoding" not in rows[0]


@pytest.mark.usefixtures("only_client_commands")
def test_text_output_prints_terms_as_the_command_line_reads_them_back(
    answering: FakeCluster, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """The integer 6 and the text "6" both printed `6`; keys and values that are not
    UTF-8 printed as backslash escapes a key could also spell. Now a text term that would
    read back as another term is written `text:...`, and bytes print as stored."""
    assert _cli(answering, "query", "tag", "--range", "0", "9", "--values") == 0
    lines = capsysbinary.readouterr().out.split(b"\n")
    assert lines == [
        b"6\ty:\xff\t\xfe\x00",
        b"text:6\ty:\\xff\tv",
        b"text:int:5\ta\tw",
        b"text:text:x\tb\tx",
        b"-abc\tc\ty",
        b"\xfe\td\tz",
        b"",
    ]
    for (term, _key, _values), line in zip(ROWS, lines, strict=False):
        printed = line.split(b"\t")[0]
        assert _as_client_sends(term_arg(_typed(printed))) == term
    assert _cli(answering, "keys") == 0
    assert capsysbinary.readouterr().out == b"y:\xff\ny:\\xff\na\nb\nc\nd\n"


def _as_client_sends(term: int | str | bytes) -> int | bytes:
    return term.encode() if isinstance(term, str) else term


@pytest.mark.usefixtures("only_client_commands")
def test_a_prefix_or_term_that_is_not_utf8_is_the_bytes_typed(
    answering: FakeCluster, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """`keys --prefix $'m:\\xff'` and `put --index bin=$'\\xfe'` failed with "'utf-8'
    codec can't encode character '\\udcff'" (exit 1); they take the bytes, as KEY does."""
    assert _cli(answering, "keys", "--prefix", _typed(b"m:\xff")) == 0
    assert _cli(answering, "query", "bin", _typed(b"\xfe"), "--prefix", _typed(b"d\xff")) == 0
    assert _cli(answering, "query", "bin", "--range", _typed(b"\xfe"), _typed(b"text:\xff")) == 0
    listing, exact, ranged = _queries(answering)
    assert listing.prefix == b"m:\xff"
    assert (exact.lo, exact.hi, exact.prefix) == (
        terms.encode_term(b"\xfe"),
        terms.encode_term(b"\xfe"),
        b"d\xff",
    )
    assert (ranged.lo, ranged.hi) == (terms.encode_term(b"\xfe"), terms.encode_term(b"\xff"))
    assert _cli(answering, "put", "k", "v", "--index", "bin=" + _typed(b"\xfe")) == 0
    [put] = [m for node in answering.nodes for m in node.requests(PutRequest)]
    assert put.index == terms.encode((("bin", b"\xfe"),))  # type: ignore[attr-defined]
    assert b"codec" not in capsysbinary.readouterr().err


@pytest.mark.usefixtures("only_client_commands")
@pytest.mark.parametrize(
    ("argv", "argument"),
    [
        (["query", _typed(b"\xfe"), "1"], "argument INDEX"),
        (["put", "k", "v", "--index", _typed(b"n\xfe") + "=1"], "argument --index"),
        (["query", "tag", "int:" + _typed(b"\xfe")], "argument TERM"),
    ],
)
def test_an_index_name_that_is_not_utf8_is_a_usage_error_naming_it(
    argv: list[str], argument: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from p2pindex.cli import main as cli_main

    with pytest.raises(SystemExit) as exit_:
        cli_main.main([*argv, "--node", "127.0.0.1:1"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {argument}: ") and err.count("\n") == 1
    assert "0x" in err and "codec" not in err and "\\udc" not in err


# --- terms that start with '-' ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "term", "bounds"),
    [
        (["query", "tag", "-abc"], "-abc", None),
        (["query", "--limit", "5", "tag", "-abc"], "-abc", None),
        (["query", "tag", "-h1"], "-h1", None),
        (["query", "tag", "-3"], -3, None),
        (["query", "tag", "-"], "-", None),
        (["query", "tag", "--range", "-abc", "-x"], None, ["-abc", "-x"]),
        (["query", "tag", "--limit=5", "--ran", "-5", "-abc"], None, [-5, "-abc"]),
        (["query", "tag", "--", "-abc"], "-abc", None),
        # options between INDEX and TERM ("unrecognized arguments: 6" before)
        (["query", "tag", "--limit", "5", "6"], 6, None),
        (["query", "tag", "--values", "--consistency", "quorum", "-x"], "-x", None),
        (["query", "tag", "--limit", "5", "--", "-abc"], "-abc", None),
    ],
)
def test_a_term_that_starts_with_a_dash_is_a_term(
    argv: list[str], term: object, bounds: object
) -> None:
    """`query tag -abc` was "unrecognized arguments: -abc" with no hint."""
    from p2pindex.cli.main import attach_dash_terms, attach_dash_values

    parser = build_parser()
    args = parser.parse_args(attach_dash_terms(parser, attach_dash_values(parser, argv)))
    assert (args.index, args.term, args.range) == ("tag", term, bounds)


def test_dash_words_that_are_not_terms_stay_what_they_were() -> None:
    from p2pindex.cli.main import attach_dash_terms

    parser = build_parser()
    for argv in (
        ["query", "tag", "--values", "--limit", "5", "x"],
        ["query", "-abc", "x"],  # INDEX is a name, not a term
        ["query", "tag", "x", "-abc"],  # no term is due any more
        ["query", "tag", "--abc"],  # more likely a mistyped option
        ["query", "tag", "--prefix", "-abc"],  # a prefix is not a term
        ["put", "k", "-abc"],
        ["keys", "-abc"],
    ):
        # The same words (options go before the positionals), none made a text term.
        assert sorted(attach_dash_terms(parser, argv)) == sorted(argv)


@pytest.mark.usefixtures("only_client_commands")
def test_a_dash_term_reaches_the_query_and_a_double_dash_one_gets_a_hint(
    answering: FakeCluster, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert _cli(answering, "query", "tag", "-abc") == 0
    [query] = _queries(answering)
    assert query.lo == query.hi == terms.encode_term(b"-abc")
    with pytest.raises(SystemExit) as exit_:
        _cli(answering, "query", "tag", "--abc")
    assert exit_.value.code == 2
    err = capsysbinary.readouterr().err.decode()
    assert err.startswith("error: unrecognized arguments: --abc; ")
    assert "after '--'" in err and "text:--abc" in err and err.count("\n") == 1

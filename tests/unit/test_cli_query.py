"""How the command line reads index terms and pages."""

from __future__ import annotations

import argparse

import pytest

from p2pindex.cli.main import build_parser
from p2pindex.cli.query import index_arg, index_terms, page_size, term_arg


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

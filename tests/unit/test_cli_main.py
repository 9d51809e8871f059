"""The command-line entry point: help everywhere, exit codes, one-line errors."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from p2pindex.cli import main as cli_main
from p2pindex.cli.common import describe, exit_code_for, single_error
from p2pindex.errors import (
    ConnectionLost,
    InvalidRequest,
    NoNodeReachable,
    QuorumFailed,
    Timeout,
    Unavailable,
)

CLIENT_COMMANDS = {
    "put",
    "get",
    "delete",
    "status",
    "explain",
    "leave",
    "remove",
    "dev",
    "demo",
    "bench",
}


@pytest.fixture
def client_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_main, "OPTIONAL_COMMANDS", ())


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_command_and_option_has_help(client_only: None) -> None:
    parser = cli_main.build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helped = {choice.dest for choice in action._choices_actions if choice.help}
    commands = subcommands(parser)
    assert set(commands) >= CLIENT_COMMANDS
    assert helped == set(commands)
    for name, sub in commands.items():
        assert sub.description, name
        for option in sub._actions:
            assert option.help, f"{name} {option.option_strings or option.dest}"


NO_RESULT = {"serve", "dev", "demo", "completion"}
"""Commands that print no result to format: a node or a cluster that runs until stopped, a
narrated tour, a shell script. Every other command takes --format json."""


def leaf_commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    children = (
        subcommands(parser)
        if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
        else {}
    )
    if not children:
        return [(path, parser)]
    return [
        leaf for name, child in children.items() for leaf in leaf_commands(child, (*path, name))
    ]


def test_every_option_of_every_command_has_help_and_results_have_json() -> None:
    """All commands, the optional ones and sub-actions (cluster init, token issue) too."""
    leaves = leaf_commands(cli_main.build_parser())
    assert {" ".join(path) for path, _ in leaves} >= {
        "serve",
        "simulate",
        "cluster init",
        "token issue",
        "completion",
    }
    for path, parser in leaves:
        name = " ".join(path)
        assert parser.description, name
        for option in parser._actions:
            assert option.help, f"{name} {option.option_strings or option.dest}"
        has_format = any("--format" in option.option_strings for option in parser._actions)
        assert has_format == (name not in NO_RESULT), name


def test_optional_commands_register_when_present() -> None:
    commands = subcommands(cli_main.build_parser())
    assert "serve" in commands


def test_version_and_missing_command(client_only: None, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        cli_main.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("p2pindex ")
    with pytest.raises(SystemExit) as info:
        cli_main.main([])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("error: the following arguments are required")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (Unavailable(3, 1), 4),
        (NoNodeReachable("x"), 4),
        (Timeout("x"), 5),
        (QuorumFailed("x"), 5),
        (ConnectionLost("x"), 5),
        (InvalidRequest("x"), 1),
        (ValueError("x"), 1),
        (OSError(2, "No such file or directory", "f"), 1),
    ],
)
def test_exit_codes(error: BaseException, code: int) -> None:
    assert exit_code_for(error) == code


def test_descriptions() -> None:
    assert describe(Unavailable(3, 1)) == "unavailable: 3 replicas required but only 1 reachable"
    assert describe(Timeout("no reply")).startswith("timeout: no reply (the operation may")
    assert describe(OSError(2, "No such file or directory", "f")) == "no such file or directory (f)"


def test_single_error_unwraps_nested_groups() -> None:
    inner = Timeout("x")
    assert single_error(ExceptionGroup("a", [ExceptionGroup("b", [inner])])) is inner
    assert single_error(ExceptionGroup("a", [inner, ValueError()])) is None


def test_errors_inside_exception_groups_are_still_one_line(
    client_only: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def explode(args: argparse.Namespace) -> int:
        raise ExceptionGroup("from a nursery", [Unavailable(2, 1)])

    from p2pindex.cli import kv

    monkeypatch.setattr(kv, "run_get", explode)
    assert cli_main.main(["get", "k", "--node", "127.0.0.1:1"]) == 4
    assert (
        capsys.readouterr().err == "error: unavailable: 2 replicas required but only 1 reachable\n"
    )


def test_python_dash_m_works() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "p2pindex", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert "put" in result.stdout and "bench" in result.stdout


@pytest.mark.parametrize(
    ("argv", "expected", "absent"),
    [
        (["dev", "--dir", "x"], "did you mean --data-dir? (see 'p2pindex dev --help')", "'--'"),
        (["serve", "--seeds", "h:1"], "did you mean --seed? (see 'p2pindex serve --help')", "'--'"),
        (["get", "--consistncy", "all", "k"], "did you mean --consistency?", "text:"),
        (["status", "--bogus"], "unrecognized arguments: --bogus (see 'p2pindex status", "'--'"),
        (["put", "k", "-v"], "give it after '--' (after every option) (see 'p2pindex put", "text:"),
    ],
)
def test_an_unknown_option_names_its_command_and_the_option_meant(
    argv: list[str], expected: str, absent: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as info:
        cli_main.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unrecognized arguments: ") and err.count("\n") == 1
    assert expected in err and absent not in err

"""Messages a user can act on: each names things in the user's words (the operation, the key
as text, the role needed, the address), never a class name, a bytes repr, a CBOR type or a
parser's text, and ends with the exit code of the README's table."""

from __future__ import annotations

import argparse
import re
import socket
from pathlib import Path

import pytest
from test_security_access import NOW, client

from p2pindex.cli import main as cli_main
from p2pindex.cli.common import DEFAULT_NODE, default_nodes, describe, exit_code_for
from p2pindex.config_file import BY_NAME
from p2pindex.errors import (
    ConfigError,
    ConnectionLost,
    InvalidRequest,
    NoNodeReachable,
    NotReady,
    PermissionDenied,
    Timeout,
    Unavailable,
)
from p2pindex.security.access import authorize
from p2pindex.security.certs import Role, TrustSet
from p2pindex.security.credentials import ClientCredentials
from p2pindex.security.errors import AccessDenied
from p2pindex.sim.scenario import load_scenario
from p2pindex.wire.messages import DeleteRequest, GetRequest, LeaveRequest, PutRequest

INTERNALS = re.compile(
    r"Request\b|Reply\b|Error\b|b'|b\"|CBOR|Kind\.|<\w+\.|Expecting value|line \d+ column"
)
"""What must never reach a user: message class names, bytes reprs, CBOR types, enum reprs
and the JSON parser's own wording."""


def clean(text: str) -> str:
    assert not INTERNALS.search(text), text
    return text


# --- one default port ------------------------------------------------------------------------


def subparser(name: str) -> argparse.ArgumentParser:
    parser = cli_main.build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices[name]


def default_of(parser: argparse.ArgumentParser, dest: str) -> object:
    return next(a.default for a in parser._actions if a.dest == dest)


def test_one_default_port_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("P2PINDEX_NODE", raising=False)
    assert DEFAULT_NODE == "127.0.0.1:7400"
    assert [str(a) for a in default_nodes()] == [DEFAULT_NODE]
    assert str(BY_NAME["listen"].default) == DEFAULT_NODE  # serve's, through the config file
    assert default_of(subparser("dev"), "base_port") == 7400
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert "P2PINDEX_NODE" in readme and "7400" in readme and "7001" not in readme


def test_p2pindex_node_names_the_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2PINDEX_NODE", " 127.0.0.2:7400 , [::1]:7401,")
    assert [str(a) for a in default_nodes()] == ["127.0.0.2:7400", "[::1]:7401"]


@pytest.mark.parametrize("value", ["nowhere", "127.0.0.1:0", "127.0.0.1:99999", ",", "h:x"])
def test_a_bad_p2pindex_node_is_a_usage_error(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("P2PINDEX_NODE", value)
    assert cli_main.main(["get", "k"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: $P2PINDEX_NODE="), err
    clean(err)


# --- exit codes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidRequest("x"), 1),
        (PermissionDenied("x"), 1),
        (ConfigError("x"), 1),
        (Unavailable(2, 1), 4),
        (NoNodeReachable("x"), 4),
        (NotReady("x"), 4),
        (Timeout("x"), 5),
        (ConnectionLost("x"), 5),
    ],
)
def test_exit_codes_follow_the_readme_table(error: Exception, code: int) -> None:
    assert exit_code_for(error) == code


@pytest.mark.parametrize("error", [Timeout(required=3, acknowledged=2), ConnectionLost("x")])
def test_a_read_that_times_out_changed_nothing_and_says_so(error: Exception) -> None:
    """Found by a helper: `get --consistency all` timing out said "(the operation may or
    may not have taken effect)" and exited 5, the code of a write that may have landed."""
    assert exit_code_for(error, read=True) == 4
    said = describe(error, read=True)
    assert said.endswith("(a read: nothing was changed)")
    assert "may or may not" not in said
    assert "may or may not" in describe(error)


def test_the_commands_that_only_read_are_marked_so() -> None:
    parser = cli_main.build_parser()
    for words in (["get", "k"], ["keys"], ["query", "i", "1"], ["status"], ["explain", "k"]):
        assert parser.parse_args(words).reads_only is True, words
    for words in (["put", "k", "v"], ["delete", "k"]):
        assert getattr(parser.parse_args(words), "reads_only", False) is False, words


# --- access refusals -------------------------------------------------------------------------


def refusal(peer_role: Role, message: object, prefix: bytes = b"") -> str:
    with pytest.raises(AccessDenied) as info:
        authorize(client(peer_role, prefix), message, NOW)  # type: ignore[arg-type]
    assert isinstance(info.value, PermissionDenied)
    return clean(str(info.value))


def test_a_missing_role_names_the_operation_and_the_role() -> None:
    text = refusal(Role.READ, PutRequest(b"user:1", b"v", None, "quorum", 1000))
    assert text.startswith("put needs the write role, but this client's capability has the read")
    assert "p2pindex token issue --role write" in text
    text = refusal(Role.WRITE, LeaveRequest())
    assert text.startswith("leave needs the admin role")


def test_a_key_outside_the_prefix_is_shown_as_text() -> None:
    text = refusal(Role.WRITE, DeleteRequest(b"other:1", None, "one", 1000), prefix=b"user:")
    assert text == (
        "delete of key 'other:1' refused: this client's capability covers only the key "
        "prefix 'user:'"
    )
    binary = refusal(Role.READ, GetRequest(b"\xff\x00", "one", 1000), prefix=b"user:")
    assert "key 0xff00 " in binary


# --- files and settings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "is not a p2pindex credentials file (it is not JSON)"),
        ("[1, 2]", "is not a p2pindex credentials file"),
        ('{"format": "p2pindex-credentials/1"}', "the 'key' field is missing"),
        (
            '{"format": "p2pindex-credentials/1", "key": "zz", "capability": "", "trust": {}}',
            "its key must be 32 bytes of hex",
        ),
    ],
)
def test_a_bad_credentials_file_is_described_not_parsed_at_the_user(
    tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "app.cred"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError) as info:
        ClientCredentials.load(path)
    assert expected in clean(str(info.value))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "it is not JSON"),
        ('"x"', "it is not a JSON object"),
        ('{"format": "p2pindex-trust/1"}', "the 'cluster' field is missing"),
        ('{"format": "p2pindex-trust/1", "cluster": "zz", "authorities": []}', "must be hex"),
    ],
)
def test_a_bad_trust_file_is_described(content: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        TrustSet.from_json(content, "cluster.trust")
    text = clean(str(info.value))
    assert text.startswith("cluster.trust is not a valid trust file: ") and expected in text


def test_simulate_prints_settings_without_enum_reprs() -> None:
    root = Path(__file__).parents[2] / "p2pindex" / "sim" / "scenarios"
    options = load_scenario(root / "ci.toml").options()
    assert options["network"].startswith("delay=(kind=exponential, ")
    assert "Settings(" not in options["network"] and "Settings(" not in options["disk"]
    for value in options.values():
        clean(str(value))


def test_serve_on_a_port_in_use_names_the_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind(("127.0.0.1", 0))
        held.listen()
        address = f"127.0.0.1:{held.getsockname()[1]}"
        argv = ["serve", "--insecure", "--data-dir", str(tmp_path / "n"), "--listen", address]
        assert cli_main.main(argv) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    # Not a configuration mistake: the plain "error:" prefix, no "config error:".
    assert err.startswith(f"error: cannot listen on {address}: the address is")
    assert "already in use" in clean(err)


def test_setup_errors_are_plain_errors_not_config_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cluster init` on an existing authority, unreadable credentials, a port in use: each
    message says what is wrong; "config error:" mislabelled them as configuration."""
    authority = str(tmp_path / "authority")
    assert cli_main.main(["cluster", "init", "--dir", authority]) == 0
    capsys.readouterr()
    assert cli_main.main(["cluster", "init", "--dir", authority]) == 1
    err = capsys.readouterr().err
    assert err == f"error: {authority} already holds an authority; refusing to replace it\n"
    assert describe(ConfigError("cannot read credentials x.cred: no such file")) == (
        "cannot read credentials x.cred: no such file"
    )

"""`p2pindex keygen | cluster ... | token issue`: files, modes, and the errors they print."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pytest

from p2pindex.cli import security as cli
from p2pindex.cli.common import Parser
from p2pindex.errors import ConfigError
from p2pindex.net.secure.loading import load_manager
from p2pindex.node.identity import NodeIdentity
from p2pindex.security.authority import Authority
from p2pindex.security.certs import Role, TrustSet, verify_node_certificate, verify_revocations
from p2pindex.security.credentials import ClientCredentials
from p2pindex.security.files import SecurityFiles
from p2pindex.security.keys import key_id


def run(*argv: str) -> int:
    parser = Parser(prog="p2pindex")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.fixture
def authority(tmp_path: Path) -> Path:
    directory = tmp_path / "authority"
    assert run("cluster", "init", "--dir", str(directory)) == 0
    return directory


def test_keygen_writes_a_private_key_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "node.key"
    assert run("keygen", "--out", str(path)) == 0
    assert path.stat().st_mode & 0o777 == 0o600
    assert NodeIdentity.load_or_create(tmp_path).node_id in capsys.readouterr().out
    with pytest.raises(ConfigError, match="already exists"):
        run("keygen", "--out", str(path))
    assert run("keygen", "--out", str(path), "--force") == 0


def test_init_makes_a_cluster_and_refuses_to_replace_it(authority: Path) -> None:
    assert (authority / "authority.key").stat().st_mode & 0o777 == 0o600
    trust = TrustSet.load(authority / "cluster.trust")
    assert len(trust.authorities) == 1
    with pytest.raises(ConfigError, match="already holds an authority"):
        run("cluster", "init", "--dir", str(authority))


def test_certify_a_data_directory_makes_a_startable_secure_node(
    authority: Path, tmp_path: Path
) -> None:
    data = tmp_path / "node1"
    assert run("cluster", "certify", "--authority", str(authority), "--data-dir", str(data)) == 0
    identity = NodeIdentity.load_or_create(data)
    manager = load_manager(SecurityFiles.for_data_dir(data), identity.signing_key)
    assert manager.node_id == identity.node_id
    assert manager.certificate.expires - time.time() > 360 * 86400


def test_certify_a_public_key_or_key_file(authority: Path, tmp_path: Path) -> None:
    run("keygen", "--out", str(tmp_path / "k.key"))
    out = tmp_path / "k.cert"
    run(
        "cluster",
        "certify",
        "--authority",
        str(authority),
        "--node-key",
        str(tmp_path / "k.key"),
        "--out",
        str(out),
        "--expires",
        "2d",
    )
    trust = TrustSet.load(authority / "cluster.trust")
    cert = verify_node_certificate(out.read_bytes(), trust, time.time())
    assert 86400 < cert.expires - time.time() <= 2 * 86400
    public = NodeIdentity.load_or_create(tmp_path / "other").public_key.hex()
    run(
        "cluster",
        "certify",
        "--authority",
        str(authority),
        "--public-key",
        public,
        "--out",
        str(out),
    )
    with pytest.raises(ConfigError, match="--out FILE is required"):
        run("cluster", "certify", "--authority", str(authority), "--public-key", public)


def test_token_issue_writes_private_credentials_with_the_role(
    authority: Path, tmp_path: Path
) -> None:
    out = tmp_path / "reader.cred"
    run(
        "token",
        "issue",
        "--authority",
        str(authority),
        "--role",
        "read",
        "--prefix",
        "user:",
        "--expires",
        "1d",
        "--out",
        str(out),
    )
    assert out.stat().st_mode & 0o777 == 0o600
    capability = ClientCredentials.load(out).check(time.time())
    assert capability.role is Role.READ and capability.prefix == b"user:"
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        run("token", "issue", "--authority", str(authority), "--role", "read", "--out", str(out))


def test_revoke_without_a_node_accumulates_a_signed_list(authority: Path) -> None:
    run("cluster", "revoke", "ab" * 8, "--authority", str(authority))
    run("cluster", "revoke", "cd" * 8, "--capability", "42", "--authority", str(authority))
    trust = TrustSet.load(authority / "cluster.trust")
    revocations = verify_revocations((authority / "revocations.cbor").read_bytes(), trust)
    assert revocations.node_ids == {"ab" * 8, "cd" * 8}
    assert revocations.serials == {42}
    assert revocations.version >= time.time() - 5
    run("cluster", "revoke", "--authority", str(authority))
    resigned = verify_revocations((authority / "revocations.cbor").read_bytes(), trust)
    assert resigned.node_ids == revocations.node_ids
    assert resigned.version > revocations.version


def test_revoke_needs_something_to_revoke(authority: Path) -> None:
    with pytest.raises(ConfigError, match="at least one"):
        run("cluster", "revoke", "--authority", str(authority))


def test_rotate_then_retire_keeps_the_cluster(authority: Path, tmp_path: Path) -> None:
    before = Authority.load(authority)
    run("cluster", "revoke", "ab" * 8, "--authority", str(authority))
    run("cluster", "rotate", "--authority", str(authority))
    after = Authority.load(authority)
    revocations = verify_revocations((authority / "revocations.cbor").read_bytes(), after.trust)
    assert revocations.authority_id == key_id(after.public_key)
    assert revocations.node_ids == {"ab" * 8}
    assert after.cluster_id == before.cluster_id
    assert after.trust.authorities == before.trust.authorities | {after.public_key}
    data = tmp_path / "node"
    run("cluster", "certify", "--authority", str(authority), "--data-dir", str(data))
    cert = verify_node_certificate((data / "node.cert").read_bytes(), after.trust, time.time())
    assert cert.authority_id.hex() != before.trust.cluster
    old_id = before.trust.cluster  # the first key's id is the cluster id
    with pytest.raises(ConfigError, match="current signing key"):
        run("cluster", "retire", "--authority", str(authority), "--key", cert.authority_id.hex())
    run("cluster", "retire", "--authority", str(authority), "--key", old_id)
    assert Authority.load(authority).trust.authorities == frozenset({after.public_key})


@pytest.mark.parametrize("text", ["30", "0d", "3x", "d", "-1d"])
def test_bad_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a duration"):
        cli.duration_arg(text)


@pytest.mark.parametrize("text", ["-5d", "0d", "-1h"])
def test_a_lifetime_that_is_not_positive_says_so(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="a lifetime must be positive"):
        cli.duration_arg(text)


def test_a_negative_expiry_after_a_space_reaches_its_check(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--expires -5d` looked like an unknown option to argparse ("expected one
    argument"); the value now reaches duration_arg, whose message says what is wrong."""
    from p2pindex.cli import main as cli_main

    for argv in (["--expires", "-5d"], ["--expires=-5d"]):
        with pytest.raises(SystemExit) as exit_:
            cli_main.main(
                ["token", "issue", "--authority", "a", "--role", "read", "--out", "x", *argv]
            )
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert "a lifetime must be positive" in err and "expected one argument" not in err


def test_durations() -> None:
    assert cli.duration_arg("30d") == 30 * 86400
    assert cli.duration_arg("12h") == 43200
    assert cli.duration_arg("1y") == 365 * 86400


def test_a_missing_authority_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cluster init"):
        run(
            "token",
            "issue",
            "--authority",
            str(tmp_path),
            "--role",
            "read",
            "--out",
            str(tmp_path / "x"),
        )


def test_every_security_command_prints_its_result_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    def as_json(*argv: str) -> dict[str, object]:
        assert run(*argv, "--format", "json") == 0
        out = capsys.readouterr().out
        assert out.count("\n") == 1, out
        document = json.loads(out)
        assert isinstance(document, dict)
        return document

    authority = tmp_path / "authority"
    init = as_json("cluster", "init", "--dir", str(authority))
    assert init["trust_file"] == str(authority / "cluster.trust")
    key = as_json("keygen", "--out", str(tmp_path / "node.key"))
    assert len(str(key["node_id"])) == 16 and len(str(key["public_key"])) == 64
    certified = as_json(
        "cluster", "certify", "--authority", str(authority), "--data-dir", str(tmp_path / "n1")
    )
    assert len(str(certified["node_id"])) == 16 and isinstance(certified["serial"], int)
    issued = as_json(
        "token", "issue", "--authority", str(authority), "--role", "read",
        "--prefix", "user:", "--out", str(tmp_path / "app.cred"),
    )  # fmt: skip
    assert (issued["role"], issued["prefix"]) == ("read", "user:")
    bearer = as_json(
        "token", "issue", "--authority", str(authority), "--role", "write",
        "--bearer", "--out", str(tmp_path / "app.token"),
    )  # fmt: skip
    assert (bearer["kind"], bearer["role"]) == ("bearer", "write")
    assert isinstance(bearer["serial"], int) and bearer["file"] == str(tmp_path / "app.token")
    revoked = as_json("cluster", "revoke", str(certified["node_id"]), "--authority", str(authority))
    assert revoked["node_ids"] == [certified["node_id"]] and revoked["pushed_to"] is None
    rotated = as_json("cluster", "rotate", "--authority", str(authority))
    retired = as_json(
        "cluster", "retire", "--authority", str(authority), "--key", str(rotated["old_key"])
    )
    assert retired["trusted"] == [rotated["new_key"]]

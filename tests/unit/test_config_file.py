"""Node settings from TOML: strict keys and types, flags over the file, show round-trips."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from p2pindex.cli.main import build_parser
from p2pindex.cli.serve import DEFAULT_LISTEN, settings_from
from p2pindex.config import AdmissionLimits, HttpConfig, Limits, NodeConfig, TermLimits
from p2pindex.config_file import BY_NAME, node_config, read_file, render
from p2pindex.errors import ConfigError
from p2pindex.types import Address


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def settings(*argv: str):
    return settings_from(build_parser().parse_args(["serve", *argv]))


def test_every_node_setting_can_be_set_in_the_file():
    tables = {
        "limits": Limits,
        "http": HttpConfig,
        "admission": AdmissionLimits,
        "term_limits": TermLimits,
    }
    settable = {f.name for f in dataclasses.fields(NodeConfig)} - {*tables}
    assert settable <= set(BY_NAME)
    assert {f"admission.{f.name}" for f in dataclasses.fields(AdmissionLimits)} <= set(BY_NAME)
    assert {f"terms.{f.name}" for f in dataclasses.fields(TermLimits)} <= set(BY_NAME)
    assert str(BY_NAME["listen"].default) == DEFAULT_LISTEN


def test_a_file_configures_a_node_and_flags_override_it(tmp_path: Path):
    path = write(
        tmp_path,
        'data_dir = "d"\nn_replicas = 2\nanti_entropy_interval = false\nhint_max_age = 60\n'
        'seeds = ["127.0.0.1:7401"]\n[limits]\nsibling_max = 40\n'
        '[http]\nlisten = "127.0.0.1:8080"\nrequest_deadline = 2\n',
    )
    values, sources = settings("--config", str(path), "--n-replicas", "3", "--insecure")
    config = node_config(values)
    assert config.n_replicas == 3 and sources["n_replicas"] == "flag"
    assert config.anti_entropy_interval is None
    assert config.hint_max_age == 60.0
    assert config.seeds == (Address("127.0.0.1", 7401),)
    assert config.limits.sibling_max == 40
    assert config.http is not None and config.http.request_deadline == 2.0
    assert config.insecure is True
    assert sources["limits.sibling_max"] == str(path)
    assert sources["cluster"] == "default"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("n_replica = 3\n", "'n_replica'"),
        ("[http]\nlisten_on = 'x'\n", "'http.listen_on'"),
        ("n_replicas = 'three'\n", "n_replicas must be a whole number"),
        ("fsync = 1\n", "fsync must be true or false"),
        ("request_timeout = -1\n", "request_timeout must be a positive number"),
        ("log_level = 'loud'\n", "log_level must be one of"),
        ("seeds = 'a:1'\n", "seeds must be a list"),
        ("listen = 'nohost'\n", "listen: bad address"),
        ("data_dir = \n", "not valid TOML"),
    ],
)
def test_an_unknown_key_or_bad_value_is_one_error_naming_it(tmp_path: Path, text, named):
    with pytest.raises(ConfigError) as error:
        read_file(write(tmp_path, text))
    assert named in str(error.value)
    assert str(tmp_path) in str(error.value)


def test_checks_across_settings_are_made_before_start(tmp_path: Path):
    path = write(tmp_path, 'data_dir = "d"\n[http]\nlisten = "10.1.2.3:80"\n')
    with pytest.raises(ConfigError, match="not on loopback") as public:
        node_config(settings("--config", str(path))[0])
    assert "insecure = true under [http]" in str(public.value)  # the file's own words
    half = write(tmp_path, 'data_dir = "d"\n[http]\nlisten = "127.0.0.1:80"\ntls_cert = "c"\n')
    with pytest.raises(ConfigError, match="tls_cert and tls_key under \\[http\\]"):
        node_config(settings("--config", str(half))[0])
    with pytest.raises(ConfigError, match="data_dir is not set"):
        node_config(settings()[0])


def test_config_show_prints_toml_that_reads_back_to_the_same_node(tmp_path: Path):
    path = write(
        tmp_path,
        'data_dir = "d"\nanti_entropy_interval = false\n[http]\nlisten = "127.0.0.1:8080"\n',
    )
    values, sources = settings("--config", str(path), "--cluster", "blue")
    shown = render(values, sources.__getitem__)
    tomllib.loads(shown)
    again = write(tmp_path, shown)
    assert node_config(settings("--config", str(again))[0]) == node_config(values)


BAD_FILES = [
    ("n_replicas = 0\n", "n_replicas must be a whole number in 1..16, not 0"),
    ("n_replicas = -1\n", "n_replicas must be a whole number in 1..16, not -1"),
    ("[limits]\nmax_value = 0\n", "limits.max_value must be a whole number, at least 1"),
    ("[admission]\nmax_connections = 0\n", "admission.max_connections must be a whole number"),
    ("[terms]\nmax_terms = 0\n", "terms.max_terms must be a whole number in 1..65536, not 0"),
    ('[http]\nlisten = "0.0.0.0:8400"\n', "[http] the HTTP listener 0.0.0.0:8400 is not on"),
    ("[limits]\nsibling_warn = 200\nsibling_max = 100\n", "[limits] sibling_warn must be"),
    ("[limits]\nmax_frame = 100\n", "[limits] max_frame must hold a full-size key"),
]


def _last_error(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_config_show_refuses_what_serve_refuses_with_the_same_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    message: str,
) -> None:
    """`config show` exited 0 for values `serve` then refused; both now build the same
    config objects, and the error names the file and the setting."""
    from p2pindex.cli import main as cli_main

    monkeypatch.setattr("p2pindex.cli.serve.serve", lambda config: pytest.fail("it started"))
    path = write(tmp_path, text)
    assert cli_main.main(["config", "show", "--config", str(path)]) == 1
    shown = _last_error(capsys)
    argv = ["serve", "--config", str(path), "--data-dir", str(tmp_path / "d")]
    assert cli_main.main(argv) == 1
    assert _last_error(capsys) == shown
    assert shown.startswith(f"error: {path}: ") and message in shown
    assert "config error" not in shown


def test_a_flag_out_of_range_says_it_came_from_a_flag() -> None:
    with pytest.raises(ConfigError) as error:
        node_config(*settings("--data-dir", "d", "--max-connections", "0"))
    assert str(error.value) == (
        "admission.max_connections must be a whole number, at least 1, not 0 (given as a flag)"
    )


def test_relative_paths_in_a_file_are_beside_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run from / a relative data_dir made /reldata: it now means a path beside the file,
    wherever the command runs, and `config show` prints it resolved."""
    from p2pindex.cli import main as cli_main

    folder = tmp_path / "etc"
    folder.mkdir()
    path = folder / "node.toml"
    path.write_text(
        'data_dir = "reldata"\n[http]\nlisten = "127.0.0.1:8400"\ntls_cert = "c.pem"\n'
        'tls_key = "/abs/k.pem"\n'
    )
    monkeypatch.chdir("/")
    values, _sources = settings("--config", str(path))
    assert values["data_dir"] == folder / "reldata"
    assert values["http.tls_cert"] == folder / "c.pem"
    assert values["http.tls_key"] == Path("/abs/k.pem")
    assert cli_main.main(["config", "show", "--config", str(path)]) == 0
    assert f'data_dir = "{folder / "reldata"}"' in capsys.readouterr().out
    flag_values, _ = settings("--config", str(path), "--data-dir", "fromflag")
    assert flag_values["data_dir"] == Path("fromflag")  # a flag is relative to where it runs


def test_a_data_dir_that_is_a_file_says_so(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(ConfigError) as error:
        node_config(settings("--data-dir", str(afile), "--insecure")[0])
    assert str(error.value) == f"the data directory {afile} is a file, not a directory"


def test_config_show_without_a_data_dir_still_checks_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from p2pindex.cli import main as cli_main

    assert (
        cli_main.main(["config", "show", "--config", str(write(tmp_path, "fsync = true\n"))]) == 0
    )
    captured = capsys.readouterr()
    assert "fsync = true" in captured.out
    assert "data_dir is not set" in captured.err

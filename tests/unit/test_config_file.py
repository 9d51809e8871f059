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
    with pytest.raises(ConfigError, match="not on loopback"):
        node_config(settings("--config", str(path))[0])
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

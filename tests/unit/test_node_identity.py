"""A node's key file goes through the one key loader: mode 0600, atomic, checked on read."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from p2pindex.errors import ConfigError
from p2pindex.node.identity import KEY_FILE, NodeIdentity


def test_the_first_start_writes_a_private_key_the_next_start_reads(tmp_path: Path) -> None:
    created = NodeIdentity.load_or_create(tmp_path / "data")
    path = tmp_path / "data" / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert NodeIdentity.load_or_create(tmp_path / "data").node_id == created.node_id
    assert list((tmp_path / "data").iterdir()) == [path]


def test_a_key_readable_by_others_is_refused_with_the_fix(tmp_path: Path) -> None:
    NodeIdentity.load_or_create(tmp_path)
    (tmp_path / KEY_FILE).chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        NodeIdentity.load_or_create(tmp_path)


def test_a_short_key_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    path.write_bytes(b"short")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="expected 32 bytes"):
        NodeIdentity.load_or_create(tmp_path)
    assert path.read_bytes() == b"short"

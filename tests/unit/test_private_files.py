"""Private by default on disk: the data directory, the store and its WAL files, and the node
key are readable by their owner only; a node key others can read stops the node."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from p2pindex.errors import ConfigError
from p2pindex.node.identity import KEY_FILE, NodeIdentity
from p2pindex.node.runtime import DATA_FILE, data_dir_lock
from p2pindex.storage.sqlite import SqliteStorage


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_new_data_directory_and_its_files_are_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    with data_dir_lock(data_dir):
        NodeIdentity.load_or_create(data_dir)
        async with await SqliteStorage.open(data_dir / DATA_FILE) as store:
            await store.put(b"k", b"secret")
            files = sorted(data_dir.iterdir())
            assert {p.name for p in files} >= {DATA_FILE, DATA_FILE + "-wal", KEY_FILE}
            for path in files:
                assert mode(path) & 0o077 == 0, f"{path.name} is {mode(path):o}"
    assert mode(data_dir) == 0o700


async def test_store_files_an_older_version_left_readable_are_made_private(
    tmp_path: Path,
) -> None:
    path = tmp_path / DATA_FILE
    async with await SqliteStorage.open(path) as store:
        await store.put(b"k", b"v")
    path.chmod(0o644)
    async with await SqliteStorage.open(path) as store:
        assert store.get(b"k") == b"v"
        assert mode(path) == 0o600


def test_a_node_key_others_can_read_is_refused_with_the_chmod_to_run(tmp_path: Path) -> None:
    NodeIdentity.load_or_create(tmp_path)
    key = tmp_path / KEY_FILE
    key.chmod(0o644)
    with pytest.raises(ConfigError, match=f"run chmod 600 {key}"):
        NodeIdentity.load_or_create(tmp_path)
    key.chmod(0o600)
    assert NodeIdentity.load_or_create(tmp_path).node_id

"""An acknowledged SQLite write survives kill -9 of the process that made it.

A child process writes keys from several concurrent tasks (so commits are grouped) and prints
each key only after its ``put`` returned. The test kills it with SIGKILL part-way, reopens the
file and checks that every printed key is there with its record.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from p2pindex.storage.sqlite import SqliteStorage

CHILD = """
import sys
from pathlib import Path

import trio

from p2pindex.storage.sqlite import SqliteStorage


async def main(path: str, fsync: bool) -> None:
    store = await SqliteStorage.open(Path(path), fsync=fsync)
    await store.set_meta("started", b"yes")
    print("meta", flush=True)

    async def writer(worker: int) -> None:
        for i in range(10**9):
            key = f"{worker}-{i}"
            await store.put(key.encode(), b"record of " + key.encode())
            print(key, flush=True)

    async with trio.open_nursery() as nursery:
        for worker in range(8):
            nursery.start_soon(writer, worker)


trio.run(main, sys.argv[1], sys.argv[2] == "fsync")
"""

KILL_AFTER = 1500
"""Acknowledged keys to wait for before the kill."""


@pytest.mark.parametrize("fsync", [False, True], ids=["normal", "fsync"])
async def test_acknowledged_writes_survive_kill_9(tmp_path: Path, fsync: bool) -> None:
    path = tmp_path / "store.db"
    command = [sys.executable, "-c", CHILD, str(path), "fsync" if fsync else "normal"]
    lines: list[str] = []
    with trio.fail_after(60):
        process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
        assert process.stdout is not None
        buffered = b""
        killed = False
        while chunk := await process.stdout.receive_some():
            buffered += chunk
            *complete, buffered = buffered.split(b"\n")
            lines.extend(line.decode() for line in complete)
            if not killed and len(lines) > KILL_AFTER:
                os.kill(process.pid, signal.SIGKILL)
                killed = True
        await process.wait()
    assert process.returncode == -signal.SIGKILL, "the child ended before it was killed"
    assert lines[0] == "meta"
    acknowledged = lines[1:]
    assert len(acknowledged) >= KILL_AFTER

    async with await SqliteStorage.open(path, fsync=fsync) as store:
        assert store.get_meta("started") == b"yes"
        missing = [key for key in acknowledged if store.get(key.encode()) is None]
        assert missing == []
        for key in acknowledged:
            assert store.get(key.encode()) == b"record of " + key.encode()
        assert store.count() >= len(acknowledged)
